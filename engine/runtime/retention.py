"""What the runtime keeps of its events: the replay history and one queue per
subscriber, both bounded in bytes as well as in count.

Sizes are estimates, cheap enough for every event (no deep walk of large
events): :func:`event_size`. A subscriber whose queue would pass its bound
is dropped (its queue emptied at once, its reader told why by
:class:`SubscriberDropped`): the engine never waits for a reader and never
holds more than the bound for one.

Nothing kept here holds keys: a ChildSaInstalled is stored without them
(the datapath got the keyed event before).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable
from typing import Any

from engine.events import ChildSaInstalled, CountersSnapshot, Event, ExchangeReceived, ExchangeSent, LogMessage, \
    PacketSample
from engine.policy.ts import TrafficSelector
from engine.runtime.evolve import evolve
from engine.wire.summary import LazySummary

HISTORY_EVENTS = 1000
"""Events in the replay history at most."""
HISTORY_BYTES = 8 << 20
"""Estimated bytes of the replay history at most."""
QUEUE_EVENTS = 10000
"""Events waiting for one subscriber at most (the default; subscribe() may ask for another)."""
QUEUE_BYTES = 16 << 20
"""Estimated bytes waiting for one subscriber at most."""

_OBJECT = 120  # a small frozen dataclass instance and its __dict__
_FIELDS: dict[type, tuple[tuple[str, ...], bool]] = {}


def event_size(event: Event) -> int:
    """Estimated bytes an event keeps alive. Cheap: large events are sized from
    their lengths, not walked (a CountersSnapshot of 64,000 SAs is one multiply)."""
    # The estimator is chosen once per class: five events of a handshake come through here.
    sizer = _SIZERS.get(type(event))
    if sizer is None:
        sizer = _SIZERS[type(event)] = _sizer_for(type(event))
    return sizer(event)


def _log_size(event: LogMessage) -> int:
    return 400 + len(event.text) + len(event.source) + len(event.connection)


def _counters_size(event: CountersSnapshot) -> int:
    return 300 + 260 * len(event.sas) + 120 * len(event.drops)


def _sample_size(event: PacketSample) -> int:
    return 350 + len(event.outer) + len(event.inner) + len(event.verdict)


def _walked_size(event: Event) -> int:
    return _size(event, 0)


def _sizer_for(cls: type) -> Callable[[Event], int]:
    for kinds, sizer in (((ExchangeReceived, ExchangeSent), summary_size), (LogMessage, _log_size),
                         (CountersSnapshot, _counters_size), (PacketSample, _sample_size)):
        if issubclass(cls, kinds):
            return sizer
    return _walked_size


_SIZERS: dict[type, Callable[[Event], int]] = {}


def summary_size(event: ExchangeReceived | ExchangeSent) -> int:
    """event_size() of an ExchangeSent or ExchangeReceived."""
    m = event.message
    retained = getattr(m, "retained", None)  # a lazy summary knows; reading fields would format it
    return 400 + (retained if retained is not None else _size(m, 0))


def _size(value: Any, depth: int) -> int:
    # The same estimate as walking with isinstance() checks, dispatched on the exact type first:
    # this runs for every event of every handshake.
    t = type(value)
    kind = _KINDS.get(t)
    if kind is None:
        kind = _kind(value)
        if t is not type:  # a class as a value: is it a dataclass? depends on the class, not its type
            _KINDS[t] = kind
    if kind is _SCALAR:
        return 8  # a pointer; small ints and singletons are shared
    if kind is _TEXT:
        return 50 + len(value)
    if kind is _SEQUENCE:
        if depth > 6:
            return 56 + 100 * len(value)
        total = 56
        for v in value:
            total += 8 + _size(v, depth + 1)
        return total
    if kind is _OTHER:
        return 100
    fixed = _FIXED_SIZE.get(t)
    if fixed is not None and depth <= 6:
        if fixed:
            return fixed
        fixed = _FIXED_SIZE[t] = _fields_size(value, t, depth)
        return fixed
    return _fields_size(value, t, depth)


def _fields_size(value: Any, t: type, depth: int) -> int:
    shape = _FIELDS.get(t)
    if shape is None:
        shape = _FIELDS[t] = _shape(t)
    names, in_dict = shape
    if depth > 6:
        return _OBJECT + 60 * len(names)
    total = _OBJECT
    # Plain fields inline (an event is mostly ints and short strings): a call per field was most
    # of the cost of sizing a ChildSaInstalled.
    fields = value.__dict__ if in_dict else None
    kinds = _KINDS
    for n in names:
        v = fields[n] if in_dict else getattr(value, n)
        kind = kinds.get(type(v))
        if kind is _SCALAR:
            total += 48
        elif kind is _TEXT:
            total += 90 + len(v)
        elif kind is _OTHER:
            total += 140  # 40 + _size(v): an enum member (IkeState), an address
        else:
            total += 40 + _size(v, depth + 1)
    return total


def _shape(t: type) -> tuple[tuple[str, ...], bool]:
    """A dataclass's field names, and whether its instances keep them all in ``__dict__`` (not a
    class with slots, nor one whose fields are properties, as a lazy summary's)."""
    names = tuple(f.name for f in dataclasses.fields(t))
    in_dict = "__slots__" not in t.__dict__ and not any(
        isinstance(getattr(t, n, None), property) for n in names) and all(
        "__slots__" not in k.__dict__ for k in t.__mro__[1:-1])
    return names, in_dict


_SCALAR, _TEXT, _SEQUENCE, _DATACLASS, _OTHER = "scalar", "text", "sequence", "dataclass", "other"
_KINDS: dict[type, str] = {}
_FIXED_SIZE: dict[type, int] = {TrafficSelector: 0}
"""Dataclasses whose fields are all scalars or addresses, so every instance has the estimate of the
first one (0 until it is known): a CHILD SA's selectors are walked once, not per event."""


def _kind(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float)):
        return _SCALAR
    if isinstance(value, (str, bytes)):
        return _TEXT
    if isinstance(value, (tuple, list)):
        return _SEQUENCE
    if dataclasses.is_dataclass(value):
        return _DATACLASS
    return _OTHER


def keyless(event: Event) -> Event:
    """The event as it may be kept: ChildSaInstalled without its keys."""
    if isinstance(event, ChildSaInstalled) and event.keys is not None:
        # As event.without_keys(), without rebuilding the event through its __init__.
        return evolve(event, keys=None)
    return event


class KeptMessage:
    """An ExchangeSent or ExchangeReceived as the history keeps it: one object in place of the
    event, its summary and their dicts (six of them per handshake, kept for ~90 handshakes). The
    event is built again, equal, when the history is read (:meth:`event`): a replay is rare, a
    handshake is not."""

    __slots__ = ("cls", "ike_sa", "connection", "summary", "time", "local", "remote")

    def __init__(self, event: ExchangeSent | ExchangeReceived, time: float) -> None:
        self.cls = type(event)
        self.ike_sa = event.ike_sa
        self.connection = event.connection
        message = event.message
        # A lazy summary's parts (what it was made from, still unformatted), or a summary as it is.
        self.summary = message.parts() if type(message) is LazySummary else message
        self.time = time
        self.local = event.local
        self.remote = event.remote

    def event(self) -> ExchangeSent | ExchangeReceived:
        summary = self.summary
        message = LazySummary.from_parts(*summary) if type(summary) is tuple else summary
        return self.cls(self.ike_sa, self.connection, message, self.time, self.local, self.remote)


_MESSAGES = (ExchangeSent, ExchangeReceived)


def _as_event(item) -> Event:
    return item.event() if type(item) is KeptMessage else item


class EventHistory:
    """The most recent events, at most ``max_events`` and ``max_bytes`` (estimated):
    the oldest go first. Message summaries are kept as :class:`KeptMessage` records; reading
    the history gives the events."""

    def __init__(self, max_events: int = HISTORY_EVENTS, max_bytes: int = HISTORY_BYTES) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: deque[tuple[Event | KeptMessage, int]] = deque()

    def append(self, event: Event, size: int | None = None, *, kept: bool = False) -> None:
        """``kept``: the caller made ``event`` keyless already (the runtime, which offers the same
        keyless event to its subscribers)."""
        if type(event) in _MESSAGES:
            self.append_message(event, event.time, size)
            return
        size = event_size(event) if size is None else size
        if size > self.max_bytes:
            return  # cannot happen with bounded summaries; never let one event empty the history
        self._add(event if kept else keyless(event), size)

    def append_message(self, event: ExchangeSent | ExchangeReceived, time: float, size: int | None = None) -> None:
        """Keep ``event`` as if it were ``evolve(event, time=time)`` (the runtime's wall-clock copy),
        without making that copy when nobody else takes it."""
        size = summary_size(event) if size is None else size
        if size > self.max_bytes:
            return
        self._add(KeptMessage(event, time), size)

    def _add(self, item, size: int) -> None:
        self._items.append((item, size))
        self.bytes += size
        while len(self._items) > self.max_events or self.bytes > self.max_bytes:
            _, old = self._items.popleft()
            self.bytes -= old

    def __iter__(self):
        return (_as_event(e) for e, _ in list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def sized(self) -> list[tuple[Event, int]]:
        return [(_as_event(e), size) for e, size in self._items]


class SubscriberDropped(Exception):
    """The subscriber did not keep up and was disconnected; the message says why."""


class Subscription:
    """One subscriber's queue of events, bounded in count and estimated bytes.

    The engine side calls :meth:`offer` (never blocks). When an event would
    pass a bound, the subscription is dropped: its queue is emptied, and
    :meth:`get` raises :class:`SubscriberDropped` once what was put with
    ``put_nowait`` (sentinels) is taken. ``get``/``put_nowait``/``qsize``
    behave as asyncio.Queue's for the readers written against one.

    Counters snapshots are totals, so a newer one makes a waiting one
    useless: at most one waits per subscriber (the older is removed from the
    queue), and it is not counted in the byte bound, its objects being the
    runtime's current counters (a snapshot of 32,000 CHILD SAs alone is
    estimated at 16 MB).
    """

    def __init__(self, max_events: int = QUEUE_EVENTS, max_bytes: int = QUEUE_BYTES) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dropped: str | None = None
        """Why the subscription was dropped (None while it is live)."""
        self.lost = 0
        """Events it held when it was dropped (gone with it)."""
        self._items: deque[list] = deque()  # [item, size]; a replaced snapshot's entry becomes _GONE
        self._counters: list | None = None  # the entry of the waiting CountersSnapshot
        self._waiter: asyncio.Future | None = None
        self.on_drop: Callable[[str], None] | None = None
        """Called with the reason when the subscription is dropped (its reader may be stuck)."""
        self.kinds: tuple[type, ...] | None = None
        """The event classes this subscriber reads (None: every event); the runtime offers no other."""

    def wants(self, cls: type) -> bool:
        """Whether events of class ``cls`` are offered to this subscriber."""
        return self.kinds is None or issubclass(cls, self.kinds)

    # -- engine side -------------------------------------------------------------
    def offer(self, event: Event, size: int) -> bool:
        """Queue ``event``; False when the subscription is (now) dropped."""
        if self.dropped is not None:
            return False
        if isinstance(event, CountersSnapshot):
            if self._counters is not None:
                self._counters[0] = _GONE
            self._counters = [event, 0]
            self._items.append(self._counters)
            self._wake()
            return True
        if len(self._items) >= self.max_events or self.bytes + size > self.max_bytes:
            self.drop(f"events were not read fast enough: {len(self._items)} events "
                      f"({_mib(self.bytes)}) waiting, the limit is {self.max_events} events or "
                      f"{_mib(self.max_bytes)}; subscribe again to resume")
            return False
        self._items.append([keyless(event), size])
        self.bytes += size
        self._wake()
        return True

    def drop(self, reason: str) -> None:
        self.dropped = reason
        self.lost = len(self._items)
        self._items.clear()
        self._counters = None
        self.bytes = 0
        self._wake()
        if self.on_drop is not None:
            self.on_drop(reason)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- reader side (asyncio.Queue-like) -----------------------------------------
    def put_nowait(self, item: Any) -> None:
        """Add an item outside the bounds (a replayed event, a stop sentinel)."""
        self._items.append([keyless(item) if isinstance(item, Event) else item, 0])
        self._wake()

    def get_nowait(self) -> Any:
        while self._items:
            entry = self._items.popleft()
            item, size = entry
            self.bytes -= size
            if entry is self._counters:
                self._counters = None
            if item is not _GONE:
                return item
        if self.dropped is not None:
            raise SubscriberDropped(self.dropped)
        raise asyncio.QueueEmpty

    async def get(self) -> Any:
        while True:
            try:
                return self.get_nowait()
            except asyncio.QueueEmpty:
                pass
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items


_GONE = object()


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
