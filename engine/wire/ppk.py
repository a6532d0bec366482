"""Notify payloads of RFC 8784 (PPK), RFC 9242 (IKE_INTERMEDIATE) and RFC 9370 (additional KEs).

    USE_PPK (16435)                          empty; IKE_SA_INIT, both directions
    PPK_IDENTITY (16436)                     PPK Type (1 octet) | PPK_ID; IKE_AUTH request
                                             (and response: the PPK used)
    NO_PPK_AUTH (16437)                      AUTH data computed without the PPK; IKE_AUTH request
    INTERMEDIATE_EXCHANGE_SUPPORTED (16438)  empty; IKE_SA_INIT, both directions
    ADDITIONAL_KEY_EXCHANGE (16441)          opaque Link data; CREATE_CHILD_SA response and each
                                             IKE_FOLLOWUP_KE request/response

PPK types (RFC 8784 §3): 1 PPK_ID_OPAQUE, 2 PPK_ID_FIXED. strongSwan 6 sends and
accepts PPK_ID_FIXED only (ike_auth.c add_ppk_identity / parse_ppk_identity).
NO_PPK_AUTH holds the authentication data only, the method is the AUTH
payload's (as strongSwan builds it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from engine.wire.constants import NotifyType
from engine.wire.errors import MalformedMessage
from engine.wire.payloads import NotifyPayload

MAX_PPK_ID = 255
"""Longest PPK_ID we send or accept (RFC 8784 sets no limit; this bounds what a peer can make us hold)."""
MAX_LINK = 64
"""Longest ADDITIONAL_KEY_EXCHANGE link data we accept (RFC 9370 leaves it to the responder)."""


class PpkIdType(enum.IntEnum):
    PPK_ID_OPAQUE = 1
    PPK_ID_FIXED = 2


@dataclass(frozen=True)
class PpkIdentity:
    """A decoded PPK_IDENTITY notify."""

    id_type: PpkIdType
    ppk_id: bytes

    def __str__(self) -> str:
        """The PPK_ID as an admin wrote it (UTF-8 if printable, else hex)."""
        try:
            text = self.ppk_id.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and text.isprintable():
            return text
        return "0x" + self.ppk_id.hex()


def encode_ppk_identity(ppk_id: bytes, id_type: int = PpkIdType.PPK_ID_FIXED) -> bytes:
    """PPK_IDENTITY notify data."""
    ppk_id = bytes(ppk_id)
    if not 1 <= len(ppk_id) <= MAX_PPK_ID:
        raise ValueError(f"a PPK_ID is 1 to {MAX_PPK_ID} bytes, got {len(ppk_id)}")
    return bytes((PpkIdType(id_type),)) + ppk_id


def decode_ppk_identity(data: bytes) -> PpkIdentity:
    """Read PPK_IDENTITY notify data; MalformedMessage names what is wrong."""
    if len(data) < 2:
        raise MalformedMessage(f"N(PPK_ID): {len(data)} bytes of data, need a PPK type and a PPK_ID",
                               payload="N")
    if len(data) - 1 > MAX_PPK_ID:
        raise MalformedMessage(f"N(PPK_ID): a PPK_ID of {len(data) - 1} bytes is longer than {MAX_PPK_ID}",
                               payload="N")
    try:
        id_type = PpkIdType(data[0])
    except ValueError:
        raise MalformedMessage(f"N(PPK_ID): unknown PPK type {data[0]}", payload="N") from None
    return PpkIdentity(id_type, bytes(data[1:]))


def use_ppk() -> NotifyPayload:
    return NotifyPayload(NotifyType.USE_PPK)


def ppk_identity(ppk_id: bytes, id_type: int = PpkIdType.PPK_ID_FIXED) -> NotifyPayload:
    return NotifyPayload(NotifyType.PPK_IDENTITY, data=encode_ppk_identity(ppk_id, id_type))


def no_ppk_auth(auth_data: bytes) -> NotifyPayload:
    """NO_PPK_AUTH with the AUTH data computed from the unmodified SK_pi."""
    if not auth_data:
        raise ValueError("NO_PPK_AUTH needs authentication data")
    return NotifyPayload(NotifyType.NO_PPK_AUTH, data=bytes(auth_data))


def intermediate_exchange_supported() -> NotifyPayload:
    return NotifyPayload(NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED)


def additional_key_exchange(link: bytes) -> NotifyPayload:
    """ADDITIONAL_KEY_EXCHANGE with the responder's link data (RFC 9370 §2.2.4)."""
    link = bytes(link)
    if not 1 <= len(link) <= MAX_LINK:
        raise ValueError(f"link data is 1 to {MAX_LINK} bytes, got {len(link)}")
    return NotifyPayload(NotifyType.ADDITIONAL_KEY_EXCHANGE, data=link)


def additional_key_exchange_link(notify: NotifyPayload) -> bytes:
    """The link data of a received ADDITIONAL_KEY_EXCHANGE notify; MalformedMessage if unusable."""
    if notify.type != NotifyType.ADDITIONAL_KEY_EXCHANGE:
        raise ValueError(f"not an ADDITIONAL_KEY_EXCHANGE notify: {notify.type}")
    if not 1 <= len(notify.data) <= MAX_LINK:
        raise MalformedMessage(f"N(ADD_KE): link data of {len(notify.data)} bytes (accepted: 1 to {MAX_LINK})",
                               payload="N")
    return notify.data
