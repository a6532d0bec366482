"""sa_timers.next_timer and Scheduler.next_time give the earliest deadline exactly as the list-and-min()
forms they replaced (a running minimum now: asked for every SA a message touches): checked against
that reference over random SAs (any timer unset, outstanding requests, held answers, deferred
retries, CHILD SAs), and the scheduler over its heap and deferred calls."""

from __future__ import annotations

import random
from types import SimpleNamespace

from engine.ike import sa_timers
from engine.ike.scheduler import Scheduler


def _reference(sa) -> float | None:
    times = [sa.rekey_at, sa.expire_at, sa.dpd_at, sa.keepalive_at, sa.half_open_deadline, sa.deadline]
    if sa.outstanding is not None:
        times.append(sa.outstanding.next_at)
    if sa.cached is not None and sa.cached.held_until is not None:
        times.append(sa.cached.held_until)
    for at, _ in sa.deferred:
        times.append(at)
    for c in sa.children.values():
        times += (c.rekey_at, c.expire_at, c.deadline)
    times = [t for t in times if t is not None]
    return min(times) if times else None


def _maybe(rng: random.Random):
    if rng.random() < 0.5:
        return None
    return rng.choice((rng.uniform(0, 1e4), float(rng.randint(0, 3)), rng.randint(0, 3)))


def _sa(rng: random.Random):
    return SimpleNamespace(
        rekey_at=_maybe(rng), expire_at=_maybe(rng), dpd_at=_maybe(rng), keepalive_at=_maybe(rng),
        half_open_deadline=_maybe(rng), deadline=_maybe(rng),
        outstanding=None if rng.random() < 0.5 else SimpleNamespace(next_at=_maybe(rng)),
        cached=None if rng.random() < 0.5 else SimpleNamespace(held_until=_maybe(rng)),
        deferred=[(rng.uniform(0, 1e4), None) for _ in range(rng.randint(0, 2))],
        children={i: SimpleNamespace(rekey_at=_maybe(rng), expire_at=_maybe(rng), deadline=_maybe(rng))
                  for i in range(rng.randint(0, 3))})


def test_next_timer_is_the_reference_minimum():
    rng = random.Random(13)
    for _ in range(20000):
        sa = _sa(rng)
        got, want = sa_timers.next_timer(sa), _reference(sa)
        assert got == want and type(got) is type(want)


def test_scheduler_next_time_over_heap_and_calls():
    rng = random.Random(14)
    for _ in range(2000):
        s = Scheduler()
        for _ in range(rng.randint(0, 3)):
            s.call_at(rng.uniform(0, 100), lambda now: None)
        for _ in range(rng.randint(0, 3)):
            s._heap.append((rng.uniform(0, 100), 0, 0))
        s._heap.sort()
        s._time = {0: s._heap[0][0]} if s._heap else {}
        times = ([s._heap[0][0]] if s._heap else []) + ([s._calls[0][0]] if s._calls else [])
        assert s.next_time() == (min(times) if times else None)
