"""Engine times on the wall clock, converted once at the runtime boundary.

Inside the engine every time is the runtime's ``now`` (the event loop's
monotonic clock: timers must not jump with NTP). Whatever leaves the runtime
for people and scripts (the console, ``ipsec-console events``, the control
socket) carries Unix time, so it lines up with journalctl and a peer's log.
"""

from __future__ import annotations

from engine.events import CountersSnapshot, Event, ExchangeReceived, ExchangeSent, PacketSample, SaCounters
from engine.runtime.evolve import evolve

_ON_ENGINE_CLOCK = (ExchangeSent, ExchangeReceived, PacketSample)
MOVED = _ON_ENGINE_CLOCK + (CountersSnapshot,)
"""The event classes whose events to_wall_clock changes; it returns any other event as it is."""


def to_wall_clock(event: Event, offset: float) -> Event:
    """``event`` with its engine-clock times moved by ``offset`` (wall clock minus engine clock)."""
    if isinstance(event, _ON_ENGINE_CLOCK):
        return evolve(event, time=event.time + offset)
    if isinstance(event, CountersSnapshot) and event.sas:
        sas = tuple(c if c.last_used is None else
                    SaCounters(c.spi, c.direction, c.bytes, c.packets, c.drops, c.last_used + offset)
                    for c in event.sas)
        return evolve(event, sas=sas)
    return event
