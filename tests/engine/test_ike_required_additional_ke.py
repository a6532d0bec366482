"""Findings of the review of the post-quantum review (pq14 merge): each test failed before its fix."""

from __future__ import annotations

from engine.ike import proposals as props
from engine.policy.proposals import parse_proposal
from engine.wire.payloads import Proposal as WireProposal


def _answer(offer: str, keep) -> tuple:
    ours = props.to_wire([parse_proposal(offer, "ike")], b"")
    answer = WireProposal(1, ours[0].protocol, b"", tuple(t for t in ours[0].transforms if keep(int(t.type), t.id)))
    return answer, ours


def test_our_initiator_refuses_an_answer_choosing_a_key_exchange_method_twice():
    """charon's select_algo skips a method it already selected on its own side too, so as
    initiator it refuses an answer naming one method twice ('peer's proposal selection
    invalid'); we accepted it and ran the same method twice."""
    # ML-KEM-768 in both ADDITIONAL_KEY_EXCHANGE_1 and _2.
    answer, ours = _answer("aes128-sha256-x25519-ke1_mlkem768-ke1_mlkem1024-ke2_mlkem768-ke2_mlkem1024",
                           lambda ttype, tid: ttype not in (6, 7) or tid == 36)
    assert props.accept_response(answer, ours) is None
    # The primary KE's method again as ADDITIONAL_KEY_EXCHANGE_1.
    answer, ours = _answer("aes128-sha256-x25519-ke1_x25519-ke1_mlkem768", lambda ttype, tid: ttype != 6 or tid == 31)
    assert props.accept_response(answer, ours) is None
    # Distinct methods, and NONE (left out) twice, stay accepted.
    answer, ours = _answer("aes128-sha256-x25519-ke1_mlkem768-ke1_none-ke2_mlkem1024-ke2_none",
                           lambda ttype, tid: ttype not in (6, 7) or tid == 36 + (ttype == 7))
    assert props.accept_response(answer, ours).additional == ((6, 36), (7, 37))
    answer, ours = _answer("aes128-sha256-x25519-ke1_mlkem768-ke1_none-ke2_mlkem1024-ke2_none",
                           lambda ttype, tid: ttype not in (6, 7))
    assert props.accept_response(answer, ours).additional == ((6, 0), (7, 0))


def test_a_required_additional_ke_is_not_waived_for_a_peer_without_intermediate_support():
    """A responder whose IKE proposal requires ML-KEM (ke1 without none) set up a classic IKE SA
    with a classic peer, because that peer (no additional KE, so no INTERMEDIATE_EXCHANGE_SUPPORTED)
    could not run one: the required type was dropped from the configuration instead of failing
    the proposal. charon selects first and answers NO_PROPOSAL_CHOSEN (ike_init.c build_r)."""
    from engine.events import ChildSaInstalled, IkeState, NegotiationFailed

    from tests.engine.test_ike_intermediate import HYBRID, make_pair, up

    p = make_pair(("aes256gcm16-prfsha384-x25519",), (HYBRID,))
    up(p)
    assert not p.of("a", ChildSaInstalled) and not p.of("b", ChildSaInstalled)
    assert not [sa for ep in (p.a, p.b) for sa in ep.sas if sa.state == IkeState.ESTABLISHED]
    assert [e.notify for e in p.of("b", NegotiationFailed)] == ["NO_PROPOSAL_CHOSEN"]
    # Optional on our side (NONE configured): the classic peer still gets a classic IKE SA.
    p = make_pair(("aes256gcm16-prfsha384-x25519",), ("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none",))
    up(p)
    assert p.of("a", ChildSaInstalled) and p.of("b", ChildSaInstalled)
    # Unit level: what the exchange cannot run is only acceptable as NONE.
    hybrid = parse_proposal(HYBRID, "ike")
    assert props.select(props.to_wire([parse_proposal("aes256gcm16-prfsha384-x25519", "ike")], b""), (hybrid,),
                        with_additional=False) is None
    optional = props.to_wire([parse_proposal("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none", "ike")], b"")
    assert props.select(optional, (hybrid,), with_additional=False) is None
    assert props.select(optional, (parse_proposal("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none", "ike"),),
                        with_additional=False).additional_rounds == ()


def test_eap_client_refuses_a_last_gateway_answer_without_the_ppk(monkeypatch):
    """Coverage, no fix (it held before): a gateway that used the PPK but answers without
    PPK_IDENTITY is refused by a client requiring the PPK, and by an optional one as well (its
    MSK AUTH then does not verify with the plain SK_pr): no PPK strip after EAP-Success."""
    from engine.events import ChildSaInstalled, NegotiationFailed
    from engine.ike import ppk_auth

    from tests.engine.test_ike_ppk_eap import REQ, ppk_eap_pair

    monkeypatch.setattr(ppk_auth, "responder_notifies", lambda sa: [])
    p = ppk_eap_pair(REQ, dict(ppk_id="ppk-1"))
    assert not p.of("a", ChildSaInstalled)
    assert "did not use our PPK (ppk_required)" in p.of("a", NegotiationFailed)[0].reason
    p = ppk_eap_pair(dict(ppk_id="ppk-1"), dict(ppk_id="ppk-1"))
    assert not p.of("a", ChildSaInstalled)
    assert "does not verify" in p.of("a", NegotiationFailed)[0].reason
