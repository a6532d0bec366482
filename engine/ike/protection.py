"""The SK and SKF payloads: encryption, integrity and IKE fragmentation
(RFC 7296 §3.14, RFC 5282 for AEAD, RFC 7383 for fragments).

Integrity is checked (AEAD tag, or the ICV with hmac.compare_digest inside
Integ.verify) before a single inner payload is parsed; parsing never decrypts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.crypto.encr import CounterIv, encr_keymat_size, make_cipher
from engine.crypto.errors import CryptoError, IntegrityError, NonceExhausted
from engine.crypto.integ import Integ
from engine.ike.errors import RemoteError
from engine.wire.message import (
    Message,
    encode_payloads,
    encode_sk_message,
    encode_skf_prefix,
)
from engine.wire.payloads import SkfPayload, SkPayload

# RFC 7383 §2.5.1: fragments must fit the path MTU; 1280 is strongSwan's default
# datagram budget (IP and UDP headers included), safe for IPv6 too.
DEFAULT_FRAGMENT_SIZE = 1280
_IP_UDP_OVERHEAD = {4: 20 + 8, 6: 40 + 8}
MAX_FRAGMENTS = 64  # refuse reassembly of absurd fragment counts (memory)


class Direction:
    """The keys and IV counter of one direction (we send with it, or the peer does).

    The cipher and integrity contexts are keyed afresh for each message (well under a
    microsecond) instead of kept: an established IKE SA is idle nearly always, and each of
    cryptography's AEAD objects holds about 2.4 KB of C contexts, which a gateway holding
    10,000 clients would keep for messages it rarely sends."""

    __slots__ = ("encr_id", "key_bits", "integ_id", "sk_e", "sk_a", "aead", "iv")

    def __init__(self, encr_id: int, key_bits: int | None, integ_id: int | None, sk_e: bytes, sk_a: bytes,
                 aead: bool) -> None:
        self.encr_id, self.key_bits, self.integ_id = encr_id, key_bits, integ_id
        self.sk_e, self.sk_a, self.aead = bytes(sk_e), bytes(sk_a), aead
        self.iv: CounterIv | None = CounterIv() if aead else None

    @property
    def cipher(self):
        return make_cipher(self.encr_id, self.key_bits, self.sk_e)

    @property
    def integ(self) -> Integ | None:
        return Integ(self.integ_id, self.sk_a) if self.integ_id and not self.aead else None


class _Shape:
    """What SkCodec needs of a cipher besides its key: the same for every key of a transform."""

    __slots__ = ("aead", "iv_size", "icv_size", "block_size")

    def __init__(self, cipher) -> None:
        self.aead, self.iv_size = cipher.aead, cipher.iv_size
        self.icv_size, self.block_size = cipher.icv_size, cipher.block_size


_shapes: dict[tuple, _Shape] = {}  # by (encr_id, key_bits) accepted once: a handful of transforms


def _shape(encr_id: int, key_bits: int | None, sk_e: bytes) -> _Shape:
    """The cipher's sizes, with make_cipher's checks of ``sk_e``: keying a cipher only to read its sizes
    cost a few µs per IKE SA (each message keys its own, see Direction)."""
    shape = _shapes.get((encr_id, key_bits))
    if shape is None or len(sk_e) != encr_keymat_size(encr_id, key_bits):
        # The first of a transform, or a key of the wrong size: make_cipher checks and says what is wrong.
        shape = _Shape(make_cipher(encr_id, key_bits, sk_e))
        if len(_shapes) < 64:
            _shapes[(encr_id, key_bits)] = shape
    return shape


class SkCodec:
    """Encrypts our messages and decrypts the peer's with one IKE SA's keys."""

    def __init__(self, encr_id: int, key_bits: int | None, integ_id: int | None,
                 sk_e_out: bytes, sk_a_out: bytes, sk_e_in: bytes, sk_a_in: bytes,
                 rng: Callable[[int], bytes] = os.urandom) -> None:
        self._rng = rng
        c = _shape(encr_id, key_bits, sk_e_out)  # checks the keys now; sizes for framing
        integ = Integ(integ_id, sk_a_out) if (integ_id and not c.aead) else None
        # The peer's keys come out of the same prf+ with the same sizes: checking their lengths is
        # what keying a second cipher (thrown away, each message keys its own) would check.
        if len(sk_e_in) != len(sk_e_out) or len(sk_a_in) != len(sk_a_out):
            raise ValueError(f"the two directions' keys differ in size ({len(sk_e_in)}/{len(sk_a_in)} "
                             f"against {len(sk_e_out)}/{len(sk_a_out)} bytes)")
        self.out = Direction(encr_id, key_bits, integ_id, sk_e_out, sk_a_out, c.aead)
        self.inn = Direction(encr_id, key_bits, integ_id, sk_e_in, sk_a_in, c.aead)
        self.aead: bool = c.aead
        self.iv_size: int = c.iv_size
        self.icv_size: int = c.icv_size if c.aead else (integ.icv_size if integ else 0)
        # CBC needs whole blocks; AEAD ciphers need nothing, but the pad
        # length byte is always there (RFC 5282 §3).
        self.block = c.block_size if not c.aead else 1

    # -- sending ---------------------------------------------------------
    def _pad(self, inner: bytes) -> bytes:
        pad = (-(len(inner) + 1)) % self.block
        return inner + bytes(pad) + bytes([pad])

    def _iv(self) -> bytes:
        if self.out.iv is not None:
            try:
                return self.out.iv.next()
            except NonceExhausted:
                # Never reuse a GCM nonce: the IKE SA must be rekeyed first.
                raise
        return self._rng(self.iv_size)

    def _encrypt(self, prefix: bytes, plaintext: bytes) -> bytes:
        iv = self._iv()
        c = self.out.cipher
        if self.aead:
            return prefix + iv + c.encrypt(iv, plaintext, prefix)
        data = prefix + iv + c.encrypt(iv, plaintext)
        return data + self.out.integ.compute(data)

    def body_len(self, plaintext_len: int) -> int:
        return self.iv_size + plaintext_len + self.icv_size

    def seal(self, exchange: int, mid: int, spi_i: bytes, spi_r: bytes, flags: int,
             payloads, fragment_size: int | None = None, ip_version: int = 4,
             marker_len: int = 0) -> list[bytes]:
        """One message (or, when ``fragment_size`` is given and the message is
        bigger, several SKF fragments) ready to send."""
        first, inner = encode_payloads(payloads)
        plaintext = self._pad(inner)
        whole = self.body_len(len(plaintext))
        if fragment_size:
            budget = fragment_size - _IP_UDP_OVERHEAD[ip_version] - marker_len
            if 28 + 4 + whole > budget:
                return self._fragments(exchange, mid, spi_i, spi_r, flags, first, inner, budget)
        prefix = encode_sk_message(exchange, mid, spi_i, spi_r, flags, first, body_len=whole)
        return [self._encrypt(prefix, plaintext)]

    def _fragments(self, exchange, mid, spi_i, spi_r, flags, first, inner, budget) -> list[bytes]:
        # 28 header + 8 SKF header; leave room for IV, ICV and worst-case padding.
        room = budget - 28 - 8 - self.iv_size - self.icv_size - self.block
        room -= room % max(self.block, 1)
        if room <= 0:
            raise ValueError("fragment size too small for this cipher")
        chunks = [inner[i:i + room] for i in range(0, len(inner), room)] or [b""]
        total = len(chunks)
        out = []
        for n, chunk in enumerate(chunks, 1):
            plaintext = self._pad(chunk)
            prefix = encode_skf_prefix(exchange, mid, spi_i, spi_r, flags, n, total,
                                       first if n == 1 else 0, self.body_len(len(plaintext)))
            out.append(self._encrypt(prefix, plaintext))
        return out

    # -- receiving -------------------------------------------------------
    def _decrypt(self, raw: bytes, aad_end: int, body: bytes) -> bytes:
        c = self.inn.cipher
        if len(body) < self.iv_size + self.icv_size + 1:
            raise RemoteError(None, "encrypted payload too short")
        iv = body[: self.iv_size]
        try:
            if self.aead:
                plaintext = c.decrypt(iv, body[self.iv_size:], raw[:aad_end])
            else:
                icv = raw[-self.icv_size:]
                if not self.inn.integ.verify(raw[: -self.icv_size], icv):
                    raise RemoteError(None, "integrity check failed")
                ct = body[self.iv_size: len(body) - self.icv_size]
                if len(ct) % c.block_size:
                    raise RemoteError(None, "ciphertext is not a whole number of blocks")
                plaintext = c.decrypt(iv, ct)
        except IntegrityError:
            raise RemoteError(None, "integrity check failed") from None
        except (CryptoError, ValueError) as exc:
            raise RemoteError(None, f"cannot decrypt: {exc}") from None
        if not plaintext:
            raise RemoteError(None, "empty plaintext")
        pad = plaintext[-1]
        if pad + 1 > len(plaintext):
            raise RemoteError(None, "pad length exceeds the plaintext")
        return plaintext[: len(plaintext) - 1 - pad]

    def open(self, message: Message) -> tuple[int, bytes]:
        """(first inner payload type, inner payload bytes) of an SK message."""
        sk = message.payloads[-1] if message.payloads else None
        if not isinstance(sk, SkPayload):
            raise RemoteError(None, "no encrypted payload")
        return sk.next_payload, self._decrypt(message.raw, message.sk_aad_end, sk.data)

    def open_fragment(self, message: Message) -> tuple[SkfPayload, bytes]:
        skf = message.payloads[-1] if message.payloads else None
        if not isinstance(skf, SkfPayload):
            raise RemoteError(None, "no encrypted fragment")
        return skf, self._decrypt(message.raw, message.sk_aad_end, skf.data)


@dataclass
class Reassembly:
    """Fragments of one message being collected (RFC 7383 §2.6)."""

    mid: int
    total: int
    first_type: int = 0
    parts: dict[int, bytes] = field(default_factory=dict)
    length: int = 0
    """Wire bytes received, for the message summary."""

    def add(self, skf: SkfPayload, plaintext: bytes, wire_len: int) -> bool:
        if skf.total_fragments != self.total:
            if skf.total_fragments > self.total:
                # A retransmission with a different fragmentation wins (§2.6).
                self.total = skf.total_fragments
                self.parts.clear()
                self.length = 0
            else:
                return False
        if skf.fragment_number in self.parts:
            return False
        self.parts[skf.fragment_number] = plaintext
        self.length += wire_len
        if skf.fragment_number == 1:
            self.first_type = skf.next_payload
        return len(self.parts) == self.total

    def size(self) -> int:
        """Plaintext bytes held."""
        return sum(map(len, self.parts.values()))

    def assemble(self) -> tuple[int, bytes]:
        return self.first_type, b"".join(self.parts[i] for i in range(1, self.total + 1))


