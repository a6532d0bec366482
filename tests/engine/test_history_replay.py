"""The runtime's history keeps message summaries as records (KeptMessage), not as the events: a
late subscriber still replays exactly the events a live one got (same classes, fields, wall-clock
times, payload names, notifies and details), and the history keeps no copy it did not need."""

from __future__ import annotations

import json
import pickle

from engine.datapath.base import NullDatapath
from engine.events import ExchangeReceived, ExchangeSent, IkeSaStateChanged
from engine.runtime import retention
from engine.jsonable import to_jsonable
from engine.runtime.engine import EngineRuntime
from engine.runtime.retention import EventHistory, KeptMessage
from engine.wire.summary import LazySummary
from tests.engine.ike_pair import connection, handshake_events, mirror, policy


def _handshake_events() -> list:
    return handshake_events()  # the responder's, as the engine emits them (engine clock)


def _runtime() -> EngineRuntime:
    conn = mirror(connection())
    return EngineRuntime(policy(conn), datapath=NullDatapath())


def _wire(events) -> list:
    return [json.dumps(to_jsonable(e), sort_keys=True) for e in events]


def test_a_late_subscriber_replays_what_a_live_one_got():
    rt = _runtime()
    live = rt.subscribe()
    events = _handshake_events()
    assert sum(isinstance(e, (ExchangeSent, ExchangeReceived)) for e in events) >= 6
    for e in events:
        rt._dispatch(e)
    got = []
    while not live.empty():
        got.append(live.get_nowait())
    late = rt.subscribe(replay=True)
    replayed = []
    while not late.empty():
        replayed.append(late.get_nowait())
    assert [type(e) for e in replayed] == [type(e) for e in got]
    assert replayed == got  # every field, the summaries compared by their formatted values
    for a, b in zip(replayed, got):
        if isinstance(a, (ExchangeSent, ExchangeReceived)):
            assert a.time == b.time and a.time > 1.5e9  # on the wall clock, as published
            assert a.message.brief() == b.message.brief()
            assert a.message.details == b.message.details
            assert isinstance(a.message, LazySummary)  # still formatted only when read
            assert pickle.loads(pickle.dumps(a)) == b
    assert _wire(replayed) == _wire(got)  # what `ipsec-console events` and an attached console read
    assert list(rt.history) == got


def test_without_a_subscriber_the_summaries_are_kept_as_records_only():
    rt = _runtime()
    for e in _handshake_events():
        rt._dispatch(e)
    items = [item for item, _size in rt.history._items]
    records = [i for i in items if type(i) is KeptMessage]
    assert len(records) >= 6
    assert not any(isinstance(i, (ExchangeSent, ExchangeReceived, LazySummary)) for i in items)
    assert any(isinstance(e, IkeSaStateChanged) for e in rt.history)
    # The sizes the bounds count are those of the events, as before.
    for (item, size), event in zip(rt.history._items, rt.history):
        assert size == retention.event_size(event)


def test_the_history_alone_replays_appended_events():
    history = EventHistory(max_events=4)
    events = _handshake_events()
    for e in events:
        history.append(e)
    assert list(history) == events[-4:]
    assert [e for e, _ in history.sized()] == events[-4:]
