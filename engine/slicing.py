"""Long work on the engine's loop, done a step at a time (a listing of 10,000
SAs, the counters of 20,000, a batch of events to pickle): every timer and
packet waits for the step that holds the loop, so each step ends after a few
items or a couple of milliseconds, whichever comes first. A count alone is
not enough (on a loaded machine the same 100 items took 40 ms instead of
4), a clock alone is not either (a step is never shorter than one item, and
items vary: an IKE SA with 50 CHILD SAs).

`Steps` is for loops that can look at the clock between items; `Pace` for
work done in one call (pickling a list), sized from what the last calls
took; `release` lets go of a big collection a slice at a time (the last
reference to 20,000 objects frees them all in one step otherwise)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

STEP_SECONDS = 0.001
"""How long one step may hold the loop, about (a loaded machine stretches it several times)."""
RELEASE_ITEMS = 1000
"""Objects let go of per step by `release`."""


class Steps:
    """Counts the items of one step: `done()` says when to yield (after ``items`` items or
    ``seconds``), `next()` yields and starts the next step."""

    __slots__ = ("items", "seconds", "clock", "steps", "_left", "_until")

    def __init__(self, items: int, seconds: float = STEP_SECONDS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.items = max(1, items)
        self.seconds = seconds
        self.clock = clock
        self.steps = 1
        """Steps so far (the one under way included)."""
        self._left = self.items
        self._until = clock() + seconds

    def done(self, n: int = 1) -> bool:
        """``n`` more items are done; True when this step has had its share."""
        self._left -= n
        return self._left <= 0 or self.clock() >= self._until

    async def next(self) -> None:
        """Let the loop run (packets, timers), then start a new step."""
        await asyncio.sleep(0)
        self.reset()

    def reset(self) -> None:
        """A new step starts (the caller let the loop run otherwise: it waited for something)."""
        self.steps += 1
        self._left = self.items
        self._until = self.clock() + self.seconds


class Pace:
    """How many items one call may take (``n``), from what the last calls cost per item: a call
    that ran long makes the next ones smaller at once; quick calls let them grow, doubling at most."""

    __slots__ = ("n", "low", "high", "seconds")

    def __init__(self, start: int, low: int, high: int, seconds: float = STEP_SECONDS) -> None:
        self.n = start
        self.low = low
        self.high = high
        self.seconds = seconds

    def took(self, items: int, seconds: float) -> None:
        """``items`` were handled in ``seconds``."""
        if items <= 0:
            return
        fit = int(self.seconds * items / seconds) if seconds > 0 else self.high
        self.n = max(self.low, min(self.high, 2 * self.n, fit))


async def release(items: list, per_step: int = RELEASE_ITEMS) -> None:
    """Empty ``items`` (the caller's last reference to what it holds) a slice at a time, yielding
    between slices, so the objects it kept alive are freed over several steps."""
    while items:
        del items[-per_step:]
        if items:
            await asyncio.sleep(0)


async def release_dict(items: dict, per_step: int = RELEASE_ITEMS) -> None:
    """`release` for a dict (its keys and values), emptied from its end."""
    pop = items.popitem
    while items:
        for _ in range(min(per_step, len(items))):
            pop()
        if items:
            await asyncio.sleep(0)
