"""ESP (RFC 4303) packet paths, tunnel and transport mode, IPv4 and IPv6.

Wire format::

    SPI(4) | Seq(4) | IV | E( payload | padding 1,2,3.. | pad length | next header ) | ICV

- AEAD (AES-GCM RFC 4106, ChaCha20-Poly1305 RFC 7634): the 8-byte IV is the
  packet's full 64-bit sequence number. Sequence numbers strictly increase
  and never wrap (the SA refuses to send past the last one), so a nonce is
  never reused under a key. AAD is SPI|Seq, or SPI|Seq-high|Seq-low with ESN
  (RFC 4106 §5, RFC 7634 §2.1).
- Encrypt-then-MAC (AES-CBC RFC 3602 with a random IV, or ENCR_NULL RFC 2410,
  plus HMAC-SHA2 RFC 4868): the ICV covers SPI..ciphertext, followed by the
  high 32 sequence bits when ESN is on (RFC 4303 §2.2.1, appended, not sent).

On receive the order is RFC 4303 §3.4: replay check, ICV/tag check, then
the window moves, then padding, next header and (tunnel) the inner packet's
selectors are checked. Nothing is delivered before the ICV verified
(engine.esp.esp_inbound; this module: the keying both directions share and
the outbound path).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

from engine.crypto.encr import Cipher, encr_keymat_size, make_cipher, random_iv
from engine.crypto.integ import Integ, integ_icv_size
from engine.crypto.transforms import EncrId
from engine.esp import ip
from engine.esp.errors import TransportFragment
from engine.esp.sa import OutboundSa, SaCommon
from engine.secret import Secret

_HDR = struct.Struct("!II")
_AAD_ESN = struct.Struct("!III")
_IV64 = struct.Struct("!Q")
_SEQ_HI = struct.Struct("!I")
_U16 = struct.Struct("!H")
_PADS = [bytes(range(1, n + 1)) for n in range(256)]
"""Self-describing padding (RFC 4303 §2.4): 1, 2, 3, ..."""


@functools.lru_cache(maxsize=64)
def _shape(encr_id: int, key_bits: int | None) -> tuple[bool, int, int, int]:
    """(aead, IV size, block size, ICV size) of a transform, without its key: read once per transform
    from a cipher keyed with zeros, which is dropped at once (only the sizes leave this function)."""
    c = make_cipher(encr_id, key_bits, bytes(encr_keymat_size(encr_id, key_bits)))
    return c.aead, c.iv_size, c.block_size, c.icv_size


class DeferredKeys:
    """What keys an ESP SA on its first packet (`EspOutboundSa.deferred`, `EspInboundSa.deferred`):
    the transform IDs and the keys, still wrapped (`Secret`, never in a repr)."""

    __slots__ = ("encr_id", "key_bits", "encr_key", "integ_id", "integ_key")

    def __init__(self, encr_id: int, key_bits: int | None, encr_key: Secret, integ_id: int = 0,
                 integ_key: Secret | None = None) -> None:
        self.encr_id = encr_id
        self.key_bits = key_bits
        self.encr_key = encr_key
        self.integ_id = integ_id
        self.integ_key = integ_key

    def cipher(self) -> Cipher:
        return make_cipher(self.encr_id, self.key_bits, self.encr_key.reveal())

    def integ(self) -> Integ | None:
        return Integ(self.integ_id, self.integ_key.reveal()) if self.integ_id else None

    def __repr__(self) -> str:
        return f"<DeferredKeys encr {self.encr_id} integ {self.integ_id}>"


def _describe(cipher: Cipher | None, keys: DeferredKeys | None) -> str:
    if keys is None:
        return repr(cipher)
    try:
        name = EncrId(keys.encr_id).name
    except ValueError:
        name = str(keys.encr_id)
    return f"Cipher({name}{f'_{keys.key_bits}' if keys.key_bits else ''})"


class _EspCrypto:
    """Mixin: the keyed transforms and the sizes both directions need.

    An SA built with `deferred` keys knows its sizes at once but keys its cipher (and MAC) only
    when its first packet needs them: a CHILD SA that is installed and deleted unused (a
    handshake benchmark, a gateway holding idle road warriors) never builds them. Keying happens
    on the thread that runs the SA's packets (SAs are used from one thread only)."""

    __slots__ = ()

    def _setup_crypto(self, cipher: Cipher | None, integ: Integ | None, allow_unauthenticated: bool,
                      keys: DeferredKeys | None = None) -> None:
        if keys is not None:
            aead, ivs, block, icvs = _shape(keys.encr_id, keys.key_bits)
            integ_icvs = integ_icv_size(keys.integ_id) if keys.integ_id else None
        else:
            aead, ivs, block, icvs = cipher.aead, cipher.iv_size, cipher.block_size, cipher.icv_size
            integ_icvs = integ.icv_size if integ is not None else None
        if aead:
            if integ_icvs is not None:
                raise ValueError(f"{_describe(cipher, keys)} is an AEAD: ESP takes no separate integrity "
                                 "transform with it")
        elif integ_icvs is None and not allow_unauthenticated:
            raise ValueError(f"ESP with {_describe(cipher, keys)} needs an integrity transform")
        self._cipher = cipher
        self._integ = integ
        self._keys = keys
        self._aead = aead
        self._ivs = ivs
        self._icvs = icvs if aead else (integ_icvs or 0)
        self._align = max(block, 4)

    @property
    def cipher(self) -> Cipher:
        """The keyed cipher (keyed now if the SA was built with deferred keys)."""
        if self._keys is not None:
            self._key()
        return self._cipher

    @property
    def integ(self) -> Integ | None:
        if self._keys is not None:
            self._key()
        return self._integ

    def _key(self) -> None:
        keys, self._keys = self._keys, None
        self._cipher = keys.cipher()
        self._integ = keys.integ()
        self._bind()


class EspOutboundSa(_EspCrypto, OutboundSa):
    """Outbound ESP: see `OutboundSa` for what `protect` takes and returns."""

    __slots__ = ("_cipher", "_integ", "_keys", "_aead", "_ivs", "_icvs", "_align", "_enc", "_mac", "_rng",
                 "_trailers", "_enc_iv", "_seal_all")

    protocol = "esp"

    def __init__(self, spi: int, *, cipher: Cipher, integ: Integ | None = None,
                 rng: Callable[[int], bytes] | None = None, allow_unauthenticated: bool = False, **kw) -> None:
        """``rng(n)`` makes CBC IVs (default: the OS CSPRNG); ``allow_unauthenticated``
        permits encryption without integrity, for reading old test vectors only."""
        super().__init__(spi, **kw)
        self._setup_crypto(cipher, integ, allow_unauthenticated)
        self._rng = rng if rng is not None else random_iv
        self._trailers: dict[int, list[bytes]] = {}
        self._bind()

    @classmethod
    def deferred(cls, spi: int, common: SaCommon, keys: DeferredKeys) -> EspOutboundSa:
        """An SA keyed on its first packet (see `_EspCrypto`); ``common`` is shared with its pair."""
        self = cls.__new__(cls)
        self._start(spi, common)
        self._start_out()
        self._setup_crypto(None, None, False, keys)
        self._rng = random_iv
        self._trailers = {}
        self._enc = self._mac = self._enc_iv = None
        self._seal_all = (None, b"")  # protect_all declines until the first packet keys the SA
        self._unkeyed = True
        self._seq_check = 0  # the first packet takes the slow path, which keys the SA
        return self

    def _bind(self) -> None:
        cipher, integ = self._cipher, self._integ
        self._enc = cipher.encrypt
        self._mac = integ.compute if integ is not None else None
        # protect_all's cipher call: the AEAD's own encrypt and the salt (no wrapper call per packet).
        parts = getattr(cipher, "parts", None)
        self._seal_all = parts()[::2] if parts is not None else (cipher.encrypt, b"")
        # CBC with our own IVs: the cipher's open context makes the IV itself (a
        # fresh context per packet costs more than the encryption). A given rng
        # (test vectors with fixed IVs) keeps the plain path.
        self._enc_iv = getattr(cipher, "encrypt_random_iv", None) if self._rng is random_iv else None
        if self._unkeyed:
            self._keyed()

    @property
    def full_ip(self) -> bool:
        return not self.tunnel

    def _make_trailers(self, nh: int) -> list[bytes]:
        # One trailer per payload length modulo the alignment.
        align = self._align
        out = []
        for r in range(align):
            p = -(r + 2) % align
            out.append(_PADS[p] + bytes((p, nh)))
        self._trailers[nh] = out
        return out

    def _seal(self, payload, nh: int, seq: int) -> bytes:
        """The ESP packet (SPI..ICV) carrying ``payload`` with next header ``nh``."""
        trailers = self._trailers.get(nh) or self._make_trailers(nh)
        plain = b"".join((payload, trailers[len(payload) % self._align]))
        spi = self.spi
        seq_lo = seq & 0xFFFFFFFF
        hdr = _HDR.pack(spi, seq_lo)
        if self._aead:
            iv = _IV64.pack(seq)
            aad = _AAD_ESN.pack(spi, seq >> 32, seq_lo) if self.esn else hdr
            return b"".join((hdr, iv, self._enc(iv, plain, aad)))
        buf = bytearray(hdr)
        if self._enc_iv is not None:
            buf += self._enc_iv(plain)
        else:
            iv = self._rng(self._ivs) if self._ivs else b""
            buf += iv
            buf += self._enc(iv, plain)
        mac = self._mac
        if mac is not None:
            if self.esn:
                buf += _SEQ_HI.pack(seq >> 32)
                icv = mac(buf)
                del buf[-4:]
            else:
                icv = mac(buf)
            buf += icv
        return bytes(buf)

    def protect(self, packet: bytes, now: float) -> bytes:
        """Protect one IP packet (bytes or bytearray); see `OutboundSa`."""
        seq = self.seq + 1
        if seq >= self._seq_check:
            self._next_seq(seq)
        n = len(packet)
        if self.tunnel:
            v = packet[0] >> 4 if n >= 20 else 0
            if v == 4:
                nh = 4
            elif v == 6 and n >= 40:
                nh = 41
            else:
                raise ValueError(f"not an IPv4/IPv6 packet ({n} bytes)")
            if self._aead:
                # The common case, inlined: tunnel mode with an AEAD (see _seal).
                trailers = self._trailers.get(nh) or self._make_trailers(nh)
                spi = self.spi
                seq_lo = seq & 0xFFFFFFFF
                hdr = _HDR.pack(spi, seq_lo)
                iv = _IV64.pack(seq)
                out = b"".join((hdr, iv, self._enc(iv, packet + trailers[n % self._align],
                                                   _AAD_ESN.pack(spi, seq >> 32, seq_lo) if self.esn else hdr)))
            else:
                out = self._seal(packet, nh, seq)
        else:
            out = self._transport(packet, seq)
        self.seq = seq
        self.bytes += n
        self.packets += 1
        self.last_used = now
        if self.bytes >= self._bytes_next or self.packets >= self._pkts_next:
            self._limits(now, out, packet, seq)
        return out

    def protect_all(self, packets: list, now: float) -> list[bytes] | None:
        """`protect` of each of ``packets``, the segments of one cut super-packet (IP packets of one
        version, each at least its headers long), in one loop: the same ESP packets, sequence
        numbers and counters as that many `protect` calls, for less interpreter work per packet
        (the hot path of a TCP stream through the tunnel). Only the common case: tunnel mode, an
        AEAD, and no sequence-number mark, lifetime or sampling threshold reached within the
        batch; otherwise None with nothing done (see `OutboundSa.protect_all`)."""
        k = len(packets)
        seq = self.seq
        if not k or not self.tunnel or not self._aead or seq + k >= self._seq_check \
                or self.packets + k >= self._pkts_next:
            return None
        total = sum(map(len, packets))
        if self.bytes + total >= self._bytes_next:
            return None
        v = packets[0][0] >> 4
        if v == 4 and min(map(len, packets)) >= 20:
            nh = 4
        elif v == 6 and min(map(len, packets)) >= 40:
            nh = 41
        else:
            return None  # protect() names what is wrong with it
        trailers = self._trailers.get(nh) or self._make_trailers(nh)
        align = self._align
        enc, salt = self._seal_all  # salt b"": the wrapper, which adds it
        spi = self.spi
        esn = self.esn
        pack_hdr = _HDR.pack
        pack_iv = _IV64.pack
        join = b"".join
        out = []
        append = out.append
        try:
            for packet in packets:
                seq += 1
                hdr = pack_hdr(spi, seq & 0xFFFFFFFF)
                iv = pack_iv(seq)
                append(join((hdr, iv, enc(salt + iv, packet + trailers[len(packet) % align],
                                          _AAD_ESN.pack(spi, seq >> 32, seq & 0xFFFFFFFF) if esn else hdr))))
        finally:
            self.seq = seq  # every number used stays used, even if a packet raised: no nonce twice
        self.bytes += total
        self.packets += k
        self.last_used = now
        return out

    def _transport(self, packet: bytes, seq: int) -> bytes:
        try:
            v = ip.ip_version(packet)
            total = ip.packet_length(packet)
            if v != self.version:
                raise ip.IpError(f"IPv{v} packet on an IPv{self.version} transport-mode SA")
            if v == 4:
                off = ip.ipv4_header_length(packet)
                nh_off, nh = 9, packet[9]
            else:
                off, nh_off, nh = ip.ipv6_transport_split(packet)
        except ip.IpError as exc:
            raise ValueError(str(exc)) from None
        if v == 4 and (packet[6] & 0x3F or packet[7]):
            raise TransportFragment("an IPv4 fragment on a transport-mode SA")
        if total > 0xFF00 and (total if v == 4 else total - 40) + 18 + self._ivs + self._icvs + self._align > 0xFFFF:
            # UDP + ESP header, IV, padding, trailer, ICV past the IP length field: refused before
            # sealing (struct.error escaped the TUN read loop; a datagram near 64 KiB).
            raise ValueError(f"an IPv{v} packet of {total} bytes has no room for ESP")
        body = self._seal(memoryview(packet)[off:total], nh, seq)
        hdr = bytearray(packet[:off])
        if self.encap:
            if v == 4:
                src, dst = packet[12:16], packet[16:20]
            else:
                src, dst = packet[8:24], packet[24:40]
            extra = ip.udp_header(src, dst, self.local_port, self.remote_port, body)
            hdr[nh_off] = ip.IPPROTO_UDP
        else:
            extra = b""
            hdr[nh_off] = ip.IPPROTO_ESP
        if v == 4:
            _U16.pack_into(hdr, 2, off + len(extra) + len(body))
            hdr[10] = hdr[11] = 0
            _U16.pack_into(hdr, 10, ip.checksum(hdr))
        else:
            _U16.pack_into(hdr, 4, off - 40 + len(extra) + len(body))
        return b"".join((hdr, extra, body))
