"""The TUN device of the userspace datapath and the routing that feeds it.

`open_tun` opens ``/dev/net/tun`` (IFF_TUN | IFF_NO_PI, with IFF_VNET_HDR
and TCP/UDP segmentation offloads when asked: see
`engine.datapath.offload`); `TunNetwork` uses pyroute2 to bring the device
up, add its addresses and the policy rule; `RouteTable` routes the remote
traffic selectors of installed CHILD SAs into it (through
`engine.datapath.rtnl`, without waiting), the way charon's kernel-libipsec
does with ``ipsec0``:

    <priority>: not from all fwmark <mark> lookup <table>
    table <table>: 198.51.100.129 dev ipsecc0 proto static src 198.51.100.1

Numbers (chosen not to clash with charon, which uses table 220 and rule
priority 220): table 4533 and rule priority 4533, after charon's rule and
before ``main`` (32766), so our routes win over a default route. Our own
IKE/NAT-T and raw ESP sockets carry fwmark 0x4533 (SO_MARK): the rule skips
them, so the outer packets of a tunnel whose remote selector covers the
peer's address never loop back into the TUN.

The device is not persistent: the kernel removes it (and the routes through
it) when the process holding the fd dies. The rule and our table are left
behind by a crash: `TunNetwork.remove_stale` deletes them (found by table
number) on the next start, and a leftover device of the same name too.

Fail closed: beside each route into the device, a ``blackhole`` route to the
same network with metric BACKSTOP_METRIC (never used while the device's
route, metric 0, is there). A crash takes the device's routes with it; the
backstops stay, so the traffic the tunnels carried is dropped instead of
leaving in clear through ``main``, until the next start removes them (or
``ip route flush table 4533; ip rule del priority 4533``). A clean stop,
and an SA deleted on purpose, remove them with their routes.
`TunNetwork`'s calls block briefly (pyroute2) and run at start and stop
only; per SA, `RouteTable` counts users of each route (and of its
backstop) and queues a netlink request only for the first and the last.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import ipaddress
import logging
import os
import socket
import struct
from collections import Counter

log = logging.getLogger("engine.datapath.userspace")

DEFAULT_DEVICE = "ipsecc0"
ROUTE_TABLE = 4533
RULE_PRIORITY = 4533
FWMARK = 0x4533
"""Mark of the engine's own sockets; packets with it skip our routing table."""
BACKSTOP_METRIC = 4533
"""Metric of the blackhole route kept beside each route into the device (see the module docstring)."""
DEFAULT_MTU = 1400
"""Like charon's ipsec0: room for outer IPv4 + UDP + ESP (IV, padding, ICV) under a 1500 link MTU."""

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
VNET_HDR_SIZE = 10
"""struct virtio_net_hdr (no num_buffers)."""
SO_MARK = getattr(socket, "SO_MARK", 36)
FIB_RULE_INVERT = 0x2


class TunError(OSError):
    """The TUN device or its routing could not be set up; the message says what and why."""


def open_tun(name: str = DEFAULT_DEVICE, *, vnet_hdr: bool = False) -> tuple[int, str, int]:
    """Open a TUN device; returns (non-blocking fd, device name, offload flags the device took).

    With ``vnet_hdr`` every read and write starts with a 10-byte
    virtio_net_hdr and the device takes checksum offload and TSO (and UDP
    segmentation offload where the kernel has it, Linux 6.2+), so the kernel
    hands over TCP/UDP super-packets of up to 64 KiB. A kernel without
    IFF_VNET_HDR gets a plain device (offload flags 0).
    """
    if len(name.encode()) > 15:
        raise TunError(errno.EINVAL, f"TUN device name {name!r} is longer than 15 bytes")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TunError(exc.errno, f"cannot open /dev/net/tun: {exc.strerror} (the userspace datapath needs "
                                  "root or CAP_NET_ADMIN and the tun driver)") from None
    offloads = 0
    try:
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        except OSError as exc:
            if not vnet_hdr or exc.errno != errno.EINVAL:
                raise
            vnet_hdr = False  # an old kernel: packet by packet
            ifr = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        actual = ifr[:16].rstrip(b"\0").decode()
        if vnet_hdr:
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_SIZE))
            for offloads in (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
                             TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6):
                try:
                    fcntl.ioctl(fd, TUNSETOFFLOAD, offloads)
                    break
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
    except OSError as exc:
        os.close(fd)
        raise TunError(exc.errno, f"cannot create TUN device {name!r}: {exc.strerror}") from None
    return fd, actual, offloads


def mark_socket(sock: socket.socket, mark: int = FWMARK) -> None:
    """Tag one of the engine's sockets so its packets bypass the tunnel routes."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    except OSError as exc:  # without CAP_NET_ADMIN: the userspace datapath cannot run anyway
        log.warning("cannot mark socket for the tunnel bypass: %s", exc)


@functools.lru_cache(maxsize=4096)
def ranges_to_networks(start, end) -> tuple:
    """The CIDR blocks exactly covering an address range (selectors are ranges, routes are prefixes);
    cached: many CHILD SAs name the same selectors."""
    return tuple(ipaddress.summarize_address_range(start, end))


RP_FILTER_ROOT = "/proc/sys/net/ipv4/conf"


def strict_rp_filter(device: str, root: str = RP_FILTER_ROOT) -> list[str]:
    """Interfaces (not lo, not ``device``) whose IPv4 reverse path filter is strict: the kernel
    takes max(all, interface), and 1 is strict. There, a packet from an address our table routes
    into the device is dropped, whatever our sockets' fwmark (the check looks up the route back
    without it): the peer's own IKE and ESP once its address is routed in."""
    def value(name: str) -> int:
        try:
            with open(os.path.join(root, name, "rp_filter")) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    every = value("all")
    return [n for n in names if n not in ("all", "default", "lo", device) and max(every, value(n)) == 1]


class TunNetwork:
    """Link state, addresses and the policy rule of one TUN device (pyroute2, blocking: start/stop only)."""

    def __init__(self, device: str, *, table: int = ROUTE_TABLE, priority: int = RULE_PRIORITY,
                 fwmark: int = FWMARK) -> None:
        from pyroute2 import IPRoute  # imported here: the lab datapath never needs it

        self.device = device
        self.table = table
        self.priority = priority
        self.fwmark = fwmark
        self.ipr = IPRoute()
        self.index: int | None = None
        self._rules: list[int] = []

    # ------------------------------------------------------------ lifecycle
    def remove_stale(self) -> int:
        """Remove what a crashed run left: our rules, our table's routes, a device of our name.

        Returns how many objects were removed.
        """
        n = 0
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                rules = self.ipr.get_rules(family=family)
            except Exception as exc:  # noqa: BLE001  (IPv6 disabled in the namespace)
                log.debug("no rules of family %d: %s", family, exc)
                continue
            for r in rules:
                if r.get_attr("FRA_TABLE") == self.table:
                    try:
                        self.ipr.rule("del", family=family, table=self.table,
                                      priority=r.get_attr("FRA_PRIORITY"),
                                      fwmark=r.get_attr("FRA_FWMARK"), fwmask=r.get_attr("FRA_FWMASK"),
                                      flags=r["flags"])
                        n += 1
                    except Exception as exc:  # noqa: BLE001
                        log.warning("cannot remove stale rule to table %d: %s", self.table, exc)
            try:
                routes = self.ipr.get_routes(family=family, table=self.table)
            except Exception as exc:  # noqa: BLE001
                log.debug("no routes of family %d: %s", family, exc)
                continue
            for rt in routes:
                if rt.get_attr("RTA_TABLE") != self.table:
                    continue
                try:
                    self.ipr.route("del", family=family, table=self.table, dst=rt.get_attr("RTA_DST"),
                                   dst_len=rt["dst_len"], type=rt["type"])
                    n += 1
                except Exception as exc:  # noqa: BLE001
                    log.debug("stale route: %s", exc)
        for idx in self.ipr.link_lookup(ifname=self.device):
            try:
                self.ipr.link("del", index=idx)
                n += 1
            except Exception as exc:  # noqa: BLE001
                raise TunError(errno.EBUSY, f"a device named {self.device} exists and cannot be removed "
                                            f"({exc}): is another ipsec-console running here?") from None
        if n:
            log.info("removed %d stale routing objects of an earlier run (table %d, device %s)",
                     n, self.table, self.device)
        return n

    def setup(self, mtu: int, addresses: tuple[str, ...] = (), *, gso_max_size: int | None = None) -> None:
        """Bring the device up with its MTU and addresses, and add the policy rule(s).

        ``gso_max_size`` caps the TCP super-packets the kernel builds (TSO on the TUN).
        """
        found = self.ipr.link_lookup(ifname=self.device)
        if not found:
            raise TunError(errno.ENODEV, f"TUN device {self.device} vanished")
        self.index = found[0]
        if gso_max_size is not None:
            try:
                self.ipr.link("set", index=self.index, gso_max_size=gso_max_size)
            except Exception as exc:  # noqa: BLE001
                raise TunError(errno.EINVAL, f"cannot set gso_max_size on {self.device}: {exc}") from None
        self.ipr.link("set", index=self.index, mtu=mtu, state="up")
        for a in addresses:
            iface = ipaddress.ip_interface(a)
            self.ipr.addr("add", index=self.index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                self.ipr.rule("add", family=family, table=self.table, priority=self.priority,
                              fwmark=self.fwmark, fwmask=0xFFFFFFFF, flags=FIB_RULE_INVERT)
                self._rules.append(family)
            except Exception as exc:  # noqa: BLE001
                if family == socket.AF_INET:
                    raise TunError(errno.EIO, f"cannot add the routing rule to table {self.table}: {exc}") from None
                log.debug("no IPv6 rule (IPv6 disabled?): %s", exc)

    def close(self) -> None:
        """Remove our rule(s); the device (and the routes through it) goes when its fd is closed."""
        for family in self._rules:
            try:
                self.ipr.rule("del", family=family, table=self.table, priority=self.priority,
                              fwmark=self.fwmark, fwmask=0xFFFFFFFF, flags=FIB_RULE_INVERT)
            except Exception as exc:  # noqa: BLE001
                log.warning("cannot remove routing rule: %s", exc)
        self._rules.clear()
        self.ipr.close()


class RouteTable:
    """Routes into the TUN device (and ``throw`` routes of bypass rules), counted per user.

    A route is requested when its first user comes and removed when its last
    one goes; in between, more CHILD SAs with the same remote selector cost a
    counter increment. Requests go out through an `engine.datapath.rtnl.RouteWriter`
    (batched, no waiting).
    """

    def __init__(self, writer, oif: int) -> None:
        self.writer = writer
        self.oif = oif
        self._routes: Counter = Counter()
        """(network, prefsrc or None, kind) -> how many users; a route goes when its last user does."""
        self._sources: dict[object, list[str | None]] = {}
        """Network -> the prefsrcs of its routes into the device, in order of arrival. The kernel
        keeps one route per network (a NEWROUTE replaces it, a DELROUTE takes it whatever its
        source): a trap's route and its CHILD SA's share it, and the last to go takes it out, not
        the first."""
        self._held: Counter = Counter()
        """(network, prefsrc) -> its users that are not traps. The kernel's one route is the newest
        source such a user holds, a trap's only when none does (charon's kernel_netlink keeps a
        virtual IP's route over a trap's; our SpdTable an SA's policy over a trap's): a trap
        routed while a CHILD SA of the network is up must not take the SA's source away."""

    def add(self, networks, src: str | None, kind: str = "unicast", *, trap: bool = False) -> None:
        routes = self._routes
        for net in networks:
            key = (net, src, kind)
            before = self._chosen(net)
            n = routes[key] = routes[key] + 1
            if kind == "unicast":
                if n == 1:
                    self._sources.setdefault(net, []).append(src)
                if not trap:
                    self._held[(net, src)] += 1
            chosen = self._chosen(net)
            if chosen != before:
                self._send(True, (net, chosen[1], chosen[0]))
            if kind == "unicast":
                back = (net, None, "blackhole")
                n = routes[back] = routes[back] + 1
                if n == 1:
                    self._send(True, back)

    def remove(self, networks, src: str | None, kind: str = "unicast", *, trap: bool = False) -> None:
        """Undo one :meth:`add` (the same ``src``, ``kind`` and ``trap``)."""
        routes = self._routes
        for net in networks:
            key = (net, src, kind)
            n = routes.get(key, 0)
            if n <= 0:
                continue  # never added (or gone): the backstop it would release is another's
            before = self._chosen(net)
            if n == 1:
                del routes[key]
            else:
                routes[key] = n - 1
            if kind == "unicast":
                if n == 1:
                    sources = self._sources[net]
                    sources.remove(src)
                    if not sources:
                        del self._sources[net]
                held = (net, src)
                if not trap and self._held.get(held, 0) > 0:
                    self._held[held] -= 1
                    if not self._held[held]:
                        del self._held[held]
            chosen = self._chosen(net)
            if chosen is _NO_ROUTE:
                self._send(False, (net, before[1], before[0]))
            elif chosen != before:
                self._send(True, (net, chosen[1], chosen[0]))  # the kernel's one route may have been this one
            if kind == "unicast":
                back = (net, None, "blackhole")
                n = routes.get(back, 0)
                if n == 1:
                    del routes[back]
                    self._send(False, back)
                elif n > 1:
                    routes[back] = n - 1

    def _chosen(self, net):
        """The kernel's one route for ``net``, (kind, source) (_NO_ROUTE: none): into the device
        from the newest source a non-trap user holds, else from the newest; a bypass rule's
        ``throw`` only when nothing routes the network into the device (the SPD decides there: a
        packet it bypasses is dropped, never one it protects sent in clear). The kernel keys a
        route by prefix and metric, not type: a throw route would replace a tunnel's (and an
        IPv6 DELROUTE of it takes whatever route the prefix has)."""
        sources = self._sources.get(net)
        if sources:
            held = self._held
            for src in reversed(sources):
                if held.get((net, src)):
                    return "unicast", src
            return "unicast", sources[-1]
        if self._routes.get((net, None, "throw")):
            return "throw", None
        return _NO_ROUTE

    def _send(self, add: bool, key) -> None:
        net, src, kind = key
        self.writer.route(add, net, oif=self.oif, src=src, kind=kind,
                          metric=BACKSTOP_METRIC if kind == "blackhole" else None)

    def clear(self) -> None:
        """Remove every route, backstops included (a clean stop: throw routes outlive the device)."""
        for net in dict.fromkeys(k[0] for k in self._routes if k[2] != "blackhole"):
            kind_src = self._chosen(net)
            if kind_src is not _NO_ROUTE:
                self._send(False, (net, kind_src[1], kind_src[0]))  # one DELROUTE per network
        for key in self._routes:
            if key[2] == "blackhole":
                self._send(False, key)
        self._routes.clear()
        self._sources.clear()
        self._held.clear()

    def routes(self) -> list[tuple[str, str | None, str]]:
        """What is installed: (network, src, kind), backstops left out."""
        return [(str(n), s, k) for (n, s, k) in self._routes if k != "blackhole"]


_NO_ROUTE = object()
"""RouteTable._chosen: no route into the device for the network."""
