"""IKE_FOLLOWUP_KE (RFC 9370 §2.2.4) beyond the rekeys of test_ike_intermediate.py:
a new CHILD SA made with CREATE_CHILD_SA runs the rounds too; a colliding rekey
during our rounds is answered TEMPORARY_FAILURE and both ends converge; rounds
that are refused or abandoned give back the SPI their answer reserved."""

from __future__ import annotations

import pytest

from engine.crypto.kem import mlkem_available
from engine.crypto.transforms import KeId
from engine.events import ChildSaInstalled, ChildState, ExchangeSent, IkeState, NegotiationFailed
from engine.ike import followup
from engine.wire.constants import ExchangeType

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy
from tests.engine.test_ike_collisions import drop_first

needs_mlkem = pytest.mark.skipif(not (mlkem_available(KeId.ML_KEM_768) and mlkem_available(KeId.ML_KEM_1024)),
                                 reason="cryptography without ML-KEM")

HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
ONE_KE = "aes256gcm16-x25519-ke1_mlkem768"
TWO_KE = "aes256gcm16-ecp384-ke1_mlkem768-ke2_mlkem1024"
FOLLOWUP = ExchangeType.IKE_FOLLOWUP_KE


def make(esp: str = ONE_KE, seed: int = 1, *, second: bool = True) -> Pair:
    """A hybrid IKE SA with CHILD SA 'lan' up; 'voice' (if ``second``) configured, not started."""
    kids = [child("lan", esp=(esp,))]
    if second:
        kids.append(child("voice", local_ts="198.51.100.2/32", remote_ts="198.51.100.130/32", esp=(esp,)))
    a = connection(ike=(HYBRID,), children=kids)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT), seed=seed)
    p.a.initiate("tun", p.now, child="lan")
    p.advance(1)
    assert len(p.of("a", ChildSaInstalled)) == 1 and len(p.of("b", ChildSaInstalled)) == 1
    return p


def requests(p: Pair, side: str) -> list[str]:
    return [e.message.exchange for e in p.of(side, ExchangeSent) if not e.message.response]


def live_children(p: Pair, side: str) -> list:
    return [c for sa in p.ep(side).sas if sa.state != IkeState.DESTROYED for c in sa.children.values()
            if c.state != ChildState.DELETED]


def start_with_lost_rounds(kind: str, lost: int) -> Pair:
    """a starts ``kind`` (new_child, child_rekey, ike_rekey) with multi-KE rounds whose first
    ``lost`` IKE_FOLLOWUP_KE requests are lost."""
    p = make()
    p.filter = drop_first("a", FOLLOWUP, False, count=lost)
    if kind == "new_child":
        p.a.initiate("tun", p.now, child="voice")
    else:
        p.a.rekey("tun", p.now, ike=kind == "ike_rekey")
    return p


def assert_one_pair_agreed(p: Pair) -> None:
    """Both ends hold the same single IKE SA and one CHILD SA pair with matching SPIs and keys."""
    ike_a = {(sa.spi_i, sa.spi_r) for sa in p.a.sas if sa.state == IkeState.ESTABLISHED}
    ike_b = {(sa.spi_i, sa.spi_r) for sa in p.b.sas if sa.state == IkeState.ESTABLISHED}
    assert ike_a == ike_b and len(ike_a) == 1
    [ca], [cb] = live_children(p, "a"), live_children(p, "b")
    assert (ca.spi_in, ca.spi_out) == (cb.spi_out, cb.spi_in)
    assert ca.keys.encr_out.reveal() == cb.keys.encr_in.reveal()


def assert_no_spi_leak(p: Pair) -> None:
    """Every inbound SPI still reserved belongs to a CHILD SA that exists, every reserved IKE SPI
    to an IKE SA: nothing is held for rounds that ended."""
    for side in ("a", "b"):
        reg = p.ep(side).registry
        assert reg._spis == {c.spi_in for c in live_children(p, side)}, side
        assert not reg._reserved_ike, side


# ---------------------------------------------------------------- a new CHILD SA with additional KEs
@needs_mlkem
@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize("esp", [ONE_KE, TWO_KE])
def test_new_child_sa_runs_followup_rounds_by_either_side(side, esp):
    p = make(esp)
    p.ep(side).initiate("tun", p.now, child="voice")
    p.advance(5)
    rounds = esp.count("-ke")
    sent = requests(p, side)
    assert sent.count("CREATE_CHILD_SA") == 1 and sent.count("IKE_FOLLOWUP_KE") == rounds, sent
    ia, ib = p.of("a", ChildSaInstalled), p.of("b", ChildSaInstalled)
    assert [e.child for e in ia] == ["lan", "voice"] == [e.child for e in ib]
    assert ia[1].keys.encr_out == ib[1].keys.encr_in and ia[1].keys.encr_in == ib[1].keys.encr_out
    assert ia[1].spi_in == ib[1].spi_out and ia[1].spi_out == ib[1].spi_in
    for ep in (p.a, p.b):
        [info] = ep.status(p.now)
        assert sorted(c.name for c in info.children) == ["lan", "voice"]
        assert all(c.quantum_safe for c in info.children)
    [voice_a] = [c for c in live_children(p, "a") if c.config.name == "voice"]
    assert voice_a.chosen.additional_rounds == tuple((5 + i, g) for i, g in enumerate(
        [KeId.ML_KEM_768, KeId.ML_KEM_1024][:rounds], 1)), voice_a.chosen
    assert_no_spi_leak(p)


@needs_mlkem
@pytest.mark.parametrize("side", ["a", "b"])
def test_a_narrow_second_child_sa_is_not_taken_by_a_wide_first_config(side):
    """'voice' (UDP 5555 between the same hosts) inside 'lan' (everything): the responder takes
    the config whose selectors are exactly the request's, as charon 6.1 does (found against it)."""
    kids = [child("lan", esp=(ONE_KE,)),
            child("voice", local_ts="198.51.100.1/32[udp/5555]", remote_ts="198.51.100.129/32[udp/5555]",
                  esp=(ONE_KE,))]
    a = connection(ike=(HYBRID,), children=kids)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now, child="lan")
    p.advance(1)
    p.ep(side).initiate("tun", p.now, child="voice")
    p.advance(5)
    for s in ("a", "b"):
        assert [e.child for e in p.of(s, ChildSaInstalled)] == ["lan", "voice"], s
    [voice] = [c for c in live_children(p, "a") if c.config.name == "voice"]
    assert [str(t) for t in voice.local_ts] == ["198.51.100.1/32[udp/5555]"]


@needs_mlkem
def test_new_child_sa_keys_take_the_followup_secret(monkeypatch):
    """The CHILD SA's keys come from the IKE_FOLLOWUP_KE round's secret too: a responder that
    took another secret for that round ends with keys its peer does not have."""
    real = followup.FollowupResponder.answer

    def answer(self, payloads):
        out = real(self, payloads)
        self.secrets[-1] = bytes(32)
        return out
    monkeypatch.setattr(followup.FollowupResponder, "answer", answer)
    p = make()
    p.a.initiate("tun", p.now, child="voice")
    p.advance(5)
    [va] = [e for e in p.of("a", ChildSaInstalled) if e.child == "voice"]
    [vb] = [e for e in p.of("b", ChildSaInstalled) if e.child == "voice"]
    assert va.spi_in == vb.spi_out and va.keys.encr_out != vb.keys.encr_in


@needs_mlkem
def test_new_child_sa_round_refused_leaves_nothing_reserved(monkeypatch):
    """A round with the wrong link data: the responder answers STATE_NOT_FOUND and frees the SPI
    its CREATE_CHILD_SA answer named; the initiator reports the failure and frees its own."""
    p = make()
    real = followup.FollowupInitiator.request

    def request(self):
        out = real(self)
        self.link = bytes(len(self.link))
        return [followup.additional_key_exchange(self.link), out[1]]
    monkeypatch.setattr(followup.FollowupInitiator, "request", request)
    p.a.initiate("tun", p.now, child="voice")
    p.advance(5)
    assert [e.child for e in p.of("a", ChildSaInstalled)] == ["lan"] == [e.child for e in p.of("b", ChildSaInstalled)]
    [fail] = [e for e in p.of("a", NegotiationFailed) if e.exchange == "CREATE_CHILD_SA"]
    assert fail.notify == "STATE_NOT_FOUND"
    assert_no_spi_leak(p)


@needs_mlkem
@pytest.mark.parametrize("kind", ["new_child", "child_rekey", "ike_rekey"])
def test_rounds_abandoned_by_the_ike_sa_going_away_release_their_spi(kind):
    """a's IKE_FOLLOWUP_KE never arrives and the IKE SA is deleted (by b, whose window waits for
    that round): b, which answered the CREATE_CHILD_SA and reserved an SPI (ESP, or IKE for an
    IKE rekey) for the rounds, frees it; a frees the one of its offer."""
    p = start_with_lost_rounds(kind, lost=100)
    p.advance(0.5)
    assert requests(p, "a")[-1] == "IKE_FOLLOWUP_KE"
    p.b.terminate("tun", p.now)
    p.advance(60)
    assert not [sa for sa in p.a.sas + p.b.sas if sa.state != IkeState.DESTROYED]
    assert_no_spi_leak(p)


@needs_mlkem
def test_rounds_abandoned_for_another_multi_round_request_release_their_spi(monkeypatch):
    """The peer gives its rounds up right after our CREATE_CHILD_SA answer, without a round (as
    charon does when it lost a collision) and later starts new rounds: the old rounds' SPI is
    freed, the new CHILD SA comes up."""
    from engine.ike.errors import RemoteError

    p = make()
    real = followup.FollowupInitiator.__init__
    calls = []

    def init(self, *args):
        calls.append(1)
        if len(calls) == 1:
            raise RemoteError(None, "test: the initiator gives its rounds up")
        real(self, *args)
    monkeypatch.setattr(followup.FollowupInitiator, "__init__", init)
    p.a.initiate("tun", p.now, child="voice")
    p.advance(0.5)
    assert "IKE_FOLLOWUP_KE" not in requests(p, "a")
    waiting = next(sa for sa in p.b.sas if sa.state == IkeState.ESTABLISHED).responding
    assert waiting is not None and waiting.state.name == "ROUNDS"
    reserved = set(p.b.registry._spis)
    p.a.initiate("tun", p.now, child="voice")
    p.advance(5)
    assert [e.child for e in p.of("b", ChildSaInstalled)] == ["lan", "voice"]
    assert_no_spi_leak(p)
    assert len(reserved - p.b.registry._spis) == 1  # the abandoned rounds' SPI


# ---------------------------------------------------------------- a colliding rekey during our rounds
def hold_first_round(side: str):
    """A filter that drops the first IKE_FOLLOWUP_KE request ``side`` sends (it is retransmitted)."""
    return drop_first(side, FOLLOWUP, False)


@needs_mlkem
@pytest.mark.parametrize("seed", range(1, 5))
@pytest.mark.parametrize("kind", ["child", "ike"])
def test_peer_rekey_during_our_followup_rounds_gets_temporary_failure_and_both_converge(seed, kind):
    """a's rekey is answered and its IKE_FOLLOWUP_KE round is on its way (lost once) when b
    rekeys the same SA: a answers TEMPORARY_FAILURE (as charon 6 does once it sent
    IKE_FOLLOWUP_KE: no rounds interleaved), finishes its rounds, and b's retry finds the SA
    replaced. Both ends end with one IKE SA and one CHILD pair, the same keys, nothing leaked."""
    p = make(seed=seed, second=False)
    p.filter = hold_first_round("a")
    ike = kind == "ike"
    p.a.rekey("tun", p.now, ike=ike)
    p.advance(0.2)
    assert requests(p, "a")[-1] == "IKE_FOLLOWUP_KE"
    p.b.rekey("tun", p.now, ike=ike)
    p.advance(0.2)
    answers = [e.message for e in p.of("a", ExchangeSent) if e.message.response
               and e.message.exchange == "CREATE_CHILD_SA"]
    assert answers and answers[0].notifies == ("TEMPORARY_FAILURE",), answers
    p.filter = None
    p.advance(120)
    assert_one_pair_agreed(p)
    [sa_a] = [sa for sa in p.a.sas if sa.state == IkeState.ESTABLISHED]
    [sa_b] = [sa for sa in p.b.sas if sa.state == IkeState.ESTABLISHED]
    assert sa_a.keys.sk_d.reveal() == sa_b.keys.sk_d.reveal()
    assert all(info.quantum_safe for ep in (p.a, p.b) for info in ep.status(p.now))
    assert_no_spi_leak(p)


@needs_mlkem
@pytest.mark.parametrize("seed", range(1, 4))
def test_old_sa_deleted_during_the_rekey_rounds_leaves_no_orphan(seed):
    """a rekeys 'lan' with an additional KE; its IKE_FOLLOWUP_KE round is lost once, and b deletes
    the old SA (its hard lifetime) before the retransmission comes: a gives its rekey up (the peer
    deleted old) and b refuses the late round with STATE_NOT_FOUND instead of making a CHILD SA
    a does not have. Both ends agree, nothing stays reserved."""
    p = make(seed=seed, second=False)
    p.filter = hold_first_round("a")
    p.a.rekey("tun", p.now)
    p.advance(0.2)
    assert requests(p, "a")[-1] == "IKE_FOLLOWUP_KE"
    [old_b] = live_children(p, "b")
    p.b.rekey_child_spi(int.from_bytes(old_b.spi_in, "big"), p.now, hard=True)
    p.advance(60)
    ca = {(c.spi_in, c.spi_out) for c in live_children(p, "a")}
    cb = {(c.spi_out, c.spi_in) for c in live_children(p, "b")}
    assert ca == cb, (ca, cb)
    assert old_b.state == ChildState.DELETED
    assert "STATE_NOT_FOUND" in [n for e in p.of("b", ExchangeSent) for n in e.message.notifies]
    assert_no_spi_leak(p)


@needs_mlkem
@pytest.mark.parametrize("seed", range(1, 5))
@pytest.mark.parametrize("kind", ["child", "ike"])
def test_simultaneous_multi_ke_rekeys_converge(seed, kind):
    """Both ends rekey the same SA with an additional KE at once: each answers the other's
    CREATE_CHILD_SA with TEMPORARY_FAILURE (no rounds interleaved with its own), both retry after
    a random pause, and they end with one IKE SA, one CHILD pair, equal keys, nothing reserved."""
    p = make(seed=seed, second=False)
    p.a.rekey("tun", p.now, ike=kind == "ike")
    p.b.rekey("tun", p.now, ike=kind == "ike")
    p.advance(120)
    assert_one_pair_agreed(p)
    assert requests(p, "a").count("IKE_FOLLOWUP_KE") + requests(p, "b").count("IKE_FOLLOWUP_KE") >= 1
    assert_no_spi_leak(p)


@needs_mlkem
@pytest.mark.parametrize("kind", ["new_child", "child_rekey", "ike_rekey"])
def test_rounds_that_never_come_time_out_and_release_their_spi(kind):
    """RFC 9370 §2.2.4: the responder deletes the state of rounds the initiator does not continue.
    Every IKE_FOLLOWUP_KE request of a is lost until a gives its IKE SA up; b, still up, frees the
    SPI its CREATE_CHILD_SA answer reserved once a retransmission budget (at least 20 s) passed
    without a round."""
    p = start_with_lost_rounds(kind, lost=1000)
    p.advance(0.5)
    [sa_b] = [sa for sa in p.b.sas if sa.state == IkeState.ESTABLISHED]
    assert sa_b.responding is not None and sa_b.responding.state.name == "ROUNDS"
    p.advance(max(20.0, sa_b.retransmit_budget()) + 1)
    assert sa_b.state == IkeState.ESTABLISHED and (sa_b.responding is None or sa_b.responding.finished)
    reg = p.b.registry
    assert reg._spis == {c.spi_in for c in sa_b.children.values()} and not reg._reserved_ike
