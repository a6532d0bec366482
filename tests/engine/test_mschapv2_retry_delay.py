"""EAP-MSCHAPv2: the gateway answers a wrong password's retry only after RETRY_DELAY (charon's
eap_mschapv2.c process_server_retry: ``sleep(RETRY_DELAY)``, "to make brute-force attacks
harder"), sans-IO: the answer is held on the IKE SA and sent by its timer."""

from __future__ import annotations

from engine.eap.mschapv2 import RETRY_DELAY
from engine.events import ChildSaInstalled, ExchangeSent, NegotiationFailed

from tests.engine.test_ike_roadwarrior import eap_pair


def _watch(p):
    """(time, side, size) of every IKE datagram as it crosses the link."""
    seen = []

    def filt(side, d):
        seen.append((p.now, side, len(d.data)))
        return True

    p.filter = filt
    return seen


def test_the_retry_after_a_wrong_password_is_answered_after_the_delay():
    p = eap_pair(client_password="not-alice-password")
    seen = _watch(p)
    start = p.now
    p.a.initiate("tun", p.now)
    p.advance(0.5)
    # IKE_SA_INIT both ways, IKE_AUTH (no AUTH) and its answer, EAP Identity, the Challenge and the
    # wrong Response: the Failure (retry) request is held.
    last_b = max(t for t, side, _ in seen if side == "b")
    assert last_b == start
    assert seen[-1][1] == "a", "the gateway answered the wrong password at once"
    gw = p.b.sas[0]
    assert gw.alive
    # A retransmission of the request during the delay is not answered either (that would skip it).
    p.a.sas[0].outstanding.next_at = p.now  # retransmit now
    p.advance(0.1)
    assert max(t for t, side, _ in seen if side == "b") == start
    p.advance(RETRY_DELAY)
    answered = [t for t, side, _ in seen if side == "b" and t > start]
    assert answered and start + RETRY_DELAY <= answered[0] <= start + RETRY_DELAY + 0.01
    # The gateway's ExchangeSent for it says when it went, not when it was made.
    sent = [e.time for e in p.of("b", ExchangeSent) if e.message.exchange == "IKE_AUTH"]
    assert sorted(sent) == sent and sent[-2] == answered[0], sent
    p.advance(5)
    assert not p.of("a", ChildSaInstalled) and not p.of("b", ChildSaInstalled)
    (failed,) = p.of("b", NegotiationFailed)
    assert failed.notify == "AUTHENTICATION_FAILED"
    assert not p.a.sas and not p.b.sas


def test_the_right_password_is_not_delayed():
    p = eap_pair()
    seen = _watch(p)
    p.a.initiate("tun", p.now)
    p.advance(0.5)
    assert p.of("a", ChildSaInstalled) and p.of("b", ChildSaInstalled)
    assert {t for t, _, _ in seen} == {seen[0][0]}
