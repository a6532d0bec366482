"""Rekey collisions (RFC 7296 §2.8.1, §2.8.2) with lost and late datagrams, on
the two-endpoint bench. Each case once per side and over several seeds: the
nonces, and so the winner of each collision, change with the seed."""

from __future__ import annotations

import pytest

from engine.events import ChildState, ExchangeSent, IkeState
from engine.ike.exchanges import child_rekey
from engine.ike.exchanges.create_child import CreateChild
from engine.ike.registry import KEPT_ANSWERS_MAX, KeptAnswer, Registry
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


def sent_notifies(p: Pair, side: str) -> list[str]:
    return [n for e in p.of(side, ExchangeSent) for n in e.message.notifies]


@pytest.mark.parametrize("seed", range(1, 5))
def test_peer_rekeys_the_sa_our_unanswered_rekey_created(seed):
    """The soak of 2026-12-06 (charon): a's rekey is answered but the answer is lost;
    before a's retransmission b rekeys the SA that answer created. a cannot know
    its SPI yet: CHILD_SA_NOT_FOUND would make charon drop the SA silently while
    a installs it when the answer comes, an orphan. a must say TEMPORARY_FAILURE."""
    p = make(seed)
    first = next(iter(live(p, "a")[0].children.values()))
    p.filter = drop_first("b", ExchangeType.CREATE_CHILD_SA, True)
    p.a.rekey("tun", p.now, unique_id=first.unique_id)
    p.advance(0.1)
    sb = live(p, "b")[0]
    new_b = [c for c in sb.children.values() if c.state == ChildState.INSTALLED]
    assert len(new_b) == 1 and new_b[0].rekeyed_from is not None, sb.children
    p.b.rekey("tun", p.now, unique_id=new_b[0].unique_id)
    p.advance(400)
    assert "CHILD_SA_NOT_FOUND" not in sent_notifies(p, "a")
    assert_agree(p)


@pytest.mark.parametrize("seed", range(1, 5))
def test_rekey_of_an_sa_the_peer_lost_beside_another_pair_for_the_child(seed):
    """The soak of 2026-12-06 (charon): a holds two pairs for one configured child,
    one of them unknown to b. a's rekey of that one gets CHILD_SA_NOT_FOUND: a
    drops it and must not create a new pair, since the other one still carries
    the child (else both ends keep two pairs for ever)."""
    p = make(seed)
    sa = live(p, "a")[0]
    orphan = next(iter(sa.children.values()))
    sa.start(CreateChild(sa, orphan.config), p.now)
    p.a.scheduler.touch(sa)
    p.advance(1)
    assert len(pairs(p, "a")) == 2 and len(pairs(p, "b")) == 2
    sb = live(p, "b")[0]
    sb.remove_child(sb.child_by_spi_out(orphan.spi_in), p.now, "lost by the peer (test)")
    p.a.rekey("tun", p.now, unique_id=orphan.unique_id)
    p.advance(400)
    assert_agree(p)


def charon_598_dead_ends(monkeypatch) -> tuple[list[tuple[str, str]], list[str]]:
    """Steps charon 5.9.8 cannot complete, recorded as they happen on either end
    (and the inputs that met a collided rekey, to show the case came up).

    charon's child_rekey.c, when its rekey collided with the peer's rekey of the
    same SA (collision = the peer's rekey, which it answered) and its own answer
    carries no SA (TEMPORARY_FAILURE, CHILD_SA_NOT_FOUND ...): on TEMPORARY_FAILURE
    it schedules a retry and sets the old SA back to INSTALLED, so the peer's
    DELETE of the old SA no longer installs the outbound half of the SA the peer's
    rekey created (child_delete.c installs it only for a REKEYED SA); on
    CHILD_SA_NOT_FOUND it drops the old SA and creates a new CHILD SA. Either way
    traffic is lost until a later rekey. Our ChildRekey is in SENT_COLLIDED
    exactly there."""
    seen: list[tuple[str, str]] = []
    collided: list[str] = []
    fire = child_rekey.ChildRekey.fire

    def recording(self, inp, now, **data):
        if self.state == child_rekey.S.SENT_COLLIDED:
            collided.append(inp.name)
            if inp in child_rekey._FAILED:
                seen.append((self.state.name, inp.name))
        return fire(self, inp, now, **data)

    monkeypatch.setattr(child_rekey.ChildRekey, "fire", recording)
    return seen, collided


@pytest.mark.parametrize("seed", range(1, 5))
@pytest.mark.parametrize("lossy", ["a", "b"])
def test_peer_rekey_of_an_sa_whose_delete_is_lost(seed, lossy, monkeypatch):
    """The 60 s soak (charon 5.9.8): both rekey X. The peer answers ours while its own
    is in flight (a collision on its side), but its request reaches us only after our
    rekey finished: X is replaced here and our DELETE of X is lost (twice). Answering the
    peer's rekey of X before the peer has our DELETE is a dead end for charon
    (charon_598_dead_ends); once it has the DELETE, any answer is fine."""
    dead_ends, collided = charon_598_dead_ends(monkeypatch)
    p = make(seed)
    quiet = "b" if lossy == "a" else "a"
    drop_peer_request = drop_first(quiet, ExchangeType.CREATE_CHILD_SA, False)
    drop_our_delete = drop_first(lossy, ExchangeType.INFORMATIONAL, False, count=2)
    p.filter = lambda s, d: drop_peer_request(s, d) and drop_our_delete(s, d)
    p.ep(lossy).rekey("tun", p.now)
    p.ep(quiet).rekey("tun", p.now)
    p.advance(400)
    assert collided, "the peer's rekey never met ours"
    assert dead_ends == []
    assert_agree(p)


@pytest.mark.parametrize("seed", range(1, 9))
@pytest.mark.parametrize("lossy", ["a", "b"])
def test_ike_rekey_collision_with_a_lost_response_leaves_no_redundant_ike_sa(seed, lossy):
    """The 60 s soak (charon 5.9.8): both rekey the IKE SA; the winner answers the
    loser's rekey, but that answer is lost, and the winner deletes the old IKE SA.
    If the loser takes that DELETE before its retransmission brings the answer, the
    old SA and its keys are gone, and the winner keeps the IKE SA made for the loser
    until a timeout (ours: twice the retransmission budget, 330 s here; charon: 30 s,
    then a DELETE the loser cannot read, retransmitted for its whole budget; the
    soak's final check sees two IKE SAs). Both ends must agree well before that."""
    p = make(seed)
    p.filter = drop_first(lossy, ExchangeType.CREATE_CHILD_SA, True)
    p.a.rekey("tun", p.now, ike=True)
    p.b.rekey("tun", p.now, ike=True)
    p.advance(60)
    assert_agree(p)


def _ike_rekey_winner(seed: int) -> str:
    """The side that wins both ends' IKE rekey collision on a clean link (it deletes the old SA)."""
    p = make(seed)
    old = (live(p, "a")[0].spi_i, live(p, "a")[0].spi_r)
    first: list[str] = []

    def watch(side, d):
        h = header(d.data) if d.data != b"\xff" else None
        if h is not None and h.exchange == ExchangeType.INFORMATIONAL and not h.response \
                and (h.spi_i, h.spi_r) == old and not first:
            first.append(side)
        return True

    p.filter = watch
    p.a.rekey("tun", p.now, ike=True)
    p.b.rekey("tun", p.now, ike=True)
    p.advance(10)
    return first[0]


@pytest.mark.parametrize("seed", range(1, 5))
def test_ike_rekey_collision_the_peer_never_answers_ours(seed):
    """As above, but the winner never answers the loser's rekey on the old IKE SA (every
    answer lost, or a peer that drops it): the loser holds the winner's DELETE only a few
    times, then answers it and takes the winner's new IKE SA, rather than waiting until its
    own retransmissions run out and losing the old IKE SA with all its CHILD SAs."""
    winner = _ike_rekey_winner(seed)
    p = make(seed)
    old = (live(p, "a")[0].spi_i, live(p, "a")[0].spi_r)

    def drop_winners_answers_on_old(side, d):
        h = header(d.data) if d.data != b"\xff" else None
        return not (side == winner and h is not None and h.response and (h.spi_i, h.spi_r) == old
                    and h.exchange == ExchangeType.CREATE_CHILD_SA)

    p.filter = drop_winners_answers_on_old
    p.a.rekey("tun", p.now, ike=True)
    p.b.rekey("tun", p.now, ike=True)
    p.advance(400)
    assert_agree(p)


# ------------------------------------------------------------------ a lost answer to an IKE SA DELETE
@pytest.mark.parametrize("side", ["a", "b"])
def test_lost_answer_to_ike_delete_is_replayed(side):
    """The answer to a DELETE of the IKE SA is lost. The deleting end retransmits;
    the other end already destroyed the SA but replays its answer (RFC 7296 §2.1),
    so the deleting end finishes at its first retransmission instead of retrying
    for its whole budget into an SA nobody holds."""
    p = make(1)
    assert live(p, "a") and live(p, "b")
    other = "b" if side == "a" else "a"
    p.filter = drop_first(other, ExchangeType.INFORMATIONAL, True)
    p.ep(side).terminate("tun", p.now)
    p.advance(0.5)
    assert live(p, side) and not live(p, other)  # the answer was lost
    p.advance(4.5)  # past the first retransmission (retransmit_timeout 4 s)
    assert not live(p, side)
    assert p.ep(other).stats["retransmitted_request"] == 1
    assert p.ep(other).stats.get("invalid_spi_sent", 0) == 0


def test_a_replayed_delete_answer_needs_the_same_spis_message_id_and_peer():
    """The kept answer goes only to an exact retransmission: other Message IDs, or the
    same header from another address, get what any unknown SPI gets."""
    p = make(1)
    p.filter = drop_first("b", ExchangeType.INFORMATIONAL, True)
    sent = []
    inner = p.filter
    p.filter = lambda s, d: (sent.append((s, d)) or True) and inner(s, d)
    p.a.terminate("tun", p.now)
    p.advance(0.5)
    (req,) = [d for s, d in sent if s == "a" and not header(d.data).response]
    data = req.data[4:] if req.data.startswith(NON_ESP_MARKER) else req.data
    h = header(req.data)
    assert not live(p, "b")
    stranger = ("198.51.100.77", req.local[1])
    p.b.receive_datagram(data, req.remote, stranger, p.now)
    other_mid = bytearray(data)
    other_mid[20:24] = (h.mid + 1).to_bytes(4, "big")
    p.b.receive_datagram(bytes(other_mid), req.remote, req.local, p.now)
    assert p.b.stats.get("retransmitted_request", 0) == 0
    assert p.b.stats["invalid_spi_sent"] == 2
    p.b.datagrams_to_send()
    for _ in range(20):  # bounded: a captured request replays the answer a few times only
        p.b.receive_datagram(data, req.remote, req.local, p.now)
    assert 1 <= p.b.stats["retransmitted_request"] <= 8


def test_kept_answers_are_bounded_in_number_and_time():
    r = Registry(lambda n: b"\1" * n)
    for i in range(KEPT_ANSWERS_MAX + 10):
        r.keep_answer(i.to_bytes(8, "big"), KeptAnswer(b"i" * 8, b"r" * 8, "192.0.2.1", 3, [b"x"], 100.0 + i), 0.0)
    assert r.kept_answer((0).to_bytes(8, "big"), 0.0) is None  # the oldest went first
    assert r.kept_answer((KEPT_ANSWERS_MAX + 9).to_bytes(8, "big"), 0.0) is not None
    assert r.kept_answer((20).to_bytes(8, "big"), 120.5) is None  # past its time
    assert len(r._kept) == KEPT_ANSWERS_MAX + 10 - 21


def test_a_request_on_the_ike_sa_our_lost_rekey_answer_made_hurries_our_retransmission():
    """The soak of 2026-12-06 (charon): a rekeys the IKE SA, b answers and at once rekeys a CHILD SA
    on the new IKE SA (charon 5.9.8 does); a's answer is lost. Before, a answered b's requests
    INVALID_IKE_SPI (unprotected: charon ignores it) and waited for its own growing timeouts while
    b's retransmissions ran out (charon then tore down the IKE SA and every CHILD SA). Now b's
    request makes a send its rekey request again at once (one extra copy per HURRY_GAP at most,
    its schedule and tries untouched), so b's request finds the new IKE SA."""
    p = make(3)
    p.filter = drop_first("b", ExchangeType.CREATE_CHILD_SA, True)
    p.a.rekey("tun", p.now, ike=True)
    p.deliver()  # a's request reaches b; b's answer is lost
    assert len(live(p, "b")) == 2 and len(live(p, "a")) == 1
    [old_a] = live(p, "a")
    first = old_a.outstanding.next_at
    p.now += 0.3
    new_b = next(sa for sa in live(p, "b") if sa.children)  # the CHILD SAs moved to the new IKE SA
    kid = next(iter(new_b.children.values()))
    p.b.rekey_child_spi(int.from_bytes(kid.spi_in, "big"), p.now)
    p.collect()
    b_requests = [d for side, d in p.wire if side == "b" and not header(d.data).response]
    assert b_requests and header(b_requests[0].data).spi_i == old_a.outstanding.initiator.spi
    p.filter = None
    sent_before = len([e for e in p.of("a", ExchangeSent) if e.message.exchange == "CREATE_CHILD_SA"])
    p.deliver()  # b's request reaches a: a sends its rekey again now, b replays its answer
    sent = [e for e in p.of("a", ExchangeSent) if e.message.exchange == "CREATE_CHILD_SA"]
    assert len(sent) == sent_before + 1 and p.now < first, "a waited for its timeout"
    assert p.a.stats["retransmits_hurried"] == 1 and p.a.stats.get("invalid_spi_sent", 0) == 0
    p.advance(60)
    assert_agree(p)
    assert p.a.stats["retransmits_hurried"] <= 2
