"""Integrity transforms for IKE SK payloads and ESP/AH (RFC 4868, RFC 2404, RFC 3566, RFC 4494).

`Integ` is on the ESP per-packet path: the keyed HMAC/CMAC context is built
once and copied per call instead of re-keying.
"""

from __future__ import annotations

import hmac as _hmac

from cryptography.hazmat.primitives import cmac, hashes, hmac
from cryptography.hazmat.primitives.ciphers import algorithms

from .errors import UnsupportedTransform
from .transforms import IntegId
from .xcbc import XcbcMac

# id -> (hash, key bytes, ICV bytes); RFC 4868 §2.1 keys are the full hash size.
_HMAC_INTEG: dict[int, tuple[type[hashes.HashAlgorithm], int, int]] = {
    IntegId.HMAC_SHA1_96: (hashes.SHA1, 20, 12),  # interop only
    IntegId.HMAC_SHA2_256_128: (hashes.SHA256, 32, 16),
    IntegId.HMAC_SHA2_384_192: (hashes.SHA384, 48, 24),
    IntegId.HMAC_SHA2_512_256: (hashes.SHA512, 64, 32),
}
# id -> (key bytes, ICV bytes)
_AES_INTEG: dict[int, tuple[int, int]] = {
    IntegId.AES_XCBC_96: (16, 12),
    IntegId.AES_CMAC_96: (16, 12),
}

SUPPORTED_INTEGS = frozenset(_HMAC_INTEG) | frozenset(_AES_INTEG)


def _sizes(integ_id: int) -> tuple[int, int]:
    if integ_id in _HMAC_INTEG:
        return _HMAC_INTEG[integ_id][1:]
    if integ_id in _AES_INTEG:
        return _AES_INTEG[integ_id]
    raise UnsupportedTransform(f"integrity transform {integ_id} is not supported")


def integ_key_size(integ_id: int) -> int:
    """Key length in bytes taken from the keying material for `integ_id`."""
    return _sizes(integ_id)[0]


def integ_icv_size(integ_id: int) -> int:
    """Length in bytes of the (truncated) ICV that goes on the wire."""
    return _sizes(integ_id)[1]


class Integ:
    """A keyed integrity transform: `compute` gives the truncated ICV, `verify` checks one."""

    __slots__ = ("id", "key_size", "icv_size", "_ctx", "_xcbc")

    def __init__(self, integ_id: int, key: bytes) -> None:
        self.key_size, self.icv_size = _sizes(integ_id)
        self.id = IntegId(integ_id)
        if len(key) != self.key_size:
            raise ValueError(f"{self.id.name} needs a {self.key_size}-byte key, got {len(key)}")
        self._xcbc: XcbcMac | None = None
        self._ctx = None
        if integ_id in _HMAC_INTEG:
            self._ctx = hmac.HMAC(key, _HMAC_INTEG[integ_id][0]())
        elif integ_id == IntegId.AES_CMAC_96:
            self._ctx = cmac.CMAC(algorithms.AES(key))
        else:  # XCBC has no context object in cryptography
            self._xcbc = XcbcMac(key)

    def compute(self, data: bytes) -> bytes:
        """ICV of `data`, truncated to `icv_size` bytes."""
        if self._ctx is not None:
            ctx = self._ctx.copy()
            ctx.update(data)
            return ctx.finalize()[: self.icv_size]
        return self._xcbc.mac(data)[: self.icv_size]

    def verify(self, data: bytes, icv: bytes) -> bool:
        """True if `icv` is the ICV of `data` (constant-time comparison)."""
        return _hmac.compare_digest(self.compute(data), icv)

    def __repr__(self) -> str:
        return f"Integ({self.id.name})"
