"""The runtime's one timer: re-armed only when the endpoint's earliest deadline moves earlier. A later
deadline (or none) keeps the armed handle, which fires early, finds nothing due (handle_timer with
nothing due does nothing) and re-arms at the deadline then; under a handshake load the earliest
deadline moves later with most messages, and each move used to cost a cancelled handle and a new one.
The endpoint's timers still run at their deadlines: shown with a real loop at the end."""

from __future__ import annotations

import asyncio

from engine.runtime.engine import EngineRuntime
from tests.engine.ike_pair import connection, mirror, policy


class _NoPool:
    short = False  # no key-pool filling in these tests


class _Endpoint:
    """The parts of an IkeEndpoint that _after and _on_timer use; the deadline set by the test."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.fired: list[float] = []

    def next_event(self):
        return None

    def datagrams_to_send(self):
        return []

    def get_timer(self):
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)


class _Handle:
    def __init__(self, when: float) -> None:
        self._when = when
        self.cancelled = False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class _Loop:
    def __init__(self) -> None:
        self.armed: list[_Handle] = []
        self.clock = 0.0

    def call_at(self, when, fn):
        self.armed.append(_Handle(when))
        return self.armed[-1]

    def call_later(self, delay, fn):
        return _Handle(self.clock + delay)

    def time(self) -> float:
        return self.clock


def _runtime():
    rt = EngineRuntime(policy(mirror(connection())))
    rt.endpoint = _Endpoint()
    rt._loop = _Loop()
    rt.key_pool = _NoPool()
    return rt


def test_a_later_deadline_keeps_the_armed_timer():
    rt = _runtime()
    for deadline in (10.0, 20.0, 30.0):
        rt.endpoint.deadline = deadline
        rt._after()
    assert [h.when() for h in rt._loop.armed] == [10.0]
    assert not rt._loop.armed[0].cancelled
    rt.endpoint.deadline = None  # no deadline at all: the armed one fires and finds nothing
    rt._after()
    assert len(rt._loop.armed) == 1 and not rt._loop.armed[0].cancelled


def test_an_earlier_deadline_rearms():
    rt = _runtime()
    rt.endpoint.deadline = 30.0
    rt._after()
    rt.endpoint.deadline = 10.0
    rt._after()
    assert [h.when() for h in rt._loop.armed] == [30.0, 10.0]
    assert rt._loop.armed[0].cancelled and not rt._loop.armed[1].cancelled
    assert rt._timer is rt._loop.armed[1]


def test_an_early_fire_rearms_at_the_deadline():
    rt = _runtime()
    rt.endpoint.deadline = 10.0
    rt._after()
    rt.endpoint.deadline = 30.0
    rt._after()
    rt._loop.clock = 10.0
    rt._on_timer()  # the handle armed for 10 fires; nothing is due before 30
    assert rt.endpoint.fired == [10.0]
    assert [h.when() for h in rt._loop.armed] == [10.0, 30.0]
    assert rt._timer is rt._loop.armed[1]


def test_deadlines_run_on_time_with_a_real_loop():
    async def run() -> list[float]:
        loop = asyncio.get_running_loop()
        rt = EngineRuntime(policy(mirror(connection())))
        ep = rt.endpoint = _Endpoint()
        rt._loop = loop
        rt.key_pool = _NoPool()
        start = loop.time()
        ran: list[float] = []
        due = [start + 0.05, start + 0.10]

        def handle_timer(now: float) -> None:
            while due and due[0] <= now:
                ran.append(due.pop(0) - start)
            ep.deadline = due[0] if due else None

        ep.handle_timer = handle_timer
        ep.deadline = start + 0.02  # armed first for 0.02, then the deadline moves later
        rt._after()
        ep.deadline = due[0]
        rt._after()
        await asyncio.sleep(0.2)
        if rt._timer is not None:
            rt._timer.cancel()
        return ran

    ran = asyncio.run(run())
    assert [round(r, 2) for r in ran] == [0.05, 0.10]
