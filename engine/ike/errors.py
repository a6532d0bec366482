"""IKE errors, split as DESIGN.md asks: local (our misuse of the engine)
and remote (the peer sent something bad, answered with a Notify)."""

from __future__ import annotations


class IkeError(Exception):
    """Base class."""


class LocalError(IkeError):
    """We asked the engine for something impossible (unknown connection,
    illegal state transition, missing secret). Never caused by a packet."""


class IllegalTransition(LocalError):
    """A state machine was asked to move along an edge its table does not have."""


class RemoteError(IkeError):
    """The peer sent something we reject; ``notify`` is the Notify type to answer with
    (None: drop silently)."""

    def __init__(self, notify: int | None, reason: str, data: bytes = b"") -> None:
        super().__init__(reason)
        self.notify = notify
        self.reason = reason
        self.data = data
