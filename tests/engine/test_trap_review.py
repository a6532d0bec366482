"""Second review of the shared trap code (engine.datapath.traps, userspace_traps): what a trap
leaves in the kernel's routing table and SPD once SAs come and go, and what an ACQUIRE of a trap
that is no longer ours does."""

from __future__ import annotations

import ipaddress
import os

import engine.datapath.userspace as userspace
from engine.datapath.tun import RouteTable
from engine.events import ChildKeys, ChildSaDeleted, ChildSaInstalled
from engine.policy.parse import parse_policy
from engine.policy.ts import parse_ts
from engine.secret import Secret

from tests.engine.test_userspace_trap import FakeRuntime

HOSTS = """
[engine]
datapath = "userspace"
listen = ["192.0.2.2"]

[connections.gw]
local_addrs = ["192.0.2.2"]
remote_addrs = ["192.0.2.1"]
local = { auth = "psk", id = "gw.example" }
remote = { auth = "psk" }

[connections.gw.children.host]
start_action = "trap"
"""
"""A host-to-host tunnel (selectors ``dynamic`` on both sides, the default): its trap routes the
peer, and so does each of its CHILD SAs (with our address as the route's source)."""


class KernelTable:
    """What the kernel's routing table keeps of RouteTable's requests: one route per network and
    type (NEWROUTE with NLM_F_REPLACE replaces it; DELROUTE without a source takes it)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], str | None] = {}

    def route(self, add, net, *, oif=None, src=None, kind="unicast", metric=None) -> None:
        if add:
            self.routes[(str(net), kind)] = src
        else:
            self.routes.pop((str(net), kind), None)


class Ours:
    """The host's addresses (AddressBook.address_in): 192.0.2.2."""

    def address_in(self, networks):
        ours = ipaddress.ip_address("192.0.2.2")
        return "192.0.2.2" if any(ours in n for n in networks) else None


def _sa(n: int, child: str = "host", mode: str = "tunnel") -> ChildSaInstalled:
    keys = ChildKeys(Secret(os.urandom(36)), Secret(b""), Secret(os.urandom(36)), Secret(b""))
    return ChildSaInstalled(
        ike_sa=n, connection="gw", child=child, unique_id=n, reqid=1, protocol="esp", mode=mode,
        spi_in=0x1000 + n, spi_out=0x9000 + n, local_addr="192.0.2.2", remote_addr="192.0.2.1",
        local_ts=(parse_ts("192.0.2.2/32"),), remote_ts=(parse_ts("192.0.2.1/32"),), encr_id=20,
        encr_key_length=256, integ_id=None, esn=False, keys=keys, encap=True, local_port=4500,
        remote_port=4500, initiator=True)


def _gone(n: int, child: str = "host") -> ChildSaDeleted:
    return ChildSaDeleted(ike_sa=n, connection="gw", child=child, unique_id=n, reqid=1, protocol="esp",
                          spi_in=0x1000 + n, spi_out=0x9000 + n, reason="deleted by peer")


class _Sender:
    dest = ("192.0.2.1", 4500)
    pmtu = 0
    key = "test"

    def __init__(self) -> None:
        self.pairs: set = set()


def _datapath(monkeypatch, text: str = HOSTS):
    monkeypatch.setattr(userspace, "_immediate", lambda sender: None)
    policy = parse_policy(text, load_secrets=False)
    dp = userspace.UserspaceDatapath(policy)
    dp.runtime = FakeRuntime(policy)
    sender = _Sender()
    dp._sender = lambda ev: sender
    kernel = KernelTable()
    dp.routes = RouteTable(kernel, 5)
    dp._addrs = Ours()
    dp.apply_policy(policy)
    return dp, kernel


UNNAMED = HOSTS.replace('local_addrs = ["192.0.2.2"]\n', "").replace('listen = ["192.0.2.2"]\n', "")
"""No local address configured: the trap's route has no source, its CHILD SA's has ours."""


def test_a_trap_keeps_its_route_when_the_sa_of_the_same_peer_goes(monkeypatch):
    # start_action = "trap": the trap routes the peer; its CHILD SA routes it too (our address as
    # source). The kernel holds one route per network: when the SA goes, the trap's must still be
    # there, or the peer's traffic hits the blackhole backstop and never acquires again.
    dp, kernel = _datapath(monkeypatch, UNNAMED)
    assert kernel.routes.get(("192.0.2.1/32", "unicast"), "none") != "none"
    dp.install(_sa(1))
    dp.remove(_gone(1))
    assert ("192.0.2.1/32", "unicast") in kernel.routes, kernel.routes


def test_the_sa_keeps_its_route_when_the_trap_goes(monkeypatch):
    dp, kernel = _datapath(monkeypatch, UNNAMED)
    dp.install(_sa(1))
    dp.apply_policy(parse_policy(UNNAMED.replace('start_action = "trap"', ""), load_secrets=False))
    assert kernel.routes.get(("192.0.2.1/32", "unicast")) == "192.0.2.2", kernel.routes
    dp.remove(_gone(1))
    assert ("192.0.2.1/32", "unicast") not in kernel.routes and kernel.routes == {}


def test_route_table_keeps_a_network_routed_while_any_source_uses_it():
    kernel = KernelTable()
    table = RouteTable(kernel, 5)
    net = (ipaddress.ip_network("192.0.2.1/32"),)
    table.add(net, "192.0.2.2")
    table.add(net, None)  # replaces it in the kernel
    table.remove(net, None)
    assert kernel.routes == {("192.0.2.1/32", "unicast"): "192.0.2.2", ("192.0.2.1/32", "blackhole"): None}
    table.add(net, None)
    sent = []
    kernel.route = lambda add, n, **kw: sent.append((add, str(n), kw["kind"]))
    table.clear()  # one DELROUTE per network and type: a second would find nothing to delete
    assert sorted(sent) == [(False, "192.0.2.1/32", "blackhole"), (False, "192.0.2.1/32", "unicast")]
    assert table.routes() == [] and table._sources == {}


TRANSPORT = HOSTS.replace('start_action = "trap"', 'start_action = "trap"\nmode = "transport"')
ROAD = HOSTS.replace('start_action = "trap"', 'start_action = "trap"\nremote_ts = ["198.51.100.0/25"]')
"""Our end ``dynamic`` (the default), the remote one a subnet: a road warrior without a virtual IP."""


def test_a_trap_whose_end_is_dynamic_routes_with_our_address_as_source(monkeypatch):
    # The trap's SPD entry is from our IKE address (local_addrs): a packet the kernel gave another
    # source (a host with several addresses) would be dropped without an acquire. The CHILD SA's
    # route names our address too (UserspaceDatapath.install).
    for text, net in ((HOSTS, "192.0.2.1/32"), (TRANSPORT, "192.0.2.1/32"), (ROAD, "198.51.100.0/25")):
        dp, kernel = _datapath(monkeypatch, text)
        assert kernel.routes.get((net, "unicast")) == "192.0.2.2", (text, kernel.routes)


# ------------------------------------------------------------ kernel: a trap that did not go away
def test_kernel_acquire_of_a_trap_that_is_no_longer_ours_initiates_nothing():
    # The admin terminates a connection whose close_action trap the kernel will not remove: its
    # policy stays in the kernel and ACQUIREs on the next packet. charon's trap_manager acquire
    # looks the reqid up among its traps ("trap not found, unable to acquire reqid"): the tunnel
    # the admin took down must not come back.
    from engine.datapath.kernel import KernelDatapathError
    from engine.events import AcquireRequested
    from tests.engine.test_trap_notes import CLOSE, kernel

    dp = kernel(CLOSE)
    dp.trap("rw", "lan")
    (reqid,) = dp.kernel.traps
    queued = [AcquireRequested(reqid=reqid)]
    dp.kernel.events_fileno = lambda: -1
    dp.kernel.read_events = lambda timeout: list(queued)
    dp._on_kernel_events()
    assert dp.runtime.events == queued  # a trap of ours: the engine negotiates

    def refuse(reqid):
        dp.kernel.traps.pop(reqid)
        raise KernelDatapathError("Operation not permitted")

    dp.kernel.remove_trap = refuse
    assert dp.untrap("rw") == ["lan"]
    dp.runtime.events.clear()
    dp._on_kernel_events()
    assert dp.runtime.events == []


def test_kernel_trap_without_a_configured_local_address_uses_the_routes_source(caplog):
    # charon's trap_manager install: no local address configured -> get_source_addr(peer), the
    # address the IKE SA will use too (IkeEndpoint.local_address asks the same question). Only
    # remote_addrs set, [engine] listen left out: the common host-to-host or site-to-site file.
    import logging

    from tests.engine.test_trap_notes import BASE, kernel, said, trapped
    from tests.engine.test_userspace_trap import FakeRuntime

    class Sockets:
        def __init__(self, answer) -> None:
            self.asked: list = []
            self.answer = answer

        def source_for(self, remote):
            self.asked.append(remote)
            return self.answer

    class Routed(FakeRuntime):
        answer = "127.0.0.1"

        def __init__(self, policy) -> None:
            super().__init__(policy)
            self.sockets = Sockets(self.answer)

    class Unrouted(Routed):
        answer = None

    caplog.set_level(logging.INFO, logger="engine")
    text = BASE.replace('local_addrs = ["127.0.0.1"]\n', "").replace('listen = ["127.0.0.1"]\n', "")
    dp = kernel(text, Routed)
    assert trapped(dp) == {("rw", "lan")} and said(caplog) == []
    (trap,) = dp.kernel.traps.values()
    assert trap == ("lan", "127.0.0.1", "127.0.0.2") and dp.runtime.sockets.asked == ["127.0.0.2"]
    # each apply derives the traps again: a route lost for a while must not take the trap with it
    dp.runtime.sockets.answer = None
    dp.apply_policy(dp.policy)
    assert list(dp.kernel.traps.values()) == [trap] and dp.runtime.sockets.asked == ["127.0.0.2"] * 2
    assert said(caplog) == []
    # but the host's address changed (DHCP, a new uplink): the trap's policies are from the old
    # one, and the traffic now sent from the new one matches none of them and leaves in clear.
    # The next apply moves the trap (charon's trap_manager install asks get_source_addr each
    # time; the userspace datapath's traps ask the route at each apply too).
    dp.runtime.sockets.answer = "127.0.0.3"
    fake, replaced = dp.kernel, []
    first = fake.install_trap

    def install_trap(reqid, child, local, remote, *, replace=False):
        replaced.append(replace)
        first(reqid, child, local, remote)

    fake.install_trap = install_trap
    dp.apply_policy(dp.policy)
    assert replaced == [True]  # in place: the new policies in before the old go
    assert list(dp.kernel.traps.values()) == [("lan", "127.0.0.3", "127.0.0.2")]
    assert said(caplog) == []
    # no route to the peer either: said, as before
    assert trapped(kernel(text, Unrouted)) == set()
    assert said(caplog) == ["trap rw/lan: needs local_addrs or [engine] listen with an IPv4 address (the host "
                            "has no route to 127.0.0.2 to take one from)"]


# ------------------------------------------------------------ strict reverse path filtering
# Our sockets' fwmark keeps IKE and ESP *to* the peer out of the device; nothing keeps the
# kernel's reverse path check of what comes *from* the peer out of it: with rp_filter = 1 on the
# interface, a route of the peer's own address into the device (a host-to-host or transport-mode
# trap or SA) drops the peer's IKE and ESP (checked in a namespace pair: a UDP datagram from the
# peer is dropped with rp_filter 1, received with 0 or 2). charon's kernel-libipsec refuses such
# routes by default instead (allow_peer_ts = no, "conflicts with IKE traffic").


def _sysctl(tmp_path, values: dict[str, int]):
    for iface, value in values.items():
        (tmp_path / iface).mkdir()
        (tmp_path / iface / "rp_filter").write_text(f"{value}\n")
    return str(tmp_path)


def test_strict_rp_filter_names_the_interfaces_where_it_is_strict(tmp_path):
    from engine.datapath.tun import strict_rp_filter

    root = _sysctl(tmp_path, {"all": 0, "default": 1, "lo": 1, "eth0": 1, "eth1": 2, "ipsecc0": 1})
    assert strict_rp_filter("ipsecc0", root) == ["eth0"]  # the kernel uses max(all, interface)


def test_strict_rp_filter_all_strict_unless_loose_on_the_interface(tmp_path):
    from engine.datapath.tun import strict_rp_filter

    root = _sysctl(tmp_path, {"all": 1, "eth0": 0, "eth1": 2})
    assert strict_rp_filter("ipsecc0", root) == ["eth0"]
    assert strict_rp_filter("ipsecc0", str(tmp_path / "nowhere")) == []


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "rp_filter" in r.getMessage()]


def test_routing_the_peer_itself_with_strict_rp_filter_is_said_once(monkeypatch, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="engine")
    dp, _ = _datapath(monkeypatch, ROAD)  # a subnet that does not hold the peer: nothing to say
    dp._strict_rpf = ["eth0"]
    dp.apply_policy(dp.policy)
    assert _warnings(caplog) == []
    dp.apply_policy(parse_policy(HOSTS, load_secrets=False))  # the trap routes the peer itself
    dp.apply_policy(parse_policy(HOSTS, load_secrets=False))
    dp.install(_sa(1))
    (said,) = _warnings(caplog)
    assert "192.0.2.1" in said and "eth0" in said and "rp_filter" in said and "2" in said


def test_a_transport_sa_routing_its_peer_with_strict_rp_filter_is_said(monkeypatch, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="engine")
    dp, _ = _datapath(monkeypatch, ROAD.replace('start_action = "trap"', ""))
    dp._strict_rpf = ["eth0"]
    dp.install(_sa(1, mode="transport"))
    assert len(_warnings(caplog)) == 1


def test_kernel_trap_that_changes_goes_in_before_the_old_one_goes():
    # The peer's name resolves elsewhere (DynDNS): charon's trap_manager installs the new trap
    # first ("updating already routed CHILD_SA"); removing first leaves the selectors without a
    # policy for a moment, and their traffic leaves in clear. A refused update keeps the old trap.
    from engine.datapath.kernel import KernelDatapathError
    from tests.engine.test_trap_notes import NAMED, FakeKernel, kernel, trapped
    from tests.engine.test_userspace_trap import NamedRuntime

    calls = []

    class Recording(FakeKernel):
        def install_trap(self, reqid, child, local, remote, *, replace=False):
            calls.append(("install", remote, replace))
            if self.refuse:
                raise KernelDatapathError(self.refuse)
            if not replace:
                assert reqid not in self.traps
            self.traps[reqid] = (child.name, local, remote)

        def remove_trap(self, reqid):
            calls.append(("remove", reqid))
            super().remove_trap(reqid)

    dp = kernel(NAMED, NamedRuntime)
    dp.kernel = Recording()
    rt = dp.runtime
    rt.endpoint.resolved("gw.test", ("127.0.0.7",), rt.t)
    dp.peer_addresses_changed()
    rt.endpoint.resolved("gw.test", ("127.0.0.8",), rt.t + 1)
    dp.peer_addresses_changed()
    assert calls == [("install", "127.0.0.7", False), ("install", "127.0.0.8", True)]
    dp.kernel.refuse = "No buffer space available"
    rt.endpoint.resolved("gw.test", ("127.0.0.9",), rt.t + 2)
    dp.peer_addresses_changed()
    assert trapped(dp) == {("rw", "lan")} and dp._traps[("rw", "lan")].remote == "127.0.0.8"
    assert [t[2] for t in dp.kernel.traps.values()] == ["127.0.0.8"]


# ------------------------------------------------------------ an SA's route over a trap's
VIP_ROAD = ROAD.replace('start_action = "trap"', 'close_action = "trap"')
"""A road warrior whose CHILD SAs are from a virtual IP; the trap (close_action) is from our IKE address."""


def _vip_sa(n: int) -> ChildSaInstalled:
    import dataclasses

    return dataclasses.replace(_sa(n), local_ts=(parse_ts("10.9.0.5/32"),),
                               remote_ts=(parse_ts("198.51.100.0/25"),))


class OursAndVip(Ours):
    """192.0.2.2 and the virtual IP 10.9.0.5 (on the TUN device)."""

    def address_in(self, networks):
        vip = ipaddress.ip_address("10.9.0.5")
        return "10.9.0.5" if any(vip in n for n in networks) else super().address_in(networks)


def test_a_trap_routed_while_an_sa_of_the_network_is_up_keeps_the_sas_source(monkeypatch):
    # The peer deletes one CHILD SA (close_action = trap) while another of the same network, from
    # our virtual IP, stays: the trap's route (our IKE address as source) must not replace the
    # SA's in the kernel's one route per network, or the host's traffic leaves from the IKE
    # address, misses the SA (its selector is the virtual IP) and acquires again. charon's
    # kernel_netlink add_route keeps a route from a virtual IP installed ("don't replace the
    # route if we already have one with a VIP installed"), as our SpdTable keeps an SA's policy
    # over a trap's.
    dp, kernel = _datapath(monkeypatch, VIP_ROAD)
    dp._addrs = OursAndVip()
    dp.install(_vip_sa(1))
    dp.install(_vip_sa(2))
    assert kernel.routes.get(("198.51.100.0/25", "unicast")) == "10.9.0.5"
    dp.remove(_gone(1))
    dp.trap("gw", "host")
    assert dp._trap_routes, "the trap is in"
    assert kernel.routes.get(("198.51.100.0/25", "unicast")) == "10.9.0.5", kernel.routes
    dp.remove(_gone(2))  # the trap's route, from our IKE address, takes over
    assert kernel.routes.get(("198.51.100.0/25", "unicast")) == "192.0.2.2", kernel.routes
