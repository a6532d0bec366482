"""AUTH payloads (RFC 7296 §2.15): what each side signs or MACs, and PSK
lookup in the secrets file."""

from __future__ import annotations

import hmac

from engine.crypto.auth import psk_auth_data, signed_octets
from engine.policy.model import Identity, Secrets
from engine.policy.secrets import lookup_psk
from engine.secret import Secret
from engine.wire.payloads import IdPayload


def id_body(id_payload: IdPayload) -> bytes:
    """RestOfIDPayload: the ID payload after its generic header, as sent or received (§2.15): a peer's
    non-zero RESERVED bytes are signed too (charon's keymat_v2.c takes the received body)."""
    return bytes((id_payload.id_type,)) + id_payload.reserved + id_payload.data


def octets(real_message: bytes, peer_nonce: bytes, prf_id: int, sk_p: bytes, id_payload: IdPayload) -> bytes:
    """InitiatorSignedOctets / ResponderSignedOctets."""
    return signed_octets(real_message, peer_nonce, prf_id, sk_p, id_body(id_payload))


def psk_auth(prf_id: int, psk: Secret, signed: bytes) -> bytes:
    return psk_auth_data(prf_id, psk.reveal(), signed)


def psk_verify(prf_id: int, psk: Secret, signed: bytes, received: bytes) -> bool:
    return hmac.compare_digest(psk_auth(prf_id, psk, signed), received)


def find_psk(secrets: Secrets, local: Identity | None, remote: Identity | None) -> Secret | None:
    """The shared key for this pair of identities, chosen as charon does (engine.policy.secrets)."""
    entry = lookup_psk(secrets, local, remote)
    return entry.secret if entry is not None else None
