"""Segmentation for a TUN device with offloads
(IFF_VNET_HDR + TSO/USO), the way wireguard-go and Tailscale run theirs.

With offloads on, one read from the TUN device can be a TCP or UDP
*super-packet* of up to 64 KiB, preceded by a 10-byte ``virtio_net_hdr``
telling how it is to be cut (``gso_size``) and where its transport
checksum, left partial, goes. Nothing of that size ever leaves as one ESP
packet: `segment` cuts it here into ordinary packets of at most the
device's MTU, with the headers a NIC would write (IPv4 ID + 1 per segment,
total length, TCP sequence numbers, FIN/PSH only on the last segment, CWR
only on the first, full TCP/UDP and IPv4 header checksums), so each ESP
packet carries one standard packet, whatever the peer.

Inbound, the reverse (the receiving NIC's GRO): engine.datapath.coalesce.

Path MTU: `fragment_ipv4` and `too_big` serve the datapath when the path to
a peer carries less than the device's MTU: a packet that may be fragmented
(IPv4 without DF) is cut into IP fragments before encryption, one that may
not gets the ICMP "fragmentation needed" / ICMPv6 "packet too big" a router
would send, so its sender lowers its packet size.
"""

from __future__ import annotations

import struct

import numpy

from engine.esp.ip import checksum, ipv4_later_fragment_header

VNET = struct.Struct("<BBHHHH")
"""virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (little-endian: TUN
uses the host's order for a non-virtio device, and the tun driver is little-endian on x86/arm)."""
VNET_SIZE = VNET.size
NEEDS_CSUM = 1
DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
ZERO_HDR = bytes(VNET_SIZE)
MAX_SEGMENTS = 64
"""Segments merged into one super-packet at most (the kernel's GRO limit per packet, roughly)."""

_U16 = struct.Struct("!H")
_U16U16 = struct.Struct("!HH")
_U32 = struct.Struct("!I")
_TCP_FIN, _TCP_PSH, _TCP_ACK, _TCP_CWR = 0x01, 0x08, 0x10, 0x80


class OffloadError(ValueError):
    """A super-packet whose offload header does not describe it; the message says what."""


def fold(s: int) -> int:
    """One's-complement fold of a partial sum to 16 bits (not complemented)."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def complete_checksum(pkt: bytearray, start: int, offset: int) -> None:
    """Finish a partial TCP/UDP checksum: what a NIC does for CHECKSUM_PARTIAL. The field holds the
    pseudo-header sum; the result covers it and everything from ``start``."""
    pos = start + offset
    c = checksum(memoryview(pkt)[start:])
    if c == 0 and offset == 6:
        c = 0xFFFF  # UDP sends a computed zero as all ones (RFC 768)
    _U16.pack_into(pkt, pos, c)


def _pseudo(pkt, v4: bool, proto: int) -> int:
    if v4:
        return int.from_bytes(pkt[12:16], "big") + int.from_bytes(pkt[16:20], "big") + proto
    return int.from_bytes(pkt[8:24], "big") + int.from_bytes(pkt[24:40], "big") + proto


def _segment_pseudo(pkt, v4: bool, proto: int, ihl: int) -> int:
    """`_pseudo` for a super-packet cut here: behind an IPv6 routing header with segments left, the
    pseudo-header's destination is the final one (RFC 8200 §8.1), the header's last address
    (Segment List[0] of a segment routing header, RFC 8754 §2)."""
    if v4 or ihl == 40:
        return _pseudo(pkt, v4, proto)
    dst = pkt[24:40]
    nh, off = pkt[6], 40
    while off < ihl and nh in (0, 43, 60):
        n = pkt[off + 1]
        if nh == 43 and pkt[off + 3] and n >= 2:  # segments left, at least one address
            kind = pkt[off + 2]
            if kind in (0, 2):
                dst = pkt[off + 8 + 16 * (n // 2 - 1):off + 8 + 16 * (n // 2)]
            elif kind == 4:
                dst = pkt[off + 8:off + 24]
        nh, off = pkt[off], off + (n + 1) * 8
    return int.from_bytes(pkt[8:24], "big") + int.from_bytes(dst, "big") + proto


def transport_offset(pkt) -> int:
    """Where the TCP/UDP header starts (past IPv6 hop-by-hop, routing, destination options): csum_start
    of a super-packet without NEEDS_CSUM, for which Linux writes 0 (a CHECKSUM_UNNECESSARY GSO skb:
    virtio_net_hdr_from_skb). IndexError for a truncated packet."""
    if pkt[0] >> 4 == 4:
        return (pkt[0] & 15) * 4
    nh, off = pkt[6], 40
    while nh in (0, 43, 60):
        nh, off = pkt[off], off + (pkt[off + 1] + 1) * 8
    return off


def segment(pkt: bytes, gso_type: int, gso_size: int, csum_start: int) -> list[bytearray]:
    """Software GSO: a TCP (TSO) or UDP (USO) super-packet -> packets of ``gso_size`` payload bytes.

    ``csum_start`` is where the transport header starts (the IP header's length, extension
    headers included). Raises OffloadError for a header that does not fit the packet.
    """
    gso_type &= ~GSO_ECN
    v4 = pkt[0] >> 4 == 4
    ihl = csum_start
    n = len(pkt)
    if gso_size <= 0 or n < ihl + 8:
        raise OffloadError(f"GSO packet of {n} bytes with segment size {gso_size}")
    # The header must describe the packet (the kernel's always does): the IP version its type
    # names, the transport header right after the IPv4 header, the protocol it cuts.
    proto = 6 if gso_type in (GSO_TCPV4, GSO_TCPV6) else 17
    if v4:
        if gso_type == GSO_TCPV6 or ihl < 20 or ihl != (pkt[0] & 15) * 4 or pkt[9] != proto:
            raise OffloadError(f"GSO type {gso_type} at {ihl} does not fit this IPv4 packet")
    elif pkt[0] >> 4 != 6 or gso_type == GSO_TCPV4 or ihl < 40 or ihl == 40 and pkt[6] != proto:
        raise OffloadError(f"GSO type {gso_type} at {ihl} does not fit this packet")
    if gso_type in (GSO_TCPV4, GSO_TCPV6):
        if n < ihl + 20:
            raise OffloadError("TCP super-packet shorter than its headers")
        thl = (pkt[ihl + 12] >> 4) * 4
        if thl < 20 or n < ihl + thl:
            raise OffloadError(f"TCP header length {thl} does not fit")
        return _segment_tcp(pkt, ihl, thl, gso_size, v4)
    if gso_type == GSO_UDP_L4:
        return _segment_udp(pkt, ihl, gso_size, v4)
    # GSO_UDP is UFO: one datagram to be cut into IP fragments, not datagrams (tun never asks for it).
    raise OffloadError(f"GSO type {gso_type} is not TCP or UDP segmentation")


WIDE_MIN_SEGMENTS = 4
"""Full segments from which `chunk_sums` takes a super-packet's payload in one numpy call: below, the
call's fixed cost (~5 µs) is more than the per-segment big-int sums it saves (~2 µs each)."""
_BE16 = numpy.dtype(">u2")
_LE32 = numpy.dtype("<u4")
_add_reduce = numpy.add.reduce


def chunk_sums(pkt, start: int, size: int, count: int) -> list[int]:
    """Numbers congruent modulo 0xFFFF to the sums of the big-endian 16-bit words of ``count``
    consecutive chunks of ``size`` bytes (even) from ``pkt[start]``: each one's TCP checksum
    contribution, all in one C pass instead of one big-int conversion and division per chunk."""
    if not size & 3:
        # Native 32-bit words need no byte swap and half the additions: a little-endian word
        # b0 + b1 << 8 + b2 << 16 + b3 << 24 is (b0 + b2) + (b1 + b3) << 8 modulo 0xFFFF (2**16 = 1),
        # the little-endian 16-bit sum, and 256 times that is the big-endian one (RFC 1071 §2(B)).
        # 64-bit sums hold 16,383 words of at most 2**32 - 1, times 256.
        words = numpy.frombuffer(pkt, dtype=_LE32, count=count * (size >> 2), offset=start)
        return (_add_reduce(words.reshape(count, size >> 2), axis=1, dtype=numpy.uint64) << 8).tolist()
    words = numpy.frombuffer(pkt, dtype=_BE16, count=count * (size >> 1), offset=start)
    # 32-bit sums hold any chunk of an IP packet (32,768 words of at most 0xFFFF), and the ufunc
    # itself skips ndarray.sum's Python wrapper.
    return _add_reduce(words.reshape(count, size >> 1), axis=1, dtype=numpy.uint32).tolist()


def _csum(total: int) -> int:
    """The complemented one's-complement checksum of a sum (as ``engine.esp.ip.checksum`` gives it)."""
    r = total % 0xFFFF
    return 0xFFFF - r if r else 0


def _segment_tcp(pkt: bytes, ihl: int, thl: int, mss: int, v4: bool) -> list[bytearray]:
    hlen = ihl + thl
    total = len(pkt) - hlen
    t = ihl
    seq0 = _U32.unpack_from(pkt, t + 4)[0]
    flags = pkt[t + 13]
    ident0 = _U16.unpack_from(pkt, 4)[0] if v4 else 0
    head = bytearray(pkt[:hlen])
    # Zero what changes per segment; the sums of the rest are taken once. The loop is flat and
    # inlined on purpose: it runs once per packet of every TCP stream through the tunnel.
    if v4:
        head[2:6] = bytes(4)  # total length, ID
        head[10:12] = bytes(2)
        ip_base = (int.from_bytes(head[:ihl], "big") + hlen) % 0xFFFF  # small ints from here on
    else:
        head[4:6] = bytes(2)
        ip_base = 0
    head[t + 4:t + 8] = bytes(4)
    head[t + 13] = 0
    head[t + 16:t + 18] = bytes(2)
    tcp_base = (int.from_bytes(head[t:hlen], "big") + _segment_pseudo(pkt, v4, 6, ihl) + thl) % 0xFFFF
    not_last = flags & ~(_TCP_FIN | _TCP_PSH)  # FIN and PSH only on the last segment
    later = ~_TCP_CWR  # CWR only on the first
    pack_len_id = _U16U16.pack_into
    pack16 = _U16.pack_into
    pack32 = _U32.pack_into
    from_bytes = int.from_bytes
    out = []
    append = out.append
    view = memoryview(pkt)  # each segment's payload is copied once, into the segment
    i = 0
    off = hlen
    end = len(pkt)
    full = total // mss
    # The payload sums of all full segments at once when there are enough of them (see chunk_sums).
    sums = chunk_sums(pkt, hlen, mss, full) if full >= WIDE_MIN_SEGMENTS and not mss & 1 else ()
    wide = len(sums)
    while True:
        nxt = off + mss
        if nxt >= end:
            nxt = end
        chunk = view[off:nxt]
        size = nxt - off
        seg = bytearray(head)
        seg += chunk
        if v4:
            ident = (ident0 + i) & 0xFFFF
            pack_len_id(seg, 2, hlen + size, ident)
            r = (ip_base + size + ident) % 0xFFFF
            pack16(seg, 10, 0xFFFF - r if r else 0)
        else:
            pack16(seg, 4, hlen - 40 + size)  # extension headers (before csum_start) included
        seq = (seq0 + off - hlen) & 0xFFFFFFFF
        pack32(seg, t + 4, seq)
        f = flags if nxt == end else not_last
        if i:
            f &= later
        seg[t + 13] = f
        if i < wide:
            data = sums[i]
        else:
            data = from_bytes(chunk, "big")
            if size & 1:
                data <<= 8  # an odd last byte is the high half of a word
        r = (tcp_base + size + seq + f + data) % 0xFFFF
        pack16(seg, t + 16, 0xFFFF - r if r else 0)
        append(seg)
        if nxt == end:
            return out
        i += 1
        off = nxt


def _segment_udp(pkt: bytes, ihl: int, size: int, v4: bool) -> list[bytearray]:
    hlen = ihl + 8
    payload = memoryview(pkt)[hlen:]
    total = len(payload)
    ident0 = _U16.unpack_from(pkt, 4)[0] if v4 else 0
    base = _segment_pseudo(pkt, v4, 17, ihl)
    head = bytearray(pkt[:hlen])
    head[ihl + 6] = head[ihl + 7] = 0
    if v4:
        head[10] = head[11] = 0
    pack16 = _U16.pack_into
    out = []
    i = off = 0
    while off < total or i == 0:
        chunk = payload[off:off + size]
        n = len(chunk)
        seg = bytearray(head)
        if v4:
            pack16(seg, 2, hlen + n)
            pack16(seg, 4, (ident0 + i) & 0xFFFF)
            pack16(seg, 10, checksum(memoryview(seg)[:ihl]))
        else:
            pack16(seg, 4, hlen - 40 + n)  # extension headers (before csum_start) included
        pack16(seg, ihl + 4, 8 + n)
        seg += chunk
        c = checksum(memoryview(seg)[ihl:], base + 8 + n)
        pack16(seg, ihl + 6, c or 0xFFFF)
        out.append(seg)
        i += 1
        off += n
        if n == 0:
            break
    return out


# ------------------------------------------------------------------ path MTU


def fragment_ipv4(pkt, mtu: int) -> list[bytearray]:
    """IPv4 fragments of at most ``mtu`` bytes (RFC 791), for a packet without DF; fragments of a
    fragment keep their place (offsets and MF carry over)."""
    ihl = (pkt[0] & 15) * 4
    total = (pkt[2] << 8) | pkt[3]
    data = memoryview(pkt)[ihl:total]
    step = (mtu - ihl) & ~7
    if step <= 0:
        raise OffloadError(f"MTU {mtu} leaves no room after a {ihl}-byte header")
    frag0 = _U16.unpack_from(pkt, 6)[0]
    base_off = frag0 & 0x1FFF
    more = frag0 & 0x2000
    head = bytes(pkt[:ihl])
    rest = ipv4_later_fragment_header(head) if ihl > 20 else head
    out = []
    off = 0
    while off < len(data):
        chunk = data[off:off + step]
        last = off + len(chunk) >= len(data)
        h = bytearray(rest if off or base_off else head)
        _U16.pack_into(h, 2, ihl + len(chunk))
        _U16.pack_into(h, 6, ((base_off + off // 8) & 0x1FFF) | (0x2000 if (not last or more) else 0))
        h[10] = h[11] = 0
        _U16.pack_into(h, 10, checksum(h))
        h += chunk
        out.append(h)
        off += len(chunk)
    return out


def too_big(pkt, mtu: int) -> bytes | None:
    """The ICMP a router sends for ``pkt`` that does not fit ``mtu`` and may not be fragmented:
    IPv4 type 3 code 4 with the next-hop MTU (RFC 1191), ICMPv6 Packet Too Big (RFC 8201), as
    much of the packet as the RFCs allow. From the packet's destination (the host behind the
    tunnel, on whose behalf we answer) to its source. None for packets that get no ICMP (ICMP
    errors themselves, non-first fragments, too short)."""
    v = pkt[0] >> 4
    if v == 4:
        ihl = (pkt[0] & 15) * 4
        if len(pkt) < ihl + 8 or (_U16.unpack_from(pkt, 6)[0] & 0x1FFF):
            return None
        if pkt[9] == 1 and pkt[ihl] not in (0, 8, 13, 15, 17):  # only queries get errors (RFC 1812)
            return None
        quoted = bytes(pkt[:min(len(pkt), 576 - 28)])
        icmp = bytearray(struct.pack("!BBHHH", 3, 4, 0, 0, min(mtu, 0xFFFF))) + quoted
        _U16.pack_into(icmp, 2, checksum(icmp))
        hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                                    bytes(pkt[16:20]), bytes(pkt[12:16])))
        _U16.pack_into(hdr, 10, checksum(hdr))
        return bytes(hdr + icmp)
    if v == 6:
        if len(pkt) < 48:
            return None
        if pkt[6] == 58 and pkt[40] < 128:  # an ICMPv6 error
            return None
        quoted = bytes(pkt[:min(len(pkt), 1280 - 48)])
        src, dst = bytes(pkt[24:40]), bytes(pkt[8:24])
        body = bytearray(struct.pack("!BBHI", 2, 0, 0, max(1280, mtu))) + quoted
        c = checksum(body, int.from_bytes(src, "big") + int.from_bytes(dst, "big") + 58 + len(body))
        _U16.pack_into(body, 2, c)
        return struct.pack("!IHBB16s16s", 6 << 28, len(body), 58, 64, src, dst) + bytes(body)
    return None


def __getattr__(name: str):
    # The coalescer moved to engine.datapath.coalesce (which imports from here): still importable
    # from here, resolved on first use so that either module may be imported first.
    if name == "Coalescer":
        from engine.datapath.coalesce import Coalescer
        return Coalescer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
