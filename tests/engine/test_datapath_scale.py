"""Installing and removing CHILD SAs in the userspace/lab SA path costs O(1):
no SPD rebuilt, no scan over other pairs, cached flow decisions kept for
hosts the change does not touch; routes are counted per user and only the
first and last user cause a netlink request (encoded as pyroute2 decodes
it: an independent reading of the message)."""

from __future__ import annotations

import gc
import ipaddress
import os

import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg

import engine.datapath.userspace_path as up
from engine.datapath.lab import icmp_echo, udp_packet
from engine.datapath.rtnl import RTM_DELROUTE, RTM_NEWROUTE, route_message
from engine.datapath.tun import BACKSTOP_METRIC, RouteTable
from engine.datapath.userspace_path import SaPath
from engine.events import ChildKeys, ChildSaInstalled
from engine.policy.parse import parse_policy
from engine.policy.ts import parse_ts
from engine.secret import Secret

POLICY = """
[engine]
datapath = "lab"
listen = ["127.0.0.1"]

[connections.rw]
local_addrs = ["127.0.0.1"]
local = { auth = "psk", id = "gw.example" }
remote = { auth = "psk" }

[connections.rw.children.lan]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/25"]
"""

GW = bytes([198, 51, 100, 1])


def client(n: int, *, spi_in=None, rekeyed_from=None, port: int | None = None) -> ChildSaInstalled:
    """A road-warrior client's CHILD SA: its own address (and, with ``port``, its own UDP port)."""
    addr = f"198.51.100.{128 + n % 127}"
    rts = f"{addr}/32" + (f"[udp/{port}]" if port is not None else "")
    keys = ChildKeys(Secret(os.urandom(36)), Secret(b""), Secret(os.urandom(36)), Secret(b""))
    spi = spi_in if spi_in is not None else 0x1000 + n
    return ChildSaInstalled(
        ike_sa=n, connection="rw", child="lan", unique_id=spi, reqid=1, protocol="esp", mode="tunnel",
        spi_in=spi, spi_out=0x9000 + n, local_addr="127.0.0.1", remote_addr="127.0.0.2",
        local_ts=(parse_ts("198.51.100.0/25"),), remote_ts=(parse_ts(rts),), encr_id=20, encr_key_length=256,
        integ_id=None, esn=False, keys=keys, rekeyed_from=rekeyed_from, initiator=True)


def to(n: int, sport: int = 1000, dport: int = 53) -> bytes:
    return udp_packet(GW, bytes([198, 51, 100, 128 + n % 127]), sport, dport, b"q")


def new_path(monkeypatch) -> tuple[SaPath, list]:
    """An SA path on POLICY, and the list of the SPDs it builds from a policy."""
    built = []

    class Counting(up.Spd):
        def __init__(self, *a, **kw):
            built.append(a)
            super().__init__(*a, **kw)
    monkeypatch.setattr(up, "Spd", Counting)
    return SaPath(parse_policy(POLICY, load_secrets=False)), built


def test_many_clients_each_get_their_own_pair_without_any_rebuild(monkeypatch):
    path, built = new_path(monkeypatch)
    pairs = [path.install(client(n), lambda d, a: None, None) for n in range(120)]
    assert len(built) == 1  # the policy's SPD, built once; installs never rebuild it
    for n in (0, 57, 119):
        assert path.lookup(to(n)) is pairs[n]
    for n in range(0, 120, 2):
        path.remove(0x1000 + n)
    assert len(built) == 1
    assert path.lookup(to(57)) is pairs[57]
    assert path.lookup(to(58)) == "no_sa"
    assert len(path.by_child[("rw", "lan")]) == 60


def test_decisions_look_only_at_pairs_under_the_destination(monkeypatch):
    path, _ = new_path(monkeypatch)
    for n in range(100):
        path.install(client(n), lambda d, a: None, None)
    looked = []
    real = up._matches

    def counting(e, *a):
        looked.append(e)
        return real(e, *a)
    monkeypatch.setattr(up, "_matches", counting)
    path.decide(to(42))
    assert len(looked) == 1  # one candidate: the pair of that client, not all 100


def test_a_new_client_keeps_the_cached_flows_of_the_others(monkeypatch):
    path, _ = new_path(monkeypatch)
    a = path.install(client(1), lambda d, a: None, None)
    path.install(client(2), lambda d, a: None, None)
    assert path.lookup(to(1)) is a and path.lookup(to(3)) == "no_sa"
    cached = dict(path.flows)
    c = path.install(client(3), lambda d, a: None, None)
    assert path.flows.get(path.flow_key(to(1))) is a  # untouched
    assert path.flow_key(to(3)) not in path.flows  # the decision that changed was dropped...
    assert path.lookup(to(3)) is c  # ...and is made again
    path.remove(a.ev.spi_in)
    assert path.flow_key(to(1)) not in path.flows and path.lookup(to(1)) == "no_sa"
    assert len(cached) == 2


def test_rekey_takes_over_the_flows_of_the_old_pair(monkeypatch):
    path, _ = new_path(monkeypatch)
    old = path.install(client(5), lambda d, a: None, None)
    assert path.lookup(to(5)) is old
    new = path.install(client(5, spi_in=0x7777, rekeyed_from=old.ev.spi_in), lambda d, a: None, None)
    assert path.lookup(to(5)) is new  # initiator of the rekey: the new pair at once
    path.remove(old.ev.spi_in)
    assert path.lookup(to(5)) is new


def test_port_selectors_pick_the_pair_of_the_port(monkeypatch):
    path, _ = new_path(monkeypatch)
    pairs = [path.install(client(0, spi_in=0x2000 + p, port=p), lambda d, a: None, None) for p in range(5000, 5040)]
    assert not path.addr_only
    assert path.lookup(to(0, dport=5017)) is pairs[17]
    assert path.lookup(to(0, dport=6000)) == "no_sa"
    path.remove(0x2000 + 5017)
    assert path.lookup(to(0, dport=5017)) == "no_sa" and path.lookup(to(0, dport=5018)) is pairs[18]


def test_flow_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(up, "FLOW_CACHE_MAX", 50)
    path, _ = new_path(monkeypatch)
    path.install(client(1), lambda d, a: None, None)
    for i in range(200):
        path.lookup(icmp_echo(GW, bytes([198, 51, 100, 200]), 1, i, b"") if i % 2 else
                    udp_packet(GW, bytes([198, 51, 100, 129]), 1000 + i, 53, b""))
    assert len(path.flows) <= 50


def test_time_based_sampling_rearms_only_what_fired(monkeypatch):
    path, _ = new_path(monkeypatch)
    sent = []
    pairs = [path.install(client(n), lambda d, a: sent.append(d), None) for n in range(50)]
    path.arm_samples()
    path.output(to(3), 1.0)
    assert [e.spi for e in path.drain()] == [pairs[3].outbound.spi]
    assert path._fired == [pairs[3].outbound]
    path.arm_samples()
    assert path._fired == []
    path.output(to(3), 1.0)
    path.output(to(4), 1.0)
    assert sorted(e.spi for e in path.drain()) == [pairs[3].outbound.spi, pairs[4].outbound.spi]


def test_idle_counters_are_reused():
    path = SaPath(parse_policy(POLICY, load_secrets=False))
    pair = path.install(client(1), lambda d, a: None, None)
    first = pair.outbound.counters()
    assert pair.outbound.counters() is first
    path.output(to(1), 2.0)
    assert pair.outbound.counters() is not first and pair.outbound.counters().packets == 1


class _Writer:
    def __init__(self):
        self.sent = []

    def route(self, add, net, **kw):
        self.sent.append((add, str(net), kw.get("kind", "unicast")))
        self.metrics = getattr(self, "metrics", []) + [kw.get("metric")]


def test_routes_are_counted_per_user():
    w = _Writer()
    table = RouteTable(w, oif=9)
    nets = (ipaddress.ip_network("198.51.100.129/32"),)
    for _ in range(1000):
        table.add(nets, "198.51.100.1")
    # the route into the device and its fail-closed backstop (tun.py), once each
    assert w.sent == [(True, "198.51.100.129/32", "unicast"), (True, "198.51.100.129/32", "blackhole")]
    assert w.metrics == [None, BACKSTOP_METRIC]
    for _ in range(999):
        table.remove(nets, "198.51.100.1")
    assert len(w.sent) == 2
    table.remove(nets, "198.51.100.1")
    assert w.sent[-2:] == [(False, "198.51.100.129/32", "unicast"), (False, "198.51.100.129/32", "blackhole")]
    table.add((ipaddress.ip_network("198.51.100.160/27"),), None, "throw")
    table.clear()
    assert w.sent[-1] == (False, "198.51.100.160/27", "throw") and table.routes() == []


@pytest.mark.parametrize("add", [True, False])
def test_route_messages_decode_as_pyroute2_reads_them(add):
    m = rtmsg(route_message(add, ipaddress.ip_network("198.51.100.128/25"), table=4533, oif=7,
                            src="198.51.100.1", seq=42))
    m.decode()
    assert m["header"]["type"] == (RTM_NEWROUTE if add else RTM_DELROUTE)
    assert m["header"]["sequence_number"] == 42 and m["header"]["length"] == len(m.data)
    assert (m["family"], m["dst_len"], m["type"], m["proto"]) == (2, 25, 1, 4)
    assert (m.get_attr("RTA_DST"), m.get_attr("RTA_OIF"), m.get_attr("RTA_TABLE")) == ("198.51.100.128", 7, 4533)
    assert m.get_attr("RTA_PREFSRC") == ("198.51.100.1" if add else None)
    b = rtmsg(route_message(add, ipaddress.ip_network("198.51.100.128/25"), table=4533, kind="blackhole",
                            metric=BACKSTOP_METRIC))
    b.decode()
    assert (b["type"], b.get_attr("RTA_PRIORITY"), b.get_attr("RTA_OIF")) == (6, BACKSTOP_METRIC, None)
    t = rtmsg(route_message(True, ipaddress.ip_network("2001:db8::/64"), table=100, kind="throw"))
    t.decode()
    assert (t["family"], t["type"], t["table"], t.get_attr("RTA_DST"), t.get_attr("RTA_OIF")) == \
        (10, 9, 100, "2001:db8::", None)


def test_installs_and_removals_leave_no_reference_cycles(monkeypatch):
    """What the embedded engine's collector policy relies on (console.runtime.embedded): SAs that go
    are freed by reference counting, never left for a full collector pass."""
    path, _ = new_path(monkeypatch)
    for n in range(5):  # warm up: caches, interned names
        path.install(client(n), lambda d, a: None, None)
        path.remove(0x1000 + n)
    gc.collect()
    gc.disable()
    try:
        pairs = [path.install(client(n), lambda d, a: None, None) for n in range(40)]
        path.arm_samples()
        for n in range(40):
            path.output(to(n), 1.0)
        new = path.install(client(3, spi_in=0x7777, rekeyed_from=pairs[3].ev.spi_in), lambda d, a: None, None)
        path.remove(pairs[3].ev.spi_in, linger=True)
        path.forget(pairs[3].ev.spi_in)
        for p in pairs[:3] + pairs[4:] + [new]:
            path.remove(p.ev.spi_in)
        path.drain()
        del pairs, new, p
        assert gc.collect() == 0
    finally:
        gc.enable()
