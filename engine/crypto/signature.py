"""IKEv2 signature authentication: RFC 7427 (method 14) and the RFC 7296 classics.

RFC 7427 AUTH data is ``1-byte length | AlgorithmIdentifier (DER) | signature``;
the AlgorithmIdentifier names the whole scheme (padding and hash), so a peer
may sign with any algorithm PKIX knows. We speak:

* RSASSA-PSS with SHA-256/384/512 (MGF1 over the same hash, salt = hash length)
* RSASSA-PKCS1-v1_5 with SHA-256/384/512
* ECDSA with SHA-256/384/512 (DER signatures; P-256 signs with SHA-256,
  P-384 with SHA-384, P-521 with SHA-512)
* Ed25519 and Ed448 (the "identity" hash: the octets are signed as they are)

Which hashes the peer accepts comes from its SIGNATURE_HASH_ALGORITHMS notify
(RFC 7427 §4). A peer that sent none gets the RFC 7296 methods: RSA_SIG (1,
PKCS#1 v1.5 over SHA-1), ECDSA_256/384/521 (9/10/11, raw r|s over the
curve's hash, RFC 4754).

Sans-IO: bytes in, bytes out. Private keys come from PEM bytes the caller
read (`engine.pki.keys` reads files and enforces their mode).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal, Union

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from engine.secret import Secret

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey]
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey]
RsaPadding = Literal["pss", "pkcs1"]


class SignatureError(ValueError):
    """AUTH data we cannot use: malformed, an algorithm we do not accept, or one
    that does not fit the key. The message says which, in plain words."""


class UnsupportedSignatureAlgorithm(SignatureError):
    """An AlgorithmIdentifier (or auth method) we do not implement or accept."""


class PrivateKeyError(ValueError):
    """A private key that cannot be loaded: wrong format, wrong or missing passphrase,
    or a key type IKE signatures cannot use."""


class IkeAuthMethod(enum.IntEnum):
    """IKEv2 Authentication Method (IANA registry, RFC 7296 §3.8, RFC 4754, RFC 7427)."""

    RSA_SIG = 1
    SHARED_KEY_MIC = 2
    DSS_SIG = 3
    ECDSA_256 = 9
    ECDSA_384 = 10
    ECDSA_521 = 11
    GSPAM = 12
    NULL_AUTH = 13
    DIGITAL_SIGNATURE = 14


class HashAlgorithmId(enum.IntEnum):
    """IKEv2 Hash Algorithms for SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4, RFC 8420)."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5


class SignatureScheme(enum.Enum):
    """A signature scheme usable in RFC 7427 AUTH payloads."""

    RSA_PSS_SHA256 = "rsa-pss-sha256"
    RSA_PSS_SHA384 = "rsa-pss-sha384"
    RSA_PSS_SHA512 = "rsa-pss-sha512"
    RSA_PKCS1_SHA256 = "rsa-pkcs1-sha256"
    RSA_PKCS1_SHA384 = "rsa-pkcs1-sha384"
    RSA_PKCS1_SHA512 = "rsa-pkcs1-sha512"
    ECDSA_SHA256 = "ecdsa-sha256"
    """ecdsa-with-SHA256 (what a P-256 key signs with)."""
    ECDSA_SHA384 = "ecdsa-sha384"
    """ecdsa-with-SHA384 (what a P-384 key signs with)."""
    ECDSA_SHA512 = "ecdsa-sha512"
    """ecdsa-with-SHA512 (what a P-521 key signs with)."""
    ED25519 = "ed25519"
    ED448 = "ed448"

    @property
    def algorithm_identifier(self) -> bytes:
        """The DER AlgorithmIdentifier we send for this scheme."""
        return ALGORITHM_IDENTIFIERS[self]

    @property
    def hash_algorithm(self) -> HashAlgorithmId:
        """The SIGNATURE_HASH_ALGORITHMS value this scheme needs the peer to accept."""
        return _SCHEME_HASH_ID[self]

    @property
    def key_kind(self) -> str:
        """``rsa``, ``ecdsa``, ``ed25519`` or ``ed448``."""
        return _SCHEME_KEY_KIND[self]


# DER AlgorithmIdentifiers as we send them. PKCS#1 v1.5 and ECDSA are byte for
# byte RFC 7427 appendix A. For RSASSA-PSS we send the RFC 4055 DER form that
# strongSwan and OpenSSL write (hash AlgorithmIdentifiers with NULL parameters,
# trailerField omitted because DER leaves out DEFAULT values); RFC 7427 A.4.3
# also encodes trailerField=1, which parse_algorithm_identifier accepts.
# Ed25519/Ed448 are RFC 8410 (and RFC 8420 for IKEv2).
ALGORITHM_IDENTIFIERS: dict[SignatureScheme, bytes] = {
    SignatureScheme.RSA_PKCS1_SHA256: bytes.fromhex("300d06092a864886f70d01010b0500"),
    SignatureScheme.RSA_PKCS1_SHA384: bytes.fromhex("300d06092a864886f70d01010c0500"),
    SignatureScheme.RSA_PKCS1_SHA512: bytes.fromhex("300d06092a864886f70d01010d0500"),
    SignatureScheme.RSA_PSS_SHA256: bytes.fromhex(
        "304106092a864886f70d01010a3034"
        "a00f300d06096086480165030402010500"
        "a11c301a06092a864886f70d010108300d06096086480165030402010500"
        "a203020120"
    ),
    SignatureScheme.RSA_PSS_SHA384: bytes.fromhex(
        "304106092a864886f70d01010a3034"
        "a00f300d06096086480165030402020500"
        "a11c301a06092a864886f70d010108300d06096086480165030402020500"
        "a203020130"
    ),
    SignatureScheme.RSA_PSS_SHA512: bytes.fromhex(
        "304106092a864886f70d01010a3034"
        "a00f300d06096086480165030402030500"
        "a11c301a06092a864886f70d010108300d06096086480165030402030500"
        "a203020140"
    ),
    SignatureScheme.ECDSA_SHA256: bytes.fromhex("300a06082a8648ce3d040302"),
    SignatureScheme.ECDSA_SHA384: bytes.fromhex("300a06082a8648ce3d040303"),
    SignatureScheme.ECDSA_SHA512: bytes.fromhex("300a06082a8648ce3d040304"),
    SignatureScheme.ED25519: bytes.fromhex("300506032b6570"),
    SignatureScheme.ED448: bytes.fromhex("300506032b6571"),
}

_S = SignatureScheme
_SCHEME_HASH_ID: dict[SignatureScheme, HashAlgorithmId] = {
    _S.RSA_PSS_SHA256: HashAlgorithmId.SHA2_256,
    _S.RSA_PSS_SHA384: HashAlgorithmId.SHA2_384,
    _S.RSA_PSS_SHA512: HashAlgorithmId.SHA2_512,
    _S.RSA_PKCS1_SHA256: HashAlgorithmId.SHA2_256,
    _S.RSA_PKCS1_SHA384: HashAlgorithmId.SHA2_384,
    _S.RSA_PKCS1_SHA512: HashAlgorithmId.SHA2_512,
    _S.ECDSA_SHA256: HashAlgorithmId.SHA2_256,
    _S.ECDSA_SHA384: HashAlgorithmId.SHA2_384,
    _S.ECDSA_SHA512: HashAlgorithmId.SHA2_512,
    _S.ED25519: HashAlgorithmId.IDENTITY,
    _S.ED448: HashAlgorithmId.IDENTITY,
}
_SCHEME_KEY_KIND: dict[SignatureScheme, str] = {
    s: ("rsa" if s.value.startswith("rsa") else "ecdsa" if s.value.startswith("ecdsa") else s.value)
    for s in SignatureScheme
}
_HASHES: dict[HashAlgorithmId, type[hashes.HashAlgorithm]] = {
    HashAlgorithmId.SHA1: hashes.SHA1,
    HashAlgorithmId.SHA2_256: hashes.SHA256,
    HashAlgorithmId.SHA2_384: hashes.SHA384,
    HashAlgorithmId.SHA2_512: hashes.SHA512,
}
_HASH_LEN = {HashAlgorithmId.SHA2_256: 32, HashAlgorithmId.SHA2_384: 48, HashAlgorithmId.SHA2_512: 64}

SUPPORTED_HASH_ALGORITHMS: tuple[HashAlgorithmId, ...] = (
    HashAlgorithmId.SHA2_256,
    HashAlgorithmId.SHA2_384,
    HashAlgorithmId.SHA2_512,
    HashAlgorithmId.IDENTITY,
)
"""What we announce in SIGNATURE_HASH_ALGORITHMS (SHA-1 is not accepted, RFC 8247 §3.2)."""

# Preference when we sign: the first scheme the peer accepts wins. SHA-256
# first for RSA (what every peer verifies; the key, not the hash, bounds
# strength). ECDSA is tied to its curve's hash (RFC 5480 §4).
_RSA_PREFERENCE: dict[str, tuple[SignatureScheme, ...]] = {
    "pss": (_S.RSA_PSS_SHA256, _S.RSA_PSS_SHA384, _S.RSA_PSS_SHA512),
    "pkcs1": (_S.RSA_PKCS1_SHA256, _S.RSA_PKCS1_SHA384, _S.RSA_PKCS1_SHA512),
}
_CURVE_SCHEME = {"secp256r1": _S.ECDSA_SHA256, "secp384r1": _S.ECDSA_SHA384, "secp521r1": _S.ECDSA_SHA512}
# RFC 4754: the classic ECDSA methods fix curve, hash and the r|s width.
_CLASSIC_ECDSA = {
    "secp256r1": (IkeAuthMethod.ECDSA_256, HashAlgorithmId.SHA2_256, 32),
    "secp384r1": (IkeAuthMethod.ECDSA_384, HashAlgorithmId.SHA2_384, 48),
    "secp521r1": (IkeAuthMethod.ECDSA_521, HashAlgorithmId.SHA2_512, 66),
}
_CLASSIC_ECDSA_BY_METHOD = {m: (curve, h, n) for curve, (m, h, n) in _CLASSIC_ECDSA.items()}


# --- SIGNATURE_HASH_ALGORITHMS -------------------------------------------------


def hash_algorithms_notify_data(schemes: Iterable[SignatureScheme | HashAlgorithmId | int] = SUPPORTED_HASH_ALGORITHMS) -> bytes:
    """Notification data for SIGNATURE_HASH_ALGORITHMS: one 2-byte hash ID per
    distinct hash the given schemes (or hash IDs) need, in first-seen order."""
    seen: list[int] = []
    for item in schemes:
        hid = int(item.hash_algorithm) if isinstance(item, SignatureScheme) else int(item)
        if not 0 <= hid <= 0xFFFF:
            raise ValueError(f"hash algorithm ID {hid} does not fit in 16 bits")
        if hid not in seen:
            seen.append(hid)
    return b"".join(h.to_bytes(2, "big") for h in seen)


def parse_hash_algorithms(data: bytes) -> frozenset[int]:
    """The hash IDs of a received SIGNATURE_HASH_ALGORITHMS notify (unknown IDs kept)."""
    if len(data) % 2:
        raise SignatureError(f"SIGNATURE_HASH_ALGORITHMS data has an odd length ({len(data)} bytes)")
    return frozenset(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


# --- a minimal DER reader (enough for AlgorithmIdentifier) ---------------------


def _tlv(data: bytes, pos: int, where: str) -> tuple[int, int, int]:
    """(der_type, value start, value end) of the DER element at pos."""
    if pos + 2 > len(data):
        raise SignatureError(f"{where}: truncated DER element")
    der_type = data[pos]
    if der_type & 0x1F == 0x1F:
        raise SignatureError(f"{where}: multi-byte DER tags are not expected here")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise SignatureError(f"{where}: bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise SignatureError(f"{where}: DER element runs past the end ({length} bytes announced)")
    return der_type, pos, pos + length


def _oid_text(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise SignatureError("malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for b in body:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


_SEQUENCE, _OID, _NULL, _INTEGER = 0x30, 0x06, 0x05, 0x02


def _algorithm(der: bytes, where: str) -> tuple[str, bytes | None, int]:
    """Parse AlgorithmIdentifier at the start of der: (OID text, params DER or None, end)."""
    der_type, start, end = _tlv(der, 0, where)
    if der_type != _SEQUENCE:
        raise SignatureError(f"{where}: AlgorithmIdentifier is not a SEQUENCE")
    der_type, ostart, oend = _tlv(der, start, where)
    if der_type != _OID:
        raise SignatureError(f"{where}: AlgorithmIdentifier does not start with an OID")
    oid = _oid_text(der[ostart:oend])
    params = None
    if oend < end:
        _, _, pend = _tlv(der, oend, where)
        if pend != end:
            raise SignatureError(f"{where}: trailing data inside AlgorithmIdentifier")
        params = der[oend:end]
    return oid, params, end


_OID_SCHEME = {
    "1.2.840.113549.1.1.11": _S.RSA_PKCS1_SHA256,
    "1.2.840.113549.1.1.12": _S.RSA_PKCS1_SHA384,
    "1.2.840.113549.1.1.13": _S.RSA_PKCS1_SHA512,
    "1.2.840.10045.4.3.2": _S.ECDSA_SHA256,
    "1.2.840.10045.4.3.3": _S.ECDSA_SHA384,
    "1.2.840.10045.4.3.4": _S.ECDSA_SHA512,
    "1.3.101.112": _S.ED25519,
    "1.3.101.113": _S.ED448,
}
_OID_RSA_PSS = "1.2.840.113549.1.1.10"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_HASH = {
    "1.3.14.3.2.26": HashAlgorithmId.SHA1,
    "2.16.840.1.101.3.4.2.1": HashAlgorithmId.SHA2_256,
    "2.16.840.1.101.3.4.2.2": HashAlgorithmId.SHA2_384,
    "2.16.840.1.101.3.4.2.3": HashAlgorithmId.SHA2_512,
}
_PSS_SCHEME = {
    HashAlgorithmId.SHA2_256: _S.RSA_PSS_SHA256,
    HashAlgorithmId.SHA2_384: _S.RSA_PSS_SHA384,
    HashAlgorithmId.SHA2_512: _S.RSA_PSS_SHA512,
}
_SHA1_NAMES = {
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1",
    "1.2.840.10040.4.3": "dsa-with-SHA1",
}
_OTHER_NAMES = {
    "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
    "1.2.840.113549.1.1.14": "sha224WithRSAEncryption",
    "1.2.840.10045.4.3.1": "ecdsa-with-SHA224",
    "2.16.840.1.101.3.4.3.2": "dsa-with-SHA256",
}


@dataclass(frozen=True)
class SignatureAlgorithm:
    """A parsed RFC 7427 AlgorithmIdentifier."""

    scheme: SignatureScheme
    salt_length: int | None = None
    """RSASSA-PSS only: the salt length the signer declared (we verify with it)."""


def _hash_from_algorithm(der: bytes, where: str) -> HashAlgorithmId:
    oid, params, end = _algorithm(der, where)
    if end != len(der):
        raise SignatureError(f"{where}: trailing data after the hash AlgorithmIdentifier")
    if params not in (None, b"\x05\x00"):
        raise SignatureError(f"{where}: unexpected hash parameters")
    if oid not in _OID_HASH:
        raise UnsupportedSignatureAlgorithm(f"{where}: hash algorithm {oid} is not supported")
    return _OID_HASH[oid]


def _explicit(der: bytes, where: str) -> bytes:
    """The single element inside an EXPLICIT [n] wrapper."""
    _, start, end = _tlv(der, 0, where)
    return der[start:end]


def _parse_pss_params(params: bytes | None) -> tuple[HashAlgorithmId, HashAlgorithmId, int]:
    hash_id, mgf_hash, salt = HashAlgorithmId.SHA1, HashAlgorithmId.SHA1, 20  # RFC 4055 defaults
    if params is None or params == b"\x05\x00":
        return hash_id, mgf_hash, salt
    der_type, start, end = _tlv(params, 0, "RSASSA-PSS parameters")
    if der_type != _SEQUENCE or end != len(params):
        raise SignatureError("RSASSA-PSS parameters are not one SEQUENCE")
    pos, last_type = start, -1
    while pos < end:
        der_type, vstart, vend = _tlv(params, pos, "RSASSA-PSS parameters")
        if der_type not in (0xA0, 0xA1, 0xA2, 0xA3) or der_type <= last_type:
            raise SignatureError(f"RSASSA-PSS parameters: unexpected field der_type 0x{der_type:02x}")
        last_type = der_type
        inner = params[vstart:vend]
        if der_type == 0xA0:
            hash_id = _hash_from_algorithm(inner, "RSASSA-PSS hashAlgorithm")
        elif der_type == 0xA1:
            oid, mgf_params, mend = _algorithm(inner, "RSASSA-PSS maskGenAlgorithm")
            if oid != _OID_MGF1 or mgf_params is None or mend != len(inner):
                raise UnsupportedSignatureAlgorithm(f"RSASSA-PSS mask generation {oid} is not MGF1")
            mgf_hash = _hash_from_algorithm(mgf_params, "RSASSA-PSS MGF1 hash")
        else:
            itag, istart, iend = _tlv(inner, 0, "RSASSA-PSS integer")
            if itag != _INTEGER or iend != len(inner) or iend - istart > 4 or inner[istart] & 0x80:
                raise SignatureError("RSASSA-PSS parameters: bad INTEGER")
            value = int.from_bytes(inner[istart:iend], "big")
            if der_type == 0xA2:
                salt = value
            elif value != 1:
                raise UnsupportedSignatureAlgorithm(f"RSASSA-PSS trailerField {value} (only 1 exists)")
        pos = vend
    return hash_id, mgf_hash, salt


def parse_algorithm_identifier(der: bytes) -> SignatureAlgorithm:
    """The scheme named by a DER AlgorithmIdentifier from RFC 7427 AUTH data.

    Raises UnsupportedSignatureAlgorithm (naming the algorithm) for anything we
    do not verify, SHA-1 based schemes included, and SignatureError for bad DER.
    """
    oid, params, end = _algorithm(der, "AUTH AlgorithmIdentifier")
    if end != len(der):
        raise SignatureError("AUTH AlgorithmIdentifier: trailing data after it")
    if oid in _OID_SCHEME:
        scheme = _OID_SCHEME[oid]
        # PKCS#1 carries NULL parameters; ECDSA and EdDSA carry none. Accept
        # either spelling (peers differ) but nothing else.
        if params not in (None, b"\x05\x00"):
            raise SignatureError(f"AUTH AlgorithmIdentifier: unexpected parameters for {scheme.value}")
        return SignatureAlgorithm(scheme)
    if oid == _OID_RSA_PSS:
        hash_id, mgf_hash, salt = _parse_pss_params(params)
        if hash_id not in _PSS_SCHEME:
            raise UnsupportedSignatureAlgorithm("RSASSA-PSS with SHA-1 is not accepted (RFC 8247)")
        if mgf_hash != hash_id:
            raise UnsupportedSignatureAlgorithm(
                f"RSASSA-PSS with MGF1-{mgf_hash.name} over a {hash_id.name} signature is not supported"
            )
        return SignatureAlgorithm(_PSS_SCHEME[hash_id], salt)
    if oid in _SHA1_NAMES:
        raise UnsupportedSignatureAlgorithm(f"{_SHA1_NAMES[oid]} ({oid}): SHA-1 signatures are not accepted (RFC 8247)")
    name = _OTHER_NAMES.get(oid, "unknown algorithm")
    raise UnsupportedSignatureAlgorithm(f"signature algorithm {oid} ({name}) is not supported")


def build_auth_data(scheme: SignatureScheme, signature: bytes) -> bytes:
    """RFC 7427 §3 AUTH data: length of the AlgorithmIdentifier, the identifier, the signature."""
    alg = ALGORITHM_IDENTIFIERS[scheme]
    return bytes((len(alg),)) + alg + signature


def parse_auth_data(auth_data: bytes) -> tuple[SignatureAlgorithm, bytes]:
    """Split RFC 7427 AUTH data into (algorithm, signature)."""
    if not auth_data:
        raise SignatureError("AUTH data is empty")
    n = auth_data[0]
    if n == 0 or 1 + n >= len(auth_data):
        raise SignatureError(f"AUTH data: AlgorithmIdentifier length {n} does not fit {len(auth_data)} bytes of data")
    return parse_algorithm_identifier(auth_data[1 : 1 + n]), auth_data[1 + n :]


# --- keys --------------------------------------------------------------------


def key_description(key: PrivateKey | PublicKey) -> str:
    """``RSA 3072``, ``ECDSA P-256``, ``Ed25519``: for logs and the console."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"RSA {key.key_size}"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return {"secp256r1": "ECDSA P-256", "secp384r1": "ECDSA P-384", "secp521r1": "ECDSA P-521"}.get(
            key.curve.name, f"ECDSA {key.curve.name}"
        )
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "Ed25519"
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return "Ed448"
    return type(key).__name__


def _check_usable(key: object, where: str) -> None:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise PrivateKeyError(f"{where}: RSA key of {key.key_size} bits is too short (2048 at least)")
        return
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _CURVE_SCHEME:
            raise PrivateKeyError(f"{where}: curve {key.curve.name} is not supported (P-256, P-384, P-521)")
        return
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return
    raise PrivateKeyError(f"{where}: {type(key).__name__} keys cannot sign IKE AUTH (RSA, ECDSA, Ed25519, Ed448)")


_PEM_PRIVATE_KEY = re.compile(
    rb"-----BEGIN ((?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY)-----\r?\n.+?-----END \1-----", re.S
)


def load_private_key(data: bytes, passphrase: Secret | None = None, *, source: str = "private key") -> PrivateKey:
    """Load a private key from PEM (PKCS#8 or traditional RSA/EC, encrypted or
    not) or DER bytes. `source` (e.g. the file name) prefixes error messages.

    A passphrase given for an unencrypted key is ignored (strongSwan does the
    same); a missing or wrong one for an encrypted key is a PrivateKeyError.
    """
    password = passphrase.reveal() if passphrase is not None else None
    if b"-----BEGIN" in data:
        # The key block may follow other text or blocks (a certificate, openssl's "Bag Attributes").
        block = _PEM_PRIVATE_KEY.search(data)
        if block is None:
            header = data[data.index(b"-----BEGIN") :].split(b"\n", 1)[0].strip()
            what = header.decode("ascii", "replace").strip("- ").removeprefix("BEGIN ").lower()
            if "openssh private key" in what:
                raise PrivateKeyError(f"{source}: OpenSSH key format; convert it with `ssh-keygen -p -m PKCS8 -f FILE`")
            raise PrivateKeyError(f"{source}: contains a {what}, not a private key")
        data = block.group(0)
        encrypted = b"ENCRYPTED" in block.group(1) or b"Proc-Type: 4,ENCRYPTED" in data[:400]
        loader = serialization.load_pem_private_key
    else:
        encrypted = None  # DER: cannot tell before trying
        loader = serialization.load_der_private_key
    if encrypted and not password:
        raise PrivateKeyError(f"{source}: the key is encrypted and no passphrase was given")
    if encrypted is False:
        password = None
    try:
        key = loader(data, password=password)
    except TypeError as exc:  # DER only: encryption state was unknown before trying
        if password is None:
            raise PrivateKeyError(f"{source}: the key is encrypted and no passphrase was given") from exc
        try:
            key = loader(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc2:
            raise PrivateKeyError(f"{source}: not a readable private key") from exc2
    except ValueError as exc:
        if encrypted:
            raise PrivateKeyError(f"{source}: wrong passphrase (or a damaged key file)") from None
        raise PrivateKeyError(f"{source}: not a readable private key (PEM or DER, PKCS#8 or traditional)") from exc
    except UnsupportedAlgorithm as exc:
        raise PrivateKeyError(f"{source}: unsupported key or encryption algorithm ({exc})") from None
    _check_usable(key, source)
    return key  # type: ignore[return-value]


# --- signing -----------------------------------------------------------------


def schemes_for_key(key: PrivateKey | PublicKey, rsa_padding: RsaPadding = "pss") -> tuple[SignatureScheme, ...]:
    """The RFC 7427 schemes this key can sign with, most preferred first."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return _RSA_PREFERENCE[rsa_padding]
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        scheme = _CURVE_SCHEME.get(key.curve.name)
        return (scheme,) if scheme else ()
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return (_S.ED25519,)
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return (_S.ED448,)
    return ()


def choose_scheme(
    key: PrivateKey, peer_hash_algorithms: Collection[int] | None, rsa_padding: RsaPadding = "pss"
) -> SignatureScheme | None:
    """The RFC 7427 scheme to sign with, or None when the peer announced no hash
    this key can use (the caller then falls back to a classic method)."""
    if not peer_hash_algorithms:
        return None
    for scheme in schemes_for_key(key, rsa_padding):
        if int(scheme.hash_algorithm) in peer_hash_algorithms:
            return scheme
    return None


def sign_with_scheme(key: PrivateKey, scheme: SignatureScheme, octets: bytes) -> bytes:
    """The raw signature (DER for ECDSA) of octets under an RFC 7427 scheme."""
    kind = scheme.key_kind
    if kind == "rsa" and isinstance(key, rsa.RSAPrivateKey):
        h = _HASHES[scheme.hash_algorithm]()
        if scheme.value.startswith("rsa-pss"):
            pad = padding.PSS(mgf=padding.MGF1(h), salt_length=_HASH_LEN[scheme.hash_algorithm])
            return key.sign(octets, pad, h)
        return key.sign(octets, padding.PKCS1v15(), h)
    if kind == "ecdsa" and isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(octets, ec.ECDSA(_HASHES[scheme.hash_algorithm]()))
    if kind == "ed25519" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(octets)
    if kind == "ed448" and isinstance(key, ed448.Ed448PrivateKey):
        return key.sign(octets)
    raise SignatureError(f"this {key_description(key)} key cannot sign with {scheme.value}")


def sign_auth(
    private_key: PrivateKey,
    octets: bytes,
    peer_hash_algorithms: Collection[int] | None,
    *,
    rsa_padding: RsaPadding = "pss",
) -> tuple[int, bytes]:
    """Sign the RFC 7296 §2.15 octets for an AUTH payload: (auth method, auth data).

    With the peer's SIGNATURE_HASH_ALGORITHMS (non-empty) we use RFC 7427
    (method 14) and a scheme whose hash the peer accepts. Otherwise, or when
    no announced hash fits the key, the RFC 7296 method of the key type:
    RSA_SIG (1) or ECDSA_256/384/521 (9/10/11). EdDSA has no classic method,
    so an Ed25519/Ed448 key without a usable announcement raises SignatureError.
    `rsa_padding` picks RSASSA-PSS (default, RFC 8247) or PKCS#1 v1.5 for RSA keys.
    """
    scheme = choose_scheme(private_key, peer_hash_algorithms, rsa_padding)
    if scheme is not None:
        return IkeAuthMethod.DIGITAL_SIGNATURE, build_auth_data(scheme, sign_with_scheme(private_key, scheme, octets))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return IkeAuthMethod.RSA_SIG, private_key.sign(octets, padding.PKCS1v15(), hashes.SHA1())
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and private_key.curve.name in _CLASSIC_ECDSA:
        method, hash_id, width = _CLASSIC_ECDSA[private_key.curve.name]
        r, s = decode_dss_signature(private_key.sign(octets, ec.ECDSA(_HASHES[hash_id]())))
        return method, r.to_bytes(width, "big") + s.to_bytes(width, "big")
    why = "the peer did not send SIGNATURE_HASH_ALGORITHMS" if not peer_hash_algorithms else (
        "the peer's SIGNATURE_HASH_ALGORITHMS lacks the hash it needs")
    raise SignatureError(f"this {key_description(private_key)} key can only sign with RFC 7427, and {why}")


# --- verifying ---------------------------------------------------------------


def _verify_scheme(key: PublicKey, alg: SignatureAlgorithm, signature: bytes, octets: bytes) -> bool:
    scheme, kind = alg.scheme, alg.scheme.key_kind
    try:
        if kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
            h = _HASHES[scheme.hash_algorithm]()
            if scheme.value.startswith("rsa-pss"):
                salt = _HASH_LEN[scheme.hash_algorithm] if alg.salt_length is None else alg.salt_length
                key.verify(signature, octets, padding.PSS(mgf=padding.MGF1(h), salt_length=salt), h)
            else:
                key.verify(signature, octets, padding.PKCS1v15(), h)
        elif kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, octets, ec.ECDSA(_HASHES[scheme.hash_algorithm]()))
        elif kind == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, octets)
        elif kind == "ed448" and isinstance(key, ed448.Ed448PublicKey):
            key.verify(signature, octets)
        else:
            raise SignatureError(f"AUTH is signed with {scheme.value}, but the peer's key is {key_description(key)}")
    except InvalidSignature:
        return False
    except ValueError as exc:  # e.g. a declared PSS salt that cannot fit this key size
        raise SignatureError(f"AUTH signature with {scheme.value} cannot be checked: {exc}") from None
    return True


def verify_auth(
    public_key: PublicKey,
    method: int,
    auth_data: bytes,
    octets: bytes,
    *,
    allowed_hashes: Collection[int] | None = None,
) -> bool:
    """Check a peer's signature AUTH payload over the RFC 7296 §2.15 octets.

    Returns False when the signature does not verify. Raises SignatureError
    (plain-words message; the caller answers AUTHENTICATION_FAILED) when the
    AUTH data is malformed, names an algorithm we do not accept, or does not
    fit the key. `allowed_hashes`, if given, are the hash IDs we announced:
    an RFC 7427 signature over any other hash is refused (RFC 7427 §4).
    """
    if method == IkeAuthMethod.DIGITAL_SIGNATURE:
        alg, signature = parse_auth_data(auth_data)
        if allowed_hashes is not None and int(alg.scheme.hash_algorithm) not in allowed_hashes:
            raise SignatureError(f"AUTH uses {alg.scheme.value}, whose hash we did not announce")
        return _verify_scheme(public_key, alg, signature, octets)
    if method == IkeAuthMethod.RSA_SIG:
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SignatureError(f"AUTH method RSA_SIG, but the peer's key is {key_description(public_key)}")
        try:
            public_key.verify(auth_data, octets, padding.PKCS1v15(), hashes.SHA1())
        except InvalidSignature:
            return False
        return True
    if method in _CLASSIC_ECDSA_BY_METHOD:
        curve, hash_id, width = _CLASSIC_ECDSA_BY_METHOD[IkeAuthMethod(method)]
        name = IkeAuthMethod(method).name
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != curve:
            raise SignatureError(f"AUTH method {name}, but the peer's key is {key_description(public_key)}")
        if len(auth_data) != 2 * width:
            raise SignatureError(f"AUTH method {name}: signature is {len(auth_data)} bytes, expected {2 * width}")
        der = encode_dss_signature(int.from_bytes(auth_data[:width], "big"), int.from_bytes(auth_data[width:], "big"))
        try:
            public_key.verify(der, octets, ec.ECDSA(_HASHES[hash_id]()))
        except InvalidSignature:
            return False
        return True
    try:
        name = IkeAuthMethod(method).name
    except ValueError:
        name = f"#{method}"
    raise UnsupportedSignatureAlgorithm(f"AUTH method {name} is not a signature method we support")


__all__ = [
    "ALGORITHM_IDENTIFIERS",
    "SUPPORTED_HASH_ALGORITHMS",
    "HashAlgorithmId",
    "IkeAuthMethod",
    "PrivateKey",
    "PrivateKeyError",
    "PublicKey",
    "SignatureAlgorithm",
    "SignatureError",
    "SignatureScheme",
    "UnsupportedSignatureAlgorithm",
    "build_auth_data",
    "choose_scheme",
    "hash_algorithms_notify_data",
    "key_description",
    "load_private_key",
    "parse_algorithm_identifier",
    "parse_auth_data",
    "parse_hash_algorithms",
    "schemes_for_key",
    "sign_auth",
    "sign_with_scheme",
    "verify_auth",
]
