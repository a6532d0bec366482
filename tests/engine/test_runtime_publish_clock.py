"""EngineRuntime.publish: a subscriber and the history get each event on the wall clock and without
keys, exactly as `keyless(to_wall_clock(event, offset))` makes it; the clocks are read only for the
event classes that carry an engine-clock time (message summaries, PacketSample, CountersSnapshot),
not for the others (IkeSaStateChanged, ChildSaInstalled, ChildSaDeleted: most of a handshake's
events), which are passed on as they are."""

from __future__ import annotations

import engine.runtime.engine as engine_mod
from engine.events import (ChildSaInstalled, ChildSaDeleted, CountersSnapshot, ExchangeReceived, ExchangeSent,
                           IkeSaStateChanged, PacketSample, SaCounters)
from engine.runtime.engine import EngineRuntime
from engine.runtime.retention import keyless
from engine.runtime.wallclock import MOVED, to_wall_clock
from tests.engine.ike_pair import connection, handshake_events, mirror, policy

WALL, ENGINE = 1_700_000_000.0, 1000.0


class _Clock:
    def __init__(self) -> None:
        self.reads = 0

    def time(self) -> float:
        self.reads += 1
        return WALL


def _runtime(monkeypatch) -> tuple[EngineRuntime, _Clock]:
    clock = _Clock()
    monkeypatch.setattr(engine_mod, "time", clock)
    rt = EngineRuntime(policy(mirror(connection())))
    monkeypatch.setattr(rt, "now", lambda: ENGINE)
    clock.reads = 0  # its start time
    return rt, clock


def _extra() -> list:
    return [PacketSample(ENGINE - 1.0, "in", 0x1234, 7, b"\x00" * 20, b"\x45" + b"\x00" * 19),
            CountersSnapshot(ENGINE, (SaCounters(0x1234, "in", 10, 1, (), ENGINE - 2.0),
                                      SaCounters(0x5678, "out", 0, 0, (), None)), (("no_sa", 3),))]


def test_subscribers_and_history_get_the_events_as_before(monkeypatch):
    events = handshake_events() + _extra()
    assert any(isinstance(e, ChildSaInstalled) and e.keys is not None for e in events)
    rt, _ = _runtime(monkeypatch)
    sub = rt.subscribe()
    for e in events:
        rt.publish(e)
    got = [sub.get_nowait() for _ in events]
    want = [keyless(to_wall_clock(e, WALL - ENGINE)) for e in events]
    assert got == want
    assert all(not isinstance(e, ChildSaInstalled) or e.keys is None for e in got)
    history = list(rt.history)
    assert history == [w for w in want if not isinstance(w, (PacketSample, CountersSnapshot))]


def test_events_without_engine_clock_times_read_no_clock(monkeypatch):
    rt, clock = _runtime(monkeypatch)
    rt.subscribe()
    plain = [e for e in handshake_events() if isinstance(e, (IkeSaStateChanged, ChildSaInstalled, ChildSaDeleted))]
    assert plain and not any(isinstance(e, MOVED) for e in plain)
    for e in plain:
        rt.publish(e)
    assert clock.reads == 0
    for e in _extra() + [e for e in handshake_events() if isinstance(e, (ExchangeSent, ExchangeReceived))][:1]:
        rt.publish(e)
    assert clock.reads == 3
