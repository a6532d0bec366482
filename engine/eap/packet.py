"""EAP packets (RFC 3748 §4-§5): the header, Identity, Notification, Nak.

An IKEv2 EAP payload (RFC 7296 §3.16) carries exactly one EAP packet;
``engine.wire.EapPayload`` holds it as code, identifier and the bytes after
the length. Here the packet is read whole (``decode``) and its type split
off, so the methods see ``type`` and ``type_data``.

Decoding never raises anything but EapError, and never accepts a length
field that disagrees with the bytes received (§4: longer is an error here,
because IKE delivers exactly one packet per payload).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from engine.wire.constants import EapCode
from engine.wire.payloads import EapPayload

_HEADER = struct.Struct("!BBH")
MAX_PACKET = 65535
"""The 16-bit length field's limit."""


class EapType(enum.IntEnum):
    """EAP method types (IANA "Method Types") that this package knows by name."""

    IDENTITY = 1
    NOTIFICATION = 2
    NAK = 3
    MD5_CHALLENGE = 4
    TLS = 13
    TTLS = 21
    PEAP = 25
    MSCHAPV2 = 26
    EXPANDED = 254


class EapError(ValueError):
    """A malformed EAP packet or one that does not belong where it arrived. ``reason`` is for the
    log and the Negotiations screen: it names what is wrong, never a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class EapPacket:
    """One EAP packet."""

    code: int
    """EapCode: REQUEST, RESPONSE, SUCCESS, FAILURE."""
    identifier: int
    """Matches a response to its request (0-255)."""
    type: int | None = None
    """Method type of a request or response; None for Success and Failure."""
    type_data: bytes = b""
    """The bytes after the type octet."""

    def encode(self) -> bytes:
        """The packet as sent (header included)."""
        body = b"" if self.type is None else bytes((self.type,)) + self.type_data
        if len(body) + 4 > MAX_PACKET:
            raise ValueError(f"an EAP packet of {len(body) + 4} bytes does not fit the length field")
        return _HEADER.pack(self.code, self.identifier, 4 + len(body)) + body

    def to_payload(self) -> EapPayload:
        """The IKEv2 EAP payload carrying this packet."""
        body = b"" if self.type is None else bytes((self.type,)) + self.type_data
        return EapPayload(self.code, self.identifier, body)

    @property
    def is_request(self) -> bool:
        return self.code == EapCode.REQUEST

    @property
    def is_response(self) -> bool:
        return self.code == EapCode.RESPONSE


def decode(data: bytes) -> EapPacket:
    """Read one whole EAP packet; EapError says what is wrong."""
    if len(data) < 4:
        raise EapError(f"EAP packet of {len(data)} bytes, shorter than its 4-byte header")
    code, identifier, length = _HEADER.unpack_from(data)
    if length != len(data):
        raise EapError(f"EAP length field says {length} bytes, {len(data)} received")
    if code in (EapCode.REQUEST, EapCode.RESPONSE):
        if length < 5:
            raise EapError(f"EAP {EapCode(code).name} without a type")
        return EapPacket(code, identifier, data[4], bytes(data[5:]))
    if code in (EapCode.SUCCESS, EapCode.FAILURE):
        if length != 4:
            raise EapError(f"EAP {EapCode(code).name} with {length - 4} bytes of data (must have none)")
        return EapPacket(code, identifier)
    raise EapError(f"unknown EAP code {code}")


def from_payload(payload: EapPayload) -> EapPacket:
    """The packet of a decoded IKEv2 EAP payload (engine.wire checked its length)."""
    return decode(_HEADER.pack(payload.code, payload.identifier, 4 + len(payload.data)) + payload.data)


# -- the packets every method shares ----------------------------------------------------------------


def identity_request(identifier: int) -> EapPacket:
    return EapPacket(EapCode.REQUEST, identifier, EapType.IDENTITY)


def identity_response(identifier: int, identity: bytes) -> EapPacket:
    return EapPacket(EapCode.RESPONSE, identifier, EapType.IDENTITY, identity)


def nak(identifier: int, desired: tuple[int, ...]) -> EapPacket:
    """A legacy Nak (§5.3.1) listing the types the peer would rather use; (0,) means none."""
    types = tuple(t for t in desired if 4 <= t <= 253) or (0,)
    return EapPacket(EapCode.RESPONSE, identifier, EapType.NAK, bytes(types))


def nak_types(packet: EapPacket) -> tuple[int, ...]:
    """The types a Nak proposes (0 or nothing: none acceptable)."""
    return tuple(t for t in packet.type_data if t)


def success(identifier: int) -> EapPacket:
    return EapPacket(EapCode.SUCCESS, identifier)


def failure(identifier: int) -> EapPacket:
    return EapPacket(EapCode.FAILURE, identifier)


def printable(data: bytes, limit: int = 64) -> str:
    """An identity or message from a peer, safe for a log line: printable ASCII, bounded."""
    text = "".join(chr(b) if 32 <= b < 127 else "?" for b in data[:limit])
    return text + (f"... ({len(data)} bytes)" if len(data) > limit else "")
