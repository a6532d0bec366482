"""The engine's side of the embedded console (see console.runtime.embedded for
why it runs in a process of its own): one runtime (the lab or an
EngineRuntime) served over the socket pair, its events sent in budgeted
batches, its status in slices, its long-lived heap frozen."""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections import deque
from pathlib import Path

from console.runtime.engine_link import (
    INBOX,
    PackedCounters,
    error_text,
    frame,
    policy_problem,
    read_frame,
    register_lazy_summary,
)
from engine.events import CountersSnapshot, ExchangeReceived, ExchangeSent, LogMessage, PacketSample
from engine.runtime.retention import SubscriberDropped, keyless
from engine.slicing import Pace, Steps

SEND_BATCH = 500
"""Events per frame from the engine process, at most (fewer when pickling them ran long: `Pace`)."""
STATUS_SLICE = 100
"""IKE SAs per status frame, at most (pickled one slice at a time on the engine's loop; fewer when
pickling ran long)."""
TAKE_CHUNK = 200
"""Events taken from the runtime's queue per step of the loop, at most."""
SCAN_CHUNK = 2000
"""SA counters looked at per step when picking what the console reads (`_for_console`), at most."""
CHATTY_RATE = 2000.0
CHATTY_BURST = 5000
"""Log lines, message summaries and packet samples sent to the console: this many a second (after a
burst of CHATTY_BURST); the rest are dropped and counted. State changes are never dropped."""
PACK_SLICE = 5000
"""SA counters packed into columns per step of the loop, at most (about a millisecond: `Pace`)."""
FREEZE_PERIOD = 30.0
"""Seconds between moves of the engine's long-lived objects out of the collector's way."""
MIDDLE_PASSES = 3
"""Young collections between two collections of the middle generation (see `_quiet_collector`)."""
_CHATTY = (LogMessage, ExchangeSent, ExchangeReceived, PacketSample)


class _EngineProcess:
    """The child: one runtime (the lab or an EngineRuntime), served over the socket."""

    def __init__(self, args) -> None:
        self.args = args
        self.kind = "lab" if args.lab else "embedded"
        self.rt = None
        self.writer: asyncio.StreamWriter | None = None
        self._events: deque = deque()
        self._counters: CountersSnapshot | None = None
        self._dropped = 0
        self._have_events = asyncio.Event()
        self._stopping = False
        self._status_pace = Pace(STATUS_SLICE // 4, 5, STATUS_SLICE)
        """IKE SAs per status frame (from what the last frames took to pickle)."""
        self._event_pace = Pace(SEND_BATCH // 5, 10, SEND_BATCH)
        """Events per frame, likewise."""

    async def main(self) -> int:
        sock = socket.socket(fileno=self.args.fd)
        reader, self.writer = await asyncio.open_unix_connection(sock=sock)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self._stop_and_exit()))
        # The Logs screen shows the engine's whole log, every message included (it filters by level
        # itself); records only exist at or above the logger's level.
        logging.getLogger("engine").setLevel(logging.DEBUG)
        if not await self._start():
            return 1
        _quiet_collector()
        tasks = [self._watched(self._send_events()), self._watched(self._freeze())]
        try:
            while True:
                msg = await read_frame(reader)
                if msg is None:
                    break  # the console is gone: delete our SAs and go
                if msg[0] == "stop":
                    await self._stop()
                    await self._reply(msg[1], True, None)
                    return 0
                asyncio.create_task(self._serve(msg))
        finally:
            for t in tasks:
                t.cancel()
            await self._stop()
        return 0

    async def _start(self) -> bool:
        from engine.pki.errors import PkiError
        from engine.policy.findings import PolicyError

        try:
            if self.kind == "lab":
                from engine.runtime.lab import LabRuntime

                rt = LabRuntime(self.args.config)
            else:
                from engine.policy.parse import load_policy
                from engine.runtime.daemon import make_datapath
                from engine.runtime.engine import EngineRuntime

                config = Path(self.args.config)
                policy = load_policy(config)
                rt = EngineRuntime(policy, datapath=make_datapath(policy),
                                   policy_text=config.read_text(encoding="utf-8"))
            await rt.start()
        except PolicyError as exc:
            await self._send(("failed", policy_problem(exc)))
            return False
        except (PkiError, OSError, ValueError) as exc:
            await self._send(("failed", str(exc)))
            return False
        self.rt = rt
        if self.kind == "lab":
            queue = rt.subscribe(maxsize=20000)
            for event in rt.recent_events():
                queue.put_nowait(event)
        else:
            queue = rt.subscribe(20000, replay=True)
        self._taker = self._watched(self._take_events(queue))
        path = str(self.args.config) if self.args.config else None
        if self.kind == "lab" and path is None:
            from engine.policy.samples import sample_path

            path = str(sample_path("lab.toml"))
        await self._send(("started", {"policy_text": rt.policy_text, "policy_path": path}))
        return True

    async def _take_events(self, queue: asyncio.Queue) -> None:
        """Runtime queue -> our bounded buffer (the sender may wait on the socket; the engine never).

        Chatty events (log lines, message summaries, packet samples) have a budget of
        `CHATTY_RATE` a second: under a flood of handshakes a console cannot show them all, and
        keeping them all costs it frames. State changes always go."""
        loop = asyncio.get_running_loop()
        tokens, last = float(CHATTY_BURST), loop.time()
        steps = Steps(TAKE_CHUNK)
        while True:
            try:
                if queue.empty():
                    ev = await queue.get()
                    steps.reset()  # it waited: a new step of the loop
                else:
                    # get() does not yield while the queue holds events: a burst of thousands is
                    # taken a step at a time.
                    if steps.done():
                        await steps.next()
                    ev = queue.get_nowait()
            except SubscriberDropped:
                # The engine ran ahead of this loop (a burst of handshakes while the machine was
                # saturated) and dropped our queue. What it held is counted as dropped for the
                # console, and we read on from a new one: the status polls bring the state back,
                # only the negotiation view has a gap. Before, the engine process ended here.
                self._dropped += getattr(queue, "lost", 0)
                queue = self.rt.subscribe(20000)
                self._have_events.set()
                continue
            if isinstance(ev, CountersSnapshot):
                self._counters = ev
            else:
                if isinstance(ev, _CHATTY):
                    now = loop.time()
                    tokens = min(float(CHATTY_BURST), tokens + (now - last) * CHATTY_RATE)
                    last = now
                    if tokens < 1:
                        self._dropped += 1
                        continue
                    tokens -= 1
                self._events.append(keyless(ev))  # queues hold none already; never let one cross
                if len(self._events) > INBOX:
                    self._events.popleft()
                    self._dropped += 1
            self._have_events.set()

    async def _send_events(self) -> None:
        pace = self._event_pace
        clock = time.perf_counter
        while True:
            await self._have_events.wait()
            self._have_events.clear()
            while self._events or self._counters is not None:
                if self._events:
                    # As many as pickle in about a millisecond (the last frames tell how many).
                    batch = [self._events.popleft() for _ in range(min(pace.n, len(self._events)))]
                    dropped, self._dropped = self._dropped, 0
                    t0 = clock()
                    data = frame(("events", batch, dropped))
                    pace.took(len(batch), clock() - t0)
                    del batch
                else:
                    # The counters in a frame of their own: what the console reads of them, packed in
                    # steps, pickled as a few arrays.
                    counters, self._counters = self._counters, None
                    packed = await _packed(await _for_console(counters))
                    del counters
                    dropped, self._dropped = self._dropped, 0
                    data = frame(("events", [packed], dropped))
                    del packed
                await self._send_frame(data)
                del data
                await asyncio.sleep(0)

    async def _freeze(self) -> None:
        while True:
            await asyncio.sleep(FREEZE_PERIOD)
            gc.collect(1)
            gc.freeze()


    async def _serve(self, msg) -> None:
        kind, rid = msg[0], msg[1]
        try:
            if kind == "status":
                await self._status(rid)
                return
            if kind == "diag":
                result = self._diag(msg[2])
            elif kind == "apply_policy":
                from engine.policy.parse import parse_policy

                policy = parse_policy(msg[2], msg[3])
                result = self.rt.apply_policy(policy, msg[2])
            elif kind == "call":
                result = getattr(self.rt, msg[2])(*msg[3], **msg[4])
            else:
                raise ValueError(f"unknown request {kind!r}")
        except Exception as exc:  # noqa: BLE001  (every failure goes back to the console, as text)
            await self._reply(rid, False, (type(exc).__name__, error_text(exc)))
            return
        await self._reply(rid, True, result)

    def _diag(self, start: bool) -> dict | None:
        if start:
            self._probe = _Diagnostics(asyncio.get_running_loop())
            return None
        probe, self._probe = getattr(self, "_probe", None), None
        return probe.finish() if probe is not None else None

    async def _status(self, rid: int) -> None:
        rt = self.rt
        build = getattr(rt, "status_async", None)
        snap = await build() if build is not None else rt.status()
        sas = list(snap.ike_sas)
        when, connections, pools = snap.time, snap.connections, snap.pools
        del snap  # the slices below are the last references: each is freed once sent
        sas.reverse()  # taken from the end: no list shifted per slice
        pace = self._status_pace
        clock = time.perf_counter
        while sas:
            # As many as pickle in about a millisecond (a fixed 100 made steps of tens of ms on a loaded machine).
            n = min(pace.n, len(sas))
            part = sas[-n:]
            del sas[-n:]
            part.reverse()
            t0 = clock()
            data = frame(("status_part", rid, part))
            pace.took(n, clock() - t0)
            # Freeing 10,000 IkeSaInfo at once at the end held the loop for up to 20 ms; a slice at a time.
            del part
            await self._send_frame(data)
            del data
            await asyncio.sleep(0)  # packets and timers between slices
        await self._reply(rid, True, (when, connections, pools))

    async def _reply(self, rid: int, ok: bool, payload) -> None:
        await self._send(("reply", rid, ok, payload))

    async def _send(self, msg) -> None:
        await self._send_frame(frame(msg))

    async def _send_frame(self, data) -> None:
        if self.writer is None or self.writer.is_closing():
            return
        self.writer.write(data)
        try:
            await self.writer.drain()
        except ConnectionError:
            pass

    async def _stop(self) -> None:
        if self._stopping or self.rt is None:
            return
        self._stopping = True
        try:
            await (self.rt.stop(delete=True) if self.kind != "lab" else self.rt.stop())
        except Exception:  # noqa: BLE001
            logging.getLogger("engine").exception("stopping the engine failed")

    async def _stop_and_exit(self, code: int = 0) -> None:
        await self._stop()
        os._exit(code)

    def _watched(self, coro) -> asyncio.Task:
        """A task whose failure ends the engine process loudly (its traceback on stderr, which the
        console shows as the engine's last words) instead of leaving a console that sees nothing."""
        task = asyncio.create_task(coro)

        def ended(t: asyncio.Task) -> None:
            if t.cancelled() or t.exception() is None:
                return
            traceback.print_exception(t.exception(), file=sys.stderr)
            sys.stderr.flush()
            asyncio.ensure_future(self._stop_and_exit(70))

        task.add_done_callback(ended)
        return task


async def _for_console(snap: CountersSnapshot) -> CountersSnapshot:
    """``snap`` with only the SAs that dropped packets: the console reads drops from counters
    (`Store.drops`); bytes and packets come with each IKE SA of the status. With 10,000 idle CHILD
    SAs that is none of 20,000, every second, instead of 660 KB packed, sent and rebuilt as
    20,000 objects on the console's loop. Looked at a few thousand a step."""
    kept = []
    steps = Steps(SCAN_CHUNK)
    for c in snap.sas:
        if c.drops:
            kept.append(c)
        if steps.done():
            await steps.next()
    if len(kept) == len(snap.sas):
        return snap
    return CountersSnapshot(snap.time, tuple(kept), snap.drops)


async def _packed(snap: CountersSnapshot, pace: Pace | None = None):
    """``snap`` as PackedCounters, a slice of its SAs at a time (at most PACK_SLICE, about a
    millisecond) with the loop free in between (or as it is, when its values do not fit the columns)."""
    pace = pace or _PACK_PACE
    packed = PackedCounters(snap)
    sas = snap.sas
    clock = time.perf_counter
    i = 0
    while i < len(sas):
        if i:
            await asyncio.sleep(0)
        part = sas[i:i + pace.n]
        t0 = clock()
        if not packed.pack(part):
            return snap
        pace.took(len(part), clock() - t0)
        i += len(part)
    return packed


_PACK_PACE = Pace(PACK_SLICE // 5, 100, PACK_SLICE)


def _quiet_collector() -> None:
    """The engine's garbage collector policy (see the module docstring): what lives now (modules, the
    policy, the SAs) is frozen; young generations are collected as usual (they are small); a full
    pass never runs by itself, since what the engine lets go is freed by reference counting (it makes
    no reference cycles: see tests/engine/test_datapath_scale.py and the diagnostics' ``garbage``).
    The middle generation is collected every MIDDLE_PASSES young passes instead of 10: a status
    listing leaves ~50,000 young objects alive a second, and a middle pass walks what ten young
    passes kept (up to 8 ms, in whichever step of the loop it fell)."""
    gc.collect()
    gc.freeze()
    threshold0, _, _ = gc.get_threshold()
    gc.set_threshold(threshold0, MIDDLE_PASSES, 1 << 30)


class _Diagnostics:
    """How late the engine loop runs a timer armed every 5 ms, how long the garbage collector's
    passes take, and which loop callbacks ran longest, between start and `finish` (for
    benchmarks/console_engine.py)."""

    PERIOD = 0.005
    SLOW = 0.005
    """Callbacks that hold the loop this long (seconds) are named in ``slow``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lags: list[tuple[float, float]] = []
        """(when due, how late) of each timer, on the monotonic clock."""
        self.gc: list[tuple[int, float, float]] = []
        """(generation, start, end) of each collector pass."""
        self._gc_t0 = 0.0
        gc.callbacks.append(self._gc)
        gc.collect(1)
        self._slow: dict[str, list] = {}
        """What held the loop over SLOW -> [times, total seconds, longest seconds]."""
        self._worst: list[tuple[float, float, str]] = []
        """The 20 longest callbacks: (seconds, start on the perf_counter clock, what, this thread's CPU
        seconds in them: far less than the wall time means the process waited for a CPU)."""
        self._handle_run = asyncio.events.Handle._run
        asyncio.events.Handle._run = self._timed(self._handle_run)
        self.due = loop.time() + self.PERIOD
        self.handle = loop.call_at(self.due, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        self.lags.append((self.due, max(0.0, now - self.due)))
        self.due = now + self.PERIOD
        self.handle = self.loop.call_at(self.due, self._tick)

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_t0 = time.monotonic()
        else:
            self.gc.append((info["generation"], self._gc_t0, time.monotonic()))

    def _timed(self, run):
        slow, threshold, worst = self._slow, self.SLOW, self._worst

        def timed_run(handle) -> None:
            # The callback as it was before it ran: one that cancels its own handle (the engine's
            # timer re-arming itself) has none after.
            cb = getattr(handle, "_callback", None)
            task = getattr(cb, "__self__", None)
            before = _suspended_at(task) if isinstance(task, asyncio.Task) else ""
            c0 = time.thread_time()
            t0 = time.perf_counter()
            run(handle)
            took = time.perf_counter() - t0
            if took >= threshold:
                what = _callback_name(cb)
                if before:
                    what += f" from {before} to {_suspended_at(task) or 'its end'}"
                entry = slow.setdefault(what, [0, 0.0, 0.0])
                entry[0] += 1
                entry[1] += took
                entry[2] = max(entry[2], took)
                worst.append((took, t0, what, time.thread_time() - c0))
                if len(worst) > 20:
                    worst.remove(min(worst))
        return timed_run

    def finish(self) -> dict:
        self.handle.cancel()
        asyncio.events.Handle._run = self._handle_run
        gc.callbacks.remove(self._gc)
        tracked = len(gc.get_objects())
        # Reference cycles left behind since start (what only a full pass would free): expected none.
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            garbage = collections.Counter(type(o).__qualname__ for o in gc.garbage)
            gc.garbage.clear()
        finally:
            gc.set_debug(0)
        slowest = sorted(self._slow.items(), key=lambda kv: -kv[1][2])[:10]
        return {"lags": self.lags, "gc": self.gc, "gc_objects": tracked, "garbage": dict(garbage.most_common(10)),
                "garbage_total": sum(garbage.values()),
                "slow": [(what, n, round(total * 1e3, 1), round(longest * 1e3, 1))
                         for what, (n, total, longest) in slowest],
                # On the loop's clock (time.monotonic, as the lags), to line them up with the worst lags.
                "worst": [(round(t0 - time.perf_counter() + time.monotonic(), 4), round(took * 1e3, 1), what,
                           round(cpu * 1e3, 1))
                          for took, t0, what, cpu in sorted(self._worst, reverse=True)]}


def _suspended_at(task: asyncio.Task) -> str:
    """Where a task waits: the innermost coroutine of its await chain, as function:line."""
    coro = task.get_coro()
    while getattr(coro, "cr_await", None) is not None and hasattr(coro.cr_await, "cr_frame"):
        coro = coro.cr_await
    frame = getattr(coro, "cr_frame", None)
    return f"{frame.f_code.co_name}:{frame.f_lineno}" if frame is not None else ""


def _callback_name(cb) -> str:
    """A loop callback as a short name: the task's coroutine, or the function."""
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        return f"task {getattr(coro, '__qualname__', type(coro).__name__)}"
    return getattr(cb, "__qualname__", repr(cb))


def _die_with_parent() -> None:
    """SIGTERM to this process when the console dies (Linux prctl), so its SAs are deleted."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the console died before that took effect
        sys.exit(0)


def child_main(argv: list[str] | None = None) -> None:
    """Entry point of the engine process (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="ipsec-console engine")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--lab", action="store_true")
    ap.add_argument("--config")
    args = ap.parse_args(argv)
    _die_with_parent()
    register_lazy_summary()
    sys.exit(asyncio.run(_EngineProcess(args).main()))
