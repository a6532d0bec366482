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
selectors are checked. Nothing is delivered before the ICV verified.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

from engine.crypto.encr import Cipher, encr_keymat_size, make_cipher, random_iv
from engine.crypto.errors import IntegrityError
from engine.crypto.integ import Integ, integ_icv_size
from engine.crypto.transforms import EncrId
from engine.esp import ip
from engine.esp.errors import EspDrop, TransportFragment
from engine.esp.replay import ReplayWindow, infer_esn
from engine.esp.sa import InboundSa, OutboundSa, SaCommon
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
                 "_trailers", "_enc_iv")

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
        self._unkeyed = True
        self._seq_check = 0  # the first packet takes the slow path, which keys the SA
        return self

    def _bind(self) -> None:
        cipher, integ = self._cipher, self._integ
        self._enc = cipher.encrypt
        self._mac = integ.compute if integ is not None else None
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
        enc = self._enc
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
                append(join((hdr, iv, enc(iv, packet + trailers[len(packet) % align],
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


class EspInboundSa(_EspCrypto, InboundSa):
    """Inbound ESP: tunnel mode takes the ESP payload (SPI..ICV), transport mode
    the whole IP packet (with the UDP header still in it when encapsulated)."""

    __slots__ = ("_cipher", "_integ", "_keys", "_aead", "_ivs", "_icvs", "_align", "_dec", "_verify", "_min_len",
                 "full_ip")

    protocol = "esp"

    def __init__(self, spi: int, *, cipher: Cipher, integ: Integ | None = None,
                 allow_unauthenticated: bool = False, **kw) -> None:
        super().__init__(spi, **kw)
        self._setup_crypto(cipher, integ, allow_unauthenticated)
        self._start_esp()
        self._bind()

    @classmethod
    def deferred(cls, spi: int, common: SaCommon, keys: DeferredKeys, replay_window: int = 64) -> EspInboundSa:
        """An SA keyed by its first packet (see `_EspCrypto`), before any check: a forged one keys it
        too, once; the replay and ICV checks then run as for any packet. ``common`` is shared with
        its pair."""
        self = _UnkeyedEspInboundSa.__new__(_UnkeyedEspInboundSa)
        self._start(spi, common)
        self._start_in(replay_window, common)
        self._setup_crypto(None, None, False, keys)
        self._start_esp()
        self._dec = self._verify = None
        return self

    def _start_esp(self) -> None:
        self._min_len = 8 + self._ivs + 2 + self._icvs
        self.full_ip = not self.tunnel
        """Transport mode takes the whole IP packet (an attribute: the receive path asks per packet)."""

    def _bind(self) -> None:
        cipher, integ = self._cipher, self._integ
        self._dec = getattr(cipher, "decrypt_stream", None) or cipher.decrypt
        self._verify = integ.verify if integ is not None else None

    def _open(self, data, off: int, end: int, now: float) -> tuple[bytes, int, int, int]:
        """Verify and decrypt the ESP packet at data[off:end].

        Returns (plaintext, payload length, next header, sequence number);
        raises EspDrop. The replay window moves once the ICV verified.
        """
        if end - off < self._min_len:
            raise self._drop("malformed", f"ESP packet of {end - off} bytes is too short", data, now)
        spi, seq_lo = _HDR.unpack_from(data, off)
        if spi != self.spi:
            raise self._drop("no_sa", f"SPI {spi:08x} is not this SA's", data, now)
        w = self.window
        seq = w.infer(seq_lo) if self.esn else seq_lo
        if not w.check(seq):
            raise self._drop("replay", f"sequence number {seq} replayed or too old", data, now, seq)
        # Slices copy, but for packet-sized data a copy costs less than making memoryviews.
        if self._aead:
            iv_at = off + 8
            aad = _AAD_ESN.pack(spi, seq >> 32, seq_lo) if self.esn else data[off:iv_at]
            try:
                plain = self._dec(data[iv_at:iv_at + 8], data[iv_at + 8:end], aad)
            except IntegrityError:
                raise self._drop("icv", "authentication tag mismatch", data, now, seq) from None
        else:
            icv_at = end - self._icvs
            verify = self._verify
            if verify is not None:
                signed = data[off:icv_at] + _SEQ_HI.pack(seq >> 32) if self.esn else data[off:icv_at]
                if not verify(signed, data[icv_at:end]):
                    raise self._drop("icv", "ICV mismatch", data, now, seq)
            iv_at = off + 8
            try:
                plain = self._dec(data[iv_at:iv_at + self._ivs], data[iv_at + self._ivs:icv_at])
            except IntegrityError as exc:  # a length the cipher cannot take
                w.update(seq)
                raise self._drop("malformed", str(exc), data, now, seq) from None
        w.update(seq)
        n = len(plain)
        if n < 2:
            raise self._drop("malformed", "ESP plaintext has no trailer", data, now, seq)
        pad = plain[-2]
        length = n - 2 - pad
        if length < 0:
            raise self._drop("malformed", f"pad length {pad} exceeds the payload", data, now, seq)
        if pad and plain[length:n - 2] != _PADS[pad]:
            raise self._drop("malformed", "padding bytes are not 1, 2, 3, ...", data, now, seq)
        return plain, length, plain[-1], seq

    def unprotect(self, data: bytes, now: float) -> bytes | None:
        if self.expired:
            raise self._drop("no_sa", f"SA {self.spi:08x} has expired", data, now)
        if not self.tunnel:
            return self._unprotect_transport(data, now)
        if self._aead:
            # The common case, inlined: tunnel mode with an AEAD (same steps as _open).
            if len(data) < self._min_len:
                raise self._drop("malformed", f"ESP packet of {len(data)} bytes is too short", data, now)
            spi, seq_lo = _HDR.unpack_from(data)
            if spi != self.spi:
                raise self._drop("no_sa", f"SPI {spi:08x} is not this SA's", data, now)
            w = self.window
            seq = w.infer(seq_lo) if self.esn else seq_lo
            if not w.check(seq):
                raise self._drop("replay", f"sequence number {seq} replayed or too old", data, now, seq)
            try:
                plain = self._dec(data[8:16], data[16:], _AAD_ESN.pack(spi, seq >> 32, seq_lo) if self.esn
                                  else data[:8])
            except IntegrityError:
                raise self._drop("icv", "authentication tag mismatch", data, now, seq) from None
            w.update(seq)
            n = len(plain)
            pad = plain[-2] if n >= 2 else 255
            length = n - 2 - pad
            if length < 0 or pad and plain[length:n - 2] != _PADS[pad]:
                raise self._drop("malformed", "bad ESP padding or pad length", data, now, seq)
            nh = plain[-1]
        else:
            plain, length, nh, seq = self._open(data, 0, len(data), now)
        return self._tunnel_inner(plain, length, nh, data, now, seq)

    def _tunnel_inner(self, plain: bytes, length: int, nh: int, data, now: float, seq: int) -> bytes | None:
        """The inner packet of an authentic tunnel-mode plaintext (its payload ``length`` bytes long),
        checked, counted and delivered; raises EspDrop."""
        if nh == 4:
            if length < 20 or plain[0] >> 4 != 4:
                raise self._drop("malformed", "next header 4 but no IPv4 packet inside", data, now, seq)
            total = (plain[2] << 8) | plain[3]
        elif nh == 41:
            if length < 40 or plain[0] >> 4 != 6:
                raise self._drop("malformed", "next header 41 but no IPv6 packet inside", data, now, seq)
            total = 40 + ((plain[4] << 8) | plain[5])
        elif nh == ip.IPPROTO_NONE:
            return self._dummy(now)
        else:
            raise self._drop("malformed", f"next header {nh} in a tunnel-mode SA", data, now, seq)
        if total > length or total < 20:
            raise self._drop("malformed", f"inner IP length {total} but {length} bytes carried", data, now, seq)
        # Anything after the inner packet is TFC padding (RFC 4303 §2.4): dropped here.
        inner = plain[:total]
        if not self._ts_any[inner[0] >> 4]:
            self._policy_check(inner, now, data, seq)
        self.bytes += total
        self.packets += 1
        self.last_used = now
        if self.bytes >= self._bytes_next or self.packets >= self._pkts_next:
            self._limits(now, data, inner, seq)
        return inner

    def unprotect_all(self, datas: list, now: float, out: list) -> None:
        """`unprotect` of each of ``datas`` (ESP payloads, SPI..ICV, for this SA: bytes or memoryviews
        read before the call returns), in order: inner packets appended to ``out``, a dropped packet
        counted and skipped. The same inner packets, counters, drops by reason, replay window, samples
        and lifetime events as that many `unprotect` calls, for less interpreter work per packet (a
        receive batch of one stream). The loop inlines the common case (tunnel mode, an AEAD, a
        replay window, an inner IPv4 packet inside any selectors, no threshold reached); anything else
        takes the per-packet code, the same checks in the same order: nothing moves the window before
        the ICV verified (RFC 4303 §3.4.3)."""
        i = 0
        k = len(datas)
        if k and self._dec is None:  # unkeyed (see `deferred`): the first packet keys it
            self._one(datas[0], now, out)
            i = 1
        w = self.window
        if not self.tunnel or not self._aead or w.__class__ is not ReplayWindow:
            for j in range(i, k):
                self._one(datas[j], now, out)
            return
        dec = self._dec
        my_spi = self.spi
        esn = self.esn
        size = w.size
        mask = w._mask
        min_len = self._min_len
        any4 = self._ts_any[4]
        addr_only = self._addr_only
        unpack = _HDR.unpack_from
        append = out.append
        pads = _PADS
        while i < k:
            data = datas[i]
            i += 1
            if self.expired or len(data) < min_len:
                self._one(data, now, out)
                continue
            spi, seq_lo = unpack(data)
            top = w.top
            seq = infer_esn(seq_lo, top, size) if esn else seq_lo
            # ReplayWindow.check, inlined; a packet it refuses takes unprotect, which drops it.
            if spi != my_spi or seq <= top and (seq <= 0 or top - seq >= size or (w.bitmap >> (top - seq)) & 1):
                self._one(data, now, out)
                continue
            try:
                plain = dec(data[8:16], data[16:], _AAD_ESN.pack(spi, seq >> 32, seq_lo) if esn else data[:8])
            except IntegrityError:
                self._drop("icv", "authentication tag mismatch", data, now, seq)
                continue
            # ReplayWindow.update, inlined: only now that the ICV verified.
            if seq > top:
                shift = seq - top
                w.bitmap = ((w.bitmap << shift) | 1) & mask if shift < size else 1
                w.top = seq
            else:
                w.bitmap |= 1 << (top - seq)
            n = len(plain)
            pad = plain[-2] if n >= 2 else 255
            length = n - 2 - pad
            if length < 0 or pad and plain[length:n - 2] != pads[pad]:
                self._drop("malformed", "bad ESP padding or pad length", data, now, seq)
                continue
            total = (plain[2] << 8) | plain[3] if length >= 20 else 0
            # The inner IPv4 packet inside the selectors: any, or the address pair that passed last
            # (see _policy_check); anything else takes the whole tail of unprotect.
            if plain[-1] != 4 or plain[0] >> 4 != 4 or not 20 <= total <= length \
                    or not (any4 or addr_only and total >= 40 and plain[12:20] == self._passed):
                try:
                    inner = self._tunnel_inner(plain, length, plain[-1], data, now, seq)
                except EspDrop:
                    continue
                if inner is not None:
                    append(inner)
                continue
            inner = plain[:total]
            append(inner)
            self.bytes += total
            self.packets += 1
            self.last_used = now
            if self.bytes >= self._bytes_next or self.packets >= self._pkts_next:
                self._limits(now, data, inner, seq)

    def _one(self, data, now: float, out: list) -> None:
        """`unprotect_all`'s per-packet path: one packet through `unprotect`."""
        try:
            inner = self.unprotect(bytes(data), now)
        except EspDrop:
            return
        if inner is not None:
            out.append(inner)

    def _dummy(self, now: float) -> None:
        # An authentic dummy packet (RFC 4303 §2.6): counted, nothing delivered.
        self.packets += 1
        self.last_used = now
        return None

    def _unprotect_transport(self, data: bytes, now: float) -> bytes | None:
        try:
            v = ip.ip_version(data)
            end = ip.packet_length(data)
            if v != self.version:
                raise ip.IpError(f"IPv{v} packet on an IPv{self.version} SA")
            if v == 4:
                hdr_len = ip.ipv4_header_length(data)
                nh_off, proto = 9, data[9]
            else:
                hdr_len, nh_off, proto = ip.ipv6_transport_split(data)
        except ip.IpError as exc:
            raise self._drop("malformed", str(exc), data, now) from None
        off = hdr_len
        if proto == ip.IPPROTO_UDP and self.encap:
            off += 8  # RFC 3948: the UDP header sits between IP and ESP
        elif proto != ip.IPPROTO_ESP:
            raise self._drop("malformed", f"protocol {proto} where ESP was expected", data, now)
        plain, length, nh, seq = self._open(data, off, end, now)
        if nh == ip.IPPROTO_NONE:
            return self._dummy(now)
        out = bytearray(data[:hdr_len])
        out[nh_off] = nh
        if v == 4:
            _U16.pack_into(out, 2, hdr_len + length)
            out[10] = out[11] = 0
            _U16.pack_into(out, 10, ip.checksum(out))
        else:
            _U16.pack_into(out, 4, hdr_len - 40 + length)
        out += memoryview(plain)[:length]
        if self.encap:
            ip.fix_transport_checksum(out, hdr_len, nh)
        inner = bytes(out)
        if not self._ts_any[v]:
            self._policy_check(inner, now, data, seq)
        self.bytes += len(inner)
        self.packets += 1
        self.last_used = now
        if self.bytes >= self._bytes_next or self.packets >= self._pkts_next:
            self._limits(now, data, inner, seq)
        return inner


class _UnkeyedEspInboundSa(EspInboundSa):
    """An `EspInboundSa.deferred` until its first packet, which keys it and makes it a plain
    EspInboundSa: no check is left on the per-packet path, and no bound method stored on the SA
    makes a reference cycle (the collector would have to free every SA)."""

    __slots__ = ()

    def _key(self) -> None:
        super()._key()
        self.__class__ = EspInboundSa

    def unprotect(self, data: bytes, now: float) -> bytes | None:
        if not self.expired:
            self._key()
        return EspInboundSa.unprotect(self, data, now)
