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
