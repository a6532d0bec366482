"""IKEv2 pseudo-random functions and prf+ (RFC 7296 §2.13, RFC 4868, RFC 4434, RFC 4615)."""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .errors import UnsupportedTransform
from .transforms import PrfId
from .xcbc import aes_cmac_prf_128, aes_xcbc_prf_128

_HMAC_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    PrfId.HMAC_SHA1: hashes.SHA1,  # interop and lint only
    PrfId.HMAC_SHA2_256: hashes.SHA256,
    PrfId.HMAC_SHA2_384: hashes.SHA384,
    PrfId.HMAC_SHA2_512: hashes.SHA512,
}

_AES_PRFS = {
    PrfId.AES128_XCBC: aes_xcbc_prf_128,
    PrfId.AES128_CMAC: aes_cmac_prf_128,
}

SUPPORTED_PRFS = frozenset(_HMAC_HASHES) | frozenset(_AES_PRFS)


class Prf:
    """One negotiated PRF transform.

    `hash_size` is the output length in bytes; `key_size` is the preferred key
    length (RFC 7296 §2.13: the output length for HMAC, 16 for the AES PRFs).
    `fixed_key` tells RFC 7296 §2.14 callers that SKEYSEED must be keyed with
    half of each nonce instead of the whole Ni | Nr (AES-XCBC, AES-CMAC).
    """

    __slots__ = ("id", "hash_size", "key_size", "fixed_key", "_hash", "_aes")

    def __init__(self, prf_id: int) -> None:
        if prf_id in _HMAC_HASHES:
            self._hash = _HMAC_HASHES[prf_id]
            self._aes = None
            self.hash_size = self._hash.digest_size
            self.key_size = self.hash_size
            self.fixed_key = False
        elif prf_id in _AES_PRFS:
            self._hash = None
            self._aes = _AES_PRFS[prf_id]
            self.hash_size = 16
            self.key_size = 16
            self.fixed_key = True
        else:
            raise UnsupportedTransform(f"PRF transform {prf_id} is not supported")
        self.id = PrfId(prf_id)

    def keyed(self, key: bytes):
        """data -> prf(key, data) for one key used many times (prf+): HMAC keys
        once and copies the keyed state per call."""
        if self._aes is not None:
            return lambda data: self._aes(key, data)
        base = hmac.HMAC(key, self._hash())

        def mac(data: bytes) -> bytes:
            h = base.copy()
            h.update(data)
            return h.finalize()

        return mac

    def __call__(self, key: bytes, data: bytes) -> bytes:
        if self._aes is not None:
            return self._aes(key, data)
        h = hmac.HMAC(key, self._hash())
        h.update(data)
        return h.finalize()

    def __repr__(self) -> str:
        return f"Prf({self.id.name})"


@functools.lru_cache(maxsize=None)
def prf_for(prf_id: int) -> Prf:
    """The one Prf of a transform ID (a Prf holds no key: several calls per handshake share it).
    Raises UnsupportedTransform as Prf() does."""
    return Prf(prf_id)


def prf_plus(prf: Prf, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ (RFC 7296 §2.13): T1 | T2 | ... truncated to `length` bytes.

    Tn = prf(K, Tn-1 | S | n) with a one-byte counter, so at most 255 blocks.
    """
    if length < 0:
        raise ValueError(f"prf+ length must not be negative, got {length}")
    if length > 255 * prf.hash_size:
        raise ValueError(
            f"prf+ cannot produce {length} bytes with {prf.id.name} "
            f"(maximum {255 * prf.hash_size}, RFC 7296 §2.13)"
        )
    if prf._hash is not None and length:
        # With an HMAC prf, prf+ is HKDF-Expand (RFC 5869 §2.3: T(n) = HMAC(PRK, T(n-1) | info | n),
        # a one-byte n), done in one call: half the time of the loop below.
        return HKDFExpand(prf._hash(), length, info=bytes(seed)).derive(bytes(key))
    out = bytearray()
    t = b""
    n = 1
    keyed = prf.keyed(key)
    while len(out) < length:
        t = keyed(t + seed + bytes((n,)))
        out += t
        n += 1
    return bytes(out[:length])
