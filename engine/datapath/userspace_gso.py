"""TCP super-packets through the TUN device (IFF_VNET_HDR + TSO).

With offloads on, the kernel hands the TUN reader TCP segments of up to
``GSO_MAX_SIZE`` bytes (one read instead of ~45) whose TCP/UDP checksum
is left partial (only the pseudo-header sum is filled in). Each read and
write carries a 10-byte ``struct virtio_net_hdr``.

Outbound, per packet:

- a super-packet on a pair whose peer is known to be ours (``Pair.jumbo``,
  today set for every pair by ``UserspaceDatapath(jumbo=True)``): protected as ONE
  ESP packet, which IP fragments on the wire and the peer's kernel
  reassembles; the inner checksum stays partial, and the peer (this same
  code) hands the packet to its kernel as a GSO packet whose checksum is
  still to be completed (VIRTIO_NET_HDR_F_NEEDS_CSUM). That is valid only
  when both ends are ours: strongSwan reads at most 10000 bytes per ESP
  datagram. Crypto then runs on 64 KiB at a time, which is where the speed
  comes from.
- a super-packet to any other peer: segmented here into MSS-sized TCP
  segments with full checksums (software GSO), each its own ESP packet.
- anything else with a partial checksum: the checksum is completed here, so
  every packet of at most MTU size on the wire has a valid checksum.

Inbound: a decrypted packet larger than the MTU can only be such a
super-packet (TCP, partial checksum) and is written with a GSO header;
everything else is written with an all-zero header (the kernel checks
checksums as usual).
"""

from __future__ import annotations

import logging
import os
import struct

from engine.esp import SaExpired
from engine.esp.ip import checksum

log = logging.getLogger("engine.datapath.userspace")

VNET = struct.Struct("<BBHHHH")
"""flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (host order, as tun uses it on x86)."""
NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_ECN = 0x80
ZERO_HDR = bytes(10)
GSO_MAX_SIZE = 65000
"""Largest super-packet we let the kernel build: its ESP packet (+ IV, padding, ICV, outer IP and UDP
headers) must still fit in one 65535-byte IP datagram."""
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
READ_BATCH = 256


def complete_checksum(pkt: bytearray, start: int, offset: int) -> None:
    """Finish a partial TCP/UDP checksum: what a NIC does for CHECKSUM_PARTIAL."""
    pos = start + offset
    c = checksum(memoryview(pkt)[start:])
    if c == 0 and offset == 6:
        c = 0xFFFF  # UDP sends a computed zero as all ones (RFC 768)
    _U16.pack_into(pkt, pos, c)


def segment_tcp(pkt: bytes, mss: int) -> list[bytes]:
    """Software TSO: an IPv4/IPv6 TCP super-packet -> MSS-sized segments with full checksums."""
    v = pkt[0] >> 4
    if v == 4:
        ihl = (pkt[0] & 15) * 4
        src, dst = pkt[12:16], pkt[16:20]
    else:
        ihl = 40
        src, dst = pkt[8:24], pkt[24:40]
    thl = (pkt[ihl + 12] >> 4) * 4
    hlen = ihl + thl
    payload = memoryview(pkt)[hlen:]
    total = len(payload)
    seq0 = _U32.unpack_from(pkt, ihl + 4)[0]
    flags = pkt[ihl + 13]
    ident0 = _U16.unpack_from(pkt, 4)[0] if v == 4 else 0
    addr_sum = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + 6
    out = []
    i = 0
    off = 0
    while off < total or (off == 0 and total == 0):
        chunk = payload[off:off + mss]
        n = len(chunk)
        last = off + n >= total
        seg = bytearray(pkt[:hlen])
        if v == 4:
            _U16.pack_into(seg, 2, hlen + n)
            _U16.pack_into(seg, 4, (ident0 + i) & 0xFFFF)
            seg[10] = seg[11] = 0
            _U16.pack_into(seg, 10, checksum(memoryview(seg)[:ihl]))
        else:
            _U16.pack_into(seg, 4, thl + n)
        t = ihl
        _U32.pack_into(seg, t + 4, (seq0 + off) & 0xFFFFFFFF)
        f = flags
        if not last:
            f &= ~0x09  # FIN and PSH only on the last segment
        if i:
            f &= ~0x80  # CWR only on the first
        seg[t + 13] = f
        seg[t + 16] = seg[t + 17] = 0
        seg += chunk
        _U16.pack_into(seg, t + 16, checksum(memoryview(seg)[t:], addr_sum + thl + n))
        out.append(bytes(seg))
        i += 1
        off += n
        if total == 0:
            break
    return out


class GsoTun:
    """The TUN read/write loops of a UserspaceDatapath opened with ``gso=True``."""

    def __init__(self, dp, fd: int, *, jumbo: bool = False) -> None:
        self.dp = dp
        self.fd = fd
        self.jumbo = jumbo
        """Every peer is ours: mark every pair jumbo (see the module docstring)."""
        self.mtu = dp.mtu
        self.super_out = 0
        self.segmented = 0

    def installed(self, pair) -> None:
        # Whole super-packets only to peers that take them: ipsec-console (its
        # Vendor ID) or, with jumbo everywhere, every peer by the admin's word.
        if self.jumbo or pair.ev.peer_is_ours:
            pair.jumbo = True

    def removed(self, pair) -> None:
        pass

    # ------------------------------------------------------------ outbound
    def readable(self) -> None:
        dp = self.dp
        path = dp.path
        flows = path.flows
        fd = self.fd
        read = os.read
        unpack = VNET.unpack_from
        now = dp.runtime.now()
        for _ in range(READ_BATCH):
            try:
                buf = read(fd, 65600)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("TUN read: %s", exc)
                break
            hdr = buf[:10]
            pkt = buf[10:]
            if len(pkt) < 20:
                continue
            if path.addr_only:
                key = pkt[12:20] if pkt[0] >> 4 == 4 else pkt[8:40]
            else:
                try:
                    key = path.flow_key(pkt)
                except IndexError:
                    path.drop("malformed", pkt, now)
                    continue
            pair = flows.get(key)
            if pair is None:
                pair = flows[key] = path.decide(pkt)
            if pair.__class__ is str:
                path.drop(pair, pkt, now)
                continue
            if hdr != ZERO_HDR:
                flags, gso_type, _hl, gso_size, cstart, coff = unpack(hdr)
                gso_type &= ~GSO_ECN
                if gso_type and len(pkt) > self.mtu:
                    if not pair.jumbo:
                        self.segmented += 1
                        for seg in segment_tcp(pkt, gso_size):
                            self._send(pair, seg, now)
                        continue
                    # Whole, checksum left partial: the peer (ours) knows a packet above
                    # the MTU is a super-packet.
                    self.super_out += 1
                elif flags & NEEDS_CSUM:
                    b = bytearray(pkt)
                    complete_checksum(b, cstart, coff)
                    pkt = bytes(b)
            self._send(pair, pkt, now)
        dp._flush_events()

    def _send(self, pair, pkt: bytes, now: float) -> None:
        try:
            pair.send(pair.outbound.protect(pkt, now), pair.dest)
        except (SaExpired, ValueError):
            self.dp.path.output(pkt, now)
        except OSError as exc:
            self.dp.path.send_error(exc, pair)

    # ------------------------------------------------------------ inbound
    def deliver(self, inner: bytes) -> None:
        try:
            if len(inner) <= self.mtu:
                os.writev(self.fd, (ZERO_HDR, inner))
                return
            v = inner[0] >> 4
            ihl = (inner[0] & 15) * 4 if v == 4 else 40
            proto = inner[9] if v == 4 else inner[6]
            if proto != 6 or len(inner) < ihl + 20:
                os.writev(self.fd, (ZERO_HDR, inner))
                return
            thl = (inner[ihl + 12] >> 4) * 4
            hdr = VNET.pack(NEEDS_CSUM, GSO_TCPV4 if v == 4 else GSO_TCPV6, ihl + thl,
                            self.mtu - ihl - thl, ihl, 16)
            os.writev(self.fd, (hdr, inner))
        except OSError as exc:
            log.debug("TUN write (%d bytes): %s", len(inner), exc)
