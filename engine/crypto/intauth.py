"""IKE_INTERMEDIATE authentication (RFC 9242 §3.3.2): IntAuth and the AUTH octets it changes.

Every IKE_INTERMEDIATE message is bound into the later AUTH payloads:

    IntAuth_i1 = prf(SK_pi1,              IntAuth_i1_A [| IntAuth_i1_P])
    IntAuth_iN = prf(SK_piN, IntAuth_iN-1 | IntAuth_iN_A [| IntAuth_iN_P])
    IntAuth_rN likewise with SK_prN over the responses
    IntAuth    = IntAuth_iN | IntAuth_rN | IKE_AUTH_MID
    InitiatorSignedOctets = RealMessage1 | NonceRData | MACedIDForI | IntAuth
    ResponderSignedOctets = RealMessage2 | NonceIData | MACedIDForR | IntAuth

SK_piN/SK_prN are the keys that protected the N-th exchange (after RFC 9370's
key update, those of the step before). IKE_AUTH_MID is the 32-bit Message ID
of the first IKE_AUTH request: 1 + the number of IKE_INTERMEDIATE exchanges
when nothing else came between. The A|P octets of one message come from
engine.wire.intauth.int_auth_octets. strongSwan 6 computes the same
(ike_auth.c collect_int_auth_data, keymat_v2.c get_int_auth).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..secret import Secret
from .prf import Prf


def _reveal(value: bytes | Secret) -> bytes:
    return value.reveal() if isinstance(value, Secret) else value


def int_auth_step(prf_id: int, sk_p: bytes | Secret, previous: bytes, octets: bytes) -> bytes:
    """IntAuth_[i|r]N = prf(SK_p, IntAuth_[i|r]N-1 | A | P); ``previous`` is b"" for N = 1."""
    return Prf(prf_id)(_reveal(sk_p), previous + octets)


@dataclass(frozen=True)
class IntAuthChain:
    """The running IntAuth_i / IntAuth_r of one IKE SA's IKE_INTERMEDIATE exchanges (immutable).

    Add each request and its response in turn (a retransmission is not added
    again); `int_auth` gives the value for the AUTH octets.
    """

    prf_id: int
    int_auth_i: bytes = b""
    """IntAuth_iN over the initiator's requests so far (empty before the first)."""
    int_auth_r: bytes = b""
    """IntAuth_rN over the responder's responses so far."""
    requests: int = 0
    responses: int = 0
    """Completed IKE_INTERMEDIATE exchanges."""

    def add(self, *, from_initiator: bool, sk_p: bytes | Secret, octets: bytes) -> "IntAuthChain":
        """Chain one message's A|P ``octets``: ``sk_p`` is SK_pi for a request (the
        original initiator's message), SK_pr for a response, both as they were
        for that exchange (before its own key update)."""
        if from_initiator:
            if self.requests != self.responses:
                raise ValueError("IntAuth: a second IKE_INTERMEDIATE request before the response to the first")
            return IntAuthChain(self.prf_id, int_auth_step(self.prf_id, sk_p, self.int_auth_i, octets),
                                self.int_auth_r, self.requests + 1, self.responses)
        if self.requests != self.responses + 1:
            raise ValueError("IntAuth: an IKE_INTERMEDIATE response without its request")
        return IntAuthChain(self.prf_id, self.int_auth_i, int_auth_step(self.prf_id, sk_p, self.int_auth_r, octets),
                            self.requests, self.responses + 1)

    def int_auth(self, ike_auth_mid: int) -> bytes:
        """IntAuth = IntAuth_iN | IntAuth_rN | IKE_AUTH_MID; b"" when no IKE_INTERMEDIATE took place."""
        if self.requests != self.responses:
            raise ValueError("IntAuth: the last IKE_INTERMEDIATE request has no response yet")
        if not self.responses:
            return b""
        if not 0 <= ike_auth_mid <= 0xFFFFFFFF:
            raise ValueError(f"Message ID out of range: {ike_auth_mid}")
        return self.int_auth_i + self.int_auth_r + ike_auth_mid.to_bytes(4, "big")
