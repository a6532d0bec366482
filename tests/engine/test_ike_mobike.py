"""MOBIKE (RFC 4555) as the initiator, on the two-endpoint bench: our client's address changes,
it sends UPDATE_SA_ADDRESSES (NAT detection, COOKIE2) from the new one, and both sides' CHILD SAs
follow without a rekey."""

from __future__ import annotations

import dataclasses

import pytest

from engine.events import ChildSaInstalled, ChildSaMoved, ExchangeSent, NegotiationFailed
from engine.ike.endpoint import Datagram
from engine.ike.errors import LocalError
from engine.ike.exchanges import mobike
from engine.runtime.engine import EngineRuntime, path_usable
from engine.wire.constants import NotifyType
from engine.wire.payloads import NotifyPayload

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy

MOVED = "192.0.2.3"


def pair(*, client_mobike=True, gw_mobike=True, **client_kw):
    client = connection(children=(child(),), mobike=client_mobike, local="%any", **client_kw)
    gw = mirror(client, remote_addrs=(), local_addrs=(RIGHT,), mobike=gw_mobike)
    p = Pair(policy(client, address=LEFT), policy(gw, address=RIGHT))
    p.a.source_address = lambda remote: LEFT
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert len(p.of("a", ChildSaInstalled)) == 1
    return p


def sent_notifies(p, side, since):
    """Summaries of the IKE messages ``side`` sent after its first ``since`` events."""
    out = []
    for e in p.events[side][since:]:
        if isinstance(e, ExchangeSent):
            out.append(e.message.brief())
    return out


def test_both_sides_agree_on_mobike_in_ike_auth():
    p = pair()
    client, gw = p.a.sas[0], p.b.sas[0]
    assert client.mobike and gw.mobike
    # IKE moved to the NAT-T ports after IKE_SA_INIT, NAT or not: RFC 4555 §3.3 (MUST when both
    # do MOBIKE and NAT-T), charon's ike_natd process_i
    assert client.mobike_addrs == ((LEFT, 4500), (RIGHT, 4500))
    assert not client.nat.any and not gw.nat.any and not client.encap and not gw.encap  # ESP stays bare


def test_client_moves_to_a_new_address_and_every_child_sa_follows_without_a_rekey():
    p = pair()
    client, gw = p.a.sas[0], p.b.sas[0]
    (c_child,), (g_child,) = client.children.values(), gw.children.values()
    start = len(p.events["a"])
    assert p.a.roam(p.now, address=MOVED) == 1
    out = p.a.datagrams_to_send()
    assert [d.local for d in out] == [(MOVED, 4500)]  # the request leaves from the new address
    p.wire.extend(("a", d) for d in out)
    p.advance(1)
    briefs = sent_notifies(p, "a", start)
    assert any("N(UPD_SA_ADDR)" in b and "N(NATD_S_IP)" in b and "N(NATD_D_IP)" in b and "N(COOKIE2)" in b
               for b in briefs), briefs
    assert client.local == (MOVED, 4500) and gw.remote == (MOVED, 4500)
    assert not gw.nat.any and not client.nat.any  # NAT detection hashed the new address
    a_moves, b_moves = p.of("a", ChildSaMoved), p.of("b", ChildSaMoved)
    assert [(m.spi_in, m.local_addr, m.remote_addr) for m in a_moves] == [(c_child.spi_in_int, MOVED, RIGHT)]
    assert [(m.spi_in, m.local_addr, m.remote_addr) for m in b_moves] == [(g_child.spi_in_int, RIGHT, MOVED)]
    # the same IKE SA and CHILD SA on both sides, counted as one move each
    assert p.a.sas == [client] and p.b.sas == [gw] and list(client.children.values()) == [c_child]
    assert len(p.of("a", ChildSaInstalled)) == 1 and len(p.of("b", ChildSaInstalled)) == 1
    assert client.mobike_moves == 1 and gw.mobike_moves == 1
    # the tunnel keeps working: a DPD from the new address is answered
    p.a.roam(p.now, address=MOVED)  # the same address again: nothing to send
    assert not p.a.datagrams_to_send()


def test_runtime_lookup_finds_the_new_source_address():
    p = pair()
    p.a.source_address = lambda remote: MOVED
    assert p.a.roam(p.now) == 1
    p.advance(1)
    assert p.b.sas[0].remote == (MOVED, 4500) and p.a.sas[0].mobike_moves == 1


def test_a_second_move_while_the_update_is_in_flight_sends_another_update():
    p = pair()
    client, gw = p.a.sas[0], p.b.sas[0]
    p.a.roam(p.now, address=MOVED)
    first = p.a.datagrams_to_send()
    p.a.roam(p.now, address="192.0.2.4")  # before the answer to the first
    assert not p.a.datagrams_to_send()  # one request at a time (window of one)
    p.wire.extend(("a", d) for d in first)
    p.advance(1)
    assert client.local[0] == "192.0.2.4" and gw.remote[0] == "192.0.2.4"
    moves = p.of("a", ChildSaMoved)
    assert [m.local_addr for m in moves] == ["192.0.2.4"]  # the CHILD SAs go to the last address only


def test_no_move_without_mobike_agreed_or_to_an_address_local_addrs_forbids():
    p = pair(gw_mobike=False)
    assert not p.a.sas[0].mobike
    assert p.a.roam(p.now, address=MOVED) == 0
    p2 = pair()
    p2.a.sas[0].conn = dataclasses.replace(p2.a.sas[0].conn, local_addrs=("192.0.2.0/30",))
    assert p2.a.roam(p2.now, address="192.0.2.9") == 0
    assert p2.a.roam(p2.now, address=MOVED) == 1
    assert p.a.roam(p.now, address="2001:db8::1") == 0  # never across address families


def test_without_mobike_configured_the_client_does_not_offer_it():
    p = pair(client_mobike=False)
    assert not p.a.sas[0].mobike and not p.b.sas[0].mobike


def test_an_answer_without_our_cookie2_deletes_the_ike_sa(monkeypatch):
    p = pair()
    real = mobike.UpdateResponder.update

    def forgetful(self, now, payloads):
        real(self, now, payloads)
        self.answer = [n for n in self.answer if not (isinstance(n, NotifyPayload) and n.type == NotifyType.COOKIE2)]

    monkeypatch.setattr(mobike.UpdateResponder, "update", forgetful)
    p.a.roam(p.now, address=MOVED)
    p.advance(2)
    failed = p.of("a", NegotiationFailed)
    assert failed and "COOKIE2" in failed[-1].reason
    assert not p.of("a", ChildSaMoved)
    assert not p.a.sas


def test_a_nat_on_the_new_path_is_detected_and_esp_goes_into_udp():
    """IKE is on the NAT-T port since IKE_SA_INIT already (RFC 4555 §3.3): a NAT on the new path
    turns on ESP-in-UDP for the CHILD SAs that follow, and the gateway sees the NAT too."""
    p = pair()
    assert p.a.sas[0].floated and not p.a.sas[0].encap
    client, gw = p.a.sas[0], p.b.sas[0]

    def nat(side, d):  # a NAT between: the gateway sees the client from 198.51.100.7, ports kept
        if side == "a" and d.local[0] == MOVED:
            gw_ep = p.b
            data = d.data[4:] if d.data.startswith(b"\0\0\0\0") else d.data
            gw_ep.receive_datagram(data, d.remote, ("198.51.100.7", d.local[1]), p.now)
            for out in gw_ep.datagrams_to_send():
                if out.remote[0] == "198.51.100.7":
                    out = out._replace(remote=(MOVED, out.remote[1]))
                p.wire.append(("b", out))
            return False
        return True

    p.filter = nat
    p.a.roam(p.now, address=MOVED)
    p.advance(2)
    assert client.floated and client.local == (MOVED, 4500) and client.nat.local_behind
    moves = p.of("a", ChildSaMoved)
    assert [(m.local_addr, m.local_port, m.encap) for m in moves] == [(MOVED, 4500, True)]
    assert client.mobike_moves == 1 and p.a.sas == [client]
    assert gw.remote == ("198.51.100.7", 4500) and gw.nat.remote_behind  # the gateway sees the NAT too


def test_the_runtime_roam_command_moves_what_the_route_lookup_says():
    """`ipsec-console roam` (control command roam): the runtime asks the endpoint to look now."""
    p = pair()
    rt = EngineRuntime(p.a.policy)
    rt.endpoint = p.a
    rt.sockets.send = lambda data, local, remote: p.wire.append(("a", Datagram(data, local, remote)))
    p.a.source_address = lambda remote: MOVED
    assert rt.roam("tun") == 1
    p.advance(1)
    assert p.b.sas[0].remote == (MOVED, 4500)
    assert rt.roam("tun") == 0  # already there
    with pytest.raises(LocalError):
        rt.roam("nosuch")


def test_a_path_that_still_works_is_kept_whatever_a_fresh_lookup_says():
    """As charon keeps a valid path: our address still exists and reaches the peer, so a route
    lookup naming another source (a second address, a lab on 127.0.0.x) moves nothing."""
    p = pair()
    p.a.source_address = lambda remote: MOVED
    p.a.path_usable = lambda local, remote: True
    assert p.a.roam(p.now) == 0 and p.a.sas[0].local[0] == LEFT
    p.a.path_usable = lambda local, remote: local != LEFT  # our address went away
    assert p.a.roam(p.now) == 1
    assert p.a.roam(p.now, address=LEFT) == 1  # a named address is taken as told


def test_the_runtimes_path_check_binds_to_our_address():
    assert path_usable("127.0.0.1", "127.0.0.2")
    assert not path_usable("192.0.2.251", "127.0.0.2")  # not an address of this host
    assert not path_usable("::1", "127.0.0.2")  # never across families
