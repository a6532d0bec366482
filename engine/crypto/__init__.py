"""Cryptographic primitives for IKEv2 and ESP: the only package importing `cryptography`.

Modules: transforms (IANA IDs), prf (PRFs, prf+), integ (ICVs), encr (ciphers,
IVs), errors. See each module for the RFCs it follows.
"""

from .encr import Cipher, CounterIv, encr_keymat_size, make_cipher, random_iv
from .errors import (
    CryptoError,
    IntegrityError,
    InvalidKeyExchange,
    NonceExhausted,
    UnsupportedTransform,
)
from .integ import Integ, integ_icv_size, integ_key_size
from .prf import Prf, prf_plus

__all__ = [
    "Cipher",
    "CounterIv",
    "CryptoError",
    "Integ",
    "IntegrityError",
    "InvalidKeyExchange",
    "NonceExhausted",
    "Prf",
    "UnsupportedTransform",
    "encr_keymat_size",
    "integ_icv_size",
    "integ_key_size",
    "make_cipher",
    "prf_plus",
    "random_iv",
]
