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
  routed here. IPv4 fragments of a datagram for a transport-mode SA are
  reassembled and the datagram protected whole, its ESP/AH packet leaving as
  outer fragments (RFC 4301 §7, `engine.datapath.reassembly`).
- inbound: ESP-in-UDP from the runtime (`receive_esp`) and raw ESP/AH from
  our raw sockets are checked (replay window, ICV, selectors) by the SA and
  the inner packet is written to the TUN device.

Speed, with any peer (`engine.datapath.userspace_io`): the TUN device runs
with offloads (IFF_VNET_HDR, TSO/USO), so the kernel hands over TCP/UDP
super-packets, which are cut into standard packets here (one ESP packet
each, never above the path MTU: `engine.datapath.pmtu`); ESP-in-UDP leaves
in UDP GSO batches and arrives in UDP GRO batches; decrypted segments are
joined again for one TUN write (`engine.datapath.offload`). ``[engine]
tun_offload = "off"`` turns the TUN offloads off (packet by packet).

Installing or removing a CHILD SA costs O(1) whatever the number of SAs:
the SA index and flow cache of `SaPath`, and routes counted per user and
requested on the loop without waiting (`engine.datapath.rtnl`): no netlink
round trip, no worker thread, no table rebuilt.

Threads: none for packets. Everything runs on the asyncio loop, so the SAD
(`engine.esp.Sad`, not thread-safe) is only ever touched from that thread.
A TUN reader thread was measured and rejected: `cryptography` keeps the GIL
during an AEAD call (two threads encrypting 62 KB buffers take as long as
one), and the thread variant ran about 20 % slower than the loop here.
pyroute2 runs on a worker thread at start and stop only (its sync API
cannot run inside the loop's thread).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import gc
import ipaddress
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from engine.datapath import mmsg, pmtu
from engine.datapath.mmsg import control_message
from engine.datapath.rtnl import AddressBook, RouteWriter
from engine.datapath.traps import AskedTraps, TrapNotes
from engine.datapath.tun import (
    DEFAULT_DEVICE,
    DEFAULT_MTU,
    FWMARK,
    ROUTE_TABLE,
    RULE_PRIORITY,
    TUN_F_USO4,
    RouteTable,
    TunError,
    TunNetwork,
    mark_socket,
    open_tun,
    ranges_to_networks,
    strict_rp_filter,
)
from engine.datapath.userspace_io import RawReader, RawSender, SourcedSocket, TunIO, UdpSender, open_esp, raw_batch
from engine.datapath.userspace_path import Pair, SaPath
from engine.datapath.userspace_traps import UserspaceTraps
from engine.esp import SaConfigError
from engine.events import (
    AcquireRequested,
    ChildSaDeleted,
    ChildSaInstalled,
    ChildSaMoved,
    SaCounters,
    VirtualIpsChanged,
)
from engine.policy.model import Policy

log = logging.getLogger("engine.datapath.userspace")

SAMPLE_PERIOD = 0.5
"""Seconds between PacketSamples of each SA direction (for the console's Packets screen), whatever
the packet rate: the next packet after each period is sampled."""
REKEYED_INBOUND_LINGER = 5.0
"""Seconds a rekeyed inbound SA still accepts packets in flight (charon's delete_rekeyed_delay)."""
IPV6_HDRINCL = 36
IPPROTO_AH = 51
ACQUIRE_HOLD = 2.0
"""Seconds between two acquires of one trapped child (its packets keep coming while IKE runs)."""
SOCKET_BUFFER = 4 << 20
"""Bytes of send/receive buffer asked for on the ESP sockets (bursts of a GSO batch fill the default)."""


class UserspaceDatapath(UserspaceTraps, pmtu.PathMtu):
    """Datapath protocol implementation over a TUN device (see the module docstring)."""

    name = "userspace"

    def __init__(self, policy: Policy, *, device: str = DEFAULT_DEVICE, mtu: int = DEFAULT_MTU,
                 addresses: tuple[str, ...] = (), table: int = ROUTE_TABLE, priority: int = RULE_PRIORITY,
                 fwmark: int = FWMARK, sample_period: float = SAMPLE_PERIOD, raw_esp: bool = True,
                 offload: bool = True) -> None:
        """``device``/``mtu``/``addresses``: the TUN device; ``table``/``priority``/``fwmark``: its
        routing (see engine.datapath.tun); ``raw_esp``: open a raw IP-protocol-50 socket for SAs
        without UDP encapsulation; ``offload``: TUN offloads (super-packets segmented here)."""
        self.policy = policy
        self.device = device
        self.mtu = mtu
        self.addresses = addresses
        self.table = table
        self.priority = priority
        self.fwmark = fwmark
        self.raw_esp = raw_esp
        self.offload = offload
        self.path = SaPath(policy)
        self.sample_period = sample_period
        self._sampler: asyncio.TimerHandle | None = None
        self.runtime = None
        self.net: TunNetwork | None = None
        self.io: TunIO | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._exec: ThreadPoolExecutor | None = None
        self._writer: RouteWriter | None = None
        self._addrs: AddressBook | None = None
        self.routes: RouteTable | None = None
        self._raw: dict[tuple[int, int], socket.socket] = {}
        """(address family, IP protocol) -> raw socket (IPPROTO_RAW: header included, send only)."""
        self._sa_routes: dict[int, list] = {}
        """Inbound SPI -> the `_route_users` entry of the route its pair uses."""
        self._route_users: dict[tuple[int, str | None], list] = {}
        """(id of a networks tuple, src) -> [networks, src, pairs using it]: the pairs of one child
        share `_networks`' tuple, so the next one costs a counter here instead of hashing each
        network (twice, with its backstop) in the RouteTable. The entry holds the tuple: its id
        stays unique while counted; an uncached tuple (transport mode) is simply its own entry."""
        self._rule_routes: list[tuple[tuple, str]] = []
        self._trap_routes: dict[tuple[str, str], tuple[tuple, str | None]] = {}
        """(connection, child) of a trap -> the networks (and source) routed into the device for it."""
        self._acquired: dict[tuple[str, str], float] = {}
        self._asked_traps = AskedTraps()
        """(connection, child) the engine asked a trap for (close_action/dpd_action = trap)."""
        self._notes = TrapNotes(log)
        """Traps that could not go in, said once (each apply derives them all again)."""
        self._senders: dict[tuple, object] = {}
        """(socket or raw kind, peer endpoint) -> the sender its pairs share."""
        self._reduced: set = set()
        """Senders whose path MTU was learned smaller (asked again after pmtu.REPROBE)."""
        self._strict_rpf: list[str] = []
        """Interfaces with strict reverse path filtering (engine.datapath.tun.strict_rp_filter), read at start."""
        self._rpf_said = False

    # ------------------------------------------------------------ lifecycle
    def _net(self, fn, *args):
        """Run a pyroute2 call on the worker thread (in order); returns a future."""
        return self.loop.run_in_executor(self._exec, fn, *args)

    async def start(self, runtime) -> None:
        self.runtime = runtime
        self.loop = asyncio.get_running_loop()
        self._exec = ThreadPoolExecutor(1, thread_name_prefix="tun-netlink")
        offloads = 0
        try:
            self.net = await self._net(self._make_network)
            await self._net(self.net.remove_stale)
            self._fd, self.device, offloads = open_tun(self.device, vnet_hdr=self.offload)
            await self._net(self.net.setup, self.mtu, self.addresses)
            self._writer = RouteWriter(self.loop, table=self.table)
            self._addrs = AddressBook(self.loop)
            self.routes = RouteTable(self._writer, self.net.index)
        except BaseException:
            await self.stop()
            raise
        # Not needed again until stop: no idle thread while packets flow.
        self._exec.shutdown(wait=True)
        self._exec = None
        self.io = TunIO(self, self._fd, vnet=bool(offloads), udp_gro=bool(offloads & TUN_F_USO4),
                        local=self._addrs.packed)
        self.loop.add_reader(self._fd, self.io.readable)
        if self.raw_esp:
            self._open_raw()
        self._strict_rpf = strict_rp_filter(self.device)
        if self.sample_period:
            self._arm_samples()
        self._apply_rule_routes()
        # Everything allocated so far (modules, the policy) lives as long as the process: keep it
        # out of the collector's way, which otherwise walks it now and then under packet load.
        gc.freeze()
        how = "packet by packet"
        if offloads:
            how = "TCP" + ("/UDP" if offloads & TUN_F_USO4 else "") + " super-packets cut into standard ESP packets"
        log.info("userspace datapath on %s (mtu %d, table %d, rule priority %d, %s)", self.device, self.mtu,
                 self.table, self.priority, how)

    def _arm_samples(self) -> None:
        self.path.arm_samples()
        self._reprobe(self.loop.time())
        self.path.expire_fragments(self.runtime.now())  # datagrams whose fragments stopped coming
        self._sampler = self.loop.call_later(self.sample_period, self._arm_samples)

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
            _df(s)
            self._raw[(family, proto)] = s
            self.loop.add_reader(s.fileno(), RawReader(self, s, family).readable)
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
        loop = self.loop
        if loop is None:
            return
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        if self.routes is not None:
            self.routes.clear()  # throw routes outlive the device
            self._route_users.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._addrs is not None:
            self._addrs.close()
            self._addrs = None
        if self._fd >= 0:
            loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        for s in self._raw.values():
            loop.remove_reader(s.fileno())
            s.close()
        self._raw.clear()
        if self.net is not None:
            if self._exec is None:
                self._exec = ThreadPoolExecutor(1, thread_name_prefix="tun-netlink")
            try:
                await self._net(self.net.close)
            except Exception as exc:  # noqa: BLE001
                log.warning("removing the routing rule of %s failed: %s", self.device, exc)
            self.net = None
        if self._exec is not None:
            self._exec.shutdown(wait=True)
            self._exec = None
        self.loop = None

    def prepare_socket(self, sock: socket.socket) -> None:
        """The runtime's IKE/NAT-T sockets: marked so their packets skip the tunnel routes, with room
        for bursts of ESP-in-UDP (the kernel caps the size at net.core.[rw]mem_max), and with DF on
        every datagram (ESP is never fragmented; the runtime retries a too-large IKE message with
        fragmentation allowed)."""
        mark_socket(sock, self.fwmark)
        _big_buffers(sock)
        _df(sock)

    # ------------------------------------------------------------ SAs
    def install(self, ev: ChildSaInstalled) -> None:
        try:
            sender = self._sender(ev)
            pair = self.path.install(ev, _immediate(sender), sender.dest)
        except (SaConfigError, OSError) as exc:
            log.error("cannot install CHILD SA %s{%d}: %s", ev.child, ev.unique_id, exc)
            return
        pair.sender = sender
        sender.pairs.add(pair)
        if sender.pmtu:
            self._size_pair(pair, sender.pmtu)
        if self.routes is not None:
            nets = (ipaddress.ip_network(ev.remote_addr),) if ev.mode == "transport" else _networks(tuple(ev.remote_ts))
            local_nets = _networks(tuple(ev.local_ts))
            src = self._addrs.address_in(local_nets) if local_nets else None
            key = (id(nets), src)
            users = self._route_users.get(key)
            if users is None:
                users = self._route_users[key] = [nets, src, 0]
                self.routes.add(nets, src)
                if self._strict_rpf and not self._rpf_said:
                    self._peer_routed(ev.remote_addr, nets)
            users[2] += 1
            self._sa_routes[ev.spi_in] = users

    def _peer_routed(self, peer: str, nets: tuple) -> None:
        """Said once: a route into the device holds a peer's own address while reverse path
        filtering is strict (the kernel then drops that peer's IKE and ESP)."""
        addr = ipaddress.ip_address(peer)
        if addr.version != 4 or not any(addr in n for n in nets if n.version == 4):
            return
        self._rpf_said = True
        log.warning("%s, the IKE peer itself, is routed into %s (a host-to-host or transport-mode tunnel or trap) "
                    "while reverse path filtering is strict on %s: if that peer is reached through one of them, the "
                    "kernel drops what it sends (IKE, ESP); set net.ipv4.conf.all.rp_filter to 2 (loose: the kernel "
                    "takes the larger of all and the interface's)",
                    peer, self.device, ", ".join(self._strict_rpf))

    def virtual_ips(self, ev: VirtualIpsChanged) -> None:
        """Addresses a gateway assigned us go on the TUN device (host routes: the tunnel's routes
        into the device then take them as source), and come off with their IKE SA."""
        if self._writer is None or self.net is None or self.net.index is None:
            return
        for addr in ev.addresses:
            bits = 32 if ":" not in addr else 128
            self._writer.address(ev.assigned, addr, bits, self.net.index)
        log.info("virtual IP%s %s %s %s", "s" if len(ev.addresses) > 1 else "", " ".join(ev.addresses),
                 "on" if ev.assigned else "removed from", self.device)

    def move(self, ev: ChildSaMoved) -> None:
        """MOBIKE: the pair keeps its SAs (keys, sequence numbers, counters) and sends to the
        peer's new address from now on."""
        pair = self.path.pairs.get(ev.spi_in)
        if pair is None:
            return
        moved = dataclasses.replace(pair.ev, local_addr=ev.local_addr, remote_addr=ev.remote_addr,
                                    local_port=ev.local_port, remote_port=ev.remote_port, encap=ev.encap)
        try:
            sender = self._sender(moved)
        except OSError as exc:
            log.error("cannot move CHILD SA %s to %s: %s", ev.child, ev.remote_addr, exc)
            return
        old = pair.sender
        if old is not None:
            old.pairs.discard(pair)
            if not old.pairs and self._senders.get(old.key) is old:
                self._reduced.discard(old)
                del self._senders[old.key]
        pair.ev = moved
        self.path.natmap.set(ev.spi_in, ev.remote_addr, ev.remote_port, ev.encap)
        pair.send = _immediate(sender)
        pair.dest = sender.dest
        pair.sender = sender
        sender.pairs.add(pair)

    def _sender(self, ev: ChildSaInstalled):
        family = socket.AF_INET6 if ":" in ev.remote_addr else socket.AF_INET
        if ev.protocol == "ah" or ev.mode == "transport":
            # protect() returns the whole IP packet (AH covers the header; transport mode keeps it).
            raw = self._raw.get((family, socket.IPPROTO_RAW))
            if raw is None:
                raise OSError(errno.EPROTONOSUPPORT, "no header-including raw socket for AH or transport mode")
            return self._shared(("hdrincl", family, ev.remote_addr),
                                lambda: RawSender(self.io, raw.sendto, (ev.remote_addr, 0),
                                                  raw_batch(raw, ev.remote_addr)))
        if ev.encap:
            sock = self.runtime.sockets.socket_for((ev.local_addr, ev.local_port))
            if sock is None:
                raise OSError(errno.ENOENT, f"no NAT-T socket on {ev.local_addr} port {ev.local_port}")
            dest = (ev.remote_addr, ev.remote_port)
            key = (sock.fileno(), ev.local_addr, dest)
            sender = self._senders.get(key)
            if sender is not None:
                return sender  # the peer's SAs share it: nothing below is built again per CHILD SA
            # On a wildcard socket the SA's address is named in each send; one sender per source, so
            # a GSO batch never mixes two.
            control = self.runtime.sockets.source_control((ev.local_addr, ev.local_port))
            out = SourcedSocket(sock, control) if control else sock
            return self._shared(key, lambda: UdpSender(self.io, out, dest))
        raw = self._raw.get((family, socket.IPPROTO_ESP))
        if raw is None:
            raise OSError(errno.EPROTONOSUPPORT, "the SA is not UDP-encapsulated and there is no raw ESP socket "
                                                 "(set encap = true on the connection)")
        key = ("esp", ev.local_addr, ev.remote_addr)
        sender = self._senders.get(key)
        if sender is not None:
            return sender  # as above: the ancillary data and the send closure only for a new peer
        # Source address = the SA's local address, whatever the routing table would pick (a host with
        # several addresses of the family, IPv6's temporary ones among them).
        cmsg = mmsg.source_pktinfo(ev.local_addr, family)
        if cmsg:
            def send(data, dest, _s=raw, _c=cmsg):
                return _s.sendmsg((data,), _c, 0, dest)
            control = control_message(*cmsg[0])
        else:
            send = raw.sendto
            control = b""
        return self._shared(key,
                            lambda: RawSender(self.io, send, (ev.remote_addr, 0),
                                              raw_batch(raw, ev.remote_addr, control)))

    def _shared(self, key, make):
        sender = self._senders.get(key)
        if sender is None:
            sender = self._senders[key] = make()
            sender.key = key
            # What the kernel already knows of the path (a smaller local link, an earlier ICMP): one
            # question per new peer, so the first packets are sized right too.
            mtu = self.route_mtu(sender) or None
            if mtu is not None and self._limits(mtu):
                self._size_pairs(sender, mtu, self._clock())
        return sender

    def remove(self, ev: ChildSaDeleted) -> None:
        linger = ev.reason.startswith("rekeyed") and self.loop is not None
        pair = self.path.remove(ev.spi_in, linger=linger)
        if linger:
            self.loop.call_later(REKEYED_INBOUND_LINGER, self.path.forget, ev.spi_in)
        if pair is not None and pair.sender is not None:
            sender = pair.sender
            sender.pairs.discard(pair)
            if not sender.pairs:
                # Nobody sends to that peer any more: forget it (its queue was flushed with its batch).
                self._reduced.discard(sender)
                if self._senders.get(sender.key) is sender:
                    del self._senders[sender.key]
        users = self._sa_routes.pop(ev.spi_in, None)
        if users is not None and self.routes is not None:
            users[2] -= 1
            if not users[2]:
                nets, src = users[0], users[1]
                key = (id(nets), src)
                if self._route_users.get(key) is users:
                    del self._route_users[key]
                self.routes.remove(nets, src)

    def apply_policy(self, policy: Policy) -> None:
        """SPD from the new policy; bypass rules get ``throw`` routes (back to main), discard rules
        are routed into the TUN so their drops are counted."""
        self.policy = policy
        if self.routes is not None:
            self._apply_rule_routes()
        self._apply_traps(spd=True)  # the SPD too, with the traps' selectors

    def _apply_rule_routes(self) -> None:
        wanted: list[tuple[tuple, str]] = []
        for rule in self.policy.rules:
            if rule.action == "bypass" and not all(ts.is_catch_all for ts in rule.local_ts):
                continue  # a route cannot look at the source: leave such bypasses to the SPD
            nets = tuple(n for ts in rule.remote_ts if not ts.dynamic for n in ranges_to_networks(ts.start, ts.end))
            wanted.append((nets, "throw" if rule.action == "bypass" else "unicast"))
        old, self._rule_routes = self._rule_routes, wanted
        for nets, kind in wanted:
            self.routes.add(nets, None, kind)
        for nets, kind in old:
            self.routes.remove(nets, None, kind)

    # ------------------------------------------------------------ packets
    def flush_events(self) -> None:
        for ev in self.path.drain():
            self.runtime.datapath_event(ev)
        if self.path.acquires:
            self._acquire()

    def _acquire(self) -> None:
        now = self.runtime.now()
        reqid_for = getattr(getattr(self.runtime, "endpoint", None), "reqid_for_config", None)
        for key in self.path.take_acquires():
            if reqid_for is None or now - self._acquired.get(key, float("-inf")) < ACQUIRE_HOLD:
                continue
            self._acquired[key] = now
            log.info("traffic for trapped CHILD SA %s/%s: negotiating it", *key)
            self.runtime.datapath_event(AcquireRequested(reqid=reqid_for(*key)))

    def receive_esp(self, data: bytes, local, remote, now: float) -> None:
        """Inbound ESP-in-UDP from the runtime's NAT-T socket."""
        inners: list = []
        open_esp(self.path, [data], now, inners, False, remote)
        for inner in inners:
            self.io.deliver(inner)

    def receive_esp_batch(self, datagrams: list, local, remote) -> None:
        """The ESP-in-UDP datagrams of one read of the NAT-T socket (a UDP GRO batch), in order."""
        inners: list = []
        open_esp(self.path, datagrams, self.runtime.now(), inners, False, remote)
        self.io.deliver_all(inners)
        self.flush_events()

    def drain_events(self):
        return self.path.drain()

    def counters(self) -> tuple[list[SaCounters], dict[str, int]]:
        return self.path.counters()

    async def counters_async(self) -> tuple[list[SaCounters], dict[str, int]]:
        return await self.path.counters_async()

    def rule_counters(self) -> dict[str, int]:
        return self.path.rule_counters()


@functools.lru_cache(maxsize=1024)
def _networks(selectors: tuple) -> tuple:
    """The CIDR blocks a tuple of selectors covers (``dynamic`` ones left out); cached: the CHILD SAs
    of a connection mostly name the same selectors."""
    return tuple(n for ts in selectors if not ts.dynamic for n in ranges_to_networks(ts.start, ts.end))


def _immediate(sender):
    """``send(data, dest)`` for SaPath's slow path: straight out, without batching."""
    if isinstance(sender, UdpSender):
        return lambda data, dest, _s=sender.sock: _s.sendto(data, dest)
    return lambda data, dest, _s=sender: _s.send(data, dest)


def _df(sock: socket.socket) -> None:
    try:
        pmtu.set_df(sock, True)
    except OSError as exc:
        log.debug("DF on socket: %s", exc)


def _big_buffers(sock: socket.socket) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError as exc:
            log.debug("socket buffer: %s", exc)


__all__ = ["Pair", "TunError", "UserspaceDatapath"]
