"""Errors raised by engine.crypto.

All derive from `CryptoError` so callers can catch the package's failures in one
place. `IntegrityError` and `InvalidKeyExchange` are about data from the peer
(answer with a Notify or drop); `UnsupportedTransform` is about a transform ID
we do not implement (reject the proposal); `MlKemUnavailable` is the same for an
ML-KEM method the installed ``cryptography`` lacks (the policy layer reports it
before it can happen); `NonceExhausted` means the SA must be rekeyed before it
sends again.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every error raised by engine.crypto."""


class UnsupportedTransform(CryptoError):
    """A transform ID (or key length) that engine.crypto does not implement."""


class MlKemUnavailable(UnsupportedTransform):
    """ML-KEM is known but the installed ``cryptography`` (or its OpenSSL) does not provide it."""


class IntegrityError(CryptoError):
    """An ICV or AEAD tag did not verify, or ciphertext had an impossible length."""


class InvalidKeyExchange(CryptoError):
    """A peer's key exchange value is malformed or unsafe (wrong length, off-curve, ...)."""


class NonceExhausted(CryptoError):
    """An IV/nonce counter would wrap: the SA must be rekeyed before sending again."""
