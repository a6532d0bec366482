"""Certificate (public key) authentication in IKE_AUTH: RFC 7427 signatures,
CERT and CERTREQ payloads, chain and revocation checks (engine.pki), the
identity bound to the certificate. Credentials are loaded by the runtime;
nothing here reads a file."""

from __future__ import annotations

from datetime import datetime, timezone

from engine.crypto.signature import (
    SUPPORTED_HASH_ALGORITHMS,
    SignatureError,
)
from engine.crypto.signature import sign_auth as _sign
from engine.crypto.signature import verify_auth as _verify
from engine.ike.errors import LocalError
from engine.ike.text import short
from engine.pki.certs import (
    cert_from_payload,
    cert_matches_identity,
    cert_payload_data,
    certreq_data,
    describe,
    public_key_of,
    subject_der,
)
from engine.pki.errors import PkiError
from engine.pki.validate import MAX_INTERMEDIATES, validate_chain
from engine.wire.constants import CertEncoding, IdType
from engine.wire.payloads import AuthPayload, CertPayload, CertReqPayload, IdPayload


def _creds(ep):
    creds = getattr(ep, "credentials", None)
    if creds is None:
        raise LocalError("certificate authentication needs credentials: none were loaded")
    return creds


def certreq_payloads(ep, connections) -> list:
    """CERTREQ naming the CAs we trust for these connections (RFC 7296 §3.7)."""
    conns = [c for c in connections if c.remote.auth == "pubkey"]
    if not conns:
        return []
    creds = _creds(ep)
    cas = []
    for c in conns:
        # each connection loads its own copy of a shared CA file: one hash per CA, not per connection
        cas += [ca for ca in creds.cacerts.get(c.name, []) if ca not in cas]
    return [CertReqPayload(CertEncoding.X509_SIGNATURE, certreq_data(cas))] if cas else []


def cert_payloads(ep, conn) -> list:
    """Our end certificate and intermediates."""
    if conn.local.auth != "pubkey":
        return []
    local = _creds(ep).local.get(conn.name)
    if local is None:
        raise LocalError(f"connection '{conn.name}': no certificate loaded")
    return [CertPayload(CertEncoding.X509_SIGNATURE, cert_payload_data(c)) for c in local.certs]


def local_id_payload(ep, conn, initiator: bool, ike_addr: str) -> IdPayload | None:
    """With certificates and no configured ID, we are our certificate's subject DN."""
    if conn.local.auth != "pubkey" or conn.local.id is not None:
        return None
    local = _creds(ep).local[conn.name]
    # The subject's own DER, not re-encoded from text: charon compares RDN values byte for byte unless
    # both are PrintableString, so a BMPString subject sent as UTF8String is not found in our certificate.
    return IdPayload(initiator, IdType.DER_ASN1_DN, subject_der(local.certs[0]))


def sign_auth(ep, sa, conn, signed: bytes) -> AuthPayload:
    local = _creds(ep).local.get(conn.name)
    if local is None:
        raise LocalError(f"connection '{conn.name}': no private key loaded for certificate authentication")
    try:
        method, data = _sign(local.key, signed, sa.peer_hash_algorithms or None)
    except SignatureError as exc:
        raise LocalError(f"connection '{conn.name}': cannot sign AUTH: {exc}") from None
    return AuthPayload(method, data)


class Deferred(str):
    """verify_auth's reason when the answer waits for a CRL being fetched: the request is held
    unanswered (the peer retransmits it, and it is checked again then)."""


def _pending(creds, uris, wall: float) -> list[str]:
    """Those URIs the runtime is fetching or is about to (asked in this very message)."""
    settled = creds.crl_settled
    return [u for u in uris if u in creds.crl_pending or (u in creds.wanted and wall >= settled.get(u, 0.0))]


def verify_auth(ep, sa, conn, auth, signed: bytes, payloads, peer, *, may_defer: bool = False) -> tuple[bool, str]:
    """Chain, revocation, identity binding, then the signature itself. With `may_defer`, a peer
    whose certificate names a CRL distribution point we are fetching (and that is otherwise
    acceptable, its AUTH signature included) gets (False, Deferred): charon's revocation plugin
    waits for the fetch before answering, so does the caller (IKE_AUTH as responder)."""
    creds = _creds(ep)
    # Other encodings (a CRL, hash and URL, PKCS#7) are skipped as charon does (ike_cert_pre.c).
    other = sorted({p.encoding for p in payloads if isinstance(p, CertPayload)} - {CertEncoding.X509_SIGNATURE})
    sent = [p for p in payloads if isinstance(p, CertPayload) and p.encoding == CertEncoding.X509_SIGNATURE]
    if len(sent) > 1 + MAX_INTERMEDIATES:  # counted before any is parsed: the peer is not authenticated yet
        return False, (f"the peer sent {len(sent)} certificates (CERT payloads); at most {1 + MAX_INTERMEDIATES} "
                       "are read, its own and the intermediate CAs")
    certs = []
    for p in sent:
        try:
            certs.append(cert_from_payload(p.encoding, p.data))
        except PkiError as exc:
            return False, f"the peer's certificate cannot be read: {exc}"
    if not certs and other:
        return False, (f"the peer sent certificates only in encodings we do not read ({', '.join(map(str, other))}; "
                       "we read 4, X.509 certificate)")
    if not certs:
        return False, "the peer sent no certificate (CERT payload) for certificate authentication"
    end, rest = certs[0], certs[1:]
    wall = datetime.fromtimestamp(ep.wall_time(sa.last_received), timezone.utc)
    all_crls = getattr(creds, "all_crls", None)
    result = validate_chain(end, rest, creds.cacerts.get(conn.name, []), all_crls() if all_crls else creds.crls,
                            wall, revocation=conn.remote.revocation)
    if result.crl_uris and hasattr(creds, "want"):
        creds.want(result.crl_uris)  # the runtime fetches them, after this message
    pending = _pending(creds, result.crl_uris, wall.timestamp()) if may_defer and getattr(creds, "fetching", False) \
        and (result.ok or result.needs_crl) else []
    if not result.ok and not pending:
        fetching = ""
        if getattr(creds, "fetching", False):  # a runtime fetches them: say how far it got
            status = creds.crl_status
            fetching = "; ".join(f"{u}: {status.get(u, 'being fetched now, a new attempt can succeed')}"
                                 for u in result.crl_uris)
        return False, (f"the peer's certificate is not acceptable: {result.reason}"
                       + (f" (CRL {fetching})" if fetching else ""))
    if not cert_matches_identity(end, peer, wildcards=False):  # the peer's ID is a claim, not a pattern
        return False, (f"the peer's certificate {describe(end)} does not contain its identity "
                       f"'{short(peer.value)}': fix the peer's ID or its certificate's subjectAltName")
    try:
        key = public_key_of(end)
    except PkiError as exc:
        return False, f"the peer's AUTH signature cannot be checked: {exc}"
    try:
        ok = _verify(key, auth.method, auth.data, signed, allowed_hashes=SUPPORTED_HASH_ALGORITHMS)
    except SignatureError as exc:
        return False, f"the peer's AUTH signature cannot be checked: {exc}"
    if not ok:
        return False, f"the peer's AUTH signature does not verify with the key of {describe(end)}"
    missing = [oid for oid in getattr(conn.remote, "cert_policy", ()) if oid not in result.policies]
    if missing:  # after the signature, as charon's auth_cfg complies()
        held = ", ".join(sorted(result.policies)) or "none"
        return False, (f"the peer's certificate {describe(end)} does not hold the certificate "
                       f"polic{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)} (remote.cert_policy); "
                       f"valid under its path: {held}")
    if pending:  # only now: a peer without the certificate's key makes us wait for nothing
        return False, Deferred(f"waiting for the CRL from {', '.join(pending)} to check {describe(end)}")
    return True, ""
