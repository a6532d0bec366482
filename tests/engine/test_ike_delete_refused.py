"""The Delete of the peer's half of a CHILD SA whose answer we refused (DeleteRefused, charon's
delete_failed_sa) against the peer's IKE rekey: while it is in flight the peer's rekey of the
IKE SA waits (TEMPORARY_FAILURE, as charon, whose child_create task still runs then), so the
peer's half cannot move to the new IKE SA under a Delete sent on the old one. Sans-IO pairs."""

from __future__ import annotations

from engine.events import IkeState
from engine.ike.exchanges.informational import DeleteRefused
from engine.wire.constants import ExchangeType
from engine.wire.message import decode_message

from tests.engine.ike_pair import LEFT, RIGHT, Pair, connection, mirror, policy
from tests.engine.test_ike_edges import children_named, rewrite_answers, second_child, strip, wider_tsr


def live(p: Pair, side: str):
    return [sa for sa in p.ep(side).sas if sa.state != IkeState.DESTROYED]


def test_the_peers_ike_rekey_waits_while_the_delete_of_a_refused_sa_is_in_flight():
    a = connection(children=second_child()[:1])
    peer = mirror(connection(children=second_child()))
    p = Pair(policy(a, address=LEFT), policy(peer, address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    refuse = rewrite_answers(p, "b", ExchangeType.CREATE_CHILD_SA, wider_tsr)
    hold = {"on": True}

    def link(side, d):
        if hold["on"] and side == "a" and d.data != b"\xff":
            h = decode_message(strip(d.data)).header
            if h.exchange == ExchangeType.INFORMATIONAL and not h.response:
                return False  # a's Delete of b's refused SA stays in flight
        return refuse(side, d)

    p.filter = link
    sa = live(p, "a")[0]
    from engine.ike.exchanges.create_child import CreateChild
    sa.start(CreateChild(sa, mirror(peer).children[1]), p.now)
    p.a.scheduler.touch(sa)
    p.deliver()
    assert children_named(p, "b", "second") and sa.outstanding is not None
    p.b.rekey("tun", p.now, ike=True)
    p.deliver()
    assert live(p, "a") == [sa] and sa.state == IkeState.ESTABLISHED, "answered the IKE rekey meanwhile"
    assert isinstance(sa.outstanding.initiator, DeleteRefused)
    hold["on"] = False
    p.advance(120)
    assert not children_named(p, "b", "second")
    assert len(live(p, "a")) == 1 and len(live(p, "b")) == 1
    assert len(live(p, "a")[0].children) == 1 and len(live(p, "b")[0].children) == 1
