"""Events kept in bounded bytes (issue 15 item 1, issue 9 item 4): summaries
of hostile messages, the runtime's history, subscriber queues; no keys kept."""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc

import pytest

from engine.datapath.base import NullDatapath
from engine.events import ChildKeys, ChildSaInstalled, CountersSnapshot, ExchangeReceived, LogMessage, SaCounters
import engine.runtime.engine as engine_runtime
import engine.runtime.reporting as reporting
from engine.runtime.engine import EngineRuntime
from engine.runtime.retention import HISTORY_BYTES, SubscriberDropped, event_size
from engine.secret import Secret
from engine.wire.payloads import (
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    Transform,
    TsPayload,
    VendorIdPayload,
    WireTs,
)
from engine.wire.summary import MAX_PAYLOADS, MAX_PROPOSALS, payload_detail, summarize_lazy
from tests.engine.ike_pair import connection, policy
from tests.loopback import addr


def hostile_init(vids: int = 16_200, proposals: int = 255) -> list:
    """An IKE_SA_INIT as in the issue: 255 proposals, thousands of Vendor IDs."""
    props = tuple(Proposal(i % 255 + 1, 1, b"", tuple(Transform(t % 4 + 1, 12, 128) for t in range(30)))
                  for i in range(proposals))
    return [SaPayload(props), KePayload(31, os.urandom(32)), NoncePayload(os.urandom(32))] + \
        [VendorIdPayload(os.urandom(16)) for _ in range(vids)]


def normal_auth() -> list:
    ts = WireTs(7, 0, 0, 65535, bytes([198, 51, 100, 1]), bytes([198, 51, 100, 1]))
    return [IdPayload(True, 2, b"left.example"), NotifyPayload(16384), IdPayload(False, 2, b"right.example"),
            SaPayload((Proposal(1, 3, os.urandom(4), (Transform(1, 20, 256), Transform(5, 0))),)),
            TsPayload(True, (ts,)), TsPayload(False, (ts,))]


HEADER = (b"\1" * 8, b"\0" * 8, 34, 8, 0)


def retained(make, n: int) -> float:
    """Bytes each summary keeps alive once the decoded payloads are gone (details formatted)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept = []
        for _ in range(n):
            s = summarize_lazy(HEADER, make())
            s.details  # formatted, as the control socket and the console do
            kept.append(s)
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - base) / n
    finally:
        tracemalloc.stop()


def test_a_hostile_message_is_summarised_in_bounded_bytes():
    assert retained(hostile_init, 3) < 64 * 1024  # was 2.6 MB each
    s = summarize_lazy(HEADER, hostile_init())
    assert s.payloads[-1] == "+16155 more" and len(s.payloads) == MAX_PAYLOADS + 1
    sa = s.details[0]
    assert sa.name == "SA" and len(sa.fields) == MAX_PROPOSALS + 1
    assert sa.fields[-1] == ("left out", "239 more proposals")
    assert s.details[-1].fields == (("left out", "16155 more payloads"),)
    assert s.retained >= retained(hostile_init, 1)  # the estimate the history counts is an upper bound


def test_a_normal_message_is_described_in_full():
    payloads = normal_auth()
    s = summarize_lazy(HEADER, payloads)
    assert s.details == tuple(payload_detail(p) for p in payloads)
    assert s.payloads == ("IDi", "N(INIT_CONTACT)", "IDr", "SA", "TSi", "TSr")
    assert s.retained >= retained(normal_auth, 20)


def test_values_are_capped_and_escaped():
    evil = "x" * 60_000 + "\n\x1b[31m"
    s = summarize_lazy(HEADER, [IdPayload(True, 2, evil.encode()), VendorIdPayload(b"\x1b[2J" * 10_000)])
    for d in s.details:
        for _, value in d.fields:
            assert len(value) <= 1024 and "\x1b" not in value and "\n" not in value


def _runtime() -> EngineRuntime:
    conn = connection(local=addr(1), remote="127.0.0.9", local_port=25700)
    return EngineRuntime(policy(conn, address=addr(1), ike_port=25700, natt_port=25701), datapath=NullDatapath())


def _received(payloads) -> ExchangeReceived:
    return ExchangeReceived(1, "tun", summarize_lazy(HEADER, payloads), 0.0, ("127.0.0.1", 500), ("127.0.0.9", 500))


def test_the_history_is_bounded_in_bytes():
    rt = _runtime()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(1200):  # 1,200 messages of 60 KB of Vendor IDs
            rt.publish(_received([VendorIdPayload(bytes(1000)) for _ in range(60)]))
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert used <= HISTORY_BYTES * 1.25, f"{used / 1e6:.1f} MB kept"  # was ~70 MB
    assert rt.history.bytes <= HISTORY_BYTES


def test_history_and_queues_never_hold_keys():
    rt = _runtime()
    q = rt.subscribe()
    key = Secret(bytes(range(32)))
    ev = ChildSaInstalled(ike_sa=1, connection="tun", child="lan", unique_id=1, reqid=1, protocol="esp",
                          mode="tunnel", spi_in=1, spi_out=2, local_addr="127.0.0.1", remote_addr="127.0.0.9",
                          local_ts=(), remote_ts=(), encr_id=20, encr_key_length=256, integ_id=None, esn=False,
                          keys=ChildKeys(key, key, key, key))
    sunk = []
    rt.key_sinks.append(sunk.append)  # save_keys: the one way keys leave the runtime
    rt._dispatch(ev)  # as the engine's events go: the datapath, the key sinks, then the subscribers
    [kept] = [e for e in rt.history if isinstance(e, ChildSaInstalled)]
    queued = q.get_nowait()
    for e in (kept, queued):
        assert e.spi_in == 1 and e.keys is None
    assert rt.datapath.installed[1].keys.encr_in.reveal() == bytes(range(32))  # the datapath got the keys
    assert sunk == [ev] and sunk[0].keys.encr_in.reveal() == bytes(range(32))


async def test_a_subscriber_that_falls_behind_is_dropped_and_told_why():
    rt = _runtime()
    slow = rt.subscribe()
    fast = rt.subscribe()
    big = LogMessage(0.0, "INFO", "engine.test", "y" * 100_000)
    for _ in range(400):  # 40 MB of events for a reader that never reads
        rt.publish(big)
        while not fast.empty():
            fast.get_nowait()
    assert slow.dropped and "not read fast enough" in slow.dropped
    assert slow.bytes == 0 and slow not in rt._subscribers and fast in rt._subscribers
    with pytest.raises(SubscriberDropped, match="not read fast enough"):
        await asyncio.wait_for(slow.get(), 1)


def test_counters_snapshots_replace_each_other_in_a_waiting_queue():
    rt = _runtime()
    q = rt.subscribe()
    snap = lambda n: CountersSnapshot(float(n), tuple(SaCounters(i, "in", n) for i in range(32_000)))  # noqa: E731
    for n in range(30):  # 30 s of a stalled reader with 16,000 CHILD SAs
        rt.publish(snap(n))
        rt.publish(LogMessage(float(n), "INFO", "engine.test", "tick"))
    assert q.dropped is None and q.bytes < 30 * event_size(LogMessage(0.0, "INFO", "engine.test", "tick")) + 1
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    assert [e.time for e in items if isinstance(e, CountersSnapshot)] == [29.0]  # only the newest
    assert len([e for e in items if isinstance(e, LogMessage)]) == 30  # the rest in order, all there


def test_a_subscriber_of_some_kinds_gets_those_only_and_the_history_is_unchanged():
    import logging

    from engine.events import IkeSaStateChanged, IkeState

    rt = _runtime()
    rt._log_handler = handler = engine_runtime._EventLogHandler(rt)
    narrow = rt.subscribe(kinds=(IkeSaStateChanged,))
    up = IkeSaStateChanged(1, "tun", IkeState.CONNECTING, IkeState.ESTABLISHED)
    rt.publish(_received([VendorIdPayload(bytes(16))]))
    rt.publish(up)
    rt.publish(CountersSnapshot(1.0, (SaCounters(1, "in", 5),)))
    for level in (logging.INFO, logging.WARNING):
        handler.emit(logging.LogRecord("engine.test", level, __file__, 1, "line %d", (level,), None))
    got = []
    while not narrow.empty():
        got.append(narrow.get_nowait())
    assert got == [up]
    # The history keeps what it kept before: the negotiation events and the loud log line.
    kinds = [type(e).__name__ for e in rt.history]
    assert kinds == ["ExchangeReceived", "IkeSaStateChanged", "LogMessage"]
    [warning] = [e for e in rt.history if isinstance(e, LogMessage)]
    assert warning.level == "WARNING" and warning.text == "line 30"
    everything = rt.subscribe(replay=True)
    narrow_late = rt.subscribe(replay=True, kinds=(IkeSaStateChanged,))
    assert everything.qsize() == 3 and narrow_late.qsize() == 1


async def test_the_counters_loop_reports_grown_inbound_sas_and_publishes_on_the_wall_clock(monkeypatch):
    """Guards the sliced counters loop (COUNTERS_CHUNK, WALL_CLOCK_CHUNK): the SAs whose inbound packet
    count grew reach the endpoint (DPD waits for them); subscribers get Unix times."""
    import time

    monkeypatch.setattr(reporting, "COUNTERS_INTERVAL", 0.01)
    monkeypatch.setattr(reporting, "COUNTERS_CHUNK", 7)
    monkeypatch.setattr(reporting, "WALL_CLOCK_CHUNK", 5)
    rt = _runtime()
    reads = [[SaCounters(i, d, 0, 1 if i % 3 == 0 else 0, (), 50.0 if d == "in" else None)
              for i in range(1, 41) for d in ("in", "out")]]
    reads.append([SaCounters(c.spi, c.direction, 0, c.packets + (1 if c.spi % 2 else 0), (), c.last_used)
                  for c in reads[0]])

    class Datapath(NullDatapath):
        async def counters_async(self):
            return list(reads[0] if len(seen) == 0 else reads[1]), {"no_sa": 3}

    rt.datapath = Datapath()
    seen: list[list[int]] = []
    monkeypatch.setattr(rt.endpoint, "child_activity", lambda spis, now: seen.append(sorted(spis)))
    q = rt.subscribe(kinds=(CountersSnapshot,))
    rt._loop = asyncio.get_running_loop()
    task = asyncio.create_task(rt._counters_loop())
    try:
        while len(seen) < 2:
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
    assert seen[0] == [i for i in range(1, 41) if i % 3 == 0]  # first read: every inbound SA that counted
    assert seen[1] == [i for i in range(1, 41) if i % 2]  # then the ones that grew
    snap = q.get_nowait()
    assert len(snap.sas) == 80 and snap.drops == (("no_sa", 3),)
    walls = [c.last_used for c in snap.sas if c.last_used is not None]
    assert len(walls) == 40 and all(abs(w - (time.time() - rt.now() + 50.0)) < 5 for w in walls)
    assert rt._counters[(3, "in")].last_used == 50.0  # the runtime keeps its own clock


def test_who_takes_an_event_follows_the_subscribers_as_they_change():
    """publish() decides once per event class who takes it: a later subscriber, a narrower one
    and one that left are still served right, and quiet LogMessages stay out of the history."""
    rt = _runtime()
    info = LogMessage(0.0, "INFO", "engine.test", "quiet")
    warn = LogMessage(0.0, "WARNING", "engine.test", "loud")
    rt.publish(info)
    rt.publish(warn)
    assert [e.text for e in rt.history if isinstance(e, LogMessage)] == ["loud"]
    logs = rt.subscribe(kinds=(LogMessage,))
    rt.publish(info)
    assert logs.get_nowait().text == "quiet"
    counters = rt.subscribe(kinds=(CountersSnapshot,))
    rt.publish(warn)
    assert logs.get_nowait().text == "loud" and counters.empty()
    rt.unsubscribe(logs)
    rt.publish(info)
    assert logs.empty() and counters.empty()
    everything = rt.subscribe()
    rt.publish(info)
    assert everything.get_nowait().text == "quiet"
    assert [e.text for e in rt.history if isinstance(e, LogMessage)] == ["loud", "loud"]


def test_sinks_get_their_kinds_keyless_at_once_and_a_failing_one_is_only_logged(caplog):
    rt = _runtime()
    got, logs = [], []

    def broken(event):
        raise RuntimeError("sink bug")

    rt.add_sink((ChildSaInstalled,), broken)
    rt.add_sink((ChildSaInstalled,), got.append)
    rt.add_sink((LogMessage,), logs.append)
    key = Secret(bytes(range(32)))
    ev = ChildSaInstalled(ike_sa=1, connection="tun", child="lan", unique_id=1, reqid=1, protocol="esp",
                          mode="tunnel", spi_in=1, spi_out=2, local_addr="127.0.0.1", remote_addr="127.0.0.9",
                          local_ts=(), remote_ts=(), encr_id=20, encr_key_length=256, integ_id=None, esn=False,
                          keys=ChildKeys(key, key, key, key))
    rt.publish(ev)
    assert [e.spi_in for e in got] == [1] and got[0].keys is None  # keyless, as a subscriber gets it
    assert "an event sink failed on ChildSaInstalled" in caplog.text
    rt.publish(LogMessage(0.0, "INFO", "engine.test", "x"))
    assert len(got) == 1 and [e.text for e in logs] == ["x"]
    rt.remove_sink(got.append)
    rt.publish(ev)
    assert len(got) == 1
