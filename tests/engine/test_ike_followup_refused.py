"""A CHILD SA's IKE_FOLLOWUP_KE rounds (RFC 9370 §2.2.4) whose last answer we cannot use: the
peer made its SA when it sent that answer, so, as for the other answers we refuse after the
peer made its SA (charon's delete_failed_sa, also in process_i_multi_ke), a Delete of it
follows. Sans-IO pairs (tests/engine/ike_pair.py)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.events import IkeState, NegotiationFailed
from engine.wire.constants import ExchangeType
from engine.wire.payloads import KePayload

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy
from tests.engine.test_ike_edges import rewrite_answers

PQ = "aes256gcm16-x25519-ke1_mlkem768"


def make(conn) -> Pair:
    p = Pair(policy(conn, address=LEFT), policy(mirror(conn), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def live(p: Pair, side: str):
    return [sa for sa in p.ep(side).sas if sa.state != IkeState.DESTROYED]


def bad_ke(payloads):
    return [dataclasses.replace(x, data=x.data[:-1]) if isinstance(x, KePayload) else x for x in payloads]


@pytest.mark.parametrize("how", ["rekey", "create"])
def test_an_unusable_last_followup_answer_is_followed_by_a_delete_of_the_peer_sa(how):
    kids = [child(esp=(PQ,))]
    if how == "create":
        kids.append(child("second", local_ts="198.51.100.2/32", remote_ts="198.51.100.130/32", esp=(PQ,)))
    p = make(connection(children=kids))
    before = {c.spi_in for c in live(p, "b")[0].children.values()}
    p.filter = rewrite_answers(p, "b", ExchangeType.IKE_FOLLOWUP_KE, bad_ke)
    if how == "rekey":
        p.a.rekey("tun", p.now)
    else:
        sa = live(p, "a")[0]
        from engine.ike.exchanges.create_child import CreateChild
        sa.start(CreateChild(sa, live(p, "a")[0].conn.children[1]), p.now)
        p.a.scheduler.touch(sa)
    p.advance(1)
    assert [e.exchange for e in p.of("a", NegotiationFailed)] == ["CREATE_CHILD_SA"]
    made = {c.spi_in for c in live(p, "b")[0].children.values()} - before
    assert not made, "the peer's new SA stays installed"
    p.advance(60)
    pairs_a = {(c.spi_in, c.spi_out) for c in live(p, "a")[0].children.values()}
    pairs_b = {(c.spi_out, c.spi_in) for c in live(p, "b")[0].children.values()}
    assert pairs_a == pairs_b
