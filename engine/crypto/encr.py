"""Encryption transforms for IKE SK payloads and ESP.

RFC 3602 (AES-CBC), RFC 3686 (AES-CTR), RFC 4106 / RFC 5282 (AES-GCM),
RFC 7634 (ChaCha20-Poly1305), RFC 2410 (NULL).

The caller supplies the explicit IV that travels on the wire; for AEAD and
CTR the nonce is salt | IV where the salt is the last 4 bytes of the keying
material. Use `CounterIv` for those so a nonce is never reused, and
`random_iv` for CBC, whose IV must be unpredictable.

A `Cipher` is built once per SA direction and then called per packet: the
AEAD primitive is keyed in the constructor.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher as _RawCipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .errors import IntegrityError, NonceExhausted, UnsupportedTransform
from .transforms import EncrId

SALT_SIZE = 4
_AES_KEY_BITS = (128, 192, 256)
_GCM_ICV = {EncrId.AES_GCM_8: 8, EncrId.AES_GCM_12: 12, EncrId.AES_GCM_16: 16}

SUPPORTED_ENCRS = frozenset(
    {EncrId.NULL, EncrId.AES_CBC, EncrId.AES_CTR, *_GCM_ICV, EncrId.CHACHA20_POLY1305}
)


def _key_bytes(encr_id: int, key_bits: int | None) -> int:
    """Cipher key length in bytes (without salt); validates key_bits."""
    if encr_id == EncrId.NULL:
        if key_bits not in (None, 0):
            raise UnsupportedTransform(f"ENCR_NULL takes no key length, got {key_bits}")
        return 0
    if encr_id == EncrId.CHACHA20_POLY1305:
        if key_bits not in (None, 256):
            raise UnsupportedTransform(f"CHACHA20_POLY1305 has a fixed 256-bit key, got {key_bits}")
        return 32
    if encr_id in (EncrId.AES_CBC, EncrId.AES_CTR) or encr_id in _GCM_ICV:
        if key_bits not in _AES_KEY_BITS:
            name = EncrId(encr_id).name
            raise UnsupportedTransform(
                f"{name} needs a key length of 128, 192 or 256 bits, got {key_bits}"
            )
        return key_bits // 8
    try:
        name = EncrId(encr_id).name
    except ValueError:
        name = str(encr_id)
    raise UnsupportedTransform(f"encryption transform {name} is not supported")


@functools.lru_cache(maxsize=64)  # a few (id, bits) pairs; enum hashing made it a visible cost per SA
def encr_keymat_size(encr_id: int, key_bits: int | None) -> int:
    """Bytes of keying material the cipher takes, including the 4-byte salt/nonce
    of AES-GCM (RFC 4106 §8.1), AES-CTR (RFC 3686 §5.1) and ChaCha20-Poly1305 (RFC 7634 §4)."""
    size = _key_bytes(encr_id, key_bits)
    if encr_id in _GCM_ICV or encr_id in (EncrId.CHACHA20_POLY1305, EncrId.AES_CTR):
        size += SALT_SIZE
    return size


class Cipher:
    """One keyed encryption transform (see module docstring).

    Attributes: `encr_id`, `key_bits`, `aead` (integrity included),
    `iv_size` (explicit IV bytes on the wire), `block_size` (ESP/SK payload
    alignment of plaintext + padding), `icv_size` (AEAD tag bytes, else 0).
    """

    __slots__ = ("encr_id", "key_bits", "aead", "iv_size", "block_size", "icv_size")

    encr_id: EncrId
    key_bits: int | None
    aead: bool
    iv_size: int
    block_size: int
    icv_size: int

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Ciphertext (|| tag for AEAD). `aad` is only used by AEAD ciphers."""
        raise NotImplementedError

    def decrypt(self, iv: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        """Plaintext; raises IntegrityError on a bad tag or impossible length."""
        raise NotImplementedError

    def __repr__(self) -> str:
        bits = f"_{self.key_bits}" if self.key_bits else ""
        return f"Cipher({self.encr_id.name}{bits})"

    def _check_iv(self, iv: bytes) -> None:
        if len(iv) != self.iv_size:
            raise ValueError(f"{self.encr_id.name} needs a {self.iv_size}-byte IV, got {len(iv)}")

    def _check_iv_in(self, iv: bytes) -> None:
        # On decrypt the IV came from the peer: a wrong size is a malformed packet.
        if len(iv) != self.iv_size:
            raise IntegrityError(
                f"{self.encr_id.name}: IV is {len(iv)} bytes, expected {self.iv_size}"
            )


class _AeadCipher(Cipher):
    """AES-GCM with a 16-byte tag or ChaCha20-Poly1305: the `cryptography` AEAD classes."""

    __slots__ = ("_aead", "_salt")

    def __init__(self, encr_id: EncrId, key_bits: int | None, key: bytes, salt: bytes) -> None:
        self.encr_id = encr_id
        self.key_bits = key_bits
        self.aead = True
        self.iv_size = 8
        self.block_size = 4
        self.icv_size = 16
        self._salt = salt
        self._aead = ChaCha20Poly1305(key) if encr_id == _CHACHA else AESGCM(key)

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        if len(iv) != 8:
            self._check_iv(iv)
        return self._aead.encrypt(self._salt + iv, plaintext, aad)

    def parts(self) -> tuple:
        """(encrypt, decrypt, salt, tag error) of the AEAD underneath, for ESP's batch loops: they make
        the nonce (salt || 8-byte IV) themselves and pass at least a tag's worth of ciphertext, so the
        checks of `encrypt`/`decrypt` hold for every packet there (one Python call less per packet)."""
        return self._aead.encrypt, self._aead.decrypt, self._salt, InvalidTag

    def decrypt(self, iv: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        if len(iv) != 8:
            self._check_iv_in(iv)
        if len(ciphertext) < 16:
            raise IntegrityError(
                f"{self.encr_id.name}: {len(ciphertext)} bytes is shorter than the 16-byte tag"
            )
        try:
            return self._aead.decrypt(self._salt + iv, ciphertext, aad)
        except InvalidTag:
            raise IntegrityError(f"{self.encr_id.name}: authentication tag mismatch") from None


class _TruncatedGcm(Cipher):
    """AES-GCM with an 8- or 12-byte tag (RFC 4106 ENCR_AES_GCM_8/_12).

    AESGCM only emits 16-byte tags; a truncated GCM tag is its leading bytes,
    so encrypt truncates and decrypt uses the streaming mode with min_tag_length.
    """

    __slots__ = ("_aesgcm", "_algo", "_salt")

    def __init__(self, encr_id: EncrId, key_bits: int, key: bytes, salt: bytes) -> None:
        self.encr_id = encr_id
        self.key_bits = key_bits
        self.aead = True
        self.iv_size = 8
        self.block_size = 4
        self.icv_size = _GCM_ICV[encr_id]
        self._salt = salt
        self._aesgcm = AESGCM(key)
        self._algo = algorithms.AES(key)

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        self._check_iv(iv)
        out = self._aesgcm.encrypt(self._salt + iv, plaintext, aad)
        return out[: len(out) - 16 + self.icv_size]

    def decrypt(self, iv: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        self._check_iv_in(iv)
        n = self.icv_size
        if len(ciphertext) < n:
            raise IntegrityError(
                f"{self.encr_id.name}: {len(ciphertext)} bytes is shorter than the {n}-byte tag"
            )
        body, tag = ciphertext[:-n], bytes(ciphertext[-n:])
        dec = _RawCipher(self._algo, modes.GCM(self._salt + iv, tag, min_tag_length=n)).decryptor()
        if aad:
            dec.authenticate_additional_data(aad)
        out = dec.update(body)
        try:
            return out + dec.finalize()
        except InvalidTag:
            raise IntegrityError(f"{self.encr_id.name}: authentication tag mismatch") from None


class _CbcCipher(Cipher):
    """AES-CBC (RFC 3602): the caller pads to 16 bytes and sends a random IV."""

    __slots__ = ("_algo", "_enc_stream", "_dec_stream")

    def __init__(self, key_bits: int, key: bytes) -> None:
        self.encr_id = EncrId.AES_CBC
        self.key_bits = key_bits
        self.aead = False
        self.iv_size = 16
        self.block_size = 16
        self.icv_size = 0
        self._algo = algorithms.AES(key)
        # Building a cipher context costs more than encrypting a packet, so the
        # per-packet paths keep one open context per direction (see below).
        self._enc_stream = _RawCipher(self._algo, modes.CBC(bytes(16))).encryptor()
        self._dec_stream = _RawCipher(self._algo, modes.CBC(bytes(16))).decryptor()

    def encrypt_random_iv(self, plaintext: bytes, rng: Callable[[int], bytes] = os.urandom) -> bytes:
        """IV | ciphertext with a fresh unpredictable IV, on the open context.

        A random block R is encrypted first: its output E(R xor C_prev) is
        unpredictable and becomes the IV, and the context's chaining makes
        the rest exactly CBC under that IV. Not thread-safe: one SA direction,
        one thread.
        """
        if len(plaintext) % 16:
            raise ValueError(
                f"AES_CBC plaintext must be padded to 16 bytes, got {len(plaintext)}"
            )
        return self._enc_stream.update(rng(16) + plaintext)

    def decrypt_stream(self, iv: bytes, ciphertext: bytes) -> bytes:
        """decrypt() on the open context: block 0 (the IV) decrypts to garbage
        that is dropped, and chains the IV into the real first block."""
        if len(iv) != 16:
            raise IntegrityError(f"AES_CBC: IV of {len(iv)} bytes, expected 16")
        if len(ciphertext) % 16:
            raise IntegrityError(
                f"AES_CBC: ciphertext of {len(ciphertext)} bytes is not a multiple of 16"
            )
        return self._dec_stream.update(iv + ciphertext)[16:]

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        self._check_iv(iv)
        if len(plaintext) % 16:
            raise ValueError(
                f"AES_CBC plaintext must be padded to 16 bytes, got {len(plaintext)}"
            )
        enc = _RawCipher(self._algo, modes.CBC(bytes(iv))).encryptor()
        return enc.update(plaintext) + enc.finalize()

    def decrypt(self, iv: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        self._check_iv_in(iv)
        if len(ciphertext) % 16:
            raise IntegrityError(
                f"AES_CBC: ciphertext of {len(ciphertext)} bytes is not a multiple of 16"
            )
        dec = _RawCipher(self._algo, modes.CBC(bytes(iv))).decryptor()
        return dec.update(ciphertext) + dec.finalize()


class _CtrCipher(Cipher):
    """AES-CTR (RFC 3686): counter block = nonce(4) | IV(8) | 00000001."""

    __slots__ = ("_algo", "_salt")

    def __init__(self, key_bits: int, key: bytes, salt: bytes) -> None:
        self.encr_id = EncrId.AES_CTR
        self.key_bits = key_bits
        self.aead = False
        self.iv_size = 8
        self.block_size = 4
        self.icv_size = 0
        self._algo = algorithms.AES(key)
        self._salt = salt

    def _run(self, iv: bytes, data: bytes) -> bytes:
        ctx = _RawCipher(self._algo, modes.CTR(self._salt + iv + b"\x00\x00\x00\x01")).encryptor()
        return ctx.update(data) + ctx.finalize()

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        self._check_iv(iv)
        return self._run(iv, plaintext)

    def decrypt(self, iv: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        self._check_iv_in(iv)
        return self._run(iv, ciphertext)


class _NullCipher(Cipher):
    """ENCR_NULL (RFC 2410): identity; ESP still aligns to 4 bytes."""

    __slots__ = ()

    def __init__(self) -> None:
        self.encr_id = EncrId.NULL
        self.key_bits = None
        self.aead = False
        self.iv_size = 0
        self.block_size = 4
        self.icv_size = 0

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        self._check_iv(iv)
        return bytes(plaintext)

    def decrypt(self, iv: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        self._check_iv_in(iv)
        return bytes(ciphertext)


_ENCR_IDS: dict[int, EncrId] = {int(e): e for e in EncrId}
"""A dict lookup instead of the enum's call: a cipher is made for every SK message and CHILD SA."""
_NULL, _CBC, _CTR, _GCM16, _CHACHA = (EncrId.NULL, EncrId.AES_CBC, EncrId.AES_CTR, EncrId.AES_GCM_16,
                                      EncrId.CHACHA20_POLY1305)
"""The members, read once: on Python 3.11 each ``EncrId.X`` goes through EnumType.__getattr__'s hook
(~1k instructions), and make_cipher compared with five of them per SK message."""


def make_cipher(encr_id: int, key_bits: int | None, keymat: bytes) -> Cipher:
    """Key a cipher from `keymat` (exactly `encr_keymat_size` bytes, salt last)."""
    need = encr_keymat_size(encr_id, key_bits)
    if len(keymat) != need:
        raise ValueError(
            f"{EncrId(encr_id).name}: keying material must be {need} bytes, got {len(keymat)}"
        )
    eid = _ENCR_IDS.get(encr_id) or EncrId(encr_id)
    if eid == _NULL:
        return _NullCipher()
    if eid == _CBC:
        return _CbcCipher(key_bits, bytes(keymat))
    key, salt = bytes(keymat[:-SALT_SIZE]), bytes(keymat[-SALT_SIZE:])
    if eid == _CTR:
        return _CtrCipher(key_bits, key, salt)
    if eid == _GCM16 or eid == _CHACHA:
        return _AeadCipher(eid, key_bits if eid != _CHACHA else 256, key, salt)
    return _TruncatedGcm(eid, key_bits, key, salt)


class CounterIv:
    """Explicit IVs for AEAD/CTR: an 8-byte big-endian counter starting at 1.

    Each value is handed out once; `NonceExhausted` is raised instead of
    wrapping, because a repeated GCM/ChaCha nonce under one key is fatal.
    """

    __slots__ = ("_next",)
    LIMIT = 1 << 64

    def __init__(self, start: int = 1) -> None:
        if not 0 < start < self.LIMIT:
            raise ValueError(f"CounterIv start must be in 1..2**64-1, got {start}")
        self._next = start

    def __call__(self) -> bytes:
        n = self._next
        if n >= self.LIMIT:
            raise NonceExhausted("the 64-bit IV counter is exhausted: rekey the SA")
        self._next = n + 1
        return n.to_bytes(8, "big")

    next = __call__

    @property
    def remaining(self) -> int:
        """How many IVs can still be handed out."""
        return self.LIMIT - self._next

    def __repr__(self) -> str:
        return f"CounterIv(next={self._next})"


def random_iv(size: int, rng: Callable[[int], bytes] = os.urandom) -> bytes:
    """An unpredictable IV of `size` bytes (AES-CBC, RFC 3602 §2)."""
    iv = rng(size)
    if len(iv) != size:
        raise ValueError(f"rng returned {len(iv)} bytes, asked for {size}")
    return iv
