"""The gateway's return routability check (RFC 4555 §3.7, "by default ... SHOULD be performed"):
after a client's UPDATE_SA_ADDRESSES to a new address, the CHILD SAs follow only once the client
echoed a fresh COOKIE2 sent there; a wrong echo closes the IKE SA (§3.7)."""

from __future__ import annotations

from engine.events import ChildSaMoved, ExchangeSent
from engine.ike.exchanges import mobike
from engine.wire.constants import NotifyType

from tests.engine.ike_pair import ike_data
from tests.engine.test_ike_mobike import MOVED, pair


def _checks(p, side="b"):
    """Indexes (in ``side``'s events) of the INFORMATIONAL requests carrying only COOKIE2."""
    return [i for i, e in enumerate(p.events[side]) if isinstance(e, ExchangeSent)
            and e.message.exchange == "INFORMATIONAL" and not e.message.response
            and e.message.payloads == ("N(COOKIE2)",)]


def test_the_child_sas_follow_after_the_client_answered_a_check_at_its_new_address():
    p = pair()
    gw = p.b.sas[0]
    p.a.roam(p.now, address=MOVED)
    p.advance(1)
    (check,) = _checks(p)
    assert p.events["b"][check].remote[0] == MOVED  # sent to the new address
    moves = [i for i, e in enumerate(p.events["b"]) if isinstance(e, ChildSaMoved)]
    assert len(moves) == 1 and moves[0] > check, "the CHILD SAs moved before the check was answered"
    assert gw.mobike_moves == 1 and gw.remote[0] == MOVED and gw.established


def test_no_answer_at_the_new_address_no_child_sa_moves():
    p = pair()
    gw = p.b.sas[0]
    p.a.roam(p.now, address=MOVED)

    def drop_check_answers(side, d):
        m = ike_data(d.data)
        # the client's responses after its update's answer: the echo of the gateway's check
        return not (side == "a" and m is not None and m[19] & 0x20 and gw.remote[0] == MOVED
                    and gw.mobike_addrs[1][0] == MOVED and m[18] == 37)

    p.filter = drop_check_answers
    p.advance(3)
    assert gw.remote[0] == MOVED  # IKE follows the authenticated update at once (§3.5)
    assert not p.of("b", ChildSaMoved) and gw.mobike_moves == 0


def test_a_wrong_echo_closes_the_ike_sa(monkeypatch):
    real = mobike.UpdateResponder.update

    def bad_echo(self, now, payloads):
        real(self, now, payloads)
        if self.sa.original_initiator:  # the client answering the gateway's check
            self.answer = [type(a)(a.type, data=bytes(16)) if a.type == NotifyType.COOKIE2 else a
                           for a in self.answer]

    monkeypatch.setattr(mobike.UpdateResponder, "update", bad_echo)
    p = pair()
    gw = p.b.sas[0]
    p.a.roam(p.now, address=MOVED)
    p.advance(2)
    assert not p.of("b", ChildSaMoved)
    assert not gw.established
