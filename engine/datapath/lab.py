"""The lab datapath: real ESP SAs over loopback UDP, fed by a traffic generator.

No root, no TUN: each lab endpoint (see `engine.runtime.lab`) runs an
`EngineRuntime` with a `LabDatapath`. Outbound packets come from a
`TrafficGenerator` instead of a TUN device: real IPv4/IPv6 packets (ICMP
echo, UDP request/response, TCP-shaped flows with SYN, data, ACKs and FIN)
from a host in the CHILD SA's local selector to hosts in its remote
selector. They go through the same SPD and SA path as the userspace
datapath (`engine.datapath.userspace_path`) and leave as ESP-in-UDP from
the endpoint's NAT-T socket to the peer's NAT-T port. Inbound packets are
decrypted and checked by the SA, then handed to a `HostStack` that answers
like a host would (echo replies, UDP responses, TCP ACKs), so counters,
rates and packet samples move in both directions.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
from collections import Counter

from engine.datapath.userspace_path import Pair, SaPath
from engine.esp import SaConfigError, ip
from engine.events import ChildSaDeleted, ChildSaInstalled, SaCounters
from engine.policy.model import Policy
from engine.policy.ts import TrafficSelector

log = logging.getLogger("engine.datapath.lab")

SAMPLE_EVERY = 5
"""A PacketSample per this many packets of an SA: the lab is slow, samples should still flow."""
TICK = 0.05
"""Generator period in seconds."""
REKEYED_INBOUND_LINGER = 5.0
MAX_BURST = 0.2
"""Seconds of traffic the generator sends at once at most."""
SOCKET_BUFFER = 1 << 20
"""Receive/send buffer asked for on the lab's sockets (bursts of generated packets; capped by the kernel)."""
TCP_SEGMENTS_PER_FLOW = 40
UDP_SERVICE_PORT = 53
TCP_SERVICE_PORT = 443

_ICMP = struct.Struct("!BBHHH")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_U16 = struct.Struct("!H")
SYN, ACK, FIN, PSH = 0x02, 0x10, 0x01, 0x08


# ---------------------------------------------------------------- packet builders


def _l4_checksum(src: bytes, dst: bytes, proto: int, segment: bytearray, pos: int) -> None:
    c = ip.checksum(segment, ip.pseudo_header_sum(src, dst, proto, len(segment)))
    if c == 0 and proto == ip.IPPROTO_UDP:
        c = 0xFFFF
    _U16.pack_into(segment, pos, c)


def icmp_echo(src: bytes, dst: bytes, ident: int, seq: int, payload: bytes, *, reply: bool = False,
              ttl: int = 64) -> bytes:
    """An ICMP (IPv4) or ICMPv6 echo request/reply."""
    v6 = len(src) == 16
    kind = (129 if reply else 128) if v6 else (0 if reply else 8)
    msg = bytearray(_ICMP.pack(kind, 0, 0, ident, seq)) + payload
    if v6:
        _l4_checksum(src, dst, ip.IPPROTO_ICMPV6, msg, 2)
        return ip.ip_header(src, dst, ip.IPPROTO_ICMPV6, len(msg), ttl=ttl) + msg
    _U16.pack_into(msg, 2, ip.checksum(msg))
    return ip.ip_header(src, dst, ip.IPPROTO_ICMP, len(msg), ttl=ttl, ident=seq) + msg


def udp_packet(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, *, ident: int = 0) -> bytes:
    seg = bytearray(_UDP.pack(sport, dport, 8 + len(payload), 0)) + payload
    _l4_checksum(src, dst, ip.IPPROTO_UDP, seg, 6)
    return ip.ip_header(src, dst, ip.IPPROTO_UDP, len(seg), ident=ident) + seg


def tcp_packet(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
               payload: bytes = b"", *, window: int = 64240, ident: int = 0) -> bytes:
    seg = bytearray(_TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, window, 0, 0))
    seg += payload
    _l4_checksum(src, dst, ip.IPPROTO_TCP, seg, 16)
    return ip.ip_header(src, dst, ip.IPPROTO_TCP, len(seg), ident=ident) + seg


def _hosts(ts: TrafficSelector, n: int) -> list[bytes]:
    """Up to ``n`` host addresses inside a selector (skipping a network's first address when it can)."""
    first, last = int(ts.start), int(ts.end)
    if last - first >= 2:
        first += 1
    cls = ipaddress.IPv4Address if ts.version == 4 else ipaddress.IPv6Address
    return [cls(a).packed for a in range(first, min(last, first + n - 1) + 1)]


# ---------------------------------------------------------------- host stack


class HostStack:
    """Answers decrypted packets like the hosts behind a gateway would."""

    def __init__(self, send) -> None:
        self.send = send
        """``send(packet, now)``: back through the SA path."""
        self.stats: Counter = Counter()
        """received_<kind>, replied_<kind>, for tests and the curious."""

    def receive(self, pkt: bytes, now: float) -> None:
        v = pkt[0] >> 4
        if v == 4:
            hl = (pkt[0] & 15) * 4
            proto = pkt[9]
            src, dst = pkt[12:16], pkt[16:20]
        else:
            hl = 40
            proto = pkt[6]
            src, dst = pkt[8:24], pkt[24:40]
        body = pkt[hl:]
        self.stats["received"] += 1
        if proto in (ip.IPPROTO_ICMP, ip.IPPROTO_ICMPV6) and len(body) >= 8:
            kind = body[0]
            if kind in (8, 128):
                self.stats["received_icmp_request"] += 1
                ident, seq = struct.unpack_from("!HH", body, 4)
                self._reply(icmp_echo(dst, src, ident, seq, bytes(body[8:]), reply=True), now, "icmp")
            else:
                self.stats["received_icmp_reply"] += 1
        elif proto == ip.IPPROTO_UDP and len(body) >= 8:
            sport, dport = struct.unpack_from("!HH", body)
            if dport == UDP_SERVICE_PORT:
                self.stats["received_udp_request"] += 1
                answer = bytes(body[8:24]) + b"\x81\x80" + bytes(40)
                self._reply(udp_packet(dst, src, dport, sport, answer), now, "udp")
            else:
                self.stats["received_udp_response"] += 1
        elif proto == ip.IPPROTO_TCP and len(body) >= 20:
            sport, dport, seq, _ack, off, flags = struct.unpack_from("!HHIIBB", body)
            data = len(body) - (off >> 4) * 4
            if dport != TCP_SERVICE_PORT:
                self.stats["received_tcp_ack"] += 1
                return
            self.stats["received_tcp"] += 1
            if flags & SYN:
                self._reply(tcp_packet(dst, src, dport, sport, 1000, seq + 1, SYN | ACK), now, "tcp")
            elif flags & FIN:
                self._reply(tcp_packet(dst, src, dport, sport, 1001, seq + data + 1, FIN | ACK), now, "tcp")
            elif data:
                self._reply(tcp_packet(dst, src, dport, sport, 1001, seq + data, ACK), now, "tcp")
        else:
            self.stats["received_other"] += 1

    def _reply(self, pkt: bytes, now: float, kind: str) -> None:
        self.stats[f"replied_{kind}"] += 1
        self.send(pkt, now)


# ---------------------------------------------------------------- generator


class TrafficGenerator:
    """Sends ``rate`` packets per second, round-robin over the installed CHILD SAs and the flow kinds."""

    def __init__(self, path: SaPath, send, *, rate: float = 10.0, flows: tuple[str, ...] = ("icmp", "udp", "tcp"),
                 hosts: int = 3) -> None:
        self.path = path
        self.send = send
        self.rate = rate
        self.flows = tuple(f for f in flows if f in ("icmp", "udp", "tcp")) or ("icmp",)
        self.hosts = hosts
        self.stats: Counter = Counter()
        """sent_<kind> counters."""
        self._credit = 0.0
        self._turn = 0
        self._seq = 0
        self._tcp: dict[tuple, list[int]] = {}
        """(child key, src, dst) -> [source port, next sequence number, segments sent]."""

    def targets(self) -> list[tuple[tuple[str, str], bytes, bytes]]:
        """(child key, source, destination) for every child with a usable pair."""
        out = []
        for key, pairs in self.path.by_child.items():
            pair = next((p for p in reversed(pairs.values()) if p.active), None)
            if pair is None or not pair.ev.local_ts or not pair.ev.remote_ts:
                continue
            lts = next((t for t in pair.ev.local_ts if not t.dynamic), None)
            for rts in pair.ev.remote_ts:
                if rts.dynamic or lts is None or rts.version != lts.version:
                    continue
                src = _hosts(lts, 1)[0]
                for dst in _hosts(rts, self.hosts):
                    out.append((key, src, dst))
                break
        return out

    def tick(self, dt: float, now: float) -> int:
        """Send this tick's share of packets; returns how many were sent."""
        # After a stall (a busy machine), catch up at most MAX_BURST seconds' worth: a bigger burst
        # would only overflow the loopback sockets' buffers.
        self._credit = min(self._credit + self.rate * dt, max(1.0, self.rate * MAX_BURST))
        n = int(self._credit)
        if n <= 0:
            return 0
        targets = self.targets()
        if not targets:
            self._credit = 0.0
            return 0
        self._credit -= n
        for _ in range(n):
            t = self._turn
            self._turn += 1
            key, src, dst = targets[t % len(targets)]
            kind = self.flows[(t // len(targets)) % len(self.flows)]
            self.send(self._packet(kind, key, src, dst), now)
            self.stats[f"sent_{kind}"] += 1
            self.stats["sent"] += 1
        return n

    def _packet(self, kind: str, key, src: bytes, dst: bytes) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        if kind == "icmp":
            return icmp_echo(src, dst, 0x1AB, seq, bytes(range(56)))
        if kind == "udp":
            query = struct.pack("!HHHHHH", seq, 0x0100, 1, 0, 0, 0) + b"\x03www\x07example\x00\x00\x01\x00\x01"
            return udp_packet(src, dst, 40000 + seq % 20000, UDP_SERVICE_PORT, query, ident=seq)
        state = self._tcp.get((key, src, dst))
        if state is None or state[2] > TCP_SEGMENTS_PER_FLOW:
            sport = 33000 + (seq % 28000)
            self._tcp[(key, src, dst)] = [sport, 1, 0]
            return tcp_packet(src, dst, sport, TCP_SERVICE_PORT, 0, 0, SYN, ident=seq)
        sport, nxt, count = state
        state[2] += 1
        if count == TCP_SEGMENTS_PER_FLOW:
            return tcp_packet(src, dst, sport, TCP_SERVICE_PORT, nxt, 1001, FIN | ACK, ident=seq)
        size = 200 + (seq * 97) % 1200
        state[1] = nxt + size
        return tcp_packet(src, dst, sport, TCP_SERVICE_PORT, nxt, 1001, PSH | ACK, bytes(size), ident=seq)


# ---------------------------------------------------------------- the datapath


class LabDatapath:
    """Datapath protocol implementation for the lab (see the module docstring)."""

    name = "lab"

    def __init__(self, policy: Policy, *, peer_natt: dict[str, int] | None = None, rate: float | None = None,
                 flows: tuple[str, ...] | None = None, sample_every: int = SAMPLE_EVERY) -> None:
        """``peer_natt``: NAT-T port of each peer address (the lab's peers are not on 4500);
        ``rate``/``flows``: the generator (default: the policy's ``[lab]`` section)."""
        lab = policy.lab
        self.policy = policy
        self.peer_natt = dict(peer_natt or {})
        self.path = SaPath(policy, sample_every=sample_every)
        self.host = HostStack(self.path.output)
        self.generator = TrafficGenerator(
            self.path, self.path.output,
            rate=rate if rate is not None else (lab.rate if lab else 10.0),
            flows=flows if flows is not None else (lab.flows if lab else ("icmp", "udp", "tcp")))
        self.runtime = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self.paused = False
        """While True the generator sends nothing (replies still go out)."""

    def prepare_socket(self, sock) -> None:
        """Room for bursts on the loopback sockets (a stalled loop must not drop what the peer sent)."""
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError as exc:
                log.debug("socket buffer: %s", exc)

    async def start(self, runtime) -> None:
        self.runtime = runtime
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="lab-traffic")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._loop = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            if not self.paused:
                try:
                    self.generator.tick(now - last, now)
                except Exception:  # the generator must never take the lab down
                    log.exception("lab traffic generator failed")
                self._flush_events()
            last = now

    def _flush_events(self) -> None:
        if self.runtime is None:
            return
        for ev in self.path.drain():
            self.runtime.datapath_event(ev)

    # ------------------------------------------------------------ SAs
    def install(self, ev: ChildSaInstalled) -> None:
        try:
            sock = self.runtime.sockets.socket_for((ev.local_addr, self.policy.engine.natt_port))
            if sock is None:
                raise OSError(errno.ENOENT, f"no NAT-T socket on {ev.local_addr}")
            if ev.encap:
                dest = (ev.remote_addr, ev.remote_port)
            else:
                port = self.peer_natt.get(ev.remote_addr)
                if port is None:
                    try:
                        port = self.policy.connection(ev.connection).remote_natt_port
                    except KeyError:
                        port = 4500
                dest = (ev.remote_addr, port)
            self.path.install(ev, sock.sendto, dest)
        except (SaConfigError, OSError) as exc:
            log.error("cannot install CHILD SA %s{%d}: %s", ev.child, ev.unique_id, exc)

    def remove(self, ev: ChildSaDeleted) -> None:
        linger = ev.reason.startswith("rekeyed") and self._loop is not None
        self.path.remove(ev.spi_in, linger=linger)
        if linger:
            self._loop.call_later(REKEYED_INBOUND_LINGER, self.path.forget, ev.spi_in)

    def apply_policy(self, policy: Policy) -> None:
        self.policy = policy
        self.path.apply_policy(policy)

    # ------------------------------------------------------------ packets
    def receive_esp(self, data: bytes, local, remote, now: float) -> None:
        inner = self.path.input(data, now)
        for inner in ([inner] if inner is not None else []) + self.path.take_released():
            try:
                self.host.receive(inner, now)
            except (IndexError, struct.error):
                self.path.drops["malformed"] += 1

    def drain_events(self):
        return self.path.drain()

    def counters(self) -> tuple[list[SaCounters], dict[str, int]]:
        return self.path.counters()

    async def counters_async(self) -> tuple[list[SaCounters], dict[str, int]]:
        return await self.path.counters_async()

    def rule_counters(self) -> dict[str, int]:
        return self.path.rule_counters()

    def pairs(self) -> list[Pair]:
        return list(self.path.pairs.values())
