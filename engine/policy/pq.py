"""Post-quantum policy rules (issue 11): what a policy may ask for, and what counts as quantum-safe.

A connection is quantum-safe when its IKE SA keys cannot be recovered from
recorded traffic by a quantum computer: every IKE proposal it accepts includes
ML-KEM (as the primary key exchange or an RFC 9370 additional one), or it
requires an RFC 8784 PPK. CHILD SAs inherit this through SK_d.

Two reasons refuse a policy instead of weakening it in silence:

* the installed ``cryptography`` lacks ML-KEM (engine.crypto.kem says why);
* engine.ike does not negotiate the feature. `NEGOTIATED` lists what it does
  (today: all of them); a feature missing there makes a hybrid proposal or a
  ppk_id an error, never a tunnel that looks quantum-safe and is not.

Lint advises (rule not-quantum-safe, severity info) on connections that are
not quantum-safe, with what `ADVISED` allows it to recommend.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.crypto.kem import mlkem_unavailable_reason
from engine.crypto.transforms import QUANTUM_SAFE_KE, KeId
from engine.policy.model import ConnectionConfig, Proposal
from engine.policy.proposals import keyword_for

NEGOTIATED: frozenset[str] = frozenset({"kem", "additional_ke", "followup_ke", "ppk"})
"""Post-quantum features engine.ike negotiates: "kem" (ML-KEM as the primary key exchange of
IKE_SA_INIT or CREATE_CHILD_SA), "additional_ke" (RFC 9370 in IKE_INTERMEDIATE, IKE SA setup),
"followup_ke" (RFC 9370 IKE_FOLLOWUP_KE: additional key exchanges in CREATE_CHILD_SA, so in
ESP/AH proposals), "ppk" (RFC 8784)."""

ADVISED: frozenset[str] = NEGOTIATED
"""The features lint recommends to connections that are not quantum-safe (rule not-quantum-safe,
severity info: a classic connection may have to talk to peers that cannot do better, so the advice
never fails ``check``, not even with --strict)."""

HYBRID_EXAMPLE = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
"""The hybrid proposal we suggest: strongSwan 6.1's and Libreswan 5's common ground."""


def _kem_ids(p: Proposal) -> set[int]:
    return {t.id for t in p.ke + p.additional_ke if t.id in QUANTUM_SAFE_KE}


def proposal_is_quantum_safe(p: Proposal) -> bool:
    """Every combination this proposal allows includes an ML-KEM exchange."""
    if p.ke and all(t.id in QUANTUM_SAFE_KE for t in p.ke):
        return True
    by_slot: dict[int, list[int]] = {}
    for t in p.additional_ke:
        by_slot.setdefault(int(t.type), []).append(t.id)
    # One additional slot that can only be ML-KEM (no NONE, no classic method) suffices.
    return any(ids and all(i in QUANTUM_SAFE_KE for i in ids) for ids in by_slot.values())


def connection_is_quantum_safe(c: ConnectionConfig) -> bool:
    """Quantum-safe whatever the peer picks: a required PPK, or ML-KEM in every IKE proposal."""
    return c.ppk_required or bool(c.proposals) and all(proposal_is_quantum_safe(p) for p in c.proposals)


def proposal_problems(p: Proposal, negotiated: Iterable[str] | None = None) -> list[str]:
    """Why this proposal cannot be used here (empty when it can)."""
    features = NEGOTIATED if negotiated is None else frozenset(negotiated)
    out: list[str] = []
    kems = sorted(_kem_ids(p))
    for group in kems:
        reason = mlkem_unavailable_reason(group)
        if reason:
            out.append(f"'{p.text}': {reason}")
    primary_kem = [t for t in p.ke if t.id in QUANTUM_SAFE_KE]
    if primary_kem and "kem" not in features:
        out.append(f"'{p.text}': {keyword_for(primary_kem[0])} as the primary key exchange is not negotiated "
                   "by this engine yet; use it as an additional one once IKE_INTERMEDIATE is supported, or "
                   "remove it")
    real_additional = [t for t in p.additional_ke if t.id != KeId.NONE]
    if real_additional and "additional_ke" not in features:
        words = " ".join(keyword_for(t) for t in real_additional)
        out.append(f"'{p.text}': additional key exchanges ({words}) need the IKE_INTERMEDIATE and "
                   "IKE_FOLLOWUP_KE exchanges (RFC 9242, RFC 9370), which this engine does not negotiate yet; "
                   "remove them for now")
    if real_additional and p.protocol != "ike" and "additional_ke" in features and "followup_ke" not in features:
        words = " ".join(keyword_for(t) for t in real_additional)
        out.append(f"'{p.text}': additional key exchanges for CHILD SAs ({words}) need IKE_FOLLOWUP_KE "
                   "(RFC 9370 §2.2.4), which this engine does not negotiate yet; keep them in the IKE "
                   "proposals (CHILD SA keys derive from the IKE SA's) and remove them here")
    return out


def ppk_problem(c: ConnectionConfig, negotiated: Iterable[str] | None = None) -> str | None:
    """Why ppk_id / ppk_required cannot be honoured by this engine, or None."""
    features = NEGOTIATED if negotiated is None else frozenset(negotiated)
    if (c.ppk_id is not None or c.ppk_required) and "ppk" not in features:
        return ("PPKs (RFC 8784) are not negotiated by this engine yet: a tunnel would come up without one; "
                "remove ppk_id and ppk_required for now")
    return None


def default_ike_proposals() -> list[str]:
    """The IKE proposals a new connection starts with: the hybrid one once this engine
    negotiates additional key exchanges and the installed cryptography has ML-KEM-768."""
    if "additional_ke" in NEGOTIATED and mlkem_unavailable_reason(KeId.ML_KEM_768) is None:
        return [HYBRID_EXAMPLE]
    return ["aes256gcm16-prfsha384-x25519"]
