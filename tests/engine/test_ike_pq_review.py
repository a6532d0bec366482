"""Findings of the post-quantum review (RFC 8784 PPK, RFC 9242/9370, ML-KEM) not covered by the
older files: each test failed before its fix."""

from __future__ import annotations

from engine.events import ChildSaInstalled, NegotiationFailed
from engine.ike import ppk_auth
from engine.wire.constants import NotifyType
from engine.wire.payloads import NotifyPayload

from tests.engine.test_ike_ppk import pair, sent_notifies


def test_an_unreadable_ppk_identity_is_a_ppk_we_lack_and_no_ppk_auth_applies(monkeypatch):
    """RFC 8784 §3: a responder without the PPK the initiator names takes NO_PPK_AUTH (PPK optional).
    A PPK_ID of a type we do not know names no PPK of ours: the same, as charon's get_ppk_r
    (it refused the IKE SA before)."""
    monkeypatch.setattr(ppk_auth, "ppk_identity", lambda ppk_id: NotifyPayload(NotifyType.PPK_IDENTITY,
                                                                               data=b"\x07" + ppk_id))
    p = pair(dict(ppk_id="ppk-1"), dict(ppk_id="ppk-1"))
    a, b = p.of("a", ChildSaInstalled), p.of("b", ChildSaInstalled)
    assert a and b, (p.of("a", NegotiationFailed), p.of("b", NegotiationFailed))
    assert a[0].keys.encr_out == b[0].keys.encr_in
    assert not p.a.sas[0].ppk_used and not p.b.sas[0].ppk_used
    assert "PPK_IDENTITY" not in sent_notifies(p, "b", "IKE_AUTH")


def test_an_unreadable_ppk_identity_is_refused_when_the_ppk_is_required(monkeypatch):
    monkeypatch.setattr(ppk_auth, "ppk_identity", lambda ppk_id: NotifyPayload(NotifyType.PPK_IDENTITY,
                                                                               data=b"\x07" + ppk_id))
    p = pair(dict(ppk_id="ppk-1"), dict(ppk_id="ppk-1", ppk_required=True))
    assert not p.of("b", ChildSaInstalled)
    (gw,) = p.of("b", NegotiationFailed)
    assert gw.notify == "AUTHENTICATION_FAILED" and "PPK is required" in gw.reason


def test_an_optional_additional_ke_the_responder_omits_is_none():
    """charon (proposal.c select_algos) leaves an ADDITIONAL_KEY_EXCHANGE type it chose NONE for
    out of its answer: for a type we offered with NONE that means NONE (RFC 9370 §2.2.1); a type
    we require must still be answered."""
    from engine.ike import proposals as props
    from engine.policy.proposals import parse_proposal
    from engine.wire.payloads import Proposal as WireProposal

    offer = props.to_wire([parse_proposal("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none-ke2_mlkem1024",
                                          "ike")], b"")
    answer = WireProposal(1, offer[0].protocol, b"", tuple(t for t in offer[0].transforms
                                                           if int(t.type) not in (6,) and t.id != 0
                                                           and not (int(t.type) == 7 and t.id != 37)))
    chosen = props.accept_response(answer, offer)
    assert chosen is not None and chosen.additional == ((6, 0), (7, 37)) and chosen.additional_rounds == ((7, 37),)
    without_required = WireProposal(1, offer[0].protocol, b"", tuple(t for t in answer.transforms if int(t.type) != 7))
    assert props.accept_response(without_required, offer) is None


def test_invalid_syntax_answering_a_followup_round_ends_the_ike_sa_on_both_ends(monkeypatch):
    """Our responder ends its IKE SA after answering an IKE_FOLLOWUP_KE request INVALID_SYNTAX
    (RFC 7296 §2.21.3, sa_receive.KNOWN_REQUESTS); our initiator kept its own on that answer: a
    black hole until DPD. Here a round's KE is for another method than negotiated."""
    import dataclasses

    import pytest

    from engine.crypto.kem import mlkem_available
    from engine.crypto.transforms import KeId
    from engine.events import IkeState
    from engine.ike import followup
    from engine.wire.payloads import KePayload

    from tests.engine.test_ike_followup import make

    if not (mlkem_available(KeId.ML_KEM_768) and mlkem_available(KeId.ML_KEM_1024)):
        pytest.skip("cryptography without ML-KEM")
    orig = followup.FollowupInitiator.request

    def other_method(self):
        return [dataclasses.replace(x, group=KeId.ML_KEM_1024) if isinstance(x, KePayload) else x
                for x in orig(self)]

    for kind in ("child_rekey", "ike_rekey", "new_child"):
        monkeypatch.setattr(followup.FollowupInitiator, "request", orig)
        p = make()
        monkeypatch.setattr(followup.FollowupInitiator, "request", other_method)
        if kind == "new_child":
            p.a.initiate("tun", p.now, child="voice")
        else:
            p.a.rekey("tun", p.now, ike=kind == "ike_rekey")
        p.advance(3)
        up_a = [sa for sa in p.a.sas if sa.state == IkeState.ESTABLISHED]
        up_b = [sa for sa in p.b.sas if sa.state == IkeState.ESTABLISHED]
        assert not up_b and not up_a, kind
        for ep in (p.a, p.b):  # nothing held for the rounds that ended with the IKE SA
            assert not ep.registry._spis and not ep.registry._reserved_ike, kind


def test_a_key_exchange_method_is_not_chosen_twice():
    """As charon's proposal.c (select_algo skips methods already selected; its test_proposal.c
    vectors): the primary KE's method and each earlier ADDITIONAL_KEY_EXCHANGE choice are not
    chosen again, so a charon initiator accepts our answer."""
    from engine.ike import proposals as props
    from engine.policy.proposals import parse_proposal

    def chosen(offer, ours=None):
        c = props.select(props.to_wire([parse_proposal(offer, "ike")], b""), [parse_proposal(ours or offer, "ike")])
        return c and (int(c.ke), tuple((t, int(g)) for t, g in c.additional))

    all3 = "aes128-sha256-x25519-ecp256-ecp384-ke1_x25519-ke1_ecp256-ke1_ecp384-ke2_x25519-ke2_ecp256-ke2_ecp384"
    assert chosen(all3) == (31, ((6, 19), (7, 20)))
    assert chosen("aes128-sha256-x25519-ke1_x25519-ke1_none") == (31, ((6, 0),))
    assert chosen("aes128-sha256-x25519-ke1_x25519") is None
    assert chosen("aes128-sha256-x25519-ke1_x25519-ke1_ecp256") == (31, ((6, 19),))
    assert chosen("aes128-sha256-x25519-ke1_ecp256", "aes128-sha256-x25519-ke1_x25519-ke1_ecp256") == (31, ((6, 19),))
