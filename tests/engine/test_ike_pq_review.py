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
