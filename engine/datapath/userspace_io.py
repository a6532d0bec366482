"""The packet loops of the userspace datapath: TUN device in and out, and
the senders that put ESP on the wire in batches.

Outbound (`TunIO.readable`): each read from the TUN device is one packet
or, with offloads, a TCP/UDP super-packet that `engine.datapath.offload`
cuts into standard packets; every packet becomes one ESP packet no larger
than the path MTU (see engine.datapath.pmtu), queued on its peer's sender.
After the read batch every sender flushes once:

- `UdpSender` (ESP-in-UDP, RFC 3948): runs of equal-sized ESP packets (the
  last of a run may be shorter) leave in one ``sendmsg`` with
  ``UDP_SEGMENT`` (UDP GSO, Linux 4.18+): the kernel, or the NIC, cuts them
  into datagrams. A peer sees ordinary ESP-in-UDP datagrams. On a wildcard
  NAT-T socket it sends through a `SourcedSocket`, which names the SA's local
  address in every send (the route alone may pick another of our addresses,
  which a NAT in front of the peer does not let in): a sender has one source
  (the datapath keys senders by it), so one control message serves a whole
  GSO batch. A socket bound to the address is used as it is.
- `RawSender` (ESP as IP protocol 50, and whole-packet AH/transport mode):
  raw sockets have no GSO; the packets of a batch leave in one ``sendmmsg``
  (engine.datapath.mmsg), still one datagram each on the wire.

Inbound: `RawReader` takes raw ESP (IP protocol 50) in batches of up to
RAW_SLOTS datagrams per ``recvmmsg`` (engine.datapath.mmsg), each datagram
still checked and dropped or delivered on its own. `TunIO.deliver`: decrypted packets gather in a
`engine.datapath.coalesce.Coalescer` and are written once per batch, joined
into super-packets where the kernel's GRO rules allow. The NAT-T socket
reads with ``UDP_GRO`` (engine.runtime.udp), so a burst of ESP-in-UDP from
one peer arrives in one read as well.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct

from engine.datapath.coalesce import Coalescer
from engine.datapath.offload import (
    GSO_ECN,
    GSO_NONE,
    NEEDS_CSUM,
    VNET,
    ZERO_HDR,
    OffloadError,
    complete_checksum,
    fragment_ipv4,
    segment,
    too_big,
    transport_offset,
)
from engine.datapath import mmsg
from engine.datapath.reassembly import refuse
from engine.datapath.mmsg import RECV_SLOT, MmsgReceiver, MmsgSender
from engine.esp import SaExpired

log = logging.getLogger("engine.datapath.userspace")

SOL_UDP = 17
UDP_SEGMENT = 103
GSO_MAX_SEGMENTS = 64
"""Datagrams per UDP GSO send (the kernel's UDP_MAX_SEGMENTS on older kernels)."""
GSO_MAX_BYTES = 65000
"""UDP payload bytes per GSO send: one send is one (super-)datagram of at most 64 KiB."""
READ_BATCH = 64
"""TUN reads per readiness callback before letting IKE, timers and the other direction run (64
super-packets are already 4 MB)."""
READ_SIZE = 65535 + 64
RAW_SLOTS = 64
"""Datagrams per recvmmsg call on a raw ESP socket."""
RAW_CALLS = 2
"""recvmmsg calls per readiness callback (128 datagrams), then IKE, timers and the TUN run."""
ICMP_BURST = 50
ICMP_RATE = 100.0
"""ICMP "too big" answers into the TUN device: a burst of this many, then this many per second."""
_GSO_SIZE = struct.Struct("=H")


def _add_all(sender, datas: list, limit: int) -> None:
    """``sender.add`` of each of ``datas``: queued in one step while the queue stays below ``limit``
    (where ``add`` flushes), else one by one, so a batch leaves at the same points either way."""
    pending = sender.pending
    if len(pending) + len(datas) < limit:
        if not pending:
            sender.io.dirty.append(sender)
        pending += datas
        return
    for data in datas:
        sender.add(data)


class UdpSender:
    """ESP-in-UDP to one peer endpoint through one of the runtime's NAT-T sockets, batched with UDP GSO."""

    gso_works = True
    """Cleared for every sender the first time the kernel refuses UDP_SEGMENT (a kernel before 4.18)."""

    __slots__ = ("sock", "dest", "pending", "io", "pmtu", "pmtu_at", "pairs", "key", "mtu")

    def __init__(self, io: TunIO, sock: socket.socket, dest: tuple) -> None:
        self.io = io
        self.sock = sock
        self.dest = dest
        self.pending: list = []
        self.pmtu = 0
        """Path MTU learned for this peer (0: the link's, nothing learned)."""
        self.pmtu_at = 0.0
        self.pairs: set = set()
        self.key = None
        self.mtu = 0
        """The route's MTU to the peer, asked when the sender was made, again when the raw socket
        refuses an outer fragment as too big (outer fragments of a whole datagram of a transport-mode
        SA are cut to it: engine.datapath.reassembly), and, while it limits, every pmtu.REPROBE
        seconds (it grows back)."""

    def add(self, data) -> None:
        pending = self.pending
        if not pending:
            self.io.dirty.append(self)
        pending.append(data)
        if len(pending) >= 2 * GSO_MAX_SEGMENTS:
            # Two full batches go now: bursts at the peer stay short (a peer without GRO, like
            # charon, takes them into a socket buffer of its default size).
            self.flush()

    def add_all(self, datas: list) -> None:
        """`add` of each (a cut super-packet's ESP packets), flushed at the same points."""
        _add_all(self, datas, 2 * GSO_MAX_SEGMENTS)

    def flush(self) -> None:
        pkts = self.pending
        self.pending = []
        n = len(pkts)
        sock = self.sock
        dest = self.dest
        i = 0
        while i < n:
            size = len(pkts[i])
            j = i + 1
            if UdpSender.gso_works:
                total = size
                while j < n and j - i < GSO_MAX_SEGMENTS and total + size <= GSO_MAX_BYTES:
                    m = len(pkts[j])
                    if m > size:
                        break
                    total += m
                    j += 1
                    if m < size:
                        break  # a shorter datagram ends a GSO run
            try:
                if j - i == 1:
                    sock.sendto(pkts[i], dest)
                else:
                    sock.sendmsg(pkts[i:j], [(SOL_UDP, UDP_SEGMENT, _GSO_SIZE.pack(size))], 0, dest)
            except (BlockingIOError, InterruptedError) as exc:
                self.io.send_failed(exc, dest, j - i)
            except OSError as exc:
                if exc.errno in (errno.EMSGSIZE, errno.EINVAL):
                    if self.io.learn_pmtu(self) or j - i == 1:
                        self.io.send_failed(exc, dest, j - i)
                    else:
                        self._one_by_one(pkts[i:j])  # EINVAL for another reason: no GSO here
                elif exc.errno in (errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP) and j - i > 1:
                    UdpSender.gso_works = False
                    log.info("UDP GSO refused (%s): ESP-in-UDP goes one datagram per send", exc)
                    self._one_by_one(pkts[i:j])
                else:
                    self.io.send_failed(exc, dest, j - i)
            i = j

    def _one_by_one(self, pkts) -> None:
        for p in pkts:
            try:
                self.sock.sendto(p, self.dest)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    self.io.learn_pmtu(self)
                self.io.send_failed(exc, self.dest, 1)


class SourcedSocket:
    """A wildcard NAT-T socket as seen from one of our addresses: each ``sendto``/``sendmsg`` carries
    IP_PKTINFO or IPV6_PKTINFO naming it, beside the caller's own control messages (UDP_SEGMENT),
    so ESP-in-UDP leaves from the SA's address as IKE does (engine.runtime.udp). Senders on a socket
    bound to the address get the socket itself: their sends stay exactly what they were."""

    __slots__ = ("sock", "control")

    def __init__(self, sock: socket.socket, control: list) -> None:
        self.sock = sock
        self.control = control
        """From UdpSockets.source_control."""

    def fileno(self) -> int:
        return self.sock.fileno()

    def sendto(self, data, dest) -> int:
        return self.sock.sendmsg((data,), self.control, 0, dest)

    def sendmsg(self, buffers, ancdata, flags, dest) -> int:
        return self.sock.sendmsg(buffers, [*ancdata, *self.control], flags, dest)


class RawSender:
    """Raw ESP (or a whole AH/transport-mode packet) to one peer: with a `MmsgSender` the packets of a
    read batch leave in one ``sendmmsg`` per flush, else one ``sendmsg`` each."""

    __slots__ = ("send", "dest", "io", "pmtu", "pmtu_at", "pairs", "pending", "key", "batch", "mtu")

    def __init__(self, io: TunIO, send, dest: tuple, batch: MmsgSender | None = None) -> None:
        self.io = io
        self.send = send
        self.dest = dest
        self.pmtu = 0
        self.pmtu_at = 0.0
        self.pairs: set = set()
        self.pending: list = []
        self.key = None
        self.batch = batch
        self.mtu = 0
        """As UdpSender's."""

    def add(self, data) -> None:
        if self.batch is None:
            try:
                self.send(data, self.dest)
            except OSError as exc:
                self._failed_one(exc)
            return
        pending = self.pending
        if not pending:
            self.io.dirty.append(self)
        pending.append(data)
        if len(pending) >= self.batch.slots:
            self.flush()

    def add_all(self, datas: list) -> None:
        """`add` of each (a cut super-packet's ESP packets), flushed at the same points."""
        _add_all(self, datas, self.batch.slots if self.batch is not None else 0)

    def flush(self) -> None:
        pkts = self.pending
        if pkts:
            self.pending = []
            self.batch.send(pkts, self._refused)

    def _refused(self, _index: int, code: int) -> None:
        self._failed_one(OSError(code, os.strerror(code)))

    def route_mtu(self) -> int:
        """Ask the kernel again for the route's MTU to the peer (into `mtu`; 0 when unknown)."""
        return self.io.dp.route_mtu(self)

    def _failed_one(self, exc: OSError) -> None:
        if exc.errno == errno.EMSGSIZE:
            self.io.learn_pmtu(self)
        self.io.send_failed(exc, self.dest, 1)


class RawReader:
    """Raw ESP (or AH) from one raw socket of a UserspaceDatapath: up to RAW_SLOTS datagrams per
    ``recvmmsg``, else one ``recv`` each (a libc without it); every datagram is checked, dropped
    and counted or delivered on its own, in order."""

    __slots__ = ("dp", "sock", "v4", "batch")

    def __init__(self, dp, sock: socket.socket, family: int) -> None:
        self.dp = dp
        self.sock = sock
        self.v4 = family == socket.AF_INET
        """IPv4 raw sockets hand over the IP header too."""
        self.batch = MmsgReceiver(sock, RAW_SLOTS) if mmsg.recv_available else None

    def readable(self) -> None:
        now = self.dp.runtime.now()
        for _ in range(RAW_CALLS):
            got = self._read()
            if got:
                self._handle(got, now)
            if len(got) < RAW_SLOTS:
                break
        self.dp.flush_events()

    def _read(self) -> list:
        """The datagrams waiting (up to RAW_SLOTS): memoryviews into the receiver's slots, valid
        until the next read, or bytes without recvmmsg."""
        rx = self.batch
        if rx is None:
            out = []
            recv = self.sock.recv
            for _ in range(RAW_SLOTS):
                try:
                    out.append(recv(65535))
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    log.debug("raw ESP recv: %s", exc)
                    break
            return out
        try:
            count = rx.recv()
        except OSError as exc:
            log.debug("raw ESP recvmmsg: %s", exc)
            return []
        view = rx.view
        return [view[i * RECV_SLOT:i * RECV_SLOT + n] for i, n in enumerate(rx.lengths(count))]

    def _handle(self, datagrams: list, now: float) -> None:
        dp = self.dp
        inners: list = []
        open_esp(dp.path, datagrams, now, inners, self.v4)
        dp.io.deliver_all(inners)


def open_esp(path, datagrams: list, now: float, inners: list, ip_header: bool, source: tuple | None = None) -> None:
    """Open a receive batch into ``inners``, in arrival order: whole IPv4 packets (an IPv4 raw socket)
    when ``ip_header``, else ESP payloads (IPv6 raw, ESP-in-UDP). SaPath.input / input_full inlined
    for the common case, tunnel-mode ESP on a known SPI: each run of datagrams for one SA is opened
    in one `unprotect_all` call, straight from the read's slots (the plaintexts are new objects). A
    run ends where the SA changes or a datagram takes the SaPath's own path.
    ``source``: the (address, port) all the datagrams came from (ESP-in-UDP); an SA whose expected
    peer differs is noted once per run and, if any of its packets authenticated (its packet count
    grew), reported as a NAT mapping change (SaPath.source_seen), as the kernel reports mappings
    after authentication only: a forged packet from anywhere moves nothing."""
    inbound = path.inbound
    deliver = inners.append
    run: list = []
    run_sa = None
    hl = 0
    expect = path.natmap.expect if source is not None else None
    checked = None
    watched = None
    for data in datagrams:
        if ip_header:
            n = len(data)
            hl = (data[0] & 15) * 4 if n >= 20 else n
            sa = inbound.get(int.from_bytes(data[hl:hl + 4], "big")) if n >= hl + 8 and data[9] == 50 else None
        else:
            sa = inbound.get(int.from_bytes(data[:4], "big"))
        if sa is None or sa.full_ip or path.pending:
            if run:
                run_sa.unprotect_all(run, now, inners)
                run = []
            if expect is not None and sa is not None and sa is not checked:
                checked = sa
                if expect.get(sa.spi, source) != source:
                    watched = [] if watched is None else watched
                    watched.append((sa, sa.packets))
            # bytes() copies a slot's datagram out (the slot is read into again); bytes stay themselves.
            inner = path.input_full(bytes(data), now) if ip_header else path.input(bytes(data), now)
            if inner is not None:
                deliver(inner)
            continue
        if sa is not run_sa:
            if run:
                run_sa.unprotect_all(run, now, inners)
                run = []
            run_sa = sa
            if expect is not None and sa is not checked:
                # Once per run, not per packet: the receive path's cost stays a dict lookup per run.
                checked = sa
                if expect.get(sa.spi, source) != source:
                    watched = [] if watched is None else watched
                    watched.append((sa, sa.packets))
        run.append(data[hl:] if hl else data)
    if run:
        run_sa.unprotect_all(run, now, inners)
    if watched:
        for sa, before in watched:
            if sa.packets > before:
                path.source_seen(sa.spi, source, now)
    if path.rx_frags.ready:
        inners.extend(path.take_released())  # fragments that waited for their first (engine.esp.fragcheck)


def raw_batch(sock: socket.socket, address: str, control: bytes = b"") -> MmsgSender | None:
    """A `MmsgSender` to ``address`` through the raw socket ``sock`` (None without sendmmsg)."""
    if not mmsg.available:
        return None
    return MmsgSender(sock, mmsg.sockaddr(sock.family, address), control)


class TunIO:
    """The TUN device's read and write loops for a UserspaceDatapath (see the module docstring)."""

    def __init__(self, dp, fd: int, *, vnet: bool, udp_gro: bool, local: set | frozenset = frozenset()) -> None:
        self.dp = dp
        self.path = dp.path
        dp.path.oversized = self._oversized  # packets the SaPath sends itself (held fragments) too
        self.fd = fd
        self.vnet = vnet
        """Every read and write carries a virtio_net_hdr (offloads on)."""
        self.co = Coalescer(udp=udp_gro, local=local) if vnet else None
        self.dirty: list = []
        """Senders with queued packets."""
        self._flush_scheduled = False
        self.segmented = 0
        """Super-packets cut into standard packets (statistics)."""
        self.too_big = 0
        """ICMP "too big" answers written into the TUN device."""
        self.fragmented = 0
        self._icmp_tokens = float(ICMP_BURST)
        self._icmp_at = 0.0

    # ------------------------------------------------------------ outbound
    def readable(self) -> None:
        fd = self.fd
        read = os.read
        path = self.path
        flows = path.flows
        now = self.dp.runtime.now()
        vnet = self.vnet
        unpack = VNET.unpack_from
        for _ in range(READ_BATCH):
            try:
                buf = read(fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("TUN read: %s", exc)
                break
            if vnet:
                hdr = buf[:10]
                pkt = buf[10:]
            else:
                hdr = ZERO_HDR
                pkt = buf
            if len(pkt) < 20:
                continue
            # Inlined SaPath.lookup: a dict hit for a known flow.
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
                pair = path.miss(key, pkt, now)
            if pair.__class__ is str:
                refuse(path, pair, pkt, now)
                continue
            if hdr != ZERO_HDR:
                flags, gso_type, _hl, gso_size, cstart, coff = unpack(hdr)
                if gso_type & ~GSO_ECN != GSO_NONE:
                    self._super(pair, pkt, gso_type, gso_size, cstart, now)
                    continue
                if flags & NEEDS_CSUM:
                    b = bytearray(pkt)
                    try:
                        complete_checksum(b, cstart, coff)
                    except (IndexError, struct.error):
                        path.drop("malformed", pkt, now)
                        continue
                    pkt = b
            limit = pair.max_inner
            if limit and len(pkt) > limit:
                self._oversized(pair, pkt, limit, now)
                continue
            try:
                pair.sender.add(pair.outbound.protect(pkt, now))
            except (SaExpired, ValueError):
                # The slow path sorts out expiry and malformed packets (bytes: a completed checksum
                # left a bytearray, which cannot key the flow cache).
                path.output(bytes(pkt), now)
        self.flush_senders()
        self.dp.flush_events()

    def _super(self, pair, pkt: bytes, gso_type: int, gso_size: int, cstart: int, now: float) -> None:
        """A super-packet: standard segments, each its own ESP packet."""
        limit = pair.max_inner
        try:
            if not cstart:
                cstart = transport_offset(pkt)  # no NEEDS_CSUM: the kernel left csum_start 0
            if limit:
                hlen = cstart + ((pkt[cstart + 12] >> 4) * 4 if gso_type & ~GSO_ECN in (1, 4) else 8)
                if hlen + gso_size > limit:
                    if pkt[0] >> 4 == 6 or pkt[6] & 0x40:
                        # DF (or IPv6): the sender must send smaller; tell it as a router would.
                        self._icmp(pkt, limit, now)
                        return
                    gso_size = limit - hlen
            segs = segment(pkt, gso_type, gso_size, cstart)
        except (OffloadError, IndexError, struct.error):
            self.path.drop("malformed", pkt, now)
            return
        self.segmented += 1
        sealed = pair.outbound.protect_all(segs, now)
        if sealed is not None:
            pair.sender.add_all(sealed)
            return
        protect = pair.outbound.protect
        add = pair.sender.add
        for seg in segs:
            try:
                add(protect(seg, now))
            except (SaExpired, ValueError):
                self.path.output(bytes(seg), now)

    def _oversized(self, pair, pkt, limit: int, now: float) -> None:
        """A packet larger than the path to the peer carries (after ESP)."""
        if pkt[0] >> 4 == 4 and not pkt[6] & 0x40:
            self.fragmented += 1
            for frag in fragment_ipv4(pkt, limit):
                try:
                    pair.sender.add(pair.outbound.protect(frag, now))
                except (SaExpired, ValueError):
                    self.path.output(bytes(frag), now)
            return
        self._icmp(pkt, limit, now)

    def _icmp(self, pkt, limit: int, now: float) -> None:
        self.path.drops["too_big"] = self.path.drops.get("too_big", 0) + 1
        self._icmp_tokens = min(float(ICMP_BURST), self._icmp_tokens + (now - self._icmp_at) * ICMP_RATE)
        self._icmp_at = now
        if self._icmp_tokens < 1:
            return
        self._icmp_tokens -= 1
        answer = too_big(pkt, limit)
        if answer is not None:
            self.too_big += 1
            self.write(answer)

    def flush_senders(self) -> None:
        dirty = self.dirty
        if dirty:
            self.dirty = []
            for sender in dirty:
                sender.flush()

    # ------------------------------------------------------------ inbound
    def deliver(self, inner) -> None:
        """A decrypted packet for the TUN device: written with the rest of its batch."""
        co = self.co
        if co is None:
            self.write(inner)
            return
        co.add(inner)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.dp.loop.call_soon(self.flush_inbound)

    def deliver_all(self, inners: list) -> None:
        """`deliver` of each packet (a receive batch), written with the rest of the batch."""
        co = self.co
        if co is None:
            for inner in inners:
                self.write(inner)
            return
        co.add_all(inners)
        if inners and not self._flush_scheduled:
            self._flush_scheduled = True
            self.dp.loop.call_soon(self.flush_inbound)

    def flush_inbound(self) -> None:
        self._flush_scheduled = False
        fd = self.fd
        writev = os.writev
        for bufs in self.co.flush():
            try:
                writev(fd, bufs)
            except OSError as exc:
                log.debug("TUN write (%d buffers): %s", len(bufs), exc)

    def write(self, pkt) -> None:
        try:
            if self.vnet:
                os.writev(self.fd, (ZERO_HDR, pkt))
            else:
                os.write(self.fd, pkt)
        except OSError as exc:
            log.debug("TUN write: %s", exc)

    def send_failed(self, exc: OSError, dest: tuple, n: int) -> None:
        path = self.path
        path.send_failed += n
        k = path._send_errors[exc.errno] = path._send_errors.get(exc.errno, 0) + n
        if k == n or k // 10000 != (k - n) // 10000:
            log.warning("sending ESP to %s failed (%d packets so far): %s", dest[0], k, exc)

    def learn_pmtu(self, sender) -> bool:
        """Ask the kernel for the path MTU to ``sender``'s peer; True when it is smaller than what the
        peer's SAs were sized for (their inner limits then shrink)."""
        return self.dp.learn_pmtu(sender)
