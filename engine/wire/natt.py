"""RFC 3948 demultiplexing of the UDP port-4500 socket.

One socket carries NAT keepalives (one 0xFF octet), IKE behind the four-zero
non-ESP marker, and ESP-in-UDP (an ESP header: SPI, never 0, then sequence).
"""

from __future__ import annotations

from typing import Literal

from engine.wire.constants import IKE_HEADER_SIZE, NATT_KEEPALIVE, NON_ESP_MARKER
from engine.wire.errors import MalformedMessage

NattKind = Literal["keepalive", "ike", "esp", "invalid"]

_MARKER_LEN = len(NON_ESP_MARKER)
_ESP_MIN = 8  # SPI and sequence number


def classify_natt(datagram: bytes) -> NattKind:
    """What a port-4500 datagram carries.

    ``invalid``: too short for what it claims, or an ESP SPI in the reserved
    range 1-255 (RFC 4303 §2.1), which no peer may use.
    """
    n = len(datagram)
    if n == 1:
        return "keepalive" if datagram == NATT_KEEPALIVE else "invalid"
    if n >= _MARKER_LEN and datagram[:_MARKER_LEN] == NON_ESP_MARKER:
        return "ike" if n >= _MARKER_LEN + IKE_HEADER_SIZE else "invalid"
    if n >= _ESP_MIN and int.from_bytes(datagram[:4], "big") > 255:
        return "esp"
    return "invalid"


def strip_marker(datagram: bytes) -> bytes:
    """The IKE message inside a port-4500 datagram; MalformedMessage without the marker."""
    if datagram[:_MARKER_LEN] != NON_ESP_MARKER:
        raise MalformedMessage("port-4500 datagram without the non-ESP marker", offset=0, payload="NAT-T")
    return datagram[_MARKER_LEN:]


def add_marker(message: bytes) -> bytes:
    """An IKE message framed for port 4500 (RFC 3948 §2.2)."""
    return NON_ESP_MARKER + message
