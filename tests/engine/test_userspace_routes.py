"""Routes of the userspace datapath's CHILD SAs: the pairs of one child share one route entry
(the RouteTable is asked once, by the first, and told by the last), and what reaches the
kernel is the same as when each pair counted in the RouteTable itself."""

from __future__ import annotations

import os

import engine.datapath.userspace as userspace
from engine.datapath.lab import udp_packet
from engine.datapath.tun import RouteTable
from engine.datapath.userspace_path import SaPath
from engine.events import ChildKeys, ChildSaDeleted, ChildSaInstalled
from engine.policy.parse import parse_policy
from engine.policy.ts import parse_ts
from engine.secret import Secret

POLICY = """
[engine]
datapath = "userspace"
listen = ["192.0.2.2"]

[connections.gw]
local_addrs = ["192.0.2.2"]
remote_addrs = ["192.0.2.1"]
local = { auth = "psk", id = "gw.example" }
remote = { auth = "psk" }

[connections.gw.children.lan]
local_ts = ["198.51.100.129/32"]
remote_ts = ["198.51.100.0/25"]

[connections.gw.children.host]
mode = "transport"
"""


def installed(n: int, child: str = "lan", *, mode: str = "tunnel", remote: str = "198.51.100.0/25",
              remote_addr: str = "192.0.2.1") -> ChildSaInstalled:
    keys = ChildKeys(Secret(os.urandom(36)), Secret(b""), Secret(os.urandom(36)), Secret(b""))
    return ChildSaInstalled(
        ike_sa=n, connection="gw", child=child, unique_id=n, reqid=n, protocol="esp", mode=mode,
        spi_in=0x1000 + n, spi_out=0x9000 + n, local_addr="192.0.2.2", remote_addr=remote_addr,
        local_ts=(parse_ts("198.51.100.129/32"),), remote_ts=(parse_ts(remote),), encr_id=20,
        encr_key_length=256, integ_id=None, esn=False, keys=keys, encap=True, local_port=4500,
        remote_port=4500, initiator=False)


def deleted(n: int, reason: str = "deleted by peer") -> ChildSaDeleted:
    return ChildSaDeleted(ike_sa=n, connection="gw", child="lan", unique_id=n, reqid=n, protocol="esp",
                          spi_in=0x1000 + n, spi_out=0x9000 + n, reason=reason)


class _Sender:
    dest = ("192.0.2.1", 4500)
    pmtu = 0
    key = "test"

    def __init__(self) -> None:
        self.pairs: set = set()


class _Writer:
    def __init__(self) -> None:
        self.sent: list = []

    def route(self, add, net, **kw) -> None:
        self.sent.append((add, str(net), kw.get("src"), kw.get("kind", "unicast")))


class _Addresses:
    def address_in(self, networks):
        return "198.51.100.129" if any(n.num_addresses == 1 for n in networks) else None


class _CountingTable(RouteTable):
    def __init__(self, *a) -> None:
        super().__init__(*a)
        self.asked = 0

    def add(self, *a, **kw) -> None:
        self.asked += 1
        super().add(*a, **kw)

    def remove(self, *a, **kw) -> None:
        self.asked += 1
        super().remove(*a, **kw)


def datapath(monkeypatch):
    monkeypatch.setattr(userspace, "_immediate", lambda sender: None)
    dp = userspace.UserspaceDatapath(parse_policy(POLICY, load_secrets=False))
    sender = _Sender()
    dp._sender = lambda ev: sender
    writer = _Writer()
    dp.routes = _CountingTable(writer, 5)
    dp._addrs = _Addresses()
    return dp, writer


def test_the_pairs_of_one_child_ask_the_route_table_once(monkeypatch):
    dp, writer = datapath(monkeypatch)
    for n in range(1, 101):
        dp.install(installed(n))
    for n in range(1, 101):
        dp.remove(deleted(n))
    assert dp.routes.asked == 2  # the first install, the last removal
    assert writer.sent == [(True, "198.51.100.0/25", "198.51.100.129", "unicast"),
                           (True, "198.51.100.0/25", None, "blackhole"),
                           (False, "198.51.100.0/25", "198.51.100.129", "unicast"),
                           (False, "198.51.100.0/25", None, "blackhole")]
    assert dp._route_users == {} and dp._sa_routes == {}


def test_shared_routes_come_and_go_with_their_first_and_last_user(monkeypatch):
    dp, writer = datapath(monkeypatch)
    route = (("198.51.100.0/25", "198.51.100.129", "unicast"), ("198.51.100.0/25", None, "blackhole"))
    dp.install(installed(1))
    dp.install(installed(2))
    dp.install(installed(3, "other", remote="198.51.100.0/26"))  # another route, partly overlapping
    dp.install(installed(4, "host", mode="transport", remote_addr="192.0.2.7"))
    dp.install(installed(5, "host", mode="transport", remote_addr="192.0.2.7"))  # its own tuple: counted apart
    assert sorted(dp.routes.routes()) == sorted([route[0], ("198.51.100.0/26", "198.51.100.129", "unicast"),
                                                 ("192.0.2.7/32", "198.51.100.129", "unicast")])
    before = len(writer.sent)
    dp.remove(deleted(1, "rekeyed"))  # lingering inbound half: the route goes with the pair all the same
    dp.remove(deleted(1))  # again: nothing more to take away
    dp.remove(deleted(99))  # never installed
    dp.remove(deleted(4))
    assert len(writer.sent) == before  # others still use both routes
    dp.remove(deleted(2))
    assert [s[1:] for s in writer.sent[before:]] == list(route) and all(not s[0] for s in writer.sent[before:])
    dp.remove(deleted(5))
    dp.remove(deleted(3))
    assert dp.routes.routes() == []
    dp.install(installed(6))  # a new first user asks again
    assert dp.routes.routes() == [route[0]]


PORT_RULE = """
[engine]
datapath = "userspace"
listen = ["192.0.2.2"]

[rules.dns]
action = "discard"
remote_ts = ["198.51.100.0/25[udp/53]"]
"""


def test_a_port_rule_keys_flows_by_port_before_any_pair_is_installed():
    """The flow cache looks at ports as soon as the policy does, not only from the first install on
    (main cached the first packet's drop reason for every port of the same two hosts)."""
    path = SaPath(parse_policy(PORT_RULE, load_secrets=False))
    src, dst = bytes([198, 51, 100, 129]), bytes([198, 51, 100, 7])
    assert not path.addr_only
    assert path.lookup(udp_packet(src, dst, 1000, 53, b"q")) == "discard_rule"
    assert path.lookup(udp_packet(src, dst, 1000, 80, b"q")) == "no_sa"
    assert path.rule_flows["dns"] == 1
