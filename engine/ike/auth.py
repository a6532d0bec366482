"""AUTH payloads (RFC 7296 §2.15): what each side signs or MACs, and PSK
lookup in the secrets file."""

from __future__ import annotations

import hmac

from engine.crypto.auth import psk_auth_data, signed_octets
from engine.policy.identity import identity_matches
from engine.policy.model import Identity, Secrets
from engine.secret import Secret
from engine.wire.payloads import IdPayload


def id_body(id_payload: IdPayload) -> bytes:
    """RestOfIDPayload: the ID payload after its generic header (§2.15)."""
    return bytes([id_payload.id_type]) + b"\0\0\0" + id_payload.data


def octets(real_message: bytes, peer_nonce: bytes, prf_id: int, sk_p: bytes, id_payload: IdPayload) -> bytes:
    """InitiatorSignedOctets / ResponderSignedOctets."""
    return signed_octets(real_message, peer_nonce, prf_id, sk_p, id_body(id_payload))


def psk_auth(prf_id: int, psk: Secret, signed: bytes) -> bytes:
    return psk_auth_data(prf_id, psk.reveal(), signed)


def psk_verify(prf_id: int, psk: Secret, signed: bytes, received: bytes) -> bool:
    return hmac.compare_digest(psk_auth(prf_id, psk, signed), received)


def _id_matches(pattern: Identity, value: Identity | None) -> bool:
    return value is not None and identity_matches(pattern, value)


def find_psk(secrets: Secrets, local: Identity | None, remote: Identity | None) -> Secret | None:
    """The shared key for this pair of identities, chosen like charon does:
    an entry naming both IDs beats one naming one of them, which beats an
    entry with no IDs (a default key)."""
    best: tuple[int, Secret] | None = None
    for entry in secrets.ike:
        if not entry.ids:
            score = 1
        else:
            hits = sum(1 for i in entry.ids if _id_matches(i, remote)) * 2
            hits += sum(1 for i in entry.ids if _id_matches(i, local))
            if hits == 0:
                continue
            score = 1 + hits
        if best is None or score > best[0]:
            best = (score, entry.secret)
    return best[1] if best else None
