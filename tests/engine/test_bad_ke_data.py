"""Key exchange data that does not work (a wrong length, an X25519 point of low order, an ML-KEM
key that fails its check) is answered NO_PROPOSAL_CHOSEN, as charon's ike_init.c and
child_create.c answer it ("applying KE public value failed", ke_failed), not INVALID_SYNTAX:
since INVALID_SYNTAX ends the IKE SA on both ends (RFC 7296 §2.21.3, test_invalid_syntax.py), a
peer's bad PFS value in a CREATE_CHILD_SA would otherwise take down a working IKE SA and all its
CHILD SAs. A KE payload that is missing or for another method stays INVALID_SYNTAX / INVALID_KE_PAYLOAD
as before (charon: INVALID_SYNTAX without a KE)."""

from __future__ import annotations

import pytest

from engine.crypto.errors import InvalidKeyExchange
from engine.crypto.kem import mlkem_available
from engine.crypto.transforms import KeId
from engine.events import ChildState, IkeState, NegotiationFailed
from engine.ike import followup
from engine.ike.exchanges import child_sa, ike_intermediate, ike_rekey, ike_sa_init

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, live, mirror, policy
from tests.engine.test_ike_ppk import sent_notifies

PFS = ("aes256gcm16-x25519",)


def _broken(*_args, **_kw):
    raise InvalidKeyExchange("CURVE25519: peer public value rejected (all-zero result)")


def two_children() -> Pair:
    kids = [child("lan", esp=PFS),
            child("voice", local_ts="198.51.100.2/32", remote_ts="198.51.100.130/32", esp=PFS)]
    a = connection(children=kids)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now, child="lan")
    p.advance(1)
    assert len(installed(p, "a")) == 1 and len(installed(p, "b")) == 1
    return p


def installed(p: Pair, side: str) -> list:
    return [c for sa in live(p, side) for c in sa.children.values() if c.state == ChildState.INSTALLED]


def assert_ike_sa_kept(p: Pair) -> None:
    for side in ("a", "b"):
        (sa,) = live(p, side)
        assert sa.state == IkeState.ESTABLISHED, side


def test_a_zero_x25519_pfs_value_in_a_new_child_sa_is_refused_without_ending_the_ike_sa(monkeypatch):
    """The real data, not a patched responder: an all-zero X25519 value gives an all-zero shared
    secret (RFC 8031 §2.3: MUST be refused)."""
    p = two_children()
    orig = child_sa.ChildOffer.payloads

    def zero_ke(self, *, nonce):
        from engine.wire.payloads import KePayload
        return [KePayload(x.group, bytes(len(x.data))) if isinstance(x, KePayload) else x
                for x in orig(self, nonce=nonce)]

    monkeypatch.setattr(child_sa.ChildOffer, "payloads", zero_ke)
    p.a.initiate("tun", p.now, child="voice")
    p.advance(3)
    assert "NO_PROPOSAL_CHOSEN" in sent_notifies(p, "b", "CREATE_CHILD_SA")
    assert_ike_sa_kept(p)
    assert len(installed(p, "a")) == 1 and len(installed(p, "b")) == 1  # 'lan' still up, no 'voice'
    (failed,) = [e for e in p.of("b", NegotiationFailed) if e.exchange == "CREATE_CHILD_SA"]
    assert failed.notify == "NO_PROPOSAL_CHOSEN" and "CURVE25519" in failed.reason


def test_bad_pfs_data_in_a_child_rekey_keeps_the_old_child_sa(monkeypatch):
    p = two_children()
    monkeypatch.setattr(child_sa, "respond", _broken)
    p.a.rekey("tun", p.now)
    p.advance(3)
    assert_ike_sa_kept(p)
    assert len(installed(p, "a")) == 1 and len(installed(p, "b")) == 1
    assert [e.notify for e in p.of("b", NegotiationFailed)] == ["NO_PROPOSAL_CHOSEN"]


def test_bad_ke_data_in_an_ike_rekey_keeps_the_ike_sa(monkeypatch):
    p = two_children()
    old = live(p, "a")[0].spi_i
    monkeypatch.setattr(ike_rekey, "respond", _broken)
    p.a.rekey("tun", p.now, ike=True)
    p.advance(3)
    assert_ike_sa_kept(p)
    assert live(p, "a")[0].spi_i == old
    assert [e.notify for e in p.of("b", NegotiationFailed)] == ["NO_PROPOSAL_CHOSEN"]


def test_bad_ke_data_in_ike_sa_init_is_answered_no_proposal_chosen(monkeypatch):
    monkeypatch.setattr(ike_sa_init, "respond", _broken)
    conn = connection()
    p = Pair(policy(conn, address=LEFT), policy(mirror(conn), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert not live(p, "b")
    assert sent_notifies(p, "b", "IKE_SA_INIT") == ["NO_PROPOSAL_CHOSEN"]
    (failed,) = p.of("a", NegotiationFailed)
    assert failed.notify == "NO_PROPOSAL_CHOSEN"


needs_mlkem = pytest.mark.skipif(not (mlkem_available(KeId.ML_KEM_768) and mlkem_available(KeId.ML_KEM_1024)),
                                 reason="cryptography without ML-KEM")


@needs_mlkem
def test_a_bad_followup_round_is_refused_without_ending_the_ike_sa(monkeypatch):
    from tests.engine.test_ike_followup import make
    p = make()
    monkeypatch.setattr(followup, "respond", _broken)
    p.a.initiate("tun", p.now, child="voice")
    p.advance(3)
    assert_ike_sa_kept(p)
    assert len(installed(p, "a")) == 1 and len(installed(p, "b")) == 1
    assert [e.notify for e in p.of("b", NegotiationFailed)] == ["NO_PROPOSAL_CHOSEN"]
    for ep in (p.a, p.b):  # the SPI the first answer reserved is given back
        assert ep.registry._spis == {c.spi_in for sa in live(p, "a" if ep is p.a else "b")
                                     for c in sa.children.values()}


@needs_mlkem
def test_a_bad_intermediate_round_is_answered_no_proposal_chosen_and_ends_the_setup(monkeypatch):
    from engine.ike.exchanges import ike_intermediate as mod
    from tests.engine.test_ike_followup import HYBRID
    monkeypatch.setattr(mod, "respond", _broken)
    a = connection(ike=(HYBRID,))
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(3)
    assert not live(p, "a") and not live(p, "b")
    assert [e.notify for e in p.of("b", NegotiationFailed)] == ["NO_PROPOSAL_CHOSEN"]
    assert [e.notify for e in p.of("a", NegotiationFailed)] == ["NO_PROPOSAL_CHOSEN"]
    assert ike_intermediate is mod
