"""Message IDs when an authenticated request cannot be decoded (issue 15,
item 4): the error notify is that exchange's response (RFC 7296 §2.21.2,
§3.2), so the expected Message ID moves on, a retransmission of the bad
request gets the same answer, and the IKE SA keeps working (but after INVALID_SYNTAX, which is
fatal on both ends: test_invalid_syntax.py)."""

from __future__ import annotations

import pytest

from engine.events import IkeState
from engine.wire.constants import NON_ESP_MARKER, ExchangeType, NotifyType, PayloadType
from engine.wire.message import decode_message, decode_payloads
from engine.wire.payloads import NotifyPayload, UnknownPayload

from tests.engine.ike_pair import LEFT, RIGHT, Pair, connection, mirror, policy

CRITICAL_UNKNOWN = [UnknownPayload(200, b"new", critical=True)]
TRUNCATED_NOTIFY = [UnknownPayload(PayloadType.NOTIFY, b"\x00")]  # a Notify of one byte: malformed inside SK


def make() -> Pair:
    a = connection()
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def strip(data: bytes) -> bytes:
    return data[len(NON_ESP_MARKER):] if data.startswith(NON_ESP_MARKER) else data


def request_from_a(p: Pair, payloads: list) -> tuple[list[bytes], list[bytes]]:
    """A hand-made INFORMATIONAL request from a with its next Message ID, encrypted
    with its keys, delivered to b; returns (the request datagrams, b's answer)."""
    sa = p.a.sas[0]
    mid = sa.mid_out
    sa.mid_out += 1  # a moves on as if it had had its answer
    datagrams = sa.encode(ExchangeType.INFORMATIONAL, mid, payloads, response=False)
    for d in datagrams:
        p.b.receive_datagram(d, (RIGHT, 4500), (LEFT, 4500), p.now)
    return datagrams, [strip(x.data) for x in p.b.datagrams_to_send()]


def answer_payloads(p: Pair, answer: bytes) -> list:
    message = decode_message(answer)
    first, inner = p.a.sas[0].sk.open(message)
    return decode_payloads(first, inner)


@pytest.mark.parametrize("bad, notify, data", [
    (CRITICAL_UNKNOWN, NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, bytes([200])),
    # An undecodable request (TRUNCATED_NOTIFY) is answered with INVALID_SYNTAX, which is fatal
    # to the IKE SA on both ends (RFC 7296 §2.21.3): test_invalid_syntax.py.
])
def test_a_rejected_request_is_answered_and_the_sa_keeps_working(bad, notify, data):
    p = make()
    b_sa = p.b.sas[0]
    mid_before = b_sa.mid_in
    datagrams, answers = request_from_a(p, bad)
    assert len(answers) == 1
    (n,) = answer_payloads(p, answers[0])
    assert isinstance(n, NotifyPayload) and n.type == notify and n.data == data
    # the error answer is that exchange's response: the next Message ID is expected now
    assert b_sa.mid_in == mid_before + 1
    # a retransmission of the bad request gets the very same answer
    p.b.receive_datagram(datagrams[0], (RIGHT, 4500), (LEFT, 4500), p.now)
    assert [strip(x.data) for x in p.b.datagrams_to_send()] == answers
    assert p.b.stats["retransmitted_request"] == 1
    # and the IKE SA keeps working both ways
    for side in ("a", "b"):
        p.ep(side).rekey("tun", p.now)
        p.advance(2)
    assert all(sa.state == IkeState.ESTABLISHED for sa in p.a.sas + p.b.sas)
    assert len(p.a.sas[0].children) == 1 and len(p.b.sas[0].children) == 1
    assert p.b.stats.get("invalid_mid", 0) == 0


def test_a_request_that_fails_integrity_changes_nothing():
    p = make()
    b_sa = p.b.sas[0]
    mid_before = b_sa.mid_in
    sa = p.a.sas[0]
    (d,) = sa.encode(ExchangeType.INFORMATIONAL, sa.mid_out, [], response=False)
    p.b.receive_datagram(d[:-1] + bytes([d[-1] ^ 1]), (RIGHT, 4500), (LEFT, 4500), p.now)
    assert not p.b.datagrams_to_send() and b_sa.mid_in == mid_before
    assert p.b.stats["integrity"] == 1
