"""AES-XCBC-MAC (RFC 3566) and the AES PRFs built on it and on CMAC
(AES-XCBC-PRF-128, RFC 4434; AES-CMAC-PRF-128, RFC 4615).

`cryptography` has CMAC but no XCBC, so XCBC is composed from AES-ECB/CBC here.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_ZERO16 = bytes(16)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


class XcbcMac:
    """AES-XCBC-MAC (RFC 3566 §4) keyed once: K1/K2/K3 are derived in the constructor."""

    __slots__ = ("_k1", "_k2", "_k3")

    def __init__(self, key: bytes) -> None:
        if len(key) != 16:
            raise ValueError(f"AES-XCBC-MAC needs a 16-byte key, got {len(key)}")
        ecb = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()
        derived = ecb.update(b"\x01" * 16 + b"\x02" * 16 + b"\x03" * 16)
        self._k1 = algorithms.AES(derived[:16])
        self._k2, self._k3 = derived[16:32], derived[32:]

    def mac(self, data: bytes) -> bytes:
        """The full 128-bit MAC of `data`."""
        data = bytes(data)
        if data and len(data) % 16 == 0:
            head, last, tweak = data[:-16], data[-16:], self._k2
        else:
            cut = len(data) - len(data) % 16
            head, last, tweak = data[:cut], data[cut:] + b"\x80" + bytes(15 - len(data) % 16), self._k3
        e = _ZERO16
        if head:
            e = Cipher(self._k1, modes.CBC(_ZERO16)).encryptor().update(head)[-16:]
        return Cipher(self._k1, modes.ECB()).encryptor().update(_xor(_xor(last, e), tweak))


def aes_xcbc_mac(key: bytes, data: bytes) -> bytes:
    """AES-XCBC-MAC with the full 128-bit output (RFC 3566 §4); key must be 16 bytes."""
    return XcbcMac(key).mac(data)


def aes_xcbc_prf_128(key: bytes, data: bytes) -> bytes:
    """AES-XCBC-PRF-128 (RFC 4434): any key length, 16-byte output."""
    if len(key) < 16:
        key = key + bytes(16 - len(key))
    elif len(key) > 16:
        key = aes_xcbc_mac(_ZERO16, key)
    return aes_xcbc_mac(key, data)


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (RFC 4493), 16-byte output; key 16/24/32 bytes."""
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def aes_cmac_prf_128(key: bytes, data: bytes) -> bytes:
    """AES-CMAC-PRF-128 (RFC 4615): any key length, 16-byte output."""
    if len(key) != 16:
        key = aes_cmac(_ZERO16, key)
    return aes_cmac(key, data)
