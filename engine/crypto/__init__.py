"""Cryptographic primitives for IKEv2 and ESP: the only package importing `cryptography`.

Modules: transforms (IANA IDs), prf (PRFs, prf+), integ (ICVs), encr (ciphers,
IVs), ke (key exchange), kem (ML-KEM), keys (SKEYSEED, IKE/CHILD SA keys), auth
(AUTH data, NAT detection, cookies), errors. Each module names the RFCs it follows.
"""

from .auth import cookie_value, nat_detection_hash, psk_auth_data, signed_octets, verify_cookie
from .encr import Cipher, CounterIv, encr_keymat_size, make_cipher, random_iv
from .errors import (
    CryptoError,
    IntegrityError,
    InvalidKeyExchange,
    NonceExhausted,
    UnsupportedTransform,
)
from .integ import Integ, integ_icv_size, integ_key_size
from .ke import KeyExchange, ke_public_size
from .keys import IkeKeys, child_key_sizes, child_keymat, derive_ike_keys, split_child_keymat
from .prf import Prf, prf_plus

__all__ = [
    "Cipher",
    "CounterIv",
    "CryptoError",
    "IkeKeys",
    "Integ",
    "IntegrityError",
    "InvalidKeyExchange",
    "KeyExchange",
    "NonceExhausted",
    "Prf",
    "UnsupportedTransform",
    "child_key_sizes",
    "child_keymat",
    "cookie_value",
    "derive_ike_keys",
    "encr_keymat_size",
    "integ_icv_size",
    "integ_key_size",
    "ke_public_size",
    "make_cipher",
    "nat_detection_hash",
    "prf_plus",
    "psk_auth_data",
    "random_iv",
    "signed_octets",
    "split_child_keymat",
    "verify_cookie",
]
