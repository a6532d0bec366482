"""INVALID_SYNTAX on an authenticated IKE SA is fatal in both peers (RFC 7296 §2.21.3: "If a
peer parsing a request notices that it is badly formatted (after it has passed the message
authentication code checks and window checks) and it returns an INVALID_SYNTAX notification,
then this error notification is considered fatal in both peers, meaning that the IKE SA is
deleted without needing an explicit Delete payload"). charon: task_manager_v2.c
send_invalid_syntax (DESTROY_ME after answering) and process_response (an INVALID_SYNTAX
answer to CREATE_CHILD_SA or INFORMATIONAL destroys the IKE SA). Keeping ours after either
left a black hole until DPD: the peer had already dropped its half.

UNSUPPORTED_CRITICAL_PAYLOAD is not fatal: the SA keeps working (issue 15, item 4;
test_ike_message_ids.py)."""

from __future__ import annotations

import pytest

from engine.events import ChildSaDeleted, IkeState, NegotiationFailed
from engine.wire.constants import ExchangeType, NotifyType, PayloadType
from engine.wire.message import decode_message, decode_payloads
from engine.wire.payloads import NotifyPayload, UnknownPayload

from tests.engine.ike_pair import LEFT, RIGHT, Pair, live
from tests.engine.ike_pair import started as make
from tests.engine.test_ike_edges import request, strip

TRUNCATED_NOTIFY = [UnknownPayload(PayloadType.NOTIFY, b"\x00")]  # malformed inside SK


def drain(p: Pair, side: str) -> list:
    p.collect()
    return p.events[side]


@pytest.mark.parametrize("payloads, exchange", [
    (TRUNCATED_NOTIFY, ExchangeType.INFORMATIONAL),  # cannot be decoded
    (TRUNCATED_NOTIFY, ExchangeType.CREATE_CHILD_SA),
    ([], ExchangeType.CREATE_CHILD_SA),  # no SA, no Nonce
], ids=["undecodable-informational", "undecodable-create-child", "create-child-without-sa"])
def test_our_invalid_syntax_answer_ends_our_ike_sa(payloads, exchange):
    p = make()
    (b_sa,) = live(p, "b")
    (sa,) = live(p, "a")
    datagrams = sa.encode(exchange, sa.mid_out, payloads, response=False)  # the same request, sent again below
    (answer,) = request(p, "a", payloads, exchange)
    assert answer == [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    assert b_sa.state == IkeState.DESTROYED
    events = drain(p, "b")
    assert any(isinstance(e, ChildSaDeleted) for e in events), "the CHILD SAs go with it"
    failed = [e for e in events if isinstance(e, NegotiationFailed)]
    assert failed and failed[-1].notify == "INVALID_SYNTAX"
    # A retransmission of the bad request still gets the very same answer (kept a while).
    p.b.receive_datagram(strip(datagrams[0]), (RIGHT, 4500), (LEFT, 4500), p.now)
    (again,) = p.b.datagrams_to_send()
    first, inner = sa.sk.open(decode_message(strip(again.data)))
    assert decode_payloads(first, inner) == [NotifyPayload(NotifyType.INVALID_SYNTAX)]


def test_an_unsupported_critical_payload_is_not_fatal():
    p = make()
    (answer,) = request(p, "a", [UnknownPayload(200, b"new", critical=True)])
    assert answer == [NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, data=bytes([200]))]
    p.advance(5)
    assert live(p, "a") and live(p, "b")


def start(p: Pair, sa, how: str) -> None:
    """Our request of kind ``how`` on its way (not delivered: the peer answers by hand)."""
    ex = p.a.exchanges
    (c,) = sa.children.values()
    sa.start({"child-rekey": lambda: ex.child_rekey(sa, c), "ike-rekey": lambda: ex.ike_rekey(sa),
              "create-child": lambda: ex.create_child(sa, sa.conn.children[0]),
              "dpd": lambda: ex.dpd(sa), "child-delete": lambda: ex.child_delete(sa, c, "test")}[how](), p.now)
    assert len(p.a.datagrams_to_send()) == 1


@pytest.mark.parametrize("how, exchange", [
    ("child-rekey", ExchangeType.CREATE_CHILD_SA), ("ike-rekey", ExchangeType.CREATE_CHILD_SA),
    ("create-child", ExchangeType.CREATE_CHILD_SA), ("dpd", ExchangeType.INFORMATIONAL),
    ("child-delete", ExchangeType.INFORMATIONAL)])
def test_an_invalid_syntax_answer_from_the_peer_ends_our_ike_sa(how, exchange):
    """Our request, the peer answers INVALID_SYNTAX (it could not parse it and dropped its IKE
    SA): ours goes too, at once, without a Delete."""
    p = make()
    (a_sa,) = live(p, "a")
    (b_sa,) = live(p, "b")
    p.collect()
    start(p, a_sa, how)
    out = a_sa.outstanding
    assert out.exchange == exchange
    (reply,) = b_sa.encode(exchange, out.mid, [NotifyPayload(NotifyType.INVALID_SYNTAX)], response=True)
    p.a.receive_datagram(strip(reply), (LEFT, 4500), (RIGHT, 4500), p.now)
    assert a_sa.state == IkeState.DESTROYED
    assert not live(p, "a")
    assert not p.a.datagrams_to_send(), "no Delete: the peer's half is gone already"
    events = drain(p, "a")
    failed = [e for e in events if isinstance(e, NegotiationFailed)]
    assert failed and failed[-1].notify == "INVALID_SYNTAX" and failed[-1].sent_by_peer
    assert any(isinstance(e, ChildSaDeleted) for e in events)


def test_an_exchange_type_we_do_not_know_is_refused_without_ending_the_sa():
    """As charon (message.c: no rules for the type, NOT_SUPPORTED): UNSUPPORTED_CRITICAL_PAYLOAD,
    not the fatal INVALID_SYNTAX, so a peer's extension does not end the IKE SA."""
    p = make()
    (answer,) = request(p, "a", [], 99)
    assert answer == [NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, data=b"\x00")]
    p.advance(5)
    assert live(p, "a") and live(p, "b")
    assert p.a.rekey("tun", p.now) == 1
    p.advance(2)
    assert [sa.state for sa in live(p, "a") + live(p, "b")] == [IkeState.ESTABLISHED] * 2


def test_the_answer_is_kept_for_the_address_the_bad_request_came_from():
    """A request that cannot be decoded does not move the IKE SA to the address it came from
    (the peer behind a NAT that changed its mapping): its retransmission from there still gets
    the kept INVALID_SYNTAX answer."""
    p = make()
    (sa,) = live(p, "a")
    moved = ("198.51.100.77", 31000)
    datagrams = sa.encode(ExchangeType.INFORMATIONAL, sa.mid_out, TRUNCATED_NOTIFY, response=False)
    for _ in range(2):
        p.b.receive_datagram(strip(datagrams[0]), (RIGHT, 4500), moved, p.now)
        (answer,) = p.b.datagrams_to_send()
        assert answer.remote == moved
        first, inner = sa.sk.open(decode_message(strip(answer.data)))
        assert decode_payloads(first, inner) == [NotifyPayload(NotifyType.INVALID_SYNTAX)]
