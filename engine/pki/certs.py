"""Certificates for IKE: loading, identities, CERT and CERTREQ payload data, expiry.

* Identity matching follows strongSwan: an FQDN, RFC 822 or IP identity must
  appear in the subjectAltName (the CN is not looked at); a DN identity is
  compared with the subject (see engine.pki.dn); a key ID with the subject key
  identifier, the SHA-1 of the public key or of the subjectPublicKeyInfo, or of the certificate
  (charon's has_subject). A configured FQDN/e-mail pattern starting with ``*`` matches by
  suffix (``*.example.com``, ``*@example.com``); an IP identity may be a
  subnet (``192.0.2.0/24``). An identity the peer sent is no pattern: it must
  be one of the certificate's names as written (``wildcards=False``).
* CERTREQ (RFC 7296 §3.7) names each trusted CA by the SHA-1 of its
  subjectPublicKeyInfo; 20 bytes per CA.
* CERT (RFC 7296 §3.6) carries DER certificates with encoding 4.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from engine.crypto.digests import sha1
from engine.policy.model import Identity

from .dn import dn_matches, format_name
from .errors import PkiError

CERT_ENCODING_X509_SIGNATURE = 4
"""RFC 7296 §3.6 Certificate Encoding for a DER X.509 certificate."""
CERTREQ_HASH_SIZE = 20


# --- loading -------------------------------------------------------------------


def load_certificates(data: bytes, source: str = "certificate") -> list[x509.Certificate]:
    """All certificates in PEM data (one or more blocks), or one DER certificate."""
    if b"-----BEGIN" in data:
        if b"-----BEGIN CERTIFICATE-----" not in data and b"-----BEGIN X509 CERTIFICATE-----" not in data:
            raise PkiError(f"{source}: no PEM CERTIFICATE block in it")
        try:
            certs = x509.load_pem_x509_certificates(data)
        except (ValueError, x509.InvalidVersion) as exc:
            raise PkiError(f"{source}: unreadable PEM certificate ({exc})") from None
    else:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except (ValueError, x509.InvalidVersion):
            raise PkiError(f"{source}: neither a PEM nor a DER certificate") from None
    return certs


MAX_CREDENTIAL_FILE = 16 * 1024 * 1024
"""Certificate and CRL files are read up to this size (a large CA's CRL is a few MB)."""


def read_credential_file(path: str | os.PathLike, what: str) -> bytes:
    """A regular file's bytes, at most MAX_CREDENTIAL_FILE: a policy naming /dev/zero or a FIFO as a
    certificate would otherwise be read without end, or block, in check, doc, audit or the engine."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO: no wait for a writer
    except OSError as exc:
        raise PkiError(f"{name}: cannot read {what} ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PkiError(f"{name}: cannot read {what} (not a regular file)")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_CREDENTIAL_FILE + 1)
    except OSError as exc:
        raise PkiError(f"{name}: cannot read {what} ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CREDENTIAL_FILE:
        raise PkiError(f"{name}: cannot read {what} (larger than {MAX_CREDENTIAL_FILE // (1024 * 1024)} MB)")
    return data


def load_certificate_file(path: str | os.PathLike) -> list[x509.Certificate]:
    """Certificates from a PEM or DER file; a missing or unreadable file is a PkiError, and so is a
    certificate whose extensions or names cannot be read (they would raise wherever looked at)."""
    certs = load_certificates(read_credential_file(path, "certificate"), os.fspath(path))
    for cert in certs:
        problem = unreadable(cert)
        if problem:
            raise PkiError(f"{os.fspath(path)}: {problem}")
    return certs


def cert_payload_data(cert: x509.Certificate) -> bytes:
    """The data of a CERT payload (encoding 4): the DER certificate."""
    return cert.public_bytes(serialization.Encoding.DER)


def cert_from_payload(encoding: int, data: bytes) -> x509.Certificate:
    """The certificate in a received CERT payload; other encodings are a PkiError."""
    if encoding != CERT_ENCODING_X509_SIGNATURE:
        raise PkiError(f"CERT payload encoding {encoding} is not supported (only 4, X.509 certificate)")
    try:
        cert = x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion (a version beyond v3) is no ValueError
        raise PkiError(f"CERT payload: {len(data)} bytes that are not a DER certificate") from None
    problem = unreadable(cert)
    if problem:
        raise PkiError(f"CERT payload: {problem}")
    return cert


def unreadable(cert: x509.Certificate) -> str | None:
    """Why a certificate cannot be used, or None. cryptography reads extensions and names only
    when asked, so a peer's certificate with, say, a basicConstraints that is not a SEQUENCE
    loads and then raises ValueError wherever it is looked at; charon refuses it when parsing."""
    try:
        cert.extensions  # noqa: B018 (parses every extension)
        format_name(cert.subject)
        format_name(cert.issuer)
    # e.g. "ParseError { kind: EncodedDefault, location: [...] }"; DuplicateExtension (two of one OID,
    # RFC 5280 §4.2) and UnsupportedGeneralNameType (an x400Address or ediPartyName) are no ValueError
    except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        return f"the certificate (serial {cert.serial_number:#x}) has a malformed extension or name ({exc})"
    return None


def public_key_of(cert: x509.Certificate):
    """The certificate's public key; PkiError for a key algorithm we cannot read (a post-quantum
    one, say) or a malformed key."""
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise PkiError(f"the key of certificate {describe(cert)} is of a type we cannot use, or malformed") from None


SHOWN_NAME = 256
"""Characters of a certificate's subject or issuer a message shows."""


def shown_name(name: x509.Name) -> str:
    """A subject or issuer for a message, capped: a peer's certificates are read before it is
    authenticated, and their names can fill the IKE message (tens of KB into every event)."""
    text = format_name(name)
    return text if len(text) <= SHOWN_NAME else f"{text[:SHOWN_NAME]}... ({len(text) - SHOWN_NAME} more characters)"


def describe(cert: x509.Certificate) -> str:
    """``"O=Acme, CN=gw" (serial 0x1a2b)`` for messages."""
    return f'"{shown_name(cert.subject)}" (serial {cert.serial_number:#x})'


# --- CERTREQ -------------------------------------------------------------------


def certreq_hash(ca: x509.Certificate) -> bytes:
    """SHA-1 of the CA's DER subjectPublicKeyInfo (RFC 7296 §3.7)."""
    spki = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return sha1(spki)


def certreq_data(cas: Iterable[x509.Certificate]) -> bytes:
    """The data of a CERTREQ payload (encoding 4) naming these CAs."""
    return b"".join(certreq_hash(c) for c in cas)


def parse_certreq_data(data: bytes) -> list[bytes]:
    """Split CERTREQ data into 20-byte key hashes."""
    if len(data) % CERTREQ_HASH_SIZE:
        raise PkiError(f"CERTREQ data of {len(data)} bytes is not a list of 20-byte SHA-1 hashes")
    return [data[i : i + CERTREQ_HASH_SIZE] for i in range(0, len(data), CERTREQ_HASH_SIZE)]


def cas_by_certreq(hashes: Iterable[bytes], cas: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """The CAs (of ours) that the peer's CERTREQ hashes name, in the peer's order."""
    by_hash = {certreq_hash(c): c for c in cas}
    out: list[x509.Certificate] = []
    for h in hashes:
        c = by_hash.get(bytes(h))
        if c is not None and c not in out:
            out.append(c)
    return out


# --- identities ------------------------------------------------------------------


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _name_matches(pattern: str, value: str, wildcards: bool = True) -> bool:
    p, v = pattern.rstrip(".").casefold(), value.rstrip(".").casefold()
    if wildcards and p.startswith("*") and len(p) > 1:
        return v.endswith(p[1:]) and len(v) > len(p) - 1
    return p == v


def _key_id_bytes(text: str) -> bytes | None:
    t = text.strip().removeprefix("@").removeprefix("#").replace(":", "").removeprefix("0x")
    try:
        return bytes.fromhex(t)
    except ValueError:
        return None


def cert_matches_identity(cert: x509.Certificate, identity: Identity, *, wildcards: bool = True) -> bool:
    """Does the certificate vouch for this IKE identity? (rules in the module doc)

    ``wildcards=False`` for an identity the peer sent: it is a claim, not a pattern, and must be a
    subjectAltName as written (RFC 4945 §3.1). charon's has_subject matches the received ID as a
    pattern, so a peer holding gw.example.com's certificate could be recorded as ``*.example.com``
    (its remote ID, its lease, uniqueness), a name its certificate does not carry. A DN the peer
    sends holds no wildcard anyway (a ``*`` value reads back as the literal ``\2A``)."""
    kind = identity.kind
    if kind == "any":
        return True
    if kind == "dn":
        try:
            return dn_matches(identity.value, cert.subject)
        except PkiError:
            return False
    if kind == "key_id":
        want = _key_id_bytes(identity.value)
        if not want:
            return False
        try:
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            ski = None
        try:
            key = public_key_of(cert)
            computed = x509.SubjectKeyIdentifier.from_public_key(key).digest
            # charon's has_subject also takes the SHA-1 of the whole subjectPublicKeyInfo (`pki --keyid`
            # prints it) and of the certificate's encoding: a charon peer configured so is the same peer
            spki = sha1(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
        except (PkiError, ValueError, TypeError):  # a key type we cannot hash (nor verify with)
            computed = spki = None
        if len(want) == 20 and sha1(cert.public_bytes(serialization.Encoding.DER)) == want:
            return True
        return want in (ski, computed, spki)
    sans = _sans(cert)
    if sans is None:
        return False
    if kind == "fqdn":
        return any(_name_matches(identity.value, n, wildcards) for n in sans.get_values_for_type(x509.DNSName))
    if kind == "rfc822":
        return any(_name_matches(identity.value, n, wildcards) for n in sans.get_values_for_type(x509.RFC822Name))
    if kind in ("ipv4", "ipv6"):
        try:
            if "/" in identity.value:
                net = ipaddress.ip_network(identity.value, strict=False)
                return any(a in net for a in sans.get_values_for_type(x509.IPAddress) if a.version == net.version)
            addr = ipaddress.ip_address(identity.value)
        except ValueError:
            return False
        return any(a == addr for a in sans.get_values_for_type(x509.IPAddress))
    return False


def subject_der(cert: x509.Certificate) -> bytes:
    """The subject Name as the certificate encodes it (our ID_DER_ASN1_DN when none is configured)."""
    return cert.subject.public_bytes()


def identity_from_cert(cert: x509.Certificate) -> Identity:
    """The identity to send when none is configured: the subject DN (as strongSwan does)."""
    return Identity(kind="dn", value=format_name(cert.subject))


def cert_identities(cert: x509.Certificate) -> list[Identity]:
    """Every identity the certificate vouches for: its subject DN, then its SANs."""
    out = [identity_from_cert(cert)]
    sans = _sans(cert)
    if sans is not None:
        out += [Identity("fqdn", n) for n in sans.get_values_for_type(x509.DNSName)]
        out += [Identity("rfc822", n) for n in sans.get_values_for_type(x509.RFC822Name)]
        for a in sans.get_values_for_type(x509.IPAddress):
            if isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                out.append(Identity("ipv4" if a.version == 4 else "ipv6", str(a)))
    return out


def san_strings(cert: x509.Certificate) -> list[str]:
    """SANs as ``DNS:x``, ``email:x``, ``IP:x`` (the form `pki issue --san` takes)."""
    sans = _sans(cert)
    if sans is None:
        return []
    out = [f"DNS:{n}" for n in sans.get_values_for_type(x509.DNSName)]
    out += [f"email:{n}" for n in sans.get_values_for_type(x509.RFC822Name)]
    out += [f"IP:{a}" for a in sans.get_values_for_type(x509.IPAddress)]
    return out


# --- expiry ----------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiryWarning:
    """A certificate that expires soon (or already has), for the dashboard."""

    subject: str
    """Subject DN, strongSwan style."""
    serial: int
    not_after: datetime
    """End of validity (UTC)."""
    days_left: float
    """Days until not_after; negative once expired."""

    @property
    def expired(self) -> bool:
        return self.days_left < 0

    def __str__(self) -> str:
        when = self.not_after.strftime("%Y-%m-%d %H:%M UTC")
        if self.expired:
            return f"certificate {self.subject} expired on {when}"
        return f"certificate {self.subject} expires in {int(self.days_left)} days ({when})"


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)


def expiring(
    certs: Sequence[x509.Certificate], now: datetime, within: timedelta = timedelta(days=30)
) -> list[ExpiryWarning]:
    """Certificates whose validity ends before now + within (expired ones
    included), soonest first. A naive `now` is taken as UTC."""
    now = _utc(now)
    out = []
    for c in certs:
        end = c.not_valid_after_utc
        if end - now <= within:
            out.append(ExpiryWarning(format_name(c.subject), c.serial_number, end, (end - now) / timedelta(days=1)))
    return sorted(out, key=lambda w: w.not_after)
