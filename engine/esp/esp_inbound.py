"""ESP inbound processing (RFC 4303 §3.4): replay check, ICV/tag check, window move, padding, next
header and (tunnel) the inner packet's selectors, in that order; nothing delivered before the ICV
verified. The wire format and the keying both directions share are in engine.esp.esp."""

from __future__ import annotations

from engine.crypto.encr import Cipher
from engine.crypto.errors import IntegrityError
from engine.crypto.integ import Integ
from engine.esp import ip
from engine.esp.errors import EspDrop
from engine.esp.replay import ReplayWindow, infer_esn
from engine.esp.esp import _AAD_ESN, _HDR, _PADS, _SEQ_HI, _U16, DeferredKeys, _EspCrypto
from engine.esp.sa import InboundSa, SaCommon


class EspInboundSa(_EspCrypto, InboundSa):
    """Inbound ESP: tunnel mode takes the ESP payload (SPI..ICV), transport mode
    the whole IP packet (with the UDP header still in it when encapsulated)."""

    __slots__ = ("_cipher", "_integ", "_keys", "_aead", "_ivs", "_icvs", "_align", "_dec", "_verify", "_min_len",
                 "full_ip", "_open_all")

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
        self._open_all = (None, b"", IntegrityError)  # an expired SA never keyed: never called
        return self

    def _start_esp(self) -> None:
        self._min_len = 8 + self._ivs + 2 + self._icvs
        self.full_ip = not self.tunnel
        """Transport mode takes the whole IP packet (an attribute: the receive path asks per packet)."""

    def _bind(self) -> None:
        cipher, integ = self._cipher, self._integ
        self._dec = getattr(cipher, "decrypt_stream", None) or cipher.decrypt
        # unprotect_all's cipher call: the AEAD's own decrypt, the salt and its tag error (no wrapper
        # call per packet; _min_len leaves at least the tag after the IV).
        parts = getattr(cipher, "parts", None)
        self._open_all = parts()[1:] if parts is not None else (self._dec, b"", IntegrityError)
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
        dec, salt, tag_error = self._open_all  # salt b"": the wrapper, which adds it
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
                plain = dec(salt + data[8:16], data[16:], _AAD_ESN.pack(spi, seq >> 32, seq_lo) if esn else data[:8])
            except tag_error:
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
