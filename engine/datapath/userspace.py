"""The userspace datapath: a TUN device and ESP/AH in Python (crypto in `cryptography`).

Works where the kernel has no ESP (this VM, containers). Like charon's
kernel-libipsec:

- outbound: the remote traffic selectors of installed CHILD SAs are routed
  into the TUN device (`engine.datapath.tun`); each packet read from it goes
  through the SPD and the newest usable SA of the deciding child
  (`engine.datapath.userspace_path`), and leaves as ESP-in-UDP on the
  runtime's NAT-T socket (RFC 3948: no non-ESP marker, which is how the
  peer tells it from IKE) or as raw ESP (IP protocol 50) when the SA is not
  encapsulated; AH and transport mode leave as whole IP packets on a
  header-including raw socket. A packet the SPD does not protect is dropped
  and counted (``no_sa``, ``discard_rule``): bypassed traffic is never
  routed here.
- inbound: ESP-in-UDP from the runtime (`receive_esp`) and raw ESP/AH from
  our raw sockets are checked (replay window, ICV, selectors) by the SA and
  the inner packet is written to the TUN device.

Speed: the hot loops are flat (no per-packet objects beyond the bytes),
read until EAGAIN, and flow decisions are cached. Per packet, the kernel
(TUN read/write, sendmsg with the peer's receive path) takes most of the
time and Python the rest; crypto is a few percent (see
benchmarks/tunnel_throughput.py --profile). With ``gso=True`` the TUN device
takes TCP super-packets (IFF_VNET_HDR + TSO), and with ``jumbo`` they are
protected whole: see `engine.datapath.userspace_gso`.

Threads: none for packets. Everything runs on the asyncio loop, so the SAD
(`engine.esp.Sad`, not thread-safe) is only ever touched from that thread.
A TUN reader thread was measured and rejected: `cryptography` keeps the GIL
during an AEAD call (two threads encrypting 62 KB buffers take as long as
one), and the thread variant ran about 20 % slower than the loop here.
The only other thread is the netlink worker: pyroute2's sync API cannot run
inside the loop's thread, and its calls (routes, rules) are ordered on that
one worker; packets never wait for them.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import ipaddress
import logging
import os
import socket
import struct
from concurrent.futures import ThreadPoolExecutor

from engine.datapath.tun import (
    DEFAULT_DEVICE,
    DEFAULT_MTU,
    FWMARK,
    ROUTE_TABLE,
    RULE_PRIORITY,
    TunError,
    TunNetwork,
    mark_socket,
    open_tun,
    ranges_to_networks,
)
from engine.datapath.userspace_path import Pair, SaPath
from engine.esp import EspDrop, SaConfigError, SaExpired
from engine.events import ChildSaDeleted, ChildSaInstalled, SaCounters
from engine.policy.model import Policy

log = logging.getLogger("engine.datapath.userspace")

SAMPLE_PERIOD = 0.5
"""Seconds between PacketSamples of each SA direction (for the console's Packets screen), whatever
the packet rate: the next packet after each period is sampled."""
READ_BATCH = 512
"""Packets handled per readiness callback before letting IKE and timers run."""
REKEYED_INBOUND_LINGER = 5.0
"""Seconds a rekeyed inbound SA still accepts packets in flight (charon's delete_rekeyed_delay)."""
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_HDRINCL = 36
IPPROTO_AH = 51
SOCKET_BUFFER = 4 << 20
"""Bytes of send/receive buffer asked for on the ESP sockets (a 64 KiB super-packet fills the default)."""


class UserspaceDatapath:
    """Datapath protocol implementation over a TUN device (see the module docstring)."""

    name = "userspace"

    def __init__(self, policy: Policy, *, device: str = DEFAULT_DEVICE, mtu: int = DEFAULT_MTU,
                 addresses: tuple[str, ...] = (), table: int = ROUTE_TABLE, priority: int = RULE_PRIORITY,
                 fwmark: int = FWMARK, sample_period: float = SAMPLE_PERIOD, raw_esp: bool = True,
                 gso: bool = False, jumbo: bool = False) -> None:
        """``device``/``mtu``/``addresses``: the TUN device; ``table``/``priority``/``fwmark``: its
        routing (see engine.datapath.tun); ``raw_esp``: open a raw IP-protocol-50 socket for SAs
        without UDP encapsulation; ``gso``: TCP super-packets through the TUN, segmented here for
        the peer unless ``jumbo`` (every peer is ipsec-console: super-packets go whole, see
        engine.datapath.userspace_gso)."""
        self.policy = policy
        self.device = device
        self.mtu = mtu
        self.addresses = addresses
        self.table = table
        self.priority = priority
        self.fwmark = fwmark
        self.raw_esp = raw_esp
        self.gso = gso or jumbo
        self.jumbo = jumbo
        self.path = SaPath(policy)
        self.sample_period = sample_period
        self._sampler: asyncio.TimerHandle | None = None
        self.runtime = None
        self.net: TunNetwork | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exec: ThreadPoolExecutor | None = None
        self._raw: dict[tuple[int, int], socket.socket] = {}
        """(address family, IP protocol) -> raw socket (IPPROTO_RAW: header included, send only)."""
        self._routes: dict[int, tuple[list, str | None]] = {}
        """Inbound SPI -> (networks, src) routed for that pair."""
        self._rule_routes: list[tuple[list, str]] = []
        self._gso = None

    # ------------------------------------------------------------ lifecycle
    def _net(self, fn, *args):
        """Run a netlink call on the worker thread (in order); returns a future."""
        return self._loop.run_in_executor(self._exec, fn, *args)

    def _net_bg(self, fn, *args) -> None:
        fut = self._net(fn, *args)
        fut.add_done_callback(_log_failure)

    async def start(self, runtime) -> None:
        self.runtime = runtime
        self._loop = asyncio.get_running_loop()
        self._exec = ThreadPoolExecutor(1, thread_name_prefix="tun-netlink")
        try:
            self.net = await self._net(self._make_network)
            await self._net(self.net.remove_stale)
            self._fd, self.device = open_tun(self.device, vnet_hdr=self.gso)
            if self.gso:
                from engine.datapath.userspace_gso import GSO_MAX_SIZE

                await self._net(lambda: self.net.setup(self.mtu, self.addresses, gso_max_size=GSO_MAX_SIZE))
            else:
                await self._net(self.net.setup, self.mtu, self.addresses)
        except BaseException:
            await self.stop()
            raise
        if self.gso:
            from engine.datapath.userspace_gso import GsoTun

            self._gso = GsoTun(self, self._fd, jumbo=self.jumbo)
            self._loop.add_reader(self._fd, self._gso.readable)
        else:
            self._loop.add_reader(self._fd, self._tun_readable)
        if self.raw_esp:
            self._open_raw()
        if self.sample_period:
            self._arm_samples()
        # Everything allocated so far (modules, the policy) lives as long as the process: keep it
        # out of the collector's way, which otherwise walks it now and then under packet load.
        gc.freeze()
        gso = ""
        if self.gso:
            gso = ", TCP super-packets " + ("sent whole" if self.jumbo else "segmented")
        log.info("userspace datapath on %s (mtu %d, table %d, rule priority %d%s)", self.device, self.mtu,
                 self.table, self.priority, gso)

    def _arm_samples(self) -> None:
        self.path.arm_samples()
        self._sampler = self._loop.call_later(self.sample_period, self._arm_samples)

    def _make_network(self) -> TunNetwork:
        # Created on the worker thread: pyroute2's sync API cannot run inside the asyncio loop's thread.
        return TunNetwork(self.device, table=self.table, priority=self.priority, fwmark=self.fwmark)

    def _open_raw(self) -> None:
        """Raw sockets: ESP (and IPv4 AH) in, whole IP packets (AH, transport mode) out."""
        for family, proto in ((socket.AF_INET, socket.IPPROTO_ESP), (socket.AF_INET6, socket.IPPROTO_ESP),
                              (socket.AF_INET, IPPROTO_AH)):
            try:
                s = socket.socket(family, socket.SOCK_RAW, proto)
            except OSError as exc:
                if family == socket.AF_INET:
                    log.warning("no raw socket for IP protocol %d (%s): only UDP-encapsulated SAs will pass "
                                "traffic", proto, exc)
                continue
            s.setblocking(False)
            mark_socket(s, self.fwmark)
            _big_buffers(s)
            self._raw[(family, proto)] = s
            self._loop.add_reader(s.fileno(), self._raw_readable, s, family)
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                s = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
            except OSError as exc:
                log.debug("no header-including raw socket for family %d: %s", family, exc)
                continue
            s.setblocking(False)
            mark_socket(s, self.fwmark)
            _big_buffers(s)
            self._raw[(family, socket.IPPROTO_RAW)] = s

    async def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        if self._fd >= 0:
            loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        for s in self._raw.values():
            loop.remove_reader(s.fileno())
            s.close()
        self._raw.clear()
        if self._exec is not None:
            if self.net is not None:
                try:
                    await self._net(self.net.close)
                except Exception as exc:  # noqa: BLE001
                    log.warning("removing routes of %s failed: %s", self.device, exc)
                self.net = None
            self._exec.shutdown(wait=True)
            self._exec = None
        self._loop = None

    def prepare_socket(self, sock: socket.socket) -> None:
        """The runtime's IKE/NAT-T sockets: marked so their packets skip the tunnel routes, and with
        room for bursts of ESP-in-UDP (the kernel caps the size at net.core.[rw]mem_max)."""
        mark_socket(sock, self.fwmark)
        _big_buffers(sock)

    # ------------------------------------------------------------ SAs
    def install(self, ev: ChildSaInstalled) -> None:
        try:
            send, dest = self._sender(ev)
            pair = self.path.install(ev, send, dest)
        except (SaConfigError, OSError) as exc:
            log.error("cannot install CHILD SA %s{%d}: %s", ev.child, ev.unique_id, exc)
            return
        if self._gso is not None:
            self._gso.installed(pair)
        nets = [n for ts in ev.remote_ts if not ts.dynamic for n in ranges_to_networks(ts.start, ts.end)]
        if ev.mode == "transport":
            nets = [ipaddress.ip_network(ev.remote_addr)]
        local_nets = [n for ts in ev.local_ts if not ts.dynamic for n in ranges_to_networks(ts.start, ts.end)]
        self._net_bg(self._add_sa_routes, ev.spi_in, nets, local_nets)

    def _add_sa_routes(self, spi_in: int, nets: list, local_nets: list) -> None:
        net = self.net
        if net is None:
            return
        src = net.local_address_in(local_nets) if local_nets else None
        net.add_routes(nets, src)
        self._routes[spi_in] = (nets, src)

    def _del_sa_routes(self, spi_in: int) -> None:
        entry = self._routes.pop(spi_in, None)
        if entry is not None and self.net is not None:
            self.net.remove_routes(*entry)

    def _sender(self, ev: ChildSaInstalled):
        family = socket.AF_INET6 if ":" in ev.remote_addr else socket.AF_INET
        if ev.protocol == "ah" or ev.mode == "transport":
            # protect() returns the whole IP packet (AH covers the header; transport mode keeps it).
            raw = self._raw.get((family, socket.IPPROTO_RAW))
            if raw is None:
                raise OSError(errno.EPROTONOSUPPORT, "no header-including raw socket for AH or transport mode")
            return raw.sendto, (ev.remote_addr, 0)
        if ev.encap:
            sock = self.runtime.sockets.socket_for((ev.local_addr, ev.local_port))
            if sock is None:
                raise OSError(errno.ENOENT, f"no NAT-T socket on {ev.local_addr} port {ev.local_port}")
            return sock.sendto, (ev.remote_addr, ev.remote_port)
        raw = self._raw.get((family, socket.IPPROTO_ESP))
        if raw is None:
            raise OSError(errno.EPROTONOSUPPORT, "the SA is not UDP-encapsulated and there is no raw ESP socket "
                                                 "(set encap = true on the connection)")
        if family == socket.AF_INET:
            # Source address = the SA's local address, whatever the routing table would pick.
            info = struct.pack("=I4s4s", 0, socket.inet_aton(ev.local_addr), socket.inet_aton(ev.local_addr))
            cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, info)]

            def send(data, dest, _s=raw, _c=cmsg):
                return _s.sendmsg((data,), _c, 0, dest)
            return send, (ev.remote_addr, 0)
        return raw.sendto, (ev.remote_addr, 0)

    def remove(self, ev: ChildSaDeleted) -> None:
        linger = ev.reason.startswith("rekeyed") and self._loop is not None
        pair = self.path.remove(ev.spi_in, linger=linger)
        if linger:
            self._loop.call_later(REKEYED_INBOUND_LINGER, self.path.forget, ev.spi_in)
        if pair is not None and self._gso is not None:
            self._gso.removed(pair)
        self._net_bg(self._del_sa_routes, ev.spi_in)

    def apply_policy(self, policy: Policy) -> None:
        """SPD from the new policy; bypass rules get ``throw`` routes (back to main), discard rules
        are routed into the TUN so their drops are counted."""
        self.policy = policy
        self.path.apply_policy(policy)
        wanted: list[tuple[list, str]] = []
        for rule in policy.rules:
            if rule.action == "bypass" and not all(ts.is_catch_all for ts in rule.local_ts):
                continue  # a route cannot look at the source: leave such bypasses to the SPD
            nets = [n for ts in rule.remote_ts if not ts.dynamic for n in ranges_to_networks(ts.start, ts.end)]
            wanted.append((nets, "throw" if rule.action == "bypass" else "unicast"))
        old, self._rule_routes = self._rule_routes, wanted
        if self.net is not None or self._exec is not None:
            self._net_bg(self._swap_rule_routes, old, wanted)

    def _swap_rule_routes(self, old, new) -> None:
        if self.net is None:
            return
        for nets, kind in new:
            self.net.add_routes(nets, None, kind)
        for nets, kind in old:
            self.net.remove_routes(nets, None, kind)

    # ------------------------------------------------------------ packets
    def _tun_readable(self) -> None:
        """Outbound: packets the kernel routed into the TUN device."""
        fd = self._fd
        read = os.read
        path = self.path
        flows = path.flows
        now = self.runtime.now()
        for _ in range(READ_BATCH):
            try:
                pkt = read(fd, 65535)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("TUN read: %s", exc)
                break
            # Inlined SaPath.output for the common case (a cached flow with a usable SA).
            v = pkt[0] >> 4
            if path.addr_only:
                key = pkt[12:20] if v == 4 else pkt[8:40]
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
            try:
                wire = pair.outbound.protect(pkt, now)
                pair.send(wire, pair.dest)
            except (SaExpired, ValueError):
                path.output(pkt, now)  # the slow path sorts out expiry and malformed packets
            except OSError as exc:
                path.send_error(exc, pair)
        self._flush_events()

    def _flush_events(self) -> None:
        for ev in self.path.drain():
            self.runtime.datapath_event(ev)

    def receive_esp(self, data: bytes, local, remote, now: float) -> None:
        """Inbound ESP-in-UDP from the runtime's NAT-T socket."""
        inner = self.path.input(data, now)
        if inner is not None:
            self._deliver(inner)

    def _deliver(self, inner: bytes) -> None:
        if self._gso is not None:
            self._gso.deliver(inner)
            return
        try:
            os.write(self._fd, inner)
        except OSError as exc:
            log.debug("TUN write: %s", exc)

    def _raw_readable(self, sock: socket.socket, family: int) -> None:
        path = self.path
        inbound = path.inbound
        now = self.runtime.now()
        recv = sock.recv
        v4 = family == socket.AF_INET
        for _ in range(READ_BATCH):
            try:
                data = recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("raw ESP recv: %s", exc)
                break
            if v4:
                # IPv4 raw sockets hand over the IP header too. Inlined SaPath.input_full for
                # the common case: tunnel-mode ESP on a known SPI.
                hl = (data[0] & 15) * 4
                sa = inbound.get(int.from_bytes(data[hl:hl + 4], "big")) \
                    if len(data) >= hl + 8 and data[9] == 50 else None
                if sa is None or sa.full_ip or path.pending:
                    inner = path.input_full(data, now)
                else:
                    try:
                        inner = sa.unprotect(data[hl:], now)
                    except EspDrop:
                        continue
            else:
                inner = path.input(data, now)
            if inner is not None:
                self._deliver(inner)
        self._flush_events()

    def drain_events(self):
        return self.path.drain()

    def counters(self) -> tuple[list[SaCounters], dict[str, int]]:
        return self.path.counters()

    def rule_counters(self) -> dict[str, int]:
        return self.path.rule_counters()


def _log_failure(fut) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        log.error("routing change failed: %s", exc)


def _big_buffers(sock: socket.socket) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError as exc:
            log.debug("socket buffer: %s", exc)


__all__ = ["Pair", "TunError", "UserspaceDatapath"]
