"""start_action = "trap" on the userspace datapath (issue 16): the trapped child's remote
selectors are routed into the TUN device, and the first packet its policy protects without an
SA asks the engine for one (AcquireRequested with the child's reqid), at a bounded rate; once
the SA is up the flow uses it."""

from __future__ import annotations

from engine.datapath.lab import udp_packet
from engine.datapath.userspace import ACQUIRE_HOLD, UserspaceDatapath
from engine.events import AcquireRequested
from engine.ike.endpoint import IkeEndpoint
from engine.policy.parse import parse_policy

from tests.engine.test_datapath_scale import client

POLICY = """
[engine]
datapath = "lab"
listen = ["127.0.0.1"]

[connections.rw]
local_addrs = ["127.0.0.1"]
remote_addrs = ["127.0.0.2"]
local = { auth = "psk", id = "gw.example" }
remote = { auth = "psk" }

[connections.rw.children.lan]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/25"]
start_action = "trap"
"""


class FakeRoutes:
    def __init__(self) -> None:
        self.routes: list = []

    def add(self, nets, src, kind="unicast", *, trap=False) -> None:
        self.routes.append((tuple(map(str, nets)), src, kind))

    def remove(self, nets, src, kind="unicast", *, trap=False) -> None:
        self.routes.remove((tuple(map(str, nets)), src, kind))


class FakeRuntime:
    def __init__(self, policy) -> None:
        self.endpoint = IkeEndpoint(policy)
        self.t = 100.0
        self.events: list = []

    def now(self) -> float:
        return self.t

    def datapath_event(self, ev) -> None:
        self.events.append(ev)


def setup(text: str = POLICY, runtime=None):
    policy = parse_policy(text, load_secrets=False)
    dp = UserspaceDatapath(policy)
    dp.runtime = (runtime or FakeRuntime)(policy)
    dp.routes = FakeRoutes()
    dp.apply_policy(policy)
    return dp


def packet() -> bytes:
    return udp_packet(bytes([198, 51, 100, 1]), bytes([198, 51, 100, 130]), 1000, 53, b"q")


def send(dp, pkt: bytes):
    key = dp.path.flow_key(pkt)
    hit = dp.path.flows.get(key) or dp.path.miss(key, pkt)
    dp.flush_events()
    return hit


def test_trap_routes_the_remote_selectors_into_the_device():
    dp = setup()
    assert dp.routes.routes == [(("198.51.100.128/25",), None, "unicast")]
    dp.apply_policy(parse_policy(POLICY.replace('start_action = "trap"', ""), load_secrets=False))
    assert dp.routes.routes == []


def test_first_packet_acquires_the_trapped_child_at_a_bounded_rate():
    dp = setup()
    rt = dp.runtime
    assert send(dp, packet()) == "no_sa"
    (ev,) = rt.events
    assert isinstance(ev, AcquireRequested)
    assert rt.endpoint.registry.reqid_owner(ev.reqid) == ("rw", "lan")
    for _ in range(50):  # more packets while IKE runs: no new acquire within the hold time
        assert send(dp, packet()) == "no_sa"
    assert len(rt.events) == 1
    rt.t += ACQUIRE_HOLD + 0.1  # the negotiation failed: the next packet asks again
    send(dp, packet())
    assert len(rt.events) == 2


def test_once_the_sa_is_up_the_flow_uses_it():
    dp = setup()
    send(dp, packet())
    pair = dp.path.install(client(2), lambda d, a: None, None)
    assert send(dp, packet()) is pair


def test_without_trap_nothing_is_acquired():
    policy = parse_policy(POLICY.replace('start_action = "trap"', ""), load_secrets=False)
    dp = UserspaceDatapath(policy)
    dp.runtime = FakeRuntime(policy)
    dp.apply_policy(policy)
    assert send(dp, packet()) == "no_sa" and not dp.runtime.events


# The lab datapath keeps to loopback addresses: a named peer is for the real datapath.
NAMED = POLICY.replace('datapath = "lab"', 'datapath = "userspace"').replace(
    'remote_addrs = ["127.0.0.2"]', 'remote_addrs = ["gw.test"]')


class NamedRuntime(FakeRuntime):
    """The runtime's part in a trap to a named peer: what the name last resolved to."""

    def peer_address(self, conn):
        from engine.ike.names import target_address
        return target_address(conn, self.endpoint.names)


def _transport(text: str) -> str:
    """The child in transport mode, host to host (no selectors of its own)."""
    return text.replace('start_action = "trap"', 'start_action = "trap"\nmode = "transport"').replace(
        'local_ts = ["198.51.100.0/25"]\nremote_ts = ["198.51.100.128/25"]\n', "")


def test_a_transport_trap_to_a_host_name_routes_the_address_it_resolves_to():
    dp = setup(_transport(NAMED), NamedRuntime)
    rt = dp.runtime
    assert dp.routes.routes == [] and dp.path.traps == set()  # nothing to route to yet
    rt.endpoint.resolved("gw.test", ("127.0.0.7",), rt.t)
    dp.peer_addresses_changed()
    assert dp.routes.routes == [(("127.0.0.7/32",), None, "unicast")] and dp.path.traps == {("rw", "lan")}
    rt.endpoint.resolved("gw.test", ("127.0.0.8",), rt.t)  # DynDNS: the peer moved
    dp.peer_addresses_changed()
    assert dp.routes.routes == [(("127.0.0.8/32",), None, "unicast")]


def test_a_tunnel_trap_to_a_host_name_routes_its_selectors_at_once():
    dp = setup(NAMED, NamedRuntime)
    assert dp.routes.routes == [(("198.51.100.128/25",), None, "unicast")]


def test_a_subnet_first_in_remote_addrs_is_not_a_transport_trap_target():
    dp = setup(_transport(POLICY.replace('remote_addrs = ["127.0.0.2"]',
                                         'remote_addrs = ["127.0.5.0/24", "127.0.0.2"]')), NamedRuntime)
    # the peer initiated to (swanctl: the first entry not a subnet or range), not the whole subnet
    assert dp.routes.routes == [(("127.0.0.2/32",), None, "unicast")]
