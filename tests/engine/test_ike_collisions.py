"""Rekey collisions (RFC 7296 §2.8.1, §2.8.2) with lost and late datagrams, on
the two-endpoint bench. Each case once per side and over several seeds: the
nonces, and so the winner of each collision, change with the seed."""

from __future__ import annotations

import pytest

from engine.events import IkeState
from engine.wire.constants import NON_ESP_MARKER, ExchangeType
from engine.wire.message import decode_header

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy


def make(seed: int, **kw) -> Pair:
    a = connection(children=[child(esp=("aes256gcm16-x25519",))], **kw)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT), seed=seed)
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def header(data: bytes):
    return decode_header(data[4:] if data.startswith(NON_ESP_MARKER) else data)


def drop_first(side: str, exchange: int, response: bool, count: int = 1):
    """A link filter dropping the first ``count`` messages of this kind sent by ``side``."""
    left = {"n": count}

    def f(s, d):
        if s != side or left["n"] == 0 or d.data == b"\xff":
            return True
        h = header(d.data)
        if h.exchange == exchange and h.response == response:
            left["n"] -= 1
            return False
        return True

    return f


def live(p: Pair, side: str):
    return [sa for sa in p.ep(side).sas if sa.state != IkeState.DESTROYED]


def pairs(p: Pair, side: str) -> set[tuple[bytes, bytes]]:
    return {(c.spi_in, c.spi_out) for sa in live(p, side) for c in sa.children.values()}


def assert_agree(p: Pair) -> None:
    ike_a = {(sa.spi_i, sa.spi_r) for sa in live(p, "a")}
    ike_b = {(sa.spi_i, sa.spi_r) for sa in live(p, "b")}
    assert ike_a == ike_b and len(ike_a) == 1, (ike_a, ike_b)
    ca, cb = pairs(p, "a"), pairs(p, "b")
    assert {(o, i) for i, o in ca} == cb, (ca, cb)
    assert len(ca) == 1, ca


@pytest.mark.parametrize("seed", range(1, 9))
@pytest.mark.parametrize("lossy", ["a", "b"])
def test_child_rekey_collision_with_a_lost_response(seed, lossy):
    """Both rekey the same CHILD SA; one answer to a CREATE_CHILD_SA is lost, so its
    initiator sees the winner's DELETE before the retransmitted answer."""
    p = make(seed)
    p.filter = drop_first(lossy, ExchangeType.CREATE_CHILD_SA, True)
    p.a.rekey("tun", p.now)
    p.b.rekey("tun", p.now)
    p.advance(400)
    assert_agree(p)


@pytest.mark.parametrize("seed", range(1, 9))
@pytest.mark.parametrize("lossy", ["a", "b"])
def test_ike_rekey_collision_with_a_lost_response(seed, lossy):
    """Both rekey the IKE SA; one answer is lost: the old IKE SA may be deleted
    before the loser learns it lost. The children must survive on both ends."""
    p = make(seed)
    p.filter = drop_first(lossy, ExchangeType.CREATE_CHILD_SA, True)
    p.a.rekey("tun", p.now, ike=True)
    p.b.rekey("tun", p.now, ike=True)
    p.advance(400)
    assert_agree(p)


@pytest.mark.parametrize("seed", range(1, 5))
@pytest.mark.parametrize("lossy", ["a", "b"])
def test_child_rekey_collision_with_a_lost_delete(seed, lossy):
    p = make(seed)
    p.filter = drop_first(lossy, ExchangeType.INFORMATIONAL, False, count=2)
    p.a.rekey("tun", p.now)
    p.b.rekey("tun", p.now)
    p.advance(400)
    assert_agree(p)


@pytest.mark.parametrize("seed", range(1, 5))
@pytest.mark.parametrize("lossy", ["a", "b"])
def test_ike_rekey_collision_with_a_lost_delete(seed, lossy):
    p = make(seed)
    p.filter = drop_first(lossy, ExchangeType.INFORMATIONAL, False, count=2)
    p.a.rekey("tun", p.now, ike=True)
    p.b.rekey("tun", p.now, ike=True)
    p.advance(400)
    assert_agree(p)
