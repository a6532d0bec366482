"""Errors of the ESP/AH datapath core.

`EspDrop` is about a packet from the network: it is dropped and counted,
never delivered, and its reason is one of `DROP_REASONS` (the names the
console and `SaCounters.drops` use). `SaExpired` is about our own sending:
the SA may not protect another packet (sequence numbers exhausted or hard
lifetime reached) and the caller must switch to the rekeyed SA.
"""

from __future__ import annotations

DROP_REASONS: tuple[str, ...] = (
    "replay",
    "icv",
    "malformed",
    "policy_mismatch",
    "no_sa",
    "discard_rule",
)
"""Every reason a packet is dropped, in display order."""


class EspError(Exception):
    """Base class of the errors raised by engine.esp."""


class EspDrop(EspError):
    """An inbound packet was dropped; ``reason`` is one of DROP_REASONS, ``detail`` says more."""

    __slots__ = ("reason", "detail")

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class TransportFragment(ValueError):
    """An IPv4 fragment handed to a transport-mode SA, which carries whole datagrams only (RFC 4301
    §7): the caller reassembles the datagram and protects it whole (engine.datapath.reassembly)."""


class SaExpired(EspError):
    """The outbound SA may not send any more (sequence exhausted or hard lifetime)."""
