"""AH (RFC 4302) packet paths, tunnel and transport mode, IPv4 and IPv6.

Wire format::

    IP header | NH(1) PayloadLen(1) Reserved(2) | SPI(4) | Seq(4) | ICV + padding | payload

The ICV covers the IP header with its mutable fields zeroed (§3.3.3.1:
IPv4 TOS, flags + fragment offset, TTL, checksum and the mutable options;
IPv6 traffic class, flow label, hop limit and the option data of options
flagged as changing en route), the AH header with the ICV field zeroed,
the payload, and with ESN the high 32 sequence bits appended (§2.5.1).
The AH header is padded to 4 bytes over IPv4 and 8 over IPv6 (§2.6).

AH always works on whole IP packets: `protect` returns and `unprotect`
takes the full packet, outer header included (its fields are signed).
"""

from __future__ import annotations

import struct

from engine.crypto.integ import Integ
from engine.esp import ip
from engine.esp.errors import TransportFragment
from engine.esp.sa import InboundSa, OutboundSa

_AH = struct.Struct("!BBHII")
_SEQ_HI = struct.Struct("!I")
_U16 = struct.Struct("!H")

# RFC 4302 appendix A.1: IPv4 options that are immutable and so signed as
# they are (EOL, NOP, Security, Extended Security, Commercial Security,
# Router Alert, SDB). Every other option is zeroed whole (A.1, as Linux's
# ah4 does); loose/strict source routes are not rewritten to the final
# destination, so AH over source-routed IPv4 is not supported.
_IMMUTABLE_V4_OPTIONS = frozenset({0, 1, 130, 133, 134, 148, 149})


class AhFormatError(ValueError):
    """A header AH cannot sign or check (bad options, routing header in transit)."""


def _zero_mutable_v4(buf: bytearray, ihl: int) -> None:
    """Zero the IPv4 fields AH does not sign, in place (header at buf[0:ihl])."""
    buf[1] = 0          # DSCP/ECN
    buf[6] = buf[7] = 0  # flags and fragment offset
    buf[8] = 0          # TTL
    buf[10] = buf[11] = 0  # header checksum
    i = 20
    while i < ihl:
        opt = buf[i]
        if opt == 0:
            break  # end of option list; what follows is padding
        if opt == 1:
            i += 1
            continue
        if i + 1 >= ihl or buf[i + 1] < 2 or i + buf[i + 1] > ihl:
            raise AhFormatError(f"IPv4 option {opt} at byte {i} has a bad length")
        length = buf[i + 1]
        if opt not in _IMMUTABLE_V4_OPTIONS:
            buf[i:i + length] = bytes(length)
        i += length


def _zero_mutable_v6(buf: bytearray, ah_at: int) -> None:
    """Zero the IPv6 fields AH does not sign, in place, for the headers before ``ah_at``."""
    buf[0] = 0x60
    buf[1] = buf[2] = buf[3] = 0  # traffic class and flow label
    buf[7] = 0  # hop limit
    nh = buf[6]
    off = 40
    while off < ah_at:
        length = ((buf[off + 1] + 1) * 8)
        if nh in (ip.IPPROTO_HOPOPTS, ip.IPPROTO_DSTOPTS):
            i, end = off + 2, off + length
            while i < end:
                t = buf[i]
                if t == 0:  # Pad1
                    i += 1
                    continue
                if i + 1 >= end or i + 2 + buf[i + 1] > end:
                    raise AhFormatError(f"IPv6 option {t} at byte {i} has a bad length")
                olen = buf[i + 1]
                if t & 0x20:  # option data may change en route (RFC 8200 §4.2)
                    buf[i + 2:i + 2 + olen] = bytes(olen)
                i += 2 + olen
        elif nh == ip.IPPROTO_ROUTING:
            if buf[off + 3]:
                # The ICV covers the header as the final destination sees it; we do not
                # reorder routing headers in transit.
                raise AhFormatError("AH over an IPv6 routing header with segments left is not supported")
        nh = buf[off]
        off += length


def _ah_length(icv_size: int, version: int) -> int:
    align = 4 if version == 4 else 8
    return -(-(12 + icv_size) // align) * align


class AhOutboundSa(OutboundSa):
    """Outbound AH; `protect` returns a whole IP packet in both modes."""

    __slots__ = ("integ", "_mac", "_icvs", "_ah_len", "_ah_fill")

    protocol = "ah"
    full_ip = True
    _ip_proto = ip.IPPROTO_AH

    def __init__(self, spi: int, *, integ: Integ, **kw) -> None:
        super().__init__(spi, **kw)
        if self.encap:
            raise ValueError("AH cannot be UDP-encapsulated (RFC 3948 covers ESP only)")
        self.integ = integ
        self._mac = integ.compute
        self._icvs = integ.icv_size
        self._ah_len = _ah_length(self._icvs, self.version)
        self._ah_fill = bytes(self._ah_len - 12)

    def protect(self, packet: bytes, now: float, *, ttl: int = 64) -> bytes:
        seq = self.seq + 1
        if seq >= self._seq_check:
            self._next_seq(seq)
        try:
            v = ip.ip_version(packet)
            if self.tunnel:
                out = self._tunnel(packet, v, seq, ttl)
            else:
                out = self._transport(packet, v, seq)
        except ip.IpError as exc:
            raise ValueError(str(exc)) from None
        self.seq = seq
        n = len(packet)
        self.bytes += n
        self.packets += 1
        self.last_used = now
        if self.bytes >= self._bytes_next or self.packets >= self._pkts_next:
            self._limits(now, out, packet, seq)
        return out

    def _sign(self, buf: bytearray, icv_at: int, seq: int) -> None:
        """Compute the ICV over ``buf`` (mutable fields already zeroed) and store it."""
        if self.esn:
            buf += _SEQ_HI.pack(seq >> 32)
            icv = self._mac(buf)
            del buf[-4:]
        else:
            icv = self._mac(buf)
        buf[icv_at:icv_at + self._icvs] = icv

    def _tunnel(self, packet: bytes, v: int, seq: int, ttl: int) -> bytes:
        nh = ip.IPPROTO_IPIP if v == 4 else ip.IPPROTO_IPV6
        ah_len = self._ah_len
        ah = _AH.pack(nh, ah_len // 4 - 2, 0, self.spi, seq & 0xFFFFFFFF) + self._ah_fill
        if self.version == 4:
            # Mutable fields start zeroed; TTL and checksum are set after signing.
            # ID 1..65535: without DF, the raw socket replaces an ID of 0 after we signed it (Linux
            # raw_send_hdrinc), and AH covers the ID.
            buf = bytearray(ip.IPV4_HEADER.pack(0x45, 0, 20 + ah_len + len(packet), seq % 0xFFFF + 1, 0, 0,
                                                ip.IPPROTO_AH, 0, self.local, self.remote))
            buf += ah
            buf += packet
            self._sign(buf, 32, seq)
            buf[8] = ttl
            _U16.pack_into(buf, 10, ip.checksum(memoryview(buf)[:20]))
        else:
            buf = bytearray(ip.IPV6_HEADER.pack(6 << 28, ah_len + len(packet), ip.IPPROTO_AH, 0,
                                                self.local, self.remote))
            buf += ah
            buf += packet
            self._sign(buf, 52, seq)
            buf[7] = ttl
        return bytes(buf)

    def _transport(self, packet: bytes, v: int, seq: int) -> bytes:
        if v != self.version:
            raise ip.IpError(f"IPv{v} packet on an IPv{self.version} transport-mode SA")
        total = ip.packet_length(packet)
        ah_len = self._ah_len
        if v == 4:
            off = ip.ipv4_header_length(packet)
            nh_off = 9
            if packet[6] & 0x3F or packet[7]:
                raise TransportFragment("an IPv4 fragment on a transport-mode SA")
            if total + ah_len > 0xFFFF:
                raise ip.IpError(f"an IPv4 packet of {total} bytes has no room for AH")
        else:
            off, nh_off, _ = ip.ipv6_transport_split(packet)
            if total - 40 + ah_len > 0xFFFF:
                raise ip.IpError(f"an IPv6 payload of {total - 40} bytes has no room for AH")
        hdr = bytearray(packet[:off])
        nh = hdr[nh_off]
        hdr[nh_off] = ip.IPPROTO_AH
        if v == 4 and not (hdr[4] or hdr[5] or hdr[6] & 0x40):
            _U16.pack_into(hdr, 4, seq % 0xFFFF + 1)  # as in _tunnel: ID 0 without DF would be replaced
        if v == 4:
            _U16.pack_into(hdr, 2, total + ah_len)
        else:
            _U16.pack_into(hdr, 4, total - 40 + ah_len)
        signed = bytearray(hdr)
        try:
            if v == 4:
                _zero_mutable_v4(signed, off)
            else:
                _zero_mutable_v6(signed, off)
        except AhFormatError as exc:
            raise ip.IpError(str(exc)) from None
        signed += _AH.pack(nh, ah_len // 4 - 2, 0, self.spi, seq & 0xFFFFFFFF)
        signed += self._ah_fill
        signed += memoryview(packet)[off:total]
        self._sign(signed, off + 12, seq)
        if v == 4:
            hdr[10] = hdr[11] = 0
            _U16.pack_into(hdr, 10, ip.checksum(hdr))
        signed[:off] = hdr  # the real header values back in place of the zeroed ones
        return bytes(signed)


class AhInboundSa(InboundSa):
    """Inbound AH; `unprotect` takes the whole IP packet in both modes."""

    __slots__ = ("integ", "_verify", "_icvs", "_min_ah")

    protocol = "ah"
    full_ip = True

    def __init__(self, spi: int, *, integ: Integ, **kw) -> None:
        super().__init__(spi, **kw)
        if self.encap:
            raise ValueError("AH cannot be UDP-encapsulated (RFC 3948 covers ESP only)")
        self.integ = integ
        self._verify = integ.verify
        self._icvs = integ.icv_size
        self._min_ah = 12 + self._icvs

    def unprotect(self, data: bytes, now: float) -> bytes | None:
        if self.expired:
            raise self._drop("no_sa", f"SA {self.spi:08x} has expired", data, now)
        try:
            v = ip.ip_version(data)
            total = ip.packet_length(data)
            if v == 4:
                off = ip.ipv4_header_length(data)
                nh_off = 9
            else:
                off, nh_off = 40, 6
                while data[nh_off] in (ip.IPPROTO_HOPOPTS, ip.IPPROTO_ROUTING, ip.IPPROTO_DSTOPTS):
                    if off + 8 > total:
                        raise ip.IpError("IPv6 extension headers run past the packet")
                    nh_off = off
                    off += (data[off + 1] + 1) * 8
            if data[nh_off] != ip.IPPROTO_AH:
                raise ip.IpError(f"protocol {data[nh_off]} where AH was expected")
            if off + self._min_ah > total:
                raise ip.IpError("AH header truncated")
        except ip.IpError as exc:
            raise self._drop("malformed", str(exc), data, now) from None
        nh, plen, _reserved, spi, seq_lo = _AH.unpack_from(data, off)
        ah_len = (plen + 2) * 4
        if ah_len < self._min_ah or off + ah_len > total:
            raise self._drop("malformed", f"AH length {ah_len} does not fit the ICV or the packet", data, now)
        if spi != self.spi:
            raise self._drop("no_sa", f"SPI {spi:08x} is not this SA's", data, now)
        w = self.window
        seq = w.infer(seq_lo) if self.esn else seq_lo
        if not w.check(seq):
            raise self._drop("replay", f"sequence number {seq} replayed or too old", data, now, seq)
        icv_at = off + 12
        signed = bytearray(data[:total])
        try:
            if v == 4:
                _zero_mutable_v4(signed, off)
            else:
                _zero_mutable_v6(signed, off)
        except AhFormatError as exc:
            raise self._drop("malformed", str(exc), data, now, seq) from None
        signed[icv_at:icv_at + self._icvs] = bytes(self._icvs)
        if self.esn:
            signed += _SEQ_HI.pack(seq >> 32)
        if not self._verify(signed, memoryview(data)[icv_at:icv_at + self._icvs]):
            raise self._drop("icv", "ICV mismatch", data, now, seq)
        w.update(seq)
        body = off + ah_len
        if self.tunnel:
            inner = data[body:total]
            want = 4 if nh == ip.IPPROTO_IPIP else 6 if nh == ip.IPPROTO_IPV6 else 0
            try:
                if not want or ip.ip_version(inner) != want:
                    raise ip.IpError(f"next header {nh} does not announce the inner IP packet")
                length = ip.packet_length(inner)
            except ip.IpError as exc:
                raise self._drop("malformed", str(exc), data, now, seq) from None
            if length != len(inner):
                inner = inner[:length]
        else:
            out = bytearray(data[:off])
            out[nh_off] = nh
            if v == 4:
                _U16.pack_into(out, 2, total - ah_len)
                out[10] = out[11] = 0
                _U16.pack_into(out, 10, ip.checksum(out))
            else:
                _U16.pack_into(out, 4, total - 40 - ah_len)
            out += memoryview(data)[body:total]
            inner = bytes(out)
        if not self._ts_any[inner[0] >> 4]:
            self._policy_check(inner, now, data, seq)
        self.bytes += len(inner)
        self.packets += 1
        self.last_used = now
        if self.bytes >= self._bytes_next or self.packets >= self._pkts_next:
            self._limits(now, data, inner, seq)
        return inner
