"""Our address as the initiator (charon's ike_sa.c resolve_hosts, ike_cfg.c resolve_me / match):
a literal local_addrs address of the peer's family; for a subnet, a range or %any the host's
source towards the peer, when local_addrs holds it; a clear error when local_addrs has no
address of the peer's family. And the same entries on the responder's side, for MOBIKE and for
the runtime's sockets."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from engine.datapath.base import NullDatapath
from engine.events import ChildSaInstalled, IkeState
from engine.ike import names
from engine.ike.front_door import addr_match  # (the responder's, from engine.ike.addresses)
from engine.ike.errors import LocalError
from engine.runtime.engine import EngineRuntime

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy

LEFT6, RIGHT6 = "2001:db8::1", "2001:db8::2"


def established(ep) -> list:
    return [sa for sa in ep.sas if sa.state == IkeState.ESTABLISHED]


def pair(local_addrs, *, remote=RIGHT, listen=(LEFT,), source=None, b_local=None) -> Pair:
    a = dataclasses.replace(connection(remote=remote), local_addrs=tuple(local_addrs))
    b = mirror(connection(remote=remote), local_addrs=(b_local or remote,), remote_addrs=())
    pa = policy(a)
    pa = dataclasses.replace(pa, engine=dataclasses.replace(pa.engine, listen=tuple(listen)))
    p = Pair(pa, policy(b, address=b_local or remote))
    if source is not None:
        p.a.source_address = lambda peer: source
    return p


def test_an_ipv6_peer_is_reached_from_our_ipv6_address_not_the_first_of_local_addrs():
    p = pair((LEFT, LEFT6), remote=RIGHT6, listen=(LEFT, LEFT6))
    sa = p.a.initiate("tun", p.now)
    assert sa.local == (LEFT6, 500)
    p.advance(1)
    assert established(p.a) and established(p.b)


def test_a_subnet_first_in_local_addrs_gives_the_routes_source_inside_it():
    p = pair(("192.0.2.0/24",), listen=(), source=LEFT)
    sa = p.a.initiate("tun", p.now)
    assert sa.local == (LEFT, 500)
    p.advance(1)
    assert established(p.a) and len(p.of("a", ChildSaInstalled)) == 1


def test_a_range_in_local_addrs_gives_the_routes_source_inside_it():
    p = pair(("192.0.2.1-192.0.2.9",), listen=("0.0.0.0",), source=LEFT)
    assert p.a.initiate("tun", p.now).local == (LEFT, 500)


def test_a_route_source_outside_local_addrs_is_refused_naming_the_connection(caplog):
    p = pair(("198.51.100.0/24",), listen=(), source=LEFT)
    with caplog.at_level(logging.WARNING), pytest.raises(LocalError, match="'tun'.*192.0.2.1.*198.51.100.0/24"):
        p.a.initiate("tun", p.now)
    assert "not initiated" in caplog.text and not p.a.sas and not p.a.datagrams_to_send()


def test_only_addresses_of_the_other_family_is_a_clear_error_not_a_wrong_source():
    p = pair((LEFT,), remote=RIGHT6, listen=(LEFT,))
    with pytest.raises(LocalError, match="'tun'.*no IPv6 address"):
        p.a.initiate("tun", p.now)
    assert not p.a.sas and not p.a.datagrams_to_send()


def test_a_connection_that_cannot_start_does_not_stop_the_others_at_start():
    bad = dataclasses.replace(connection("bad", remote=RIGHT6, children=(child(start_action="start"),)),
                              local_addrs=(LEFT,))
    good = connection("good", children=(child(start_action="start"),))
    p = Pair(policy(bad, good), policy(mirror(connection("good")), address=RIGHT))
    p.a.start(p.now)
    assert [sa.name for sa in p.a.sas] == ["good"]


def test_a_wildcard_listen_is_not_our_address_the_route_lookup_is():
    # (0.0.0.0 as our address made NAT detection hash it: the peer saw a NAT that is not there)
    p = pair((), listen=("0.0.0.0",), source=LEFT)
    sa = p.a.initiate("tun", p.now)
    assert sa.local == (LEFT, 500)
    p.advance(1)
    assert not sa.nat.any


def test_a_listen_address_local_addrs_holds_is_taken_before_the_route_lookup():
    # (as a trap of the connection has it, engine.datapath.traps.local_address; and a source we
    # do not listen on could not be sent from)
    p = pair(("198.51.100.0/24",), listen=(LEFT, "198.51.100.1"), source=LEFT, remote="198.51.100.2")
    assert p.a.initiate("tun", p.now).local == ("198.51.100.1", 500)
    p = pair(("%any",), listen=(LEFT,), source="192.0.2.7")
    assert p.a.initiate("tun", p.now).local == (LEFT, 500)
    p = pair(("198.51.100.0/24",), listen=(LEFT,), source="198.51.100.1")  # we do not listen there
    with pytest.raises(LocalError, match="'tun'.*holds none of the IPv4 addresses \\[engine\\] listen binds"):
        p.a.initiate("tun", p.now)


def test_a_host_name_in_local_addrs_is_what_it_resolved_to_on_both_sides():
    p = pair(("me.test",), listen=(), source=LEFT, b_local="gw.test")
    asked: list[str] = []
    p.a.names.resolve = asked.append
    p.a.start(p.now)
    assert asked == ["me.test"]  # local_addrs' names are resolved too (charon's resolve_me)
    assert p.a.initiate("tun", p.now) is None  # not resolved yet: it waits (revaddr17), as charon resolves
    p.b.resolved("gw.test", (RIGHT,), p.now)
    p.a.resolved("me.test", (LEFT,), p.now)
    p.advance(1)
    assert established(p.a) and established(p.b)  # the responder took gw.test as its local_addrs


def test_a_name_initiated_to_picks_the_family_of_a_local_subnet():
    conn = dataclasses.replace(connection(), local_addrs=("2001:db8::/64",))
    assert names.pick((RIGHT, RIGHT6), conn) == RIGHT6
    conn = dataclasses.replace(connection(), local_addrs=("%any6",))
    assert names.pick((RIGHT, RIGHT6), conn) == RIGHT6


# ---------------------------------------------------------------- the responder (charon's ike_cfg match_me)
def test_an_ipv6_request_to_a_responder_with_an_ipv4_range_is_ignored_not_an_exception():
    gw = mirror(connection(), remote_addrs=("192.0.2.1-192.0.2.9",), local_addrs=("%any",))
    p = Pair(policy(connection(local=LEFT6, remote=RIGHT6), address=LEFT6), policy(gw, address=RIGHT6))
    p.a.initiate("tun", p.now)
    p.advance(1)  # (a TypeError came out of the engine comparing an IPv6 address with the range)
    assert not established(p.b)


def test_family_wildcards_match_their_family_only():
    assert addr_match("%any4", "192.0.2.1") and not addr_match("%any4", RIGHT6)
    assert addr_match("%any6", RIGHT6) and not addr_match("%any6", "192.0.2.1")
    assert addr_match("::", RIGHT6) and not addr_match("0.0.0.0", RIGHT6)
    assert not addr_match("192.0.2.1-192.0.2.9", RIGHT6) and addr_match("192.0.2.1 - 192.0.2.9", "192.0.2.5")


def test_a_responder_answers_only_on_addresses_its_local_addrs_hold():
    # charon's ike_cfg match_me: a request to another of our addresses finds no connection
    gw = mirror(connection(), local_addrs=("198.51.100.0/24",))
    p = Pair(policy(connection()), policy(gw, address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert not established(p.b)
    gw = mirror(connection(), local_addrs=("192.0.2.2-192.0.2.3",))
    p = Pair(policy(connection()), policy(gw, address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert established(p.b)


# ---------------------------------------------------------------- MOBIKE
def test_mobike_may_move_to_an_address_in_a_local_range():
    client = connection(children=(child(),), mobike=True, local="192.0.2.1-192.0.2.9")
    gw = mirror(client, remote_addrs=(), local_addrs=(RIGHT,))
    p = Pair(policy(client, address=LEFT), policy(gw, address=RIGHT))
    p.a.source_address = lambda remote: LEFT
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert p.a.sas[0].mobike
    assert p.a.roam(p.now, address="192.0.2.12") == 0
    assert p.a.roam(p.now, address="192.0.2.3") == 1


# ---------------------------------------------------------------- the runtime's sockets
def test_the_runtime_listens_on_the_wildcard_a_local_subnet_or_range_needs():
    def listen(*local_addrs):
        conn = dataclasses.replace(connection(), local_addrs=local_addrs)
        pol = policy(conn)
        pol = dataclasses.replace(pol, engine=dataclasses.replace(pol.engine, listen=()))
        return EngineRuntime(pol, datapath=NullDatapath())._addresses_from_connections()

    assert listen(LEFT, "2001:db8::/64") == [LEFT, "::"]
    assert listen("192.0.2.1-192.0.2.9", "%any6") == ["0.0.0.0", "::"]
    assert listen("%any", "me.test", "%any4") == ["0.0.0.0"]


# ---------------------------------------------------------------- RFC 5685 redirect (peer input)
def test_a_redirect_to_a_gateway_we_have_no_address_for_fails_in_words_not_an_exception():
    from engine.events import NegotiationFailed
    from tests.engine.test_ike_redirect import OTHER, gateways

    g = gateways()
    client = dataclasses.replace(g.a.policy.connections[0], local_addrs=("192.0.2.0/30",))
    p = Pair(dataclasses.replace(g.a.policy, connections=(client,),
                                 engine=dataclasses.replace(g.a.policy.engine, listen=())), g.b.policy)
    p.a.source_address = lambda peer: LEFT if peer == RIGHT else "198.51.100.9"
    p.a.initiate("tun", p.now)
    p.advance(2)
    (failed,) = p.of("a", NegotiationFailed)
    assert failed.notify == "REDIRECT" and OTHER in failed.reason and "198.51.100.9" in failed.reason
