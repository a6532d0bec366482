"""Short, safe text for log lines and events about peer input: names of
exchanges and notifies, and peer-supplied strings escaped and capped, so an
unauthenticated peer cannot forge log lines or make them huge."""

from __future__ import annotations

from collections.abc import Sequence

from engine.printable import escape
from engine.wire.constants import ExchangeType, NotifyType

PEER_TEXT = 128
"""Characters of one peer-supplied string (an identity, a selector list) we log."""
OFFERS = 8
"""Proposals of an offer we describe; the rest are counted."""
OFFER_TEXT = 240
"""Characters of one proposal's description."""


def exchange_name(exchange: int) -> str:
    try:
        return ExchangeType(exchange).name
    except ValueError:
        return str(exchange)


def notify_name(notify: int | None) -> str:
    if notify is None:
        return "NONE"
    try:
        return NotifyType(notify).name
    except ValueError:
        return str(notify)


def short(text: str, limit: int = PEER_TEXT) -> str:
    """``text`` cut to ``limit`` characters with a note of how many were left
    out, non-printable characters escaped (engine.printable, as the log does)."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return escape(text)


def capped(items: Sequence[str], limit: int = OFFERS, width: int = OFFER_TEXT) -> tuple[str, ...]:
    """The first ``limit`` items, each shortened, then ``and N more`` if any were left out."""
    out = tuple(short(s, width) for s in items[:limit])
    if len(items) > limit:
        out += (f"and {len(items) - limit} more",)
    return out
