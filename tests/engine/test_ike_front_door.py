"""The IKE_SA_INIT front door under spoofed and hostile input (issue 9 items
4-5, issue 15 items 1, 2, 7): size limits, SPIi 0, per-source and global
half-open limits that hold when cookies are echoed, cookie secret rotation,
capped descriptions of hostile offers, quiet half-open timeouts, bounded
fragment buffers for unauthenticated SAs."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest

from engine.crypto.ke import KeyExchange
from engine.events import ExchangeSent, IkeState, NegotiationFailed
from engine.ike import proposals as props
from engine.policy.proposals import parse_proposal
from engine.wire.constants import FLAG_INITIATOR, ExchangeType, NotifyType
from engine.wire.message import decode_message, encode_message
from engine.wire.payloads import KePayload, NoncePayload, NotifyPayload, SaPayload

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy

ZERO = b"\0" * 8
MAX_LINE = 2000


def responder(**engine):
    """Endpoint b at RIGHT accepting anyone in 192.0.2.0/24 (the spoofed sources)."""
    a = connection()
    b = mirror(a, remote_addrs=("192.0.2.0/24",))
    pol_a = policy(a, address=LEFT)
    pol_b = policy(b, address=RIGHT)
    pol_b = dataclasses.replace(pol_b, engine=dataclasses.replace(pol_b.engine, **engine))
    return Pair(pol_a, pol_b)


def init_request(spi_i: bytes, *, cookie: bytes | None = None, offers=None, nonce: bytes | None = None) -> bytes:
    offered = offers if offers is not None else props.to_wire(connection().proposals, b"")
    payloads: list = [NotifyPayload(NotifyType.COOKIE, data=cookie)] if cookie is not None else []
    payloads += [SaPayload(tuple(offered)), KePayload(31, KeyExchange(31).public_bytes()),
                 NoncePayload(nonce or os.urandom(32))]
    return encode_message(ExchangeType.IKE_SA_INIT, 0, spi_i, ZERO, FLAG_INITIATOR, payloads)


def send(p: Pair, data: bytes, src: str) -> None:
    p.b.receive_datagram(data, (RIGHT, 500), (src, 500), p.now)


def answer(p: Pair) -> list:
    out = p.b.datagrams_to_send()
    return [decode_message(d.data) for d in out]


def half_open(p: Pair) -> int:
    return sum(1 for sa in p.b.sas if sa.state == IkeState.CONNECTING)


def test_spi_i_zero_is_refused():
    p = responder()
    send(p, init_request(ZERO), "192.0.2.9")
    assert not p.b.sas and not p.b.datagrams_to_send()
    assert p.b.stats["invalid_spi"] == 1


def test_datagrams_over_max_packet_are_dropped_unread():
    p = responder()
    big = init_request(b"\x01" * 8, nonce=os.urandom(256))
    big += b"\0" * (10_001 - len(big))
    send(p, big, "192.0.2.9")
    assert p.b.stats["oversize"] == 1 and not p.b.sas and not p.b.datagrams_to_send()
    send(p, init_request(b"\x02" * 8), "192.0.2.9")
    assert half_open(p) == 1


def test_max_packet_is_configurable():
    p = responder(max_packet=1280)
    data = init_request(b"\x01" * 8, nonce=os.urandom(256))
    assert len(data) < 1280
    send(p, data + bytes(1281 - len(data)), "192.0.2.9")
    assert p.b.stats["oversize"] == 1


def test_a_hostile_offer_is_described_capped(caplog):
    """255 proposals nobody accepts: one short log line, a capped event, a small answer."""
    bad = parse_proposal("aes128gcm16-prfsha1-modp1024", "ike")
    offers = [dataclasses.replace(w, number=n) for n in range(1, 256) for w in props.to_wire([bad], b"")]
    p = responder()
    with caplog.at_level(logging.DEBUG, logger="engine"):
        send(p, init_request(b"\x03" * 8, offers=offers), "192.0.2.9")
    (reply,) = answer(p)
    assert [type(x).__name__ for x in reply.payloads] == ["NotifyPayload"]
    assert reply.payloads[0].type == NotifyType.NO_PROPOSAL_CHOSEN
    assert caplog.records and max(len(r.getMessage()) for r in caplog.records) < MAX_LINE
    assert any("and 247 more" in r.getMessage() for r in caplog.records)
    failed = [e for e in p.b._events if isinstance(e, NegotiationFailed)]
    assert len(failed) == 1 and len(failed[0].remote_proposals) == 9
    assert failed[0].remote_proposals[-1] == "and 247 more"
    assert len(failed[0].reason) < MAX_LINE
    assert not p.b.sas


def test_a_flood_of_hostile_offers_makes_few_warnings(caplog):
    bad = parse_proposal("aes128-sha1-modp1024", "ike")
    offers = props.to_wire([bad], b"")
    p = responder()
    with caplog.at_level(logging.WARNING, logger="engine"):
        for n in range(200):
            send(p, init_request((n + 1).to_bytes(8, "big"), offers=offers), "192.0.2.9")
    assert 1 <= len(caplog.records) <= 25
    assert p.b.stats["warnings_suppressed"] == 200 - len(caplog.records)
    assert p.b.stats["no_proposal_chosen"] == 200


def echo_cookie(p: Pair, spi: bytes, src: str, nonce: bytes) -> None:
    """An attacker that owns ``src``: asks, reads the COOKIE, asks again with it."""
    send(p, init_request(spi, nonce=nonce), src)
    replies = answer(p)
    first = replies[0].payloads[0] if replies else None
    if isinstance(first, NotifyPayload) and first.type == NotifyType.COOKIE:
        cookie = first.data
        send(p, init_request(spi, cookie=cookie, nonce=nonce), src)
        answer(p)


def test_echoed_cookies_do_not_lift_the_per_source_limit():
    p = responder(half_open_threshold=0)
    for n in range(50):
        echo_cookie(p, (n + 1).to_bytes(8, "big"), "192.0.2.77", os.urandom(32))
    assert half_open(p) == p.b.policy.engine.block_threshold == 5
    assert p.b.stats["blocked"] == 45 and p.b.stats["cookies_sent"] == 5
    # a legitimate peer elsewhere still gets in (after its own cookie round)
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert any(sa.state == IkeState.ESTABLISHED for sa in p.a.sas)


def test_the_global_half_open_limit_holds_and_timeouts_are_quiet(caplog):
    p = responder(half_open_threshold=10**6, init_limit_half_open=20)
    with caplog.at_level(logging.DEBUG, logger="engine"):
        for n in range(100):
            send(p, init_request((n + 1).to_bytes(8, "big")), f"192.0.2.{n + 10}")
        assert half_open(p) == 20 and p.b.stats["half_open_refused"] == 80
        p.advance(31)
    assert half_open(p) == 0 and p.b.stats["half_open_timeouts"] == 20
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_cookies_survive_one_secret_rotation_not_two():
    p = responder(half_open_threshold=0)
    nonce, spi, src = os.urandom(32), b"\x05" * 8, "192.0.2.5"
    send(p, init_request(spi, nonce=nonce), src)
    cookie = answer(p)[0].payloads[0].data
    tampered = cookie[:-1] + bytes([cookie[-1] ^ 1])
    send(p, init_request(spi, cookie=tampered, nonce=nonce), src)
    assert answer(p)[0].payloads[0].type == NotifyType.COOKIE  # refused: another cookie
    p.now += 70  # one rotation later: still good
    send(p, init_request(spi, cookie=cookie, nonce=nonce), src)
    assert half_open(p) == 1
    answer(p)
    spi2 = b"\x06" * 8
    send(p, init_request(spi2, nonce=nonce), src)
    cookie2 = answer(p)[0].payloads[0].data
    p.now += 150  # two rotations later: refused
    send(p, init_request(spi2, cookie=cookie2, nonce=nonce), src)
    assert answer(p)[0].payloads[0].type == NotifyType.COOKIE
    assert half_open(p) == 1


def test_fragments_of_an_unauthenticated_sa_are_bounded_by_max_packet():
    """The peer did IKE_SA_INIT (so it holds keys) but sends an IKE_AUTH larger than
    max_packet in fragments: the responder never holds more than max_packet and drops it."""
    subnets = ",".join(f"198.51.{n}.0/24" for n in range(120))
    a = connection(children=[child(local_ts=subnets)])
    b = mirror(a)
    pol_b = policy(b, address=RIGHT)
    pol_b = dataclasses.replace(pol_b, engine=dataclasses.replace(pol_b.engine, max_packet=1280))
    p = Pair(policy(a, address=LEFT), pol_b)
    p.a.fragment_size = 400
    held = []

    def watch(side, d):
        for sa in p.b.sas:
            held.append(sum(r.size() for r in sa.reassembly.values()))
        return True

    p.filter = watch
    p.a.initiate("tun", p.now)
    p.advance(1)
    sent = [e.message for e in p.events["a"] if isinstance(e, ExchangeSent) and e.message.exchange == "IKE_AUTH"]
    assert sent and sent[0].fragments > 3 and sent[0].length > 1280
    assert max(held) <= 1280
    assert p.b.stats["malformed"] >= 1
    assert not any(sa.state == IkeState.ESTABLISHED for sa in p.b.sas)


@pytest.mark.parametrize("n", [1, 3])
def test_retransmitted_ike_sa_init_is_answered_from_cache(n):
    p = responder()
    data = init_request(b"\x07" * 8)
    for _ in range(n):
        send(p, data, "192.0.2.7")
    replies = p.b.datagrams_to_send()
    assert len(replies) == n and len({r.data for r in replies}) == 1
    assert half_open(p) == 1


def test_no_new_ike_sa_while_shutting_down():
    """Between shutdown (our Deletes sent) and the sockets closing, an IKE_SA_INIT would
    start an SA the runtime destroys moments later without a Delete: it is ignored instead,
    and the peer retries against whatever answers next."""
    p = responder()
    send(p, init_request(b"\x01" * 8), "192.0.2.9")
    assert half_open(p) == 1
    answer(p)
    p.b.shutdown(p.now)
    assert half_open(p) == 0
    send(p, init_request(b"\x02" * 8), "192.0.2.9")
    assert not p.b.sas and not p.b.datagrams_to_send()
    assert p.b.stats["refused_shutting_down"] == 1
