"""close_action (charon: child_delete.c destroy_and_reestablish_internal, ike_delete.c process_r,
ike_sa.c reestablish): what b does when its peer a closes a CHILD SA or the IKE SA."""

from __future__ import annotations

import dataclasses

from engine.events import (ChildSaInstalled, ChildState, DpdTimeout, ExchangeSent, IkeState, NegotiationFailed,
                           TrapRequested)
from engine.ike.close_action import CLOSE_START_HOLDOFF
from engine.ike.exchanges import CATALOG

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy
from tests.engine.test_ike_roadwarrior import POOL


def close_pair(b_action: str, *, a_action: str = "none", **conn_kw) -> Pair:
    a = connection(children=[child(close_action=a_action)], **conn_kw)
    b = mirror(a, children=tuple(dataclasses.replace(c, local_ts=c.remote_ts, remote_ts=c.local_ts,
                                                     close_action=b_action) for c in a.children))
    p = Pair(policy(a, address=LEFT), policy(b, address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1 + CLOSE_START_HOLDOFF)  # closed when no longer young: started again at once
    assert len(live(p, "a")) == 1 and len(live(p, "b")) == 1
    return p


def live(p: Pair, side: str):
    return [c for sa in p.ep(side).sas if sa.state == IkeState.ESTABLISHED
            for c in sa.children.values() if c.state == ChildState.INSTALLED]


def sent(p: Pair, side: str, exchange: str):
    return [e for e in p.of(side, ExchangeSent) if e.message.exchange == exchange and not e.message.response
            and not e.message.retransmit]


def a_deletes_child(p: Pair) -> None:
    sa = p.a.sas[0]
    c = next(iter(sa.children.values()))
    sa.start(CATALOG.child_delete(sa, c, "terminated by admin"), p.now)
    p.advance(1)


def test_none_the_child_stays_closed():
    p = close_pair("none")
    a_deletes_child(p)
    p.advance(60)
    assert not live(p, "a") and not live(p, "b")
    assert not sent(p, "b", "CREATE_CHILD_SA") and not p.of("b", TrapRequested)


def test_start_creates_the_child_again_on_the_same_ike_sa():
    p = close_pair("start")
    old = live(p, "b")[0].spi_in
    a_deletes_child(p)
    ca, cb = live(p, "a"), live(p, "b")
    assert len(ca) == 1 and len(cb) == 1 and cb[0].spi_in != old
    assert ca[0].spi_out == cb[0].spi_in and cb[0].spi_out == ca[0].spi_in
    assert len(sent(p, "b", "CREATE_CHILD_SA")) == 1
    assert len(p.a.sas) == 1 and len(p.b.sas) == 1  # the same IKE SA carries it
    p.advance(60)
    assert len(sent(p, "b", "CREATE_CHILD_SA")) == 1


def test_trap_asks_the_datapath_for_the_trap_policy():
    p = close_pair("trap")
    a_deletes_child(p)
    assert p.of("b", TrapRequested) == [TrapRequested("tun", "lan", "close_action")]
    assert not live(p, "b") and not sent(p, "b", "CREATE_CHILD_SA")
    assert not p.of("a", TrapRequested)  # a deleted it: close_action is for the peer's close


def test_our_own_delete_and_a_rekey_do_not_act():
    p = close_pair("none", a_action="start")
    a_deletes_child(p)  # a closed it itself: nothing to start again
    p.advance(60)
    assert not live(p, "a") and not sent(p, "a", "CREATE_CHILD_SA")
    p = close_pair("start")
    p.a.rekey("tun", p.now)
    p.advance(60)  # the old SA the rekey replaced is deleted by a: no close
    assert len(live(p, "b")) == 1 and len(live(p, "a")) == 1
    assert not sent(p, "b", "CREATE_CHILD_SA")


def test_start_after_the_peer_deletes_the_ike_sa_sets_up_a_new_one():
    p = close_pair("start")
    old = p.b.sas[0].unique_id
    p.a.terminate("tun", p.now)
    p.advance(5)
    assert [sa.unique_id != old for sa in p.b.sas] == [True]
    assert len(live(p, "a")) == 1 and len(live(p, "b")) == 1
    assert p.b.sas[0].original_initiator
    assert len(sent(p, "b", "IKE_SA_INIT")) == 1


def test_trap_after_the_peer_deletes_the_ike_sa():
    p = close_pair("trap")
    p.a.terminate("tun", p.now)
    p.advance(5)
    assert p.of("b", TrapRequested) == [TrapRequested("tun", "lan", "close_action")]
    assert not p.b.sas and not sent(p, "b", "IKE_SA_INIT")


def test_both_sides_start_do_not_loop():
    p = close_pair("start", a_action="start")
    p.a.terminate("tun", p.now)
    p.advance(600)
    # a's terminate was answered by one re-creation from b, then both rest
    assert len(sent(p, "b", "IKE_SA_INIT")) == 1 and len(sent(p, "a", "IKE_SA_INIT")) == 1
    assert len(p.a.sas) == 1 and len(p.b.sas) == 1
    sa = p.b.sas[0]
    c = next(iter(sa.children.values()))
    sa.start(CATALOG.child_delete(sa, c, "terminated by admin"), p.now)
    p.advance(600)
    assert len(sent(p, "a", "CREATE_CHILD_SA")) == 1 and not sent(p, "b", "CREATE_CHILD_SA")
    assert len(live(p, "a")) == 1 and len(live(p, "b")) == 1


def test_a_gateway_does_not_dial_its_road_warrior():
    """charon's reestablish: "unable to reestablish IKE_SA due to asymmetric setup"."""
    client = connection(children=(child(local_ts="dynamic", remote_ts="198.51.100.0/25"),), vips=("0.0.0.0",))
    gw = mirror(client, vips=(), pools=("rw",))
    gw = dataclasses.replace(gw, children=tuple(dataclasses.replace(c, close_action="start") for c in gw.children))
    p = Pair(policy(client, address=LEFT), dataclasses.replace(policy(gw, address=RIGHT), pools=(POOL,)))
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert p.b.sas[0].remote_vips
    p.a.terminate("tun", p.now)
    p.advance(30)
    assert not p.b.sas and not sent(p, "b", "IKE_SA_INIT")


def test_dpd_trap_asks_for_the_trap_policy():
    a = connection(dpd_delay=10.0, children=[child(dpd_action="trap")])
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    p.filter = lambda side, d: False  # the peer dies
    p.advance(400)
    assert p.of("a", DpdTimeout)[0].action == "trap"
    assert p.of("a", TrapRequested) == [TrapRequested("tun", "lan", "dpd_action")]
    assert not p.a.sas
    assert len(p.of("a", ChildSaInstalled)) == 1


def test_a_child_being_started_again_follows_to_the_new_ike_sa():
    """The peer closes its CHILD SA, then the IKE SA, while b's CREATE_CHILD_SA (close_action =
    start) is in flight: b sets up a new IKE SA with it (charon's reestablish: is_child_queued)."""
    p = close_pair("start")
    p.filter = lambda side, d: not (side == "a" and d.data[22] == 36 and d.data[23] & 0x20)  # after the marker
    a_deletes_child(p)
    assert p.b.sas[0].active is not None and p.b.sas[0].active.creates() == "lan"
    p.filter = None
    p.a.terminate("tun", p.now)
    p.advance(30)
    assert len(live(p, "a")) == 1 and len(live(p, "b")) == 1
    assert len(sent(p, "b", "IKE_SA_INIT")) == 1 and p.b.sas[0].original_initiator


def test_dpd_restart_brings_back_only_the_children_that_were_up_with_restart():
    """charon's reestablish_children: a CHILD SA whose dpd_action is clear, or one that was not up,
    is not set up again with the new IKE SA."""
    kids = [child("voice", dpd_action="restart"), child("data", local_ts="198.51.100.2/32", dpd_action="clear"),
            child("spare", local_ts="198.51.100.3/32", dpd_action="restart")]
    a = connection(dpd_delay=10.0, children=kids)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now, "voice")
    p.advance(1)
    p.a.initiate("tun", p.now, "data")
    p.advance(1)
    assert sorted(c.config.name for c in live(p, "a")) == ["data", "voice"]
    from engine.ike.endpoint import IkeEndpoint

    p.filter = lambda side, d: False  # the peer dies
    p.advance(200)
    assert p.of("a", DpdTimeout)[0].action == "restart"
    p.b = IkeEndpoint(p.b.policy, seed=7)  # and comes back with no memory of us
    p.filter = None
    p.advance(120)
    assert [c.config.name for c in live(p, "a")] == ["voice"]


def test_a_gateway_does_not_dial_a_road_warrior_gone_silent():
    """dpd_action = restart, the same rule as close_action (charon's reestablish)."""
    client = connection(children=(child(local_ts="dynamic", remote_ts="198.51.100.0/25"),), vips=("0.0.0.0",))
    gw = mirror(client, vips=(), pools=("rw",), dpd_delay=10.0)
    gw = dataclasses.replace(gw, children=tuple(dataclasses.replace(c, dpd_action="restart") for c in gw.children))
    p = Pair(policy(client, address=LEFT), dataclasses.replace(policy(gw, address=RIGHT), pools=(POOL,)))
    p.a.initiate("tun", p.now)
    p.advance(1)
    p.filter = lambda side, d: False  # the client goes away
    p.advance(200)
    assert p.of("b", DpdTimeout)[0].action == "restart"
    assert not p.b.sas and len(sent(p, "b", "IKE_SA_INIT")) == 0


def _gateway_pair(**gw_child):
    client = connection(children=(child(local_ts="dynamic", remote_ts="198.51.100.0/25"),), vips=("0.0.0.0",))
    gw = mirror(client, vips=(), pools=("rw",))
    gw = dataclasses.replace(gw, children=tuple(dataclasses.replace(c, **gw_child) for c in gw.children))
    p = Pair(policy(client, address=LEFT), dataclasses.replace(policy(gw, address=RIGHT), pools=(POOL,)))
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def test_a_gateway_offers_its_road_warrior_the_virtual_ip():
    """The gateway's CREATE_CHILD_SA to a client (its rekey, close_action = start) proposed the
    client's IKE address for the dynamic selector, not the leased virtual IP: TS_UNACCEPTABLE."""
    p = _gateway_pair(close_action="start")
    assert p.b.rekey("tun", p.now) == 1
    p.advance(5)
    assert not p.of("a", NegotiationFailed) and not p.of("b", NegotiationFailed)
    (cb,) = live(p, "b")
    assert cb.rekeyed_from is not None and [str(t) for t in cb.remote_ts] == ["198.51.100.193/32"]
    a_deletes_child(p)
    p.advance(5)
    assert not p.of("a", NegotiationFailed) and not p.of("b", NegotiationFailed)
    assert len(live(p, "a")) == 1 and [str(t) for t in live(p, "b")[0].remote_ts] == ["198.51.100.193/32"]


def test_a_peer_closing_every_new_child_at_once_gets_a_bounded_rate():
    """A peer that deletes each CHILD SA as soon as it is up (its datapath refuses it, its policy
    does): close_action = start answered every Delete with a new CREATE_CHILD_SA at once, a storm
    for as long as both ran. A CHILD SA closed young is started again once it would have lived
    CLOSE_START_HOLDOFF seconds: one creation per that time, and the next close past it at once."""
    p = close_pair("start")
    a_deletes_child(p)  # an old CHILD SA: started again at once, as charon
    assert len(sent(p, "b", "CREATE_CHILD_SA")) == 1 and len(live(p, "b")) == 1
    steps = int(4 * CLOSE_START_HOLDOFF / 0.1)
    for _ in range(steps):
        sa = p.a.sas[0]
        for c in [c for c in sa.children.values() if c.state == ChildState.INSTALLED]:
            c.unconfirmed_mid = None  # a deletes at once (as charon), not after b confirmed it
            sa.start(CATALOG.child_delete(sa, c, "refused"), p.now)
        p.advance(0.1)
    assert len(sent(p, "b", "CREATE_CHILD_SA")) <= 1 + 5
    p.advance(CLOSE_START_HOLDOFF + 1)  # it gave up nothing: the CHILD SA comes back
    assert len(live(p, "a")) == 1 and len(live(p, "b")) == 1


def test_a_peer_deleting_every_new_ike_sa_at_once_gets_a_bounded_rate():
    """The same for the IKE SA: each new one cost an IKE_SA_INIT and an IKE_AUTH at once."""
    p = close_pair("start")
    for _ in range(int(4 * CLOSE_START_HOLDOFF / 0.1)):
        for sa in p.a.sas:
            if sa.state == IkeState.ESTABLISHED:
                sa.delete(p.now, "refused")
        p.advance(0.1)
    assert len(sent(p, "b", "IKE_SA_INIT")) <= 5
    p.advance(CLOSE_START_HOLDOFF + 1)
    assert len(live(p, "a")) == 1 and len(live(p, "b")) == 1


def test_terminate_cancels_a_held_back_reestablish():
    p = close_pair("start")
    p.a.terminate("tun", p.now)
    p.advance(1)  # b sets it up again at once (an old IKE SA)
    assert len(live(p, "b")) == 1
    p.a.terminate("tun", p.now)  # young: b's next set-up waits
    p.advance(0.5)
    assert not p.b.sas and p.b.retrying("tun") is not None
    assert p.b.terminate("tun", p.now) == 0 and p.b.retrying("tun") is None
    p.advance(60)
    assert len(sent(p, "b", "IKE_SA_INIT")) == 1 and not p.b.sas


def _eap_pair_with(client_action: str, gw_action: str):
    from tests.engine.test_ike_roadwarrior import eap_pair

    p = eap_pair()
    for ep, action in ((p.a, client_action), (p.b, gw_action)):
        (conn,) = ep.policy.connections
        conn = dataclasses.replace(conn, children=tuple(dataclasses.replace(c, close_action=action)
                                                        for c in conn.children))
        if ep is p.b:
            conn = dataclasses.replace(conn, remote_addrs=("192.0.2.1",))  # one it could dial
        ep.apply_policy(dataclasses.replace(ep.policy, connections=(conn,)), p.now)
    p.a.initiate("tun", p.now)
    p.advance(1 + CLOSE_START_HOLDOFF)
    assert len(live(p, "a")) == 1
    assert p.b.rekey("tun", p.now, ike=True) == 1  # the gateway rekeys the IKE SA
    p.advance(5 + CLOSE_START_HOLDOFF)
    assert len(live(p, "a")) == 1 and not p.a.sas[0].original_initiator
    return p


def test_an_eap_client_sets_up_again_after_the_gateway_rekeyed_the_ike_sa():
    """The asymmetric-setup guard took "not the original initiator" from the IKE header role, which a
    gateway's IKE rekey hands to the gateway (§2.18), and "EAP" from our own EAP identity: a road
    warrior whose gateway had rekeyed refused to set the tunnel up again ("a gateway does not dial
    its clients"). charon's COND_ORIGINAL_INITIATOR survives rekeys (inherit_post) and
    COND_EAP_AUTHENTICATED is the EAP server's."""
    p = _eap_pair_with("start", "none")
    p.b.terminate("tun", p.now)
    p.advance(10)
    assert len(live(p, "a")) == 1 and len(live(p, "b")) == 1
    assert len(sent(p, "a", "IKE_SA_INIT")) == 2


def test_a_gateway_that_rekeyed_still_does_not_dial_its_client():
    p = _eap_pair_with("none", "start")
    p.a.terminate("tun", p.now)
    p.advance(30)
    assert not p.b.sas and not sent(p, "b", "IKE_SA_INIT")


def test_a_gateway_does_not_dial_a_silent_client_whose_first_child_traps():
    """DpdTimeout's action is the first child's non-clear dpd_action: with a trap child first, the
    guard was skipped and the restart child was dialed all the same."""
    kids = (child("one", local_ts="dynamic", remote_ts="198.51.100.0/26"),
            child("two", local_ts="dynamic", remote_ts="198.51.100.64/26"))
    client = connection(children=kids, vips=("0.0.0.0",))
    gw = mirror(client, vips=(), pools=("rw",), dpd_delay=10.0)
    gw = dataclasses.replace(gw, remote_addrs=(LEFT,), children=(
        dataclasses.replace(gw.children[0], dpd_action="trap"),
        dataclasses.replace(gw.children[1], dpd_action="restart")))
    p = Pair(policy(client, address=LEFT), dataclasses.replace(policy(gw, address=RIGHT), pools=(POOL,)))
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert len(live(p, "b")) == 2
    p.filter = lambda side, d: False  # the client goes away
    p.advance(200)
    assert p.of("b", DpdTimeout)[0].action == "trap"
    assert not p.b.sas and len(sent(p, "b", "IKE_SA_INIT")) == 0
