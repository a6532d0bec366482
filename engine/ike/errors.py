"""IKE errors, split as DESIGN.md asks: local (our misuse of the engine)
and remote (the peer sent something bad, answered with a Notify)."""

from __future__ import annotations


class IkeError(Exception):
    """Base class."""


class LocalError(IkeError):
    """We asked the engine for something impossible (unknown connection,
    illegal state transition, missing secret). Never caused by a packet."""


class PlanRefused(LocalError, ValueError):
    """A policy change that cannot be applied whole; nothing was changed. A ValueError
    too, as callers of apply_policy have always caught."""


class IllegalTransition(LocalError):
    """A state machine was asked to move along an edge its table does not have."""


class RemoteError(IkeError):
    """The peer sent something we reject; ``notify`` is the Notify type to answer with
    (None: drop silently). ``details`` go into the NegotiationFailed event
    (both sides' proposals or selectors)."""

    def __init__(self, notify: int | None, reason: str, data: bytes = b"", details: dict | None = None) -> None:
        super().__init__(reason)
        self.notify = notify
        self.reason = reason
        self.data = data
        self.details = details or {}


class ChildRefused(IkeError):
    """The peer's answer did not give us the CHILD SA we asked for (it refused,
    or answered with something we did not offer). ``by_peer``: the peer said no
    (its error notify); otherwise we refused its answer. ``peer_made``: we refused an
    answer that gave us the peer's SA (so the peer installed its half, to be deleted)."""

    def __init__(self, notify: str, reason: str, details: dict | None = None, *, by_peer: bool = False,
                 peer_made: bool = False) -> None:
        super().__init__(reason)
        self.notify = notify
        self.reason = reason
        self.details = details or {}
        self.by_peer = by_peer
        self.peer_made = peer_made
