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

import re
from collections.abc import Collection

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from engine.secret import Secret
from engine.crypto.sig_algid import (SignatureAlgorithm, build_auth_data, hash_algorithms_notify_data,
                                     parse_algorithm_identifier, parse_auth_data, parse_hash_algorithms)
from engine.crypto.sig_schemes import (ALGORITHM_IDENTIFIERS, SUPPORTED_HASH_ALGORITHMS, HashAlgorithmId, IkeAuthMethod,
                                       PrivateKey, PrivateKeyError, PublicKey, RsaPadding, SignatureError,
                                       SignatureScheme, UnsupportedSignatureAlgorithm, _S, _CLASSIC_ECDSA,
                                       _CLASSIC_ECDSA_BY_METHOD, _CURVE_SCHEME, _HASH_LEN, _HASHES, _RSA_PREFERENCE)

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
