"""Coalescing for a TUN device with offloads (IFF_VNET_HDR), the reverse of engine.datapath.offload's
segmentation.

Inbound, `Coalescer` does the reverse of the receiving NIC's GRO: decrypted
TCP segments (and UDP datagrams, when the device takes UDP GSO) of the same
flow that follow each other are joined into one super-packet, written with
a GSO header; the kernel then treats it as the segments it came from (one
write and one pass through its stack instead of dozens, and the receiving
TCP acknowledges per super-packet). The rules are the kernel's GRO rules:
same headers but for the length fields (and the IPv4 IDs, which count up
when forwarded without DF), consecutive sequence numbers, equal
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
"""

from __future__ import annotations

from engine.datapath.offload import (_TCP_ACK, _TCP_PSH, _U16, _U32, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4,
                                     MAX_SEGMENTS, NEEDS_CSUM, VNET, ZERO_HDR, _pseudo, fold)
from engine.esp.ip import checksum


def _v4_key_mask(hlen: int) -> int:
    """The bytes of an option-less IPv4 + TCP header (``hlen`` bytes) that a run's segments share: the
    version/IHL byte, TOS, the DF/MF/reserved bits, TTL, addresses and ports, ACK number, data offset
    with the reserved/AE bits, window and TCP options (the kernel's GRO conditions); not the lengths,
    IDs, checksums, sequence number, flags or urgent pointer. The version byte (0x45, never 0) leads,
    so the key's magnitude also says the header length."""
    keep = bytearray(hlen)
    for i in (0, 1, 8, *range(12, 24), *range(28, 33), 34, 35, *range(40, hlen)):
        keep[i] = 0xFF
    keep[6] = 0xE0
    return int.from_bytes(keep, "big")


_V4_KEY = [_v4_key_mask(h) if h >= 40 else 0 for h in range(81)]
"""Run keys of TCP over IPv4, by header length: one masked integer of the headers (one slice and one
``int.from_bytes`` per segment instead of a tuple of five slices and three fields, and its hash)."""
_V4_AFTER_12 = [(1 << 8 * (h - 12)) - 1 if h >= 40 else 0 for h in range(81)]
"""The same integer's bytes 12..hlen (addresses, ports, TCP header): the pseudo-header's addresses and
the header words of the claimed payload sum, without a second slice."""


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
    """Whether the TCP/UDP checksum of a whole packet verifies (an IPv4 UDP checksum of 0: none sent;
    over IPv6 a UDP checksum of 0 never verifies, RFC 8200 §8.1, though the sum may come out right)."""
    if proto == 17 and pkt[ihl + 6] == 0 and pkt[ihl + 7] == 0:
        return v4
    # Summed with a correct checksum field, the one's-complement sum is all ones: its complement 0.
    return checksum(memoryview(pkt)[ihl:], _pseudo(pkt, v4, proto) + len(pkt) - ihl) == 0


def _next_id(run: _Run, pkt, v4: bool) -> bool:
    """Whether a segment may join a run that the kernel cuts again (forwarded TCP, any UDP): with DF
    (the same in the whole run) or IPv6, always; otherwise only with the run's next IP ID, the one the
    cut gives it. Non-atomic datagrams keep their IDs (RFC 6864 §4.1), as with the kernel's GRO
    (net/ipv4/af_inet.c inet_gro_receive: IDs must count up unless DF)."""
    if not v4 or pkt[6] & 0x40:
        return True
    head = run.head
    return (head[4] << 8 | head[5]) + run.count & 0xFFFF == pkt[4] << 8 | pkt[5]


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
        keys = _V4_KEY
        after12 = _V4_AFTER_12
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
            head = int.from_bytes(pkt[:hlen], "big")
            if (head >> 8 * thl) % 0xFFFF:
                out.append(pkt)  # a damaged IP header checksum (see _tcp)
                continue
            run = runs.get(head & keys[hlen])
            if run is None or not run.local or run.closed or unpack(pkt, 24)[0] != run.next_seq \
                    or size > run.size or run.count >= MAX_SEGMENTS or run.length + size > 0xFFFF:
                self._tcp(pkt, n, 20, True)
                continue
            # As in _tcp: the payload's claimed sum, with the addresses summed in the same pass.
            d = -((head & after12[hlen]) + 6 + n - 20) % 0xFFFF
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
            head = int.from_bytes(pkt[:hlen], "big")
            if (head >> 8 * thl) % 0xFFFF:
                # The IP header's words do not sum to all ones (0 modulo 0xFFFF; 0x45 leads, so never
                # a sum of 0): as is, for the kernel to drop. A super-packet gets a fresh header
                # checksum, which would hide the damage (the kernel's GRO skips such a packet too).
                self._out.append(pkt)
                return
            key = head & _V4_KEY[hlen]
        else:
            addrs = 8
            key = (pkt[8:44], pkt[48:53], pkt[54:56], pkt[60:hlen], pkt[0:4], pkt[7])
        run = self._runs.get(key)
        if run is not None and not run.closed and seq == run.next_seq and size <= run.size \
                and run.count < MAX_SEGMENTS and run.length + size <= 0xFFFF \
                and (run.local or _next_id(run, pkt, v4) and _sum_ok(pkt, ihl, v4, 6)):
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
        if size <= 0 or (pkt[ihl + 4] << 8 | pkt[ihl + 5]) != n - ihl \
                or v4 and int.from_bytes(pkt[:20], "big") % 0xFFFF:
            # Padded or cut (the UDP length is not the IP payload): as is, for the kernel to trim
            # or drop; joined, the bytes past it would become data (Linux's UDP GRO refuses it too).
            # A damaged IP header checksum likewise (see _tcp).
            self._out.append(pkt)
            self._runs.pop(key, None)
            return
        run = self._runs.get(key)
        if run is not None and run.key == ipkey and not run.closed and size <= run.size \
                and run.count < MAX_SEGMENTS and run.length + size <= 0xFFFF and _next_id(run, pkt, v4) \
                and _sum_ok(pkt, ihl, v4, 17):
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
