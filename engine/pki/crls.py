"""CRLs for engine.pki.validate (the revocation rules are in its module doc): each certificate of a
validated path looked up in the CRLs its issuer signed, the CRL distribution points the runtime may
fetch, the verdicts kept per CRL, and loading CRLs. Split from validate.py along the revocation seam."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .certs import describe, read_credential_file, shown_name
from .dn import format_name, name_rdns
from .errors import PkiError

Revocation = Literal["relaxed", "ifuri", "strict"]

_REASON_WORDS = {
    x509.ReasonFlags.unspecified: "unspecified",
    x509.ReasonFlags.key_compromise: "key compromise",
    x509.ReasonFlags.ca_compromise: "CA compromise",
    x509.ReasonFlags.affiliation_changed: "affiliation changed",
    x509.ReasonFlags.superseded: "superseded",
    x509.ReasonFlags.cessation_of_operation: "cessation of operation",
    x509.ReasonFlags.certificate_hold: "certificate on hold",
    x509.ReasonFlags.privilege_withdrawn: "privilege withdrawn",
    x509.ReasonFlags.aa_compromise: "AA compromise",
    x509.ReasonFlags.remove_from_crl: "removed from CRL",
}


def _when(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)


def _ext(cert: x509.Certificate, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _norm_name(name: x509.Name) -> tuple:
    return tuple((oid, " ".join(v.split()).casefold()) for oid, v in name_rdns(name))


def _revocation_problem(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    crls: Sequence[x509.CertificateRevocationList],
    now: datetime,
    revocation: Revocation,
    warnings: list[str],
    wanted: list[str],
) -> tuple[str | None, bool]:
    """(why the certificate fails, whether it was revoked) or (None, False)."""
    issuer_name = _norm_name(issuer.subject)
    issuer_text = shown_name(issuer.subject)
    good_and_current = found = False
    refused = ""  # why a CRL of this issuer was not used, for a strict / ifuri failure
    ku = _ext(issuer, x509.KeyUsage)
    for crl in crls:
        try:
            crl_issuer = _norm_name(crl.issuer)  # read when asked: load_crls refuses an unreadable one
        except ValueError:
            warnings.append("a CRL whose issuer name cannot be read is ignored")
            continue
        if crl_issuer != issuer_name:
            continue
        if ku is not None and not ku.crl_sign:  # RFC 5280 §6.3.3 (f), charon's x509_crl.c issued_by
            refused = f'; its CRL was ignored: the keyUsage of "{issuer_text}" lacks cRLSign'
            warnings.append(f'a CRL of "{issuer_text}" is ignored: that CA\'s keyUsage lacks cRLSign, '
                            "so it may not sign CRLs")
            continue
        facts = _crl_facts(crl)
        signed = facts.signed_by(crl, issuer)
        if not signed:
            warnings.append(f'a CRL naming "{issuer_text}" as issuer is not signed by that CA; ignored')
            continue
        try:
            delta = crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator) is not None
        except x509.ExtensionNotFound:
            delta = False
        except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):  # unreadable: not a CRL to lean on
            warnings.append(f'a CRL of "{issuer_text}" has unreadable extensions; ignored')
            continue
        if delta:
            # A delta CRL lists changes since a base CRL: what it revokes counts, but alone it does not
            # say a certificate is good (charon's get_better_crl skips it when looking for the base).
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number) \
                if cert.serial_number in _crl_facts(crl).serials else None
            reason = _ext_value(entry, x509.CRLReason) if entry is not None else None
            if entry is not None and (reason is None or reason.reason != x509.ReasonFlags.remove_from_crl):
                words = _REASON_WORDS.get(reason.reason, reason.reason.value) if reason is not None \
                    else "no reason given"
                return (f"certificate {describe(cert)} was revoked on {_when(entry.revocation_date_utc)} "
                        f'({words}), according to a delta CRL of "{issuer_text}"'), True
            refused = refused or f'; a delta CRL of "{issuer_text}" does not count without a current base CRL'
            continue
        scope = _scope_problem(crl, cert)
        if scope is not None:
            # what it lists is still revoked (below), but it does not say the certificate is good
            refused = refused or f'; a CRL of "{issuer_text}" {scope}'
        else:
            found = True
            current = True
            if crl.next_update_utc is None:  # RFC 5280 §5.1.2.5 MUST; charon: stale, always
                warnings.append(f'the CRL of "{issuer_text}" has no nextUpdate, so it is never current')
                current = False
            elif now > crl.next_update_utc:
                warnings.append(f'the CRL of "{issuer_text}" expired on {_when(crl.next_update_utc)} '
                                "(a newer one is due)")
                current = False
            elif now < crl.last_update_utc:
                warnings.append(f'the CRL of "{issuer_text}" is not valid before {_when(crl.last_update_utc)}')
                current = False
            good_and_current = good_and_current or current
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number) \
            if cert.serial_number in facts.serials else None
        if entry is not None:
            reason = _ext_value(entry, x509.CRLReason)
            words = _REASON_WORDS.get(reason.reason, reason.reason.value) if reason is not None else "no reason given"
            return (
                f"certificate {describe(cert)} was revoked on {_when(entry.revocation_date_utc)} "
                f'({words}), according to the CRL of "{issuer_text}"'
            ), True
    if not good_and_current:
        wanted += [u for u in crl_uris(cert) if u not in wanted]
    if good_and_current or revocation == "relaxed":
        return None, False
    if revocation == "strict":
        return f'no valid, current CRL of "{issuer_text}" to check {describe(cert)} (revocation = strict){refused}', False
    # ifuri, as strongSwan's revocation plugin: a distribution point without a CRL is FAILED, an
    # expired CRL STALE, and ifuri takes only GOOD or SKIPPED (nothing to look up)
    if found:
        return f'the CRL of "{issuer_text}" is out of date: {describe(cert)} cannot be checked (revocation = ifuri)', False
    if _has_crl_uri(cert):
        return (f'certificate {describe(cert)} names a CRL distribution point but no valid CRL of "{issuer_text}" '
                f"is loaded (revocation = ifuri){refused}"), False
    return None, False


def _scope_problem(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> str | None:
    """Why this CRL (extensions readable) cannot say `cert` is good: RFC 5280 §5.2 (a critical
    extension we cannot process), §6.3.3 (b) and (d) (issuingDistributionPoint: a partition for
    other distribution points, CA or end-entity certificates only, some reasons only). charon
    refuses such an unknown critical extension too; it does not read issuingDistributionPoint."""
    idp = None
    for ext in crl.extensions:
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            return f"has a critical extension we cannot process ({ext.oid.dotted_string}): not used to find it good"
        if isinstance(ext.value, x509.IssuingDistributionPoint):
            idp = ext.value
    if idp is None:
        return None
    try:
        bc = _ext(cert, x509.BasicConstraints)
        cdp = _ext(cert, x509.CRLDistributionPoints)
    except ValueError:
        return "has an issuingDistributionPoint and the certificate's extensions are unreadable"
    is_ca = bc is not None and bc.ca
    if idp.only_contains_user_certs and is_ca:
        return "covers end-entity certificates only (issuingDistributionPoint)"
    if idp.only_contains_ca_certs and not is_ca:
        return "covers CA certificates only (issuingDistributionPoint)"
    if idp.only_contains_attribute_certs:
        return "covers attribute certificates only (issuingDistributionPoint)"
    if idp.only_some_reasons:
        return "covers some revocation reasons only (issuingDistributionPoint)"
    names = {n for dp in cdp or () for n in dp.full_name or ()}
    if idp.full_name and names and not names & set(idp.full_name):
        return ("is the partition of " + ", ".join(str(getattr(n, "value", n)) for n in idp.full_name)
                + ", not of the certificate's distribution point (issuingDistributionPoint)")
    return None


def _has_crl_uri(cert: x509.Certificate) -> bool:
    cdp = _ext(cert, x509.CRLDistributionPoints)
    return any(isinstance(n, x509.UniformResourceIdentifier) for dp in cdp or () for n in dp.full_name or ())


MAX_CRL_URIS = 4
"""http:// distribution points taken from one certificate (charon tries each in turn)."""
MAX_URI_LENGTH = 1024


def crl_uris(cert: x509.Certificate) -> tuple[str, ...]:
    """The http:// URIs of a certificate's CRL distribution points, the ones we can fetch
    (LDAP and the CRL issuer field are not followed), at most MAX_CRL_URIS."""
    try:
        cdp = _ext(cert, x509.CRLDistributionPoints)
    except ValueError:  # a malformed extension: nothing to fetch
        return ()
    out: list[str] = []
    for dp in cdp or ():
        for n in dp.full_name or ():
            uri = n.value if isinstance(n, x509.UniformResourceIdentifier) else ""
            if (uri.lower().startswith("http://") and len(uri) <= MAX_URI_LENGTH and uri.isascii()
                    and uri.isprintable() and " " not in uri and uri not in out):
                out.append(uri)
    return tuple(out[:MAX_CRL_URIS])


class _CrlFacts:
    """What one CRL says that costs to learn: its signature check hashes the whole CRL (~0.1 s for
    100,000 entries) and a serial lookup scans it (~15 ms). Both ran on every IKE_AUTH, before
    the peer's AUTH signature is checked: any certificate our CA issued (the gateway's own, sent
    to all) made a peer without its key cost that much per message. strongSwan caches the same
    verdicts (cert_cache)."""

    def __init__(self, crl: x509.CertificateRevocationList) -> None:
        self.crl = crl
        self._signed: dict[bytes, bool] = {}

    @functools.cached_property
    def serials(self) -> frozenset[int]:
        # read only once its signature verified: a forged CRL of 4 MB costs no work per entry
        return frozenset(entry.serial_number for entry in self.crl)

    def signed_by(self, crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
        try:
            public_key = issuer.public_key()
            # the verdict depends on the key alone (two certificates of one CA key share it)
            key = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        except (TypeError, ValueError, UnsupportedAlgorithm):
            return False
        verdict = self._signed.get(key)
        if verdict is None:
            try:
                verdict = crl.is_signature_valid(public_key)
            except (TypeError, ValueError, UnsupportedAlgorithm):
                verdict = False
            if len(self._signed) >= _CRL_MEMO_MAX:  # issuers can be a peer's intermediates: bounded
                self._signed.clear()
            self._signed[key] = verdict
        return verdict


_CRL_MEMO_MAX = 64
_crl_memo: dict[int, _CrlFacts] = {}


def _crl_facts(crl: x509.CertificateRevocationList) -> _CrlFacts:
    # Keyed by the CRL object, kept alive in the entry so its id is not reused: the facts are of these
    # very bytes. (Keyed by the signature bytes, a CRL with a genuine one's signature pasted under
    # another list, loaded later, got the genuine verdict and serials.) A reload reads new objects.
    facts = _crl_memo.get(id(crl))
    if facts is None or facts.crl is not crl:
        # Drop the facts of CRLs only this memo still holds (a fetched CRL refreshed, a reload):
        # cryptography's CRLs take no weak reference, and each can be megabytes with its serials.
        for key in [k for k, f in _crl_memo.items() if sys.getrefcount(f.crl) <= _MEMO_ONLY_REFS]:
            del _crl_memo[key]
        if len(_crl_memo) >= _CRL_MEMO_MAX:
            _crl_memo.clear()
        facts = _crl_memo[id(crl)] = _CrlFacts(crl)
    return facts


class _Probe:
    def __init__(self) -> None:
        self.crl = object()


_probe = _Probe()
_MEMO_ONLY_REFS = sys.getrefcount(_probe.crl)
"""sys.getrefcount of an object held by one attribute only, read as _crl_facts reads it (2 on 3.11:
the attribute and the argument; measured, as interpreters borrow references differently)."""
del _probe


def _ext_value(entry: x509.RevokedCertificate, cls):
    try:
        return entry.extensions.get_extension_for_class(cls).value
    # ValueError, DuplicateExtension, UnsupportedGeneralNameType (an x400Address certificateIssuer): unreadable
    # entry extensions (read only on a hit): revoked all the same
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return None


# --- loading CRLs ----------------------------------------------------------------

_PEM_BEGIN, _PEM_END = b"-----BEGIN X509 CRL-----", b"-----END X509 CRL-----"


def _pem_blocks(data: bytes) -> list[bytes]:
    """The BEGIN..END X509 CRL blocks, in one pass: a regex scanned to the end from every BEGIN
    without an END (over an hour for a fetched 4 MB of them)."""
    out: list[bytes] = []
    i = 0
    while (begin := data.find(_PEM_BEGIN, i)) >= 0:
        end = data.find(_PEM_END, begin + len(_PEM_BEGIN))
        if end < 0:
            break
        i = end + len(_PEM_END)
        out.append(data[begin:i])
    return out


def load_crls(data: bytes, source: str = "CRL") -> list[x509.CertificateRevocationList]:
    """All CRLs in PEM data, or one DER CRL; one whose issuer name cannot be read is a PkiError."""
    if b"-----BEGIN" in data:
        blocks = _pem_blocks(data)
        if not blocks:
            raise PkiError(f"{source}: no PEM X509 CRL block in it")
        try:
            crls = [x509.load_pem_x509_crl(b) for b in blocks]
        except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
            raise PkiError(f"{source}: unreadable PEM CRL ({exc})") from None
    else:
        try:
            crls = [x509.load_der_x509_crl(data)]
        except (ValueError, x509.InvalidVersion):
            raise PkiError(f"{source}: neither a PEM nor a DER CRL") from None
    for crl in crls:
        try:
            # cryptography reads the issuer only when asked, and each IKE_AUTH asks (a fetched CRL comes
            # over plain http: an on-path attacker's bytes); its extensions are read after its signature
            format_name(crl.issuer)
        except ValueError as exc:
            raise PkiError(f"{source}: unreadable CRL issuer name ({exc})") from None
    return crls


def load_crl_files(paths: Sequence[str | os.PathLike]) -> list[x509.CertificateRevocationList]:
    """CRLs from files (EngineConfig.crls); a missing or unreadable file is a PkiError."""
    out: list[x509.CertificateRevocationList] = []
    for p in paths:
        out += load_crls(read_credential_file(p, "CRL"), os.fspath(p))
    return out
