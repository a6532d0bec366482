"""Decoded payloads shared between messages that carry the same body.

Payloads are frozen values, and a peer sends the same offer, identities, vendor IDs, status
notifies and selectors in every handshake: decoding them again built the same objects again. The
chain walker (``engine.wire.message``) looks a non-critical body of a type below up here first.
Every table is bounded and holds only bodies that decoded without error, so a peer that varies
them (even unauthenticated, in IKE_SA_INIT) only recycles it, and a malformed body still raises
its WireError, with its offset, every time.
"""

from __future__ import annotations

from engine.wire.codec import DECODERS
from engine.wire.constants import PayloadType
from engine.wire.payloads import Payload

SHARED_BODY_MAX: dict[int, int] = {
    PayloadType.SA: 512,  # an IKE_SA_INIT offer or answer; not one with a SPI (new every time)
    PayloadType.IDi: 128,
    PayloadType.IDr: 128,
    PayloadType.CERTREQ: 256,
    PayloadType.NOTIFY: 16,  # status notifies without data or with a few bytes; not NAT-D, cookies
    PayloadType.DELETE: 4,  # the IKE SA's Delete; not CHILD SA SPIs
    PayloadType.VENDOR: 64,
    PayloadType.TSi: 256,
    PayloadType.TSr: 256,
}
"""Payload types whose decoded value one message shares with the next that carries the same body
(non-critical), and the largest body shared. A peer sends the same offer, identities, vendor IDs,
status notifies and selectors in every handshake: decoding them again built the same frozen
objects again. Keys, nonces, AUTH values and SPIs are new every time and never shared."""
SHARED_DECODED_MAX = 128
"""Bodies kept per payload type at most (then that type's table starts afresh): a peer that
varies them (even unauthenticated, in IKE_SA_INIT) only recycles the table."""
SHARED_DECODED: dict[int, dict[bytes, Payload]] = {int(t): {} for t in SHARED_BODY_MAX}
"""Payload type -> body -> its decoded (frozen) payload; only bodies that decoded without error."""
SHARED_TABLES: dict[int, tuple[int, dict[bytes, Payload]]] = {
    int(t): (n, SHARED_DECODED[int(t)]) for t, n in SHARED_BODY_MAX.items()}
"""Payload type -> (largest body shared, its table): one lookup per payload for the chain walker."""
_SA_TYPE = int(PayloadType.SA)


def decode_shared(ptype: int, body: bytes, offset: int, table: dict[bytes, Payload]) -> Payload:
    """Decode a non-critical body of a shared type (one not in ``table``, its type's table) and keep
    the result there, unless it is an SA payload with a SPI."""
    payload = DECODERS[ptype](ptype, body, False, offset)
    if ptype != _SA_TYPE or not any(prop.spi for prop in payload.proposals):  # type: ignore[union-attr]
        if len(table) >= SHARED_DECODED_MAX:
            table.clear()
        table[body] = payload
    return payload
