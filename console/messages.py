"""Messages the bridge posts to the app. Each carries immutable data only."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from engine.events import Event
from engine.status import StatusSnapshot


@dataclass
class StatusUpdated(Message):
    """A new status snapshot from the runtime's poll."""

    snapshot: StatusSnapshot


@dataclass
class EventsArrived(Message):
    """Engine events, in order, coalesced from one burst."""

    events: tuple[Event, ...]


@dataclass
class RuntimeTrouble(Message):
    """A bridge worker failed or the runtime went away; shown as an alert, never a crash."""

    where: str
    """Which part: events, status, command."""
    text: str
    fatal: bool = False
    """The runtime is gone (disconnected): live data stops."""


@dataclass
class StoreChanged(Message):
    """The console store changed; ``parts`` says what (status, events, logs, ...)."""

    parts: frozenset[str]
