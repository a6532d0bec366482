"""The embedded engine in a process of its own (console.runtime.embedded) and
the bridge's pacing of events (console.bridge): the engine keeps running its
timers while the console's loop is blocked, no key crosses to the console,
events are bounded and budgeted, and the app gets at most one EventsArrived
of at most EVENTS_PER_MESSAGE events at a time."""

from __future__ import annotations

import asyncio
import os
import pickle
import time
from types import SimpleNamespace

import pytest

import console.runtime.engine_process as engine_process
from console.bridge import EVENTS_PER_MESSAGE
from console.messages import EventsArrived
from console.runtime.base import CommandError
from console.runtime.embedded import EmbeddedRuntime, Inbox
from console.runtime.engine_link import frame
from console.runtime.engine_process import _EngineProcess
from engine.events import ChildKeys, ChildSaInstalled, CountersSnapshot, IkeSaStateChanged, IkeState, LogMessage
from engine.policy.ts import parse_ts
from engine.runtime.engine import EngineRuntime
from engine.secret import Secret

from tests.console.conftest import make_app, wait_for
from tests.engine.ike_pair import connection, policy
from tests.ops.labcopy import lab_copy
from console.runtime.fake import FakeRuntime


async def test_the_lab_engine_runs_in_a_process_of_its_own_and_stops_with_the_console(tmp_path):
    rt = EmbeddedRuntime.lab(lab_copy(tmp_path))
    await rt.start()
    try:
        pid = rt._proc.pid
        assert pid != os.getpid() and os.path.exists(f"/proc/{pid}")
        snap = await rt.status()
        assert any(c.name == "branch" for c in snap.connections)
        policy, text = await rt.policy()
        assert policy.engine.datapath == "lab" and "[lab]" in text
        with pytest.raises(CommandError, match="nosuch"):
            await rt.initiate("nosuch")
    finally:
        await rt.stop()
    assert rt._proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_the_lab_engines_events_cross_to_the_console(tmp_path):
    """Message summaries cross unformatted (LazySummary parts): a change of their inner layout once
    made every events frame fail in the engine process, and the console saw no event at all."""
    rt = EmbeddedRuntime.lab(lab_copy(tmp_path))
    await rt.start()
    seen = []

    async def take():
        async for ev in rt.events():
            seen.append(ev)

    task = asyncio.create_task(take())
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(type(e).__name__ == "ExchangeSent" for e in seen):
            await asyncio.sleep(0.1)
        sent = [e for e in seen if type(e).__name__ == "ExchangeSent"]
        assert sent, [type(e).__name__ for e in seen]
        assert sent[0].message.exchange == "IKE_SA_INIT" and sent[0].message.payloads
    finally:
        task.cancel()
        await rt.stop()


async def test_the_engine_keeps_its_timers_while_the_console_is_blocked(tmp_path):
    rt = EmbeddedRuntime.lab(lab_copy(tmp_path))
    await rt.start()
    try:
        await rt.diagnostics(True)
        t0 = time.monotonic()
        time.sleep(0.5)  # the console's loop does nothing else meanwhile (a long refresh)
        t1 = time.monotonic()
        diag = await rt.diagnostics(False)
    finally:
        await rt.stop()
    during = [due for due, _late in diag["lags"] if t0 <= due <= t1]
    # On the console's loop no engine timer could have run in that half second; in its own process
    # the engine went on (its 5 ms timer fired there many times).
    assert len(during) > 10
    assert diag["garbage_total"] == 0  # the engine left no reference cycles behind


def _child_sa(secret: bytes) -> ChildSaInstalled:
    k = Secret(secret)
    return ChildSaInstalled(
        ike_sa=1, connection="c", child="k", unique_id=1, reqid=1, protocol="esp", mode="tunnel", spi_in=1,
        spi_out=2, local_addr="192.0.2.1", remote_addr="192.0.2.2", local_ts=(parse_ts("198.51.100.0/25"),),
        remote_ts=(parse_ts("198.51.100.128/25"),), encr_id=20, encr_key_length=256, integ_id=None, esn=False,
        keys=ChildKeys(k, Secret(b""), k, Secret(b"")))


async def _take(queue: asyncio.Queue) -> _EngineProcess:
    """An engine process's event intake fed from ``queue`` until it is empty."""
    proc = _EngineProcess(SimpleNamespace(lab=True, fd=-1, config=None))
    task = asyncio.create_task(proc._take_events(queue))
    while not queue.empty():
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel()
    return proc


async def test_keys_never_cross_to_the_console():
    secret = b"\x5a" * 32 + b"not-for-the-console"
    q: asyncio.Queue = asyncio.Queue()
    q.put_nowait(_child_sa(secret))
    proc = await _take(q)
    [ev] = proc._events
    assert ev.keys is None and ev.spi_in == 1
    assert secret not in frame(("events", [ev], 0))
    with pytest.raises(TypeError):
        pickle.dumps(_child_sa(secret))  # what would have happened with the keys still in


async def test_chatty_events_have_a_budget_state_changes_do_not(monkeypatch):
    monkeypatch.setattr(engine_process, "CHATTY_RATE", 0.0)
    monkeypatch.setattr(engine_process, "CHATTY_BURST", 100)
    q: asyncio.Queue = asyncio.Queue()
    for i in range(1000):
        q.put_nowait(LogMessage(float(i), "DEBUG", "engine.ike", f"line {i}"))
        if i % 100 == 0:
            q.put_nowait(IkeSaStateChanged(ike_sa=i, connection="c", old=IkeState.CONNECTING,
                                           new=IkeState.ESTABLISHED))
    proc = await _take(q)
    logs = [e for e in proc._events if isinstance(e, LogMessage)]
    states = [e for e in proc._events if isinstance(e, IkeSaStateChanged)]
    assert len(logs) == 100 and logs[0].text == "line 0" and len(states) == 10
    assert proc._dropped == 900


def test_inbox_is_bounded_keeps_order_and_coalesces_counters():
    inbox = Inbox(size=100)
    inbox.put_many([LogMessage(float(i), "INFO", "x", str(i)) for i in range(150)])
    inbox.put_many([CountersSnapshot(1.0), CountersSnapshot(2.0)], dropped=7)
    batch, dropped = inbox.take(1000)
    assert dropped == 50 + 7
    assert [e.text for e in batch[:-1]] == [str(i) for i in range(50, 150)]
    assert isinstance(batch[-1], CountersSnapshot) and batch[-1].time == 2.0  # only the newest
    assert inbox.take(10) == ([], 0) and not inbox.ready.is_set()


async def test_the_app_gets_one_bounded_message_at_a_time():
    rt = FakeRuntime()
    app = make_app(rt)
    sizes: list[int] = []
    in_flight = []
    original = type(app).on_events_arrived

    def counting(self, message: EventsArrived) -> None:
        sizes.append(len(message.events))
        in_flight.append(self._awaiting_app)
        original(self, message)
    type(app).on_events_arrived = counting
    try:
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.store.snapshot is not None, what="first status")
            sizes.clear()
            for i in range(3 * EVENTS_PER_MESSAGE + 17):
                rt._emit(LogMessage(float(i), "INFO", "engine.test", f"burst {i}"))
            await wait_for(pilot, lambda: sum(sizes) >= 3 * EVENTS_PER_MESSAGE + 17, what="the burst")
    finally:
        type(app).on_events_arrived = original
    assert max(sizes) <= EVENTS_PER_MESSAGE and len(sizes) >= 4
    assert all(in_flight)  # each was the one message in flight when the app handled it


def test_counter_snapshots_cross_as_columns_and_come_back_equal():
    """Counters of every SA cross each second: as columns, not one pickled dataclass per SA
    (which held the engine's loop for tens of milliseconds with 10,000 CHILD SAs)."""
    from engine.events import SaCounters

    sas = tuple(SaCounters(i * 7 + 0x1000, "in" if i % 2 else "out", 1000 + i, i,
                           (("replay", 3),) if i % 5 == 0 else (), 1.7e9 + i if i % 3 else None)
                for i in range(20000))
    snap = CountersSnapshot(1.7e9, sas, (("no_sa", 4),))
    data = frame(("events", [snap], 0))
    back = pickle.loads(data[4:])[1][0]
    assert back == snap and type(back.sas[0].spi) is int
    assert len(data) < 36 * len(sas)  # one pickled SaCounters is over 40 bytes
    # What does not fit the columns crosses as it is.
    for odd in (CountersSnapshot(1.0), CountersSnapshot(1.0, (SaCounters(1, "fwd"),)),
                CountersSnapshot(1.0, (SaCounters(1, "in", 1 << 70),)),
                CountersSnapshot(1.0, (SaCounters(1, "in", last_used=float("inf")),))):
        assert pickle.loads(frame(odd)[4:]) == odd


async def test_counter_snapshots_are_packed_a_slice_at_a_time_and_arrive_whole():
    from engine.events import SaCounters

    sas = tuple(SaCounters(i + 1, "in" if i % 2 else "out", i, i, (("icv", 1),) if i == 7777 else (),
                           None if i % 4 else 1.7e9 + i) for i in range(12_345))
    snap = CountersSnapshot(1.7e9, sas, (("no_sa", 2),))
    packed = await engine_process._packed(snap)
    assert isinstance(packed, engine_process.PackedCounters) and len(packed.spis) == len(sas)
    assert pickle.loads(frame(("events", [packed], 0))[4:])[1][0] == snap
    odd = CountersSnapshot(1.0, sas[:10] + (SaCounters(1, "in", 1 << 70),))
    assert await engine_process._packed(odd) is odd


class _Wire:
    """The engine process's end of the socket: the frames it wrote, decoded."""

    def __init__(self) -> None:
        self.frames: list = []

    def write(self, data) -> None:
        self.frames.append(pickle.loads(bytes(data)[4:]))

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def _proc_on_wire() -> tuple[_EngineProcess, _Wire]:
    proc = _EngineProcess(SimpleNamespace(lab=True, fd=-1, config=None))
    proc.writer = wire = _Wire()
    return proc, wire


def _infos(n: int):
    from engine.status import IkeSaInfo

    return tuple(IkeSaInfo(name=f"c{i}", unique_id=i, state="ESTABLISHED", initiator=False, spi_i=i, spi_r=i,
                           local_addr="192.0.2.2", local_port=4500, remote_addr="192.0.2.1", remote_port=4500,
                           local_id="gw", remote_id=f"c{i}", encr="AES_GCM_16_256", integ="", prf="PRF_HMAC_SHA2_256",
                           ke="CURVE25519", nat_local=False, nat_remote=False, established_ago=1.0, rekey_in=None,
                           expire_in=None, children=()) for i in range(n))


async def test_status_frames_shrink_when_pickling_runs_long_and_lose_no_sa():
    """A loaded machine: each status frame took longer than a step may (the pace's budget is
    tiny here), so the next frames carry few SAs; the console still gets every SA once, in order."""
    from engine.slicing import Pace
    from engine.status import StatusSnapshot

    proc, wire = _proc_on_wire()
    infos = _infos(300)

    async def status_async():
        return StatusSnapshot(1.0, infos, (), ())
    proc.rt = SimpleNamespace(status_async=status_async)
    proc._status_pace = Pace(25, 5, 100, seconds=1e-9)
    await proc._status(7)
    parts = [f[2] for f in wire.frames if f[0] == "status_part"]
    assert [len(p) for p in parts[:3]] == [25, 5, 5]
    assert [i.unique_id for p in parts for i in p] == list(range(300))
    assert wire.frames[-1][:3] == ("reply", 7, True)


async def test_event_frames_are_sized_by_the_pace_and_counters_go_in_their_own():
    from engine.events import SaCounters
    from engine.slicing import Pace

    proc, wire = _proc_on_wire()
    proc._event_pace = Pace(40, 10, 500, seconds=1e-9)
    for i in range(200):
        proc._events.append(LogMessage(float(i), "INFO", "engine.test", f"line {i}"))
    proc._counters = CountersSnapshot(2.0, tuple(SaCounters(i + 1, "in", i, i, (("replay", i),) if i % 10 == 3 else ())
                                                 for i in range(50)), (("no_sa", 4),))
    proc_counters = proc._counters
    proc._have_events.set()
    task = asyncio.create_task(proc._send_events())
    while proc._events or proc._counters is not None:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel()
    batches = [f[1] for f in wire.frames]
    logs = [e for b in batches for e in b if isinstance(e, LogMessage)]
    assert [e.text for e in logs] == [f"line {i}" for i in range(200)]
    assert [len(b) for b in batches[:3]] == [40, 10, 10]
    [counters] = [b for b in batches if any(isinstance(e, CountersSnapshot) for e in b)]
    assert len(counters) == 1  # alone in its frame
    # Only what the console reads of it: the drops (bytes and packets come with the status).
    assert [c.spi for c in counters[0].sas] == [4, 14, 24, 34, 44] and counters[0].drops == (("no_sa", 4),)
    from console.store import Store

    mine, whole = Store(), Store()
    mine.counters, whole.counters = counters[0], proc_counters
    assert mine.drops() == whole.drops() == {"no_sa": 4, "replay": 3 + 13 + 23 + 33 + 43}


async def test_a_burst_of_events_is_taken_a_step_at_a_time():
    """queue.get() does not yield while the queue holds events: 2,000 of them were taken in one
    step of the engine's loop."""
    q: asyncio.Queue = asyncio.Queue()
    for i in range(2000):
        q.put_nowait(IkeSaStateChanged(ike_sa=i, connection="c", old=IkeState.CONNECTING, new=IkeState.ESTABLISHED))
    proc = _EngineProcess(SimpleNamespace(lab=True, fd=-1, config=None))
    turns = []

    async def other():
        while True:
            turns.append(len(proc._events))
            await asyncio.sleep(0)
    t = asyncio.create_task(other())
    await asyncio.sleep(0)
    taker = asyncio.create_task(proc._take_events(q))
    while not q.empty():
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    taker.cancel()
    t.cancel()
    assert len(proc._events) == 2000
    taken = sorted(set(turns))
    assert max(b - a for a, b in zip(taken, taken[1:])) <= 500  # TAKE_CHUNK (200) a step


async def test_big_status_polls_are_frozen_and_a_sweep_frees_the_cycles_they_left(monkeypatch):
    """With thousands of SAs a poll brings ~100,000 objects; the collector walked them all every few
    seconds. Polls of at least FREEZE_FROM_SAS freeze them once applied; the periodic sweep still
    finds reference cycles among what was frozen."""
    import gc
    import weakref

    import console.app as console_app

    monkeypatch.setattr(console_app, "FREEZE_FROM_SAS", 1, raising=False)  # the fake runtime lists a few SAs
    app = make_app(FakeRuntime(), poll_interval=0.05)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.store.snapshot is not None, what="first status")
        kept = [object() for _ in range(100)]  # alive at the next poll: frozen by it
        assert any(o is kept for o in gc.get_objects())  # get_objects() lists what is not frozen
        polls = [0]
        original = app.store.apply_status

        def counting(snap):
            polls[0] += 1
            return original(snap)
        app.store.apply_status = counting
        await wait_for(pilot, lambda: polls[0] >= 2, what="two more polls")
        await pilot.pause()
        assert not any(o is kept for o in gc.get_objects())
        assert app._sweeper is not None

        class Node:
            pass
        node = Node()
        node.me = node
        ref = weakref.ref(node)
        gc.freeze()
        del node
        gc.collect()
        assert ref() is not None  # a frozen cycle: no ordinary pass looks at it
        app._sweep()
        assert ref() is None
        del kept


async def test_polls_after_a_flood_of_events_are_frozen_too(monkeypatch):
    """Under 1,000 handshakes/s the stores hold ~190,000 objects from events: the collector walked
    them every two seconds (100-240 ms). A poll after FREEZE_FROM_EVENTS events freezes too."""
    import gc

    import console.app as console_app

    monkeypatch.setattr(console_app, "FREEZE_FROM_EVENTS", 50, raising=False)
    app = make_app(FakeRuntime(), poll_interval=0.05)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.store.snapshot is not None, what="first status")
        polls = [0]
        original = app.store.apply_status

        def counting(snap):
            polls[0] += 1
            return original(snap)
        app.store.apply_status = counting
        await wait_for(pilot, lambda: polls[0] >= 2, what="two quiet polls")
        kept = [object() for _ in range(10)]
        await wait_for(pilot, lambda: polls[0] >= 4, what="two more quiet polls")
        assert any(o is kept for o in gc.get_objects())  # a few SAs, few events: nothing frozen
        for i in range(100):
            app.runtime._emit(LogMessage(float(i), "INFO", "engine.test", f"flood {i}"))
        seen = polls[0]
        await wait_for(pilot, lambda: polls[0] >= seen + 2, what="polls after the flood")
        await pilot.pause()
        assert not any(o is kept for o in gc.get_objects())
        del kept


async def test_event_messages_shrink_when_the_app_takes_long_for_them():
    """Under a flood each EventsArrived of 500 events cost the app tens of milliseconds, which every
    frame waited for; the next messages are sized from what the last ones took."""
    from engine.slicing import Pace

    rt = FakeRuntime()
    app = make_app(rt)
    sizes: list[int] = []
    original = type(app).on_events_arrived

    def counting(self, message: EventsArrived) -> None:
        sizes.append(len(message.events))
        original(self, message)
    type(app).on_events_arrived = counting
    try:
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.store.snapshot is not None, what="first status")
            app.event_pace = Pace(100, 20, 500, seconds=1e-9)  # every message took too long
            sizes.clear()
            for i in range(1000):
                rt._emit(LogMessage(float(i), "INFO", "engine.test", f"burst {i}"))
            await wait_for(pilot, lambda: sum(sizes) >= 1000, what="the burst")
    finally:
        type(app).on_events_arrived = original
    assert max(sizes) <= 100 and sizes.count(20) >= 30  # at the floor after the first


async def test_the_engine_process_reads_on_when_the_runtime_drops_its_queue():
    """A burst of handshakes on a saturated machine ran the runtime's events past the queue's bounds
    (seen with 10,000 SAs coming up: 8,298 events, 16 MiB): the runtime dropped the queue, get()
    raised SubscriberDropped and the engine process ended. Now what the queue held counts as dropped
    for the console and the intake reads on from a new queue."""
    rt = EngineRuntime(policy(connection(), address="192.0.2.1"))
    proc = _EngineProcess(SimpleNamespace(lab=False, fd=-1, config=None))
    proc.rt = rt
    first = rt.subscribe(maxsize=50)
    taker = asyncio.create_task(proc._take_events(first))
    state = lambda i: IkeSaStateChanged(ike_sa=i, connection="c", old=IkeState.CONNECTING,  # noqa: E731
                                        new=IkeState.ESTABLISHED)
    for i in range(60):  # no turn of the loop between them: the intake cannot keep up
        rt.publish(state(i))
    assert first.dropped is not None and first.lost == 50
    await asyncio.sleep(0.01)
    assert not taker.done(), taker.exception() if taker.done() else None
    rt.publish(state(1000))
    for _ in range(100):
        if proc._events:
            break
        await asyncio.sleep(0.001)
    taker.cancel()
    assert [e.ike_sa for e in proc._events] == [1000]
    assert proc._dropped == 50
