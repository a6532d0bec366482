"""The endpoint's timers: one heap entry per IKE SA, refreshed only for SAs
touched since the last look, so an event costs the same with 10 SAs as with
10,000; plus the endpoint's own deferred calls (keyingtries retries).

The heap refers to SAs by a number, not the object: a destroyed SA is
dropped from the table at once and its stale heap entries keep nothing alive.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.events import IkeState

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_DESTROYED = IkeState.DESTROYED

if TYPE_CHECKING:
    from engine.ike.sa import IkeSa


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []
        """(time, sequence, key of the SA)."""
        self._seq = itertools.count()
        self._keys = itertools.count(1)
        self._sas: dict[int, IkeSa] = {}
        self._time: dict[int, float] = {}
        """The time of each SA's live heap entry; others are stale."""
        self.dirty: dict[int, IkeSa] = {}
        """SAs touched since the last look, by their key (``touch``; the endpoint marks
        registered SAs here directly: it happens on every state change)."""
        self._calls: list[tuple[float, int, Callable[[float], None]]] = []

    def touch(self, sa: IkeSa) -> None:
        """``sa`` handled something: its timers may have moved."""
        key = sa.timer_key
        if key == 0:
            key = sa.timer_key = next(self._keys)
        self.dirty[key] = sa

    def forget(self, sa: IkeSa) -> None:
        key = sa.timer_key
        self._sas.pop(key, None)
        self._time.pop(key, None)
        self.dirty.pop(key, None)

    def call_at(self, when: float, fn: Callable[[float], None]) -> None:
        """Run ``fn(now)`` at ``when`` (endpoint-level work; never capture an SA)."""
        heapq.heappush(self._calls, (when, next(self._seq), fn))

    def _refresh(self) -> None:
        heap = self._heap
        for key, sa in self.dirty.items():
            t = None if sa.state == _DESTROYED else sa.next_timer()
            if t is None:
                self._sas.pop(key, None)
                self._time.pop(key, None)
                continue
            self._sas[key] = sa
            if self._time.get(key) != t:
                self._time[key] = t
                heapq.heappush(heap, (t, next(self._seq), key))
        self.dirty.clear()
        while heap and self._time.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)

    def next_time(self) -> float | None:
        self._refresh()
        heap, calls = self._heap, self._calls
        if not calls:
            return heap[0][0] if heap else None
        if not heap:
            return calls[0][0]
        return min(heap[0][0], calls[0][0])

    def due_calls(self, now: float) -> list[Callable[[float], None]]:
        out = []
        while self._calls and self._calls[0][0] <= now:
            out.append(heapq.heappop(self._calls)[2])
        return out

    def due_sas(self, now: float) -> list[IkeSa]:
        self._refresh()
        heap = self._heap
        ready: list[IkeSa] = []
        while heap and heap[0][0] <= now:
            t, _, key = heapq.heappop(heap)
            if self._time.get(key) == t:
                del self._time[key]
                ready.append(self._sas.pop(key))
        return ready

    def __len__(self) -> int:
        return len(self._sas)
