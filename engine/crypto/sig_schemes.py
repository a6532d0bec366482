"""The signature schemes IKEv2 AUTH uses (RFC 7427, RFC 7296 §3.8, RFC 4754, RFC 8420): auth
methods, SIGNATURE_HASH_ALGORITHMS hash IDs, the DER AlgorithmIdentifiers we send, and which hash
and key kind each scheme needs. Shared by the AlgorithmIdentifier codec (sig_algid) and signing
and verifying (signature)."""

from __future__ import annotations

import enum
from typing import Literal, Union

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa


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
