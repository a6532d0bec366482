"""Virtual IPs with the kernel datapath (a road-warrior client, RFC 7296 §3.15).

The address a gateway assigned goes on the loopback device while its IKE SA lives. Each CHILD SA
whose local selector is that address gets a route for its remote networks with the address as
source, in a table of ours consulted before main, so applications use the tunnel without
binding to the address (charon does the same in its table 220):

    <VIP_RULE_PRIORITY>: from all lookup <VIP_TABLE>
    table <VIP_TABLE>: 198.51.100.129 via <the peer's next hop> dev <its device> proto static src <VIP>

The numbers clash neither with charon (table and priority 220) nor with the userspace datapath
(4533). A network holding the gateway's own address is left out (its IKE and ESP must not take
the tunnel). pyroute2 calls are blocking but rare: a client has a few CHILD SAs. What a crash
left behind (the rule, the table's routes) is removed at the next start; addresses we did not
add are never removed.

Its methods run on a worker thread of the kernel datapath (pyroute2's blocking API cannot run
on the event loop's thread); they log nothing themselves but return notes (level, text) for the
loop's thread to log, as the runtime turns engine log records into events.
"""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute

from engine.datapath.tun import ranges_to_networks
from engine.events import ChildSaDeleted, ChildSaInstalled

Note = tuple[str, str]
"""(log level name, text)."""

VIP_TABLE = 4534
VIP_RULE_PRIORITY = 4534
RTPROT_STATIC = 4


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _bits(addr: str) -> int:
    return 128 if ":" in addr else 32


def is_local(addr: str) -> bool:
    """The host has ``addr`` already (a socket can bind to it)."""
    try:
        with socket.socket(_family(addr), socket.SOCK_DGRAM) as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


class VirtualIps:
    """Our virtual IPs on ``lo`` and the source routes of the CHILD SAs that use them."""

    def __init__(self, ipr=None) -> None:
        self.ipr = ipr if ipr is not None else IPRoute()
        self.addresses: set[str] = set()
        """Addresses we put on lo (and only those come off again)."""
        self.routes: dict[tuple[str, str], set[int]] = {}
        """(network, source address) -> inbound SPIs of the CHILD SAs that need the route."""
        self._rules: set[int] = set()
        self._notes: list[Note] = []

    def _note(self, level: str, text: str) -> None:
        self._notes.append((level, text))

    def _done(self) -> list[Note]:
        notes, self._notes = self._notes, []
        return notes

    # ------------------------------------------------------------ lifecycle
    def remove_stale(self) -> list[Note]:
        """Our rule and our table's routes left by a crashed run."""
        n = 0
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                for r in self.ipr.get_rules(family=family):
                    if r.get_attr("FRA_TABLE") == VIP_TABLE:
                        self.ipr.rule("del", family=family, table=VIP_TABLE, priority=r.get_attr("FRA_PRIORITY"))
                        n += 1
                for rt in self.ipr.get_routes(family=family, table=VIP_TABLE):
                    if rt.get_attr("RTA_TABLE") == VIP_TABLE:
                        self.ipr.route("del", family=family, table=VIP_TABLE, dst=rt.get_attr("RTA_DST"),
                                       dst_len=rt["dst_len"])
                        n += 1
            except Exception as exc:  # noqa: BLE001  (IPv6 off in a namespace, a rule gone meanwhile)
                self._note("debug", f"stale virtual-IP routing objects of family {family}: {exc}")
        if n:
            self._note("info", f"removed {n} virtual-IP routing objects left by an earlier run")
        return self._done()

    def close(self) -> list[Note]:
        for (net, src) in list(self.routes):
            self._route("del", net, src, None)
        self.routes.clear()
        for family in list(self._rules):
            self._rule("del", family)
        for addr in sorted(self.addresses):
            self._address("del", addr)
        self.addresses.clear()
        self.ipr.close()
        return self._done()

    # ------------------------------------------------------------ events
    def assigned(self, addresses, assigned: bool) -> list[Note]:
        for addr in addresses:
            if assigned and addr not in self.addresses and not is_local(addr):
                if self._address("add", addr):
                    self.addresses.add(addr)
            elif not assigned and addr in self.addresses:
                self.addresses.discard(addr)
                self._address("del", addr)
        return self._done()

    def child_installed(self, ev: ChildSaInstalled) -> list[Note]:
        """Source routes for a tunnel CHILD SA whose local selector is one of our virtual IPs."""
        sources = [ts.start.compressed for ts in ev.local_ts
                   if not ts.dynamic and ts.start == ts.end and ts.start.compressed in self.addresses]
        if ev.mode != "tunnel" or not sources:
            return self._done()
        peer = ipaddress.ip_address(ev.remote_addr)
        via = self._next_hop(ev.remote_addr)
        if via is None:
            return self._done()
        for src in sources:
            for ts in ev.remote_ts:
                if ts.dynamic or ts.start.version != ipaddress.ip_address(src).version:
                    continue
                for net in ranges_to_networks(ts.start, ts.end):
                    if peer in net:
                        continue  # the gateway's own IKE and ESP stay outside the tunnel
                    key = (str(net), src)
                    spis = self.routes.get(key)
                    if spis is None:
                        if not self._route("replace", key[0], src, via):
                            continue
                        spis = self.routes[key] = set()
                    spis.add(ev.spi_in)
        return self._done()

    def child_removed(self, ev: ChildSaDeleted) -> list[Note]:
        for key in [k for k, spis in self.routes.items() if ev.spi_in in spis]:
            spis = self.routes[key]
            spis.discard(ev.spi_in)
            if not spis:
                del self.routes[key]
                self._route("del", key[0], key[1], None)
        return self._done()

    # ------------------------------------------------------------ netlink
    def _next_hop(self, peer: str) -> tuple[int, str | None] | None:
        try:
            (r, *_) = self.ipr.route("get", dst=peer)
        except Exception as exc:  # noqa: BLE001
            self._note("warning", f"no route to the gateway {peer} for the virtual IP's routes: {exc}")
            return None
        return r.get_attr("RTA_OIF"), r.get_attr("RTA_GATEWAY")

    def _address(self, op: str, addr: str) -> bool:
        try:
            lo = socket.if_nametoindex("lo")
            self.ipr.addr(op, index=lo, address=addr, prefixlen=_bits(addr), family=_family(addr))
            return True
        except Exception as exc:  # noqa: BLE001
            self._note("warning", f"cannot {'add' if op == 'add' else 'remove'} virtual IP {addr} on lo: {exc}")
            return False

    def _rule(self, op: str, family: int) -> bool:
        try:
            self.ipr.rule(op, family=family, table=VIP_TABLE, priority=VIP_RULE_PRIORITY)
        except Exception as exc:  # noqa: BLE001
            self._note("warning", f"cannot {op} the rule to table {VIP_TABLE}: {exc}")
            return False
        if op == "add":
            self._rules.add(family)
        else:
            self._rules.discard(family)
        return True

    def _route(self, op: str, net: str, src: str, via: tuple[int, str | None] | None) -> bool:
        network = ipaddress.ip_network(net)
        family = _family(src)
        if op != "del" and family not in self._rules and not self._rule("add", family):
            return False
        args = dict(family=family, table=VIP_TABLE, dst=str(network.network_address), dst_len=network.prefixlen)
        if op != "del":
            oif, gateway = via
            args.update(oif=oif, prefsrc=src, proto=RTPROT_STATIC)
            if gateway:
                args["gateway"] = gateway
        try:
            self.ipr.route(op, **args)
        except Exception as exc:  # noqa: BLE001
            if op != "del":
                self._note("warning", f"cannot route {net} from virtual IP {src}: {exc}")
            return False
        self._note("info", f"{'routed' if op != 'del' else 'unrouted'} {net} src {src} (table {VIP_TABLE})")
        return True
