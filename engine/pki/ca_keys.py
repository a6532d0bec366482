"""Keys of the CA and of what it issues (engine.pki.ca): generation, the signing hash each key
type takes, PEM encoding (PKCS#8, optionally encrypted)."""

from __future__ import annotations

from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from engine.secret import Secret

from .errors import PkiError

KeyType = Literal["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "ed25519"]
KEY_TYPES: tuple[str, ...] = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "ed25519")
MAX_PASSPHRASE = 1023
"""The longest key passphrase OpenSSL (through cryptography) encrypts with."""


def generate_key(key_type: str):
    """A fresh private key of one of KEY_TYPES."""
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise PkiError(f"unknown key type {key_type!r} (one of {', '.join(KEY_TYPES)})")


def _sign_hash(key) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _key_pem(key, passphrase: Secret | None) -> bytes:
    if passphrase is not None and len(passphrase.reveal()) > MAX_PASSPHRASE:
        # OpenSSL's limit: cryptography raises ValueError, a traceback out of issue or init-ca
        raise PkiError(f"the key passphrase is longer than {MAX_PASSPHRASE} bytes")
    enc = serialization.BestAvailableEncryption(passphrase.reveal()) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _pem(obj) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)
