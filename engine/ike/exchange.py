"""What every exchange shares: its declared transition table and the two
roles' interfaces (engine.ike.exchanges' docstring says how an exchange is added).

A table maps (state, input) to (next state, action). The action is a method
of the exchange; it may return another input, fired at once (a decision the
table spells out, e.g. WON/LOST after a rekey collision). Inputs caused by the
peer are listed as remote: a pair missing from the table is then a
RemoteError (answered or ignored per the RFC); for our own inputs it is an
IllegalTransition, a bug of ours.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from engine.ike.errors import IllegalTransition, RemoteError
from engine.wire.payloads import NotifyPayload

if TYPE_CHECKING:
    from engine.ike.child import ChildSa
    from engine.ike.sa import IkeSa


class Label(enum.Enum):
    """Base of exchange states and inputs: hashed by identity (members are
    singletons), which spares a Python-level __hash__ on every table lookup."""

    __hash__ = object.__hash__


class Request(NamedTuple):
    """A request an initiator wants sent: its exchange type and payloads."""

    exchange: int
    payloads: list


class Step(NamedTuple):
    next: enum.Enum
    action: str | None


class Table:
    """The rules of one exchange: (state, input) -> (next state, action name)."""

    def __init__(self, name: str, rules: Mapping[tuple[enum.Enum, enum.Enum], tuple[enum.Enum, str | None]], *,
                 remote: Iterable[enum.Enum], final: Iterable[enum.Enum]) -> None:
        self.name = name
        self.rules = {key: Step(*value) for key, value in rules.items()}
        self.remote = frozenset(remote)
        self.final = frozenset(final)

    def step(self, state: enum.Enum, inp: enum.Enum) -> Step:
        step = self.rules.get((state, inp))
        if step is not None:
            return step
        what = f"{self.name}: {inp.name} in state {state.name}"
        if inp in self.remote:
            raise RemoteError(None, f"unexpected {what}")
        raise IllegalTransition(what)

    def states(self) -> set[enum.Enum]:
        return {s for s, _ in self.rules} | {step.next for step in self.rules.values()}

    def actions(self) -> set[str]:
        return {step.action for step in self.rules.values() if step.action}


class Exchange:
    """One exchange on one IKE SA, in one role. Subclasses declare ``TABLE``
    and ``INITIAL`` and implement the actions the table names."""

    TABLE: ClassVar[Table]
    INITIAL: ClassVar[enum.Enum]
    name: ClassVar[str] = "exchange"

    def __init__(self, sa: IkeSa | None) -> None:
        self.sa = sa
        self.state: enum.Enum = self.INITIAL

    @property
    def finished(self) -> bool:
        return self.state in self.TABLE.final

    def fire(self, inp: enum.Enum | None, now: float, **data) -> None:
        """Move along the table, running each step's action."""
        rules = self.TABLE.rules
        while inp is not None:
            step = rules.get((self.state, inp)) or self.TABLE.step(self.state, inp)
            self.state = step.next
            inp = getattr(self, step.action)(now, **data) if step.action else None
            data = {}

    def maybe(self, inp: enum.Enum, now: float, **data) -> bool:
        """Fire ``inp`` if the table has a rule for it in the current state
        (peer events that only matter in some states); False when ignored."""
        if (self.state, inp) not in self.TABLE.rules:
            return False
        self.fire(inp, now, **data)
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state.name}>"


class Initiator(Exchange):
    """An exchange we start. The IKE SA asks for requests until ``request``
    returns None (one request per round: multi-round exchanges return several)."""

    affects_children: ClassVar[bool] = False
    """Creates, rekeys or deletes CHILD SAs: the peer's IKE rekey must wait (§2.25.2)."""

    def request(self, now: float) -> Request | None:
        raise NotImplementedError

    def response(self, exchange: int, payloads: list, now: float) -> None:
        raise NotImplementedError

    def failed(self, now: float, reason: str) -> None:
        """The peer's answer was authenticated but could not be decoded."""
        self.abort(now)

    def abort(self, now: float) -> None:
        """The IKE SA goes away (or moves on) before this exchange completed:
        release what it holds. Also called on exchanges that never started."""

    def survives_delete(self) -> bool:
        """Whether this exchange stays in flight when we start deleting the IKE SA
        (an IKE rekey does: its answer may create an IKE SA the peer holds)."""
        return False

    def migrate(self, sa: IkeSa) -> bool:
        """A queued (not started) exchange moves to the IKE SA that replaced
        ours; False drops it (it only made sense on the old SA)."""
        self.sa = sa
        return True

    # Peer events that may collide with this exchange while it is in flight
    # (RFC 7296 §2.8, §2.25). The default: no collision.
    def creates(self) -> str | None:
        """The CHILD config this exchange is bringing up, if any."""
        return None

    def holds_child(self, child: ChildSa) -> bool:
        """This exchange is creating, rekeying or deleting ``child``."""
        return False

    def peer_rekeyed_child(self, old: ChildSa, new: ChildSa, now: float) -> bool:
        """We answered the peer's rekey of ``old`` with ``new``; True when this
        exchange takes ``new`` over (a collision it resolves)."""
        return False

    def peer_deleted_child(self, child: ChildSa, now: float) -> None:
        """The peer deleted ``child`` (already removed)."""

    def peer_rekeyed_ike(self, new: IkeSa, now: float) -> bool:
        """We answered the peer's rekey of this IKE SA with ``new``; True when
        this exchange takes ``new`` over."""
        return False

    def peer_deleted_ike(self, now: float) -> None:
        """The peer deleted this IKE SA (it is destroyed right after)."""

    def holds_peer_delete(self) -> bool:
        """The peer's DELETE of this IKE SA must wait for this exchange's answer
        (left unanswered, the peer retransmits it). Asked once per DELETE received."""
        return False


class Responder(Exchange):
    """An exchange the peer started: ``respond`` builds our answer; whatever
    must follow the answer on the wire (installing, destroying) goes in
    ``responded``. A multi-round responder stays until ``finished``."""

    answer_delay = 0.0
    """Seconds our answer to this round waits before it goes out (the EAP-MSCHAPv2 retry delay)."""

    def respond(self, exchange: int, payloads: list, now: float) -> list | None:
        """Our answer; None holds the request unanswered (the peer retransmits it)."""
        raise NotImplementedError

    def responded(self, now: float) -> None:
        """Runs after the response went out."""

    def accepts(self, exchange: int) -> bool:
        """Whether a further request belongs to this (multi-round) responder."""
        return False

    def abandon(self, now: float) -> None:
        """The rest of this (multi-round) exchange will not come: release what it holds."""

    def waiting(self, now: float) -> None:
        """Kept for its next round after an answer went out (engine.ike.followup arms a timeout)."""


# ---------------------------------------------------------------- payload helpers
def find(payloads, cls, pred=None):
    for p in payloads:
        if isinstance(p, cls) and (pred is None or pred(p)):
            return p
    return None


def first_of(payloads, *classes) -> tuple:
    """The first payload of each class (None where there is none), in one pass."""
    found = dict.fromkeys(classes)
    for p in payloads:
        cls = type(p)
        if cls in found and found[cls] is None:
            found[cls] = p
    return tuple(found.values())


def notify(payloads, ntype: int) -> NotifyPayload | None:
    for p in payloads:
        if isinstance(p, NotifyPayload) and p.type == ntype:
            return p
    return None


def error_notifies(payloads) -> list[NotifyPayload]:
    return [p for p in payloads if isinstance(p, NotifyPayload) and p.type < 16384]
