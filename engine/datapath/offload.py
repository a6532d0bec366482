"""Segmentation and coalescing for a TUN device with offloads
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

Inbound, `Coalescer` does the reverse of the receiving NIC's GRO: decrypted
TCP segments (and UDP datagrams, when the device takes UDP GSO) of the same
flow that follow each other are joined into one super-packet, written with
a GSO header; the kernel then treats it as the segments it came from (one
write and one pass through its stack instead of dozens, and the receiving
TCP acknowledges per super-packet). The rules are the kernel's GRO rules:
same headers but for the length fields, consecutive sequence numbers, equal
segment sizes with a shorter one only last, nothing after PSH. No segment
may lose its checksum check on the way:

- TCP to this host: the super-packet carries the checksum of the whole,
  derived from the segments' own checksum fields (no payload byte read
  here), and no "checksum done" flag: the kernel verifies all of it in C,
  and drops it all if any segment was damaged;
- anything the kernel will forward (and UDP): each segment's checksum is
  verified here before it joins (a bad one is written as it came, for the
  receiver to drop), since a forwarded super-packet is cut again with fresh
  checksums that would hide damage.

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
_add_reduce = numpy.add.reduce


def chunk_sums(pkt, start: int, size: int, count: int) -> list[int]:
    """The sums (not folded) of the big-endian 16-bit words of ``count`` consecutive chunks of ``size``
    bytes (even) from ``pkt[start]``: each one's TCP checksum contribution, all in one C pass
    instead of one big-int conversion and division per chunk."""
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


# ------------------------------------------------------------------ coalescing


class _Run:
    """Segments of one flow being joined: the first packet's headers, then payloads."""

    __slots__ = ("head", "parts", "hlen", "ihl", "size", "next_seq", "count", "length", "closed", "tcp", "v4",
                 "key", "local", "psum")

    def __init__(self, pkt, hlen: int, ihl: int, size: int, next_seq: int, tcp: bool, v4: bool, key) -> None:
        self.head = pkt
        self.parts: list = []
        self.hlen = hlen
        self.ihl = ihl
        self.size = size
        self.next_seq = next_seq
        self.count = 1
        self.length = len(pkt)
        self.closed = False
        """A shorter segment (or PSH) ended it: nothing may follow."""
        self.tcp = tcp
        self.v4 = v4
        self.key = key
        self.local = False
        """For this host: checksums left to the kernel (see the module docstring)."""
        self.psum = 0
        """Local runs: the payloads' sum (mod 0xFFFF) as their segments' checksum fields claim it."""


def _claimed_payload_sum(pkt, ihl: int, hlen: int, v4: bool) -> int:
    """The one's-complement sum (mod 0xFFFF) of a TCP segment's payload, as its checksum field claims:
    header + payload + pseudo-header sum to zero for a correct checksum."""
    h = int.from_bytes(pkt[ihl:hlen], "big") + _pseudo(pkt, v4, 6) + len(pkt) - ihl
    return -h % 0xFFFF


def _sum_ok(pkt, ihl: int, v4: bool, proto: int) -> bool:
    """Whether the TCP/UDP checksum of a whole packet verifies (an IPv4 UDP checksum of 0: none sent)."""
    if proto == 17 and v4 and pkt[ihl + 6] == 0 and pkt[ihl + 7] == 0:
        return True
    # Summed with a correct checksum field, the one's-complement sum is all ones: its complement 0.
    return checksum(memoryview(pkt)[ihl:], _pseudo(pkt, v4, proto) + len(pkt) - ihl) == 0


class Coalescer:
    """Joins decrypted packets into super-packets for one TUN write each (see the module docstring).

    `add` packets as they are decrypted, then `flush` once per batch: packets come out in the
    order they went in (a run at the place of its first segment).
    """

    def __init__(self, *, udp: bool = False, local: set | frozenset = frozenset()) -> None:
        self.udp = udp
        """Join UDP datagrams too (the device takes UDP GSO: USO offload)."""
        self.local = local
        """This host's addresses (packed): TCP to them gets its checksums verified by the kernel."""
        self._out: list = []
        self._runs: dict = {}
        self.merged = 0
        """Segments that went out inside a super-packet (statistics)."""

    def __len__(self) -> int:
        return len(self._out)

    def add(self, pkt) -> None:
        n = len(pkt)
        if n < 28:
            self._out.append(pkt)
            return
        b0 = pkt[0]
        if b0 == 0x45:
            proto = pkt[9]
            if proto == 6 and not (pkt[6] & 0x3F or pkt[7]) and (pkt[2] << 8 | pkt[3]) == n:
                self._tcp(pkt, n, 20, True)  # the common case: TCP over IPv4 without options
                return
            if (proto != 6 and (proto != 17 or not self.udp)) or pkt[6] & 0x3F or pkt[7] \
                    or (pkt[2] << 8 | pkt[3]) != n:
                self._out.append(pkt)  # options, fragments, padding or another protocol: as is
                return
            ihl, v4 = 20, True
            ports = pkt[20:24]
            ipkey = (pkt[12:20], pkt[1], pkt[6] & 0xE0, pkt[8])
        elif b0 >> 4 == 6 and n >= 48:
            proto = pkt[6]
            if (proto != 6 and (proto != 17 or not self.udp)) or 40 + (pkt[4] << 8 | pkt[5]) != n:
                self._out.append(pkt)
                return
            ihl, v4 = 40, False
            ports = pkt[40:44]
            ipkey = (pkt[8:40], pkt[0:4], pkt[7])
        else:
            self._out.append(pkt)
            return
        if proto == 6:
            self._tcp(pkt, n, ihl, v4)
        else:
            self._udp(pkt, n, ihl, v4, ports, ipkey)

    def add_all(self, pkts: list) -> None:
        """`add` of each of ``pkts`` (a receive batch), in order. The common case, the next segment
        of a run of TCP over IPv4 to this host, is `_tcp` inlined; every other packet takes `add`
        (the same runs, checks and output as `add` one by one)."""
        runs = self._runs
        out = self._out
        add = self.add
        unpack = _U32.unpack_from
        for pkt in pkts:
            n = len(pkt)
            if n < 40 or pkt[0] != 0x45 or pkt[9] != 6 or pkt[6] & 0x3F or pkt[7] or (pkt[2] << 8 | pkt[3]) != n:
                add(pkt)
                continue
            thl = (pkt[32] >> 4) * 4
            hlen = 20 + thl
            flags = pkt[33]
            size = n - hlen
            if thl < 20 or size <= 0 or flags & ~_TCP_PSH != _TCP_ACK:
                out.append(pkt)  # SYN, FIN, RST, URG, CWR/ECE or a pure ACK: never joined
                continue
            run = runs.get((pkt[12:24], pkt[28:33], pkt[34:36], pkt[40:hlen], pkt[1], pkt[6] & 0xE0, pkt[8]))
            if run is None or not run.local or run.closed or unpack(pkt, 24)[0] != run.next_seq \
                    or size > run.size or run.count >= MAX_SEGMENTS or run.length + size > 0xFFFF:
                self._tcp(pkt, n, 20, True)
                continue
            # As in _tcp: the payload's claimed sum, with the addresses summed in the same pass.
            d = -(int.from_bytes(pkt[12:hlen], "big") + 6 + n - 20) % 0xFFFF
            length = run.length
            if (length - run.hlen) & 1:
                d = d * 256 % 0xFFFF
            run.psum += d
            run.parts.append(memoryview(pkt)[hlen:])
            run.count += 1
            run.length = length + size
            run.next_seq = (run.next_seq + size) & 0xFFFFFFFF
            if size < run.size or flags & _TCP_PSH:
                run.closed = True
                if flags & _TCP_PSH:
                    run.head = bytearray(run.head)
                    run.head[20 + 13] |= _TCP_PSH

    def _tcp(self, pkt, n: int, ihl: int, v4: bool) -> None:
        """A TCP segment (IPv4 without options, or IPv6): joins its flow's run or starts one. Flat on
        purpose: it runs once per received TCP segment."""
        if n < ihl + 20:
            self._out.append(pkt)  # shorter than a TCP header: as is (the kernel drops it)
            return
        thl = (pkt[ihl + 12] >> 4) * 4
        hlen = ihl + thl
        flags = pkt[ihl + 13]
        size = n - hlen
        if thl < 20 or size <= 0 or flags & ~_TCP_PSH != _TCP_ACK:
            self._out.append(pkt)  # SYN, FIN, RST, URG, CWR/ECE or a pure ACK: never joined
            return
        seq = _U32.unpack_from(pkt, ihl + 4)[0]
        # Same addresses and ports, ACK, data offset with the reserved/AE bits, window, options and
        # IP header fields but the lengths and IDs: the kernel's GRO conditions. The addresses and
        # ports are one run of bytes.
        if v4:
            addrs = 12
            key = (pkt[12:24], pkt[28:33], pkt[34:36], pkt[40:hlen], pkt[1], pkt[6] & 0xE0, pkt[8])
        else:
            addrs = 8
            key = (pkt[8:44], pkt[48:53], pkt[54:56], pkt[60:hlen], pkt[0:4], pkt[7])
        run = self._runs.get(key)
        if run is not None and not run.closed and seq == run.next_seq and size <= run.size \
                and run.count < MAX_SEGMENTS and run.length + size <= 0xFFFF \
                and (run.local or _sum_ok(pkt, ihl, v4, 6)):
            if run.local:
                # _claimed_payload_sum with the pseudo-header's addresses summed in the same pass:
                # 2**16 = 1 (mod 0xFFFF), so a run of big-endian words is its own word sum.
                d = -(int.from_bytes(pkt[addrs:hlen], "big") + 6 + n - ihl) % 0xFFFF
                if (run.length - run.hlen) & 1:
                    d = d * 256 % 0xFFFF  # starts at an odd offset: its bytes swap places in the words
                run.psum += d
            run.parts.append(memoryview(pkt)[hlen:])
            run.count += 1
            run.length += size
            run.next_seq = (seq + size) & 0xFFFFFFFF
            if size < run.size or flags & _TCP_PSH:
                run.closed = True
                if flags & _TCP_PSH:
                    run.head = bytearray(run.head)
                    run.head[ihl + 13] |= _TCP_PSH
            return
        self._start_tcp(pkt, n, ihl, hlen, v4, seq, size, flags, key)

    def _start_tcp(self, pkt, n: int, ihl: int, hlen: int, v4: bool, seq: int, size: int, flags: int, key) -> None:
        """A TCP segment that joins no run: the start of one (or out as it is)."""
        local = (pkt[16:20] if v4 else pkt[24:40]) in self.local
        if not local and not _sum_ok(pkt, ihl, v4, 6):
            self._out.append(pkt)  # let the kernel drop it
            return
        run = _Run(pkt, hlen, ihl, size, (seq + size) & 0xFFFFFFFF, True, v4, key)
        run.closed = bool(flags & _TCP_PSH)
        if local:
            run.local = True
            run.psum = _claimed_payload_sum(pkt, ihl, hlen, v4)
        self._runs[key] = run
        self._out.append(run)

    def _udp(self, pkt, n: int, ihl: int, v4: bool, ports, ipkey) -> None:
        size = n - ihl - 8
        # Runs by flow (addresses and ports); the other IP header fields must match the run's too. A
        # datagram of the flow that does not join ends its run: UDP has no sequence number to keep
        # a later datagram from joining across it (out of order).
        key = (17, ipkey[0], ports)
        if size <= 0 or (pkt[ihl + 4] << 8 | pkt[ihl + 5]) != n - ihl:
            # Padded or cut (the UDP length is not the IP payload): as is, for the kernel to trim
            # or drop; joined, the bytes past it would become data (Linux's UDP GRO refuses it too).
            self._out.append(pkt)
            self._runs.pop(key, None)
            return
        run = self._runs.get(key)
        if run is not None and run.key == ipkey and not run.closed and size <= run.size \
                and run.count < MAX_SEGMENTS and run.length + size <= 0xFFFF and _sum_ok(pkt, ihl, v4, 17):
            run.parts.append(memoryview(pkt)[ihl + 8:])
            run.count += 1
            run.length += size
            if size < run.size:
                run.closed = True
            return
        if not _sum_ok(pkt, ihl, v4, 17):
            self._out.append(pkt)
            self._runs.pop(key, None)
            return
        run = _Run(pkt, ihl + 8, ihl, size, 0, False, v4, ipkey)
        self._runs[key] = run
        self._out.append(run)

    def flush(self) -> list[tuple]:
        """The batch as (virtio_net_hdr, buffers...) tuples, one per TUN write, in order; resets."""
        out = []
        for item in self._out:
            if item.__class__ is not _Run:
                out.append((ZERO_HDR, item))
            elif item.count == 1:
                out.append((ZERO_HDR, item.head))
            else:
                out.append(self._super(item))
                self.merged += item.count
        self._out = []
        self._runs = {}
        return out

    @staticmethod
    def _super(run: _Run) -> tuple:
        head = bytearray(run.head[:run.hlen])
        ihl = run.ihl
        total = run.length
        v4 = run.v4
        if v4:
            _U16.pack_into(head, 2, total)
            head[10] = head[11] = 0
            _U16.pack_into(head, 10, checksum(memoryview(head)[:ihl]))
        else:
            _U16.pack_into(head, 4, total - 40)
        proto = 6 if run.tcp else 17
        gso = (GSO_TCPV4 if v4 else GSO_TCPV6) if run.tcp else GSO_UDP_L4
        if run.local:
            # The whole super-packet's checksum, for the kernel to verify (no NEEDS_CSUM, no DATA_VALID).
            head[ihl + 16] = head[ihl + 17] = 0
            s = (_pseudo(head, v4, 6) + total - ihl + int.from_bytes(head[ihl:run.hlen], "big") + run.psum) % 0xFFFF
            _U16.pack_into(head, ihl + 16, ~(s or 0xFFFF) & 0xFFFF)
            hdr = VNET.pack(0, gso, run.hlen, run.size, 0, 0)
        else:
            if not run.tcp:
                _U16.pack_into(head, ihl + 4, total - ihl)
            # The transport checksum field holds the pseudo-header sum (CHECKSUM_PARTIAL).
            _U16.pack_into(head, ihl + (16 if run.tcp else 6), fold(_pseudo(head, v4, proto) + total - ihl))
            hdr = VNET.pack(NEEDS_CSUM, gso, run.hlen, run.size, ihl, 16 if run.tcp else 6)
        first = memoryview(run.head)[run.hlen:]
        return (hdr, head, first, *run.parts)
