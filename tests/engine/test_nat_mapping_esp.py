"""A NAT mapping change seen in authenticated ESP-in-UDP (the datapath's NatMappingChanged, the
kernel's XFRM_MSG_MAPPING) moves the IKE SA and its CHILD SAs as charon's update_sa_job does
(ike_sa.c update_hosts: the peer behind a NAT, and not we behind one as original initiator),
MOBIKE SAs included (RFC 4555 §3.8 forbids dynamic updates from IKE packets only). Sans-IO pair,
the client (a) behind a port-mapping NAT, the gateway (b) public."""

from __future__ import annotations

import dataclasses

import pytest

from engine.events import ChildSaInstalled, ChildSaMoved, ChildState

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy
from tests.engine.test_mobike_nat_mapping_dpd import PUBLIC, Nat


def natted(mobike: bool) -> tuple[Pair, Nat]:
    client = connection(children=(child(),), mobike=mobike, local="%any", dpd_delay=30)
    gw = dataclasses.replace(mirror(client, remote_addrs=(), local_addrs=(RIGHT,)), dpd_delay=0)
    p = Pair(policy(client, address=LEFT), policy(gw, address=RIGHT))
    p.a.source_address = lambda remote: LEFT
    nat = Nat(p)
    p.filter = nat
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert len(p.of("a", ChildSaInstalled)) == 1
    return p, nat


def gateway_child(p: Pair) -> ChildSaInstalled:
    (ev,) = p.of("b", ChildSaInstalled)
    return ev


@pytest.mark.parametrize("mobike", [False, True])
def test_the_gateway_follows_the_clients_new_mapping_seen_in_esp(mobike):
    p, nat = natted(mobike)
    gw = p.b.sas[0]
    assert gw.nat.remote_behind and gw.remote == (PUBLIC, 24500) and gw.mobike == mobike
    ev = gateway_child(p)
    p.b.nat_mapping_changed(ev.spi_in, (PUBLIC, 31000), p.now)
    p.collect()
    assert gw.remote == (PUBLIC, 31000), "the gateway keeps sending to the old NAT mapping"
    (moved,) = p.of("b", ChildSaMoved)
    assert (moved.spi_in, moved.spi_out) == (ev.spi_in, ev.spi_out)
    assert (moved.local_addr, moved.local_port) == (RIGHT, 4500)
    assert (moved.remote_addr, moved.remote_port, moved.encap) == (PUBLIC, 31000, True)
    # IKE goes there too: the next DPD from the gateway reaches the client through the new mapping.
    nat.rebind(31000)
    gw.start(p.b.exchanges.dpd(gw), p.now)
    p.advance(1)
    assert gw.established and p.a.sas[0].established


def test_every_child_of_the_ike_sa_follows():
    client = connection(children=(child(), child("two", local_ts="198.51.100.2/32",
                                                 remote_ts="198.51.100.130/32")), local="%any")
    gw = mirror(client, remote_addrs=(), local_addrs=(RIGHT,))
    p = Pair(policy(client, address=LEFT), policy(gw, address=RIGHT))
    p.filter = Nat(p)
    p.a.initiate("tun", p.now)
    p.advance(1)
    installed = p.of("b", ChildSaInstalled)
    assert len(installed) == 2
    p.b.nat_mapping_changed(installed[1].spi_in, (PUBLIC, 31000), p.now)
    p.collect()
    assert sorted(m.spi_in for m in p.of("b", ChildSaMoved)) == sorted(e.spi_in for e in installed)


def test_the_same_mapping_again_moves_nothing():
    p, _ = natted(False)
    ev = gateway_child(p)
    p.b.nat_mapping_changed(ev.spi_in, (PUBLIC, 24500), p.now)
    p.collect()
    assert not p.of("b", ChildSaMoved)


def test_the_client_behind_the_nat_does_not_follow_the_gateway():
    # charon: "only update other's address if we are behind a static NAT, which we assume is the
    # case if we are not initiator": a client behind a NAT that initiated keeps its gateway.
    p, _ = natted(False)
    client = p.a.sas[0]
    assert client.nat.local_behind and client.original_initiator
    (ev,) = p.of("a", ChildSaInstalled)
    before = client.remote
    p.a.nat_mapping_changed(ev.spi_in, ("198.51.100.99", 4500), p.now)
    p.collect()
    assert client.remote == before and not p.of("a", ChildSaMoved)


def test_a_peer_not_behind_a_nat_is_not_moved():
    # No NAT at all (COND_NAT_THERE unset): ESP from elsewhere moves nothing.
    a = connection(mobike=False)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    sa_b = p.b.sas[0]
    assert not sa_b.nat.remote_behind
    (ev,) = p.of("b", ChildSaInstalled)
    p.b.nat_mapping_changed(ev.spi_in, ("192.0.2.9", 4500), p.now)
    p.collect()
    assert sa_b.remote[0] == LEFT and not p.of("b", ChildSaMoved)


def test_a_forced_encap_peer_counts_as_behind_a_nat():
    # encap = yes fakes the peer's NAT detection (COND_NAT_THERE on the other side): charon follows.
    a = connection(encap=True, mobike=False)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    sa_b = p.b.sas[0]
    assert sa_b.nat.remote_behind
    (ev,) = p.of("b", ChildSaInstalled)
    p.b.nat_mapping_changed(ev.spi_in, (LEFT, 4501), p.now)
    p.collect()
    assert sa_b.remote == (LEFT, 4501) and len(p.of("b", ChildSaMoved)) == 1


@pytest.mark.parametrize("remote", [("::1", 4500), ("not an address", 4500), (PUBLIC, 0), (PUBLIC, 70000),
                                    (PUBLIC, "x"), ()])
def test_odd_reports_move_nothing_and_raise_nothing(remote):
    p, _ = natted(False)
    ev = gateway_child(p)
    p.b.nat_mapping_changed(ev.spi_in, remote, p.now)
    p.b.nat_mapping_changed(0x12345678, (PUBLIC, 31000), p.now)  # no such CHILD SA
    p.collect()
    assert not p.of("b", ChildSaMoved) and p.b.sas[0].remote == (PUBLIC, 24500)


def test_a_deleted_child_moves_nothing():
    p, _ = natted(False)
    ev = gateway_child(p)
    gw = p.b.sas[0]
    (c,) = gw.children.values()
    c.state = ChildState.DELETED  # a delete in flight
    p.b.nat_mapping_changed(ev.spi_in, (PUBLIC, 31000), p.now)
    p.collect()
    assert not p.of("b", ChildSaMoved) and gw.remote == (PUBLIC, 24500)


def test_the_runtime_feeds_the_datapaths_report_to_the_engine_and_the_move_back():
    from engine.datapath.base import NullDatapath
    from engine.events import NatMappingChanged
    from engine.runtime.engine import EngineRuntime

    class Moving(NullDatapath):
        def __init__(self):
            super().__init__()
            self.moves = []

        def move(self, ev):
            self.moves.append(ev)

    p, _ = natted(True)
    p.collect()
    ev = gateway_child(p)
    dp = Moving()
    rt = EngineRuntime(p.b.policy, datapath=dp)
    rt.endpoint = p.b
    rt.datapath_event(NatMappingChanged(spi_in=ev.spi_in, remote_addr=PUBLIC, remote_port=31000))
    assert [(m.spi_in, m.remote_addr, m.remote_port) for m in dp.moves] == [(ev.spi_in, PUBLIC, 31000)]
    assert p.b.sas[0].remote == (PUBLIC, 31000)
