"""Errors of the IKEv2 wire codec.

Every decoding problem raises a ``WireError`` subclass, never IndexError or
struct.error: the IKE layer catches ``WireError`` alone. Each class names the
Notify the IKE layer answers with (RFC 7296 §2.21), when it answers at all.
"""

from __future__ import annotations

from engine.wire.constants import NotifyType


class WireError(Exception):
    """Base class: the bytes from the peer are not a valid IKEv2 message."""

    notify: NotifyType = NotifyType.INVALID_SYNTAX
    """The error Notify to answer a request with."""


class MalformedMessage(WireError):
    """Lengths, counts or field values that break RFC 7296 §3 (answer INVALID_SYNTAX).

    ``reason`` names the payload and the byte offset in the message, e.g.
    ``"SA at offset 28: proposal 2 numbered 3, expected 2"``.
    """

    def __init__(self, reason: str, *, offset: int | None = None, payload: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        """What is wrong and where, readable by an admin."""
        self.offset = offset
        """Byte offset in the message (or in the decrypted SK body) of the bad payload, if known."""
        self.payload = payload
        """Short name of the payload being decoded (SA, KE, ...), if known."""


class BufferReadError(MalformedMessage):
    """A read past the end of a Buffer: the message is truncated."""


class UnsupportedCriticalPayload(WireError):
    """A payload type we do not know, with the critical bit set (RFC 7296 §2.5).

    The IKE layer answers UNSUPPORTED_CRITICAL_PAYLOAD with ``payload_type`` as
    the one-octet notification data.
    """

    notify = NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD

    def __init__(self, payload_type: int, offset: int | None = None) -> None:
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"unsupported critical payload type {payload_type}{where}")
        self.payload_type = payload_type
        """The unknown payload type number."""
        self.offset = offset

    @property
    def notify_data(self) -> bytes:
        """The notification data of the answer: the payload type as one octet."""
        return bytes((self.payload_type & 0xFF,))


class InvalidMajorVersion(WireError):
    """The IKE header's major version is not 2 (answer INVALID_MAJOR_VERSION, §2.5).

    ``header`` is the decoded header, so the IKE layer can answer with the
    peer's SPIs and message ID.
    """

    notify = NotifyType.INVALID_MAJOR_VERSION

    def __init__(self, major: int, header: object = None) -> None:
        super().__init__(f"IKE major version {major}, expected 2")
        self.major = major
        """The major version the peer sent."""
        self.header = header
        """The decoded IkeHeader (engine.wire.message.IkeHeader)."""
