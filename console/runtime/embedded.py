"""The engine inside the console: an EngineRuntime (``ipsec-console CONFIG``)
or the lab (``ipsec-console`` with no argument), run in a child process of
the console and driven over a socket pair.

Why a process of its own: on the app's loop, a 10,000-row refresh (a couple
of hundred milliseconds of CPU) held every engine timer and packet for as
long, and a burst of handshakes froze the screen. A thread with its own
loop was tried and measured first: it removes the first problem but not
the second half of both, because the two still share one interpreter lock
(each side waits for the other's Python) and one garbage collector (a full
collection walks the console's 10,000 table rows and the engine's 10,000
SAs together: over a second, during which neither runs). In a process of
its own the engine keeps its own core and its own heap:

- Commands and status polls are requests over the socket; the console
  awaits the replies. A status snapshot of thousands of SAs is built and
  sent a slice at a time (`EngineRuntime.status_async`), so the engine's
  loop is never held for long by the console's poll.
- Events come in batches. The engine side never waits for the console
  beyond its socket buffer: when the console falls behind, the oldest
  events are dropped and counted (`Inbox`), and the console is told how
  many; counter snapshots are coalesced (a newer one replaces one not yet
  taken); log lines, message summaries and packet samples have a budget
  per second (`CHATTY_RATE`: a thousand handshakes a second make ten
  thousand of them, more than anyone reads and more than the console can
  keep without losing frames). The console takes at most `UI_BATCH` events
  per turn.
- The engine's long-lived objects (SAs, keys, the policy) are moved out of
  the collector's way (``gc.freeze``) after start and then every
  `FREEZE_PERIOD`: they hold no reference cycles, so nothing leaks, and
  full collections no longer walk thousands of SAs.

Nothing secret crosses the socket: events go without SA keys (the console
never shows them), policies go as their TOML text and each side reads the
secrets file itself. Stopping the console stops the engine, which deletes
its SAs; if the console dies, the engine sees its socket close (or gets
SIGTERM from the kernel) and does the same.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copyreg
import dataclasses
import gc
import io
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

from console.runtime.base import Capabilities, CommandError, Runtime, RuntimeDisconnected, RuntimeUnavailable
from engine.events import (
    ChildSaInstalled,
    CountersSnapshot,
    Event,
    ExchangeReceived,
    ExchangeSent,
    LogMessage,
    PacketSample,
    PolicyApplied,
)
from engine.ops import journal
from engine.policy.model import Policy
from engine.status import StatusSnapshot

INBOX = 50_000
"""Events waiting for the console at most; past it the oldest go (counted)."""
UI_BATCH = 500
"""Events the console takes per turn of its loop (one EventsArrived message at most this big)."""
SEND_BATCH = 500
"""Events per frame from the engine process."""
STATUS_SLICE = 100
"""IKE SAs per status frame (pickled one slice at a time on the engine's loop)."""
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
"""Seconds the engine gets to delete its SAs and stop before it is killed."""
CHATTY_RATE = 2000.0
CHATTY_BURST = 5000
"""Log lines, message summaries and packet samples sent to the console: this many a second (after a
burst of CHATTY_BURST); the rest are dropped and counted. State changes are never dropped."""
FREEZE_PERIOD = 30.0
"""Seconds between moves of the engine's long-lived objects out of the collector's way."""
_LEN = struct.Struct("!I")
_CHATTY = (LogMessage, ExchangeSent, ExchangeReceived, PacketSample)
_DISPATCH = dict(copyreg.dispatch_table)

log = logging.getLogger("console.runtime")


def _message(exc: Exception) -> str:
    """A readable error: KeyError's str() is the repr of its key."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def _lazy_summary(summary):
    # Its decoded payloads cross as they are, and the console formats them only if it reads them
    # (LazySummary's own pickling would format every field here, on the engine's time).
    return _unpickle_summary, summary.parts()


def _unpickle_summary(src, retained):
    from engine.wire.summary import LazySummary

    return LazySummary.from_parts(src, retained)


def _frame(obj) -> bytes:
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(obj)
    data = buf.getbuffer()
    return _LEN.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader):
    """The next object from the other process, or None at the end of the stream."""
    try:
        head = await reader.readexactly(4)
        return pickle.loads(await reader.readexactly(_LEN.unpack(head)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def _register_lazy_summary() -> None:
    from engine.wire.summary import LazySummary

    _DISPATCH[LazySummary] = _lazy_summary


def _without_keys(ev: Event) -> Event:
    return dataclasses.replace(ev, keys=None) if isinstance(ev, ChildSaInstalled) else ev


class Inbox:
    """Events waiting for the console: bounded, dropping the oldest (counted) when it falls behind."""

    def __init__(self, size: int = INBOX) -> None:
        self.size = size
        self._events: deque = deque()
        self._counters: CountersSnapshot | None = None
        self._lock = threading.Lock()
        self.ready = asyncio.Event()
        """Set when something is waiting."""
        self.dropped = 0
        """Events dropped since the console last heard of it."""
        self.dropped_total = 0
        self.closed = False

    def put_many(self, batch, dropped: int = 0) -> None:
        with self._lock:
            for ev in batch:
                if isinstance(ev, CountersSnapshot):
                    self._counters = ev  # a newer snapshot replaces one not yet taken
                else:
                    self._events.append(ev)
            over = len(self._events) - self.size
            if over > 0:
                for _ in range(over):
                    self._events.popleft()
            over = max(0, over) + dropped
            self.dropped += over
            self.dropped_total += over
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    def take(self, n: int) -> tuple[list, int]:
        """Up to ``n`` events in order (a waiting counters snapshot last), and how many were dropped
        since the last call."""
        with self._lock:
            events = self._events
            out = [events.popleft() for _ in range(min(n, len(events)))]
            if self._counters is not None and len(out) < n:
                out.append(self._counters)
                self._counters = None
            dropped, self.dropped = self.dropped, 0
            if not events and self._counters is None and not self.closed:
                self.ready.clear()
        return out, dropped


# ====================================================================== the console's side
class EmbeddedRuntime(Runtime):
    def __init__(self, config: str | os.PathLike | None, *, lab: bool = False) -> None:
        self.config = Path(config) if config is not None else None
        self.kind = "lab" if lab else "embedded"
        self._proc: subprocess.Popen | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._inbox: Inbox | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._parts: dict[int, list] = {}
        self._ids = itertools.count(1)
        self._stderr = None
        self._policy: Policy | None = None
        self._text = ""
        self._alive = False
        self._stopped = False
        if lab:
            from engine.runtime.lab import LABEL

            self.label = LABEL
        else:
            self.label = f"engine embedded — {self.config}"

    @classmethod
    def lab(cls, config: str | os.PathLike | None = None) -> "EmbeddedRuntime":
        """The built-in lab (sample-configs/lab.toml and its peers), or another lab policy."""
        return cls(config, lab=True)

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        if self.kind != "lab":
            self._check_privileges()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        args = [sys.executable, "-c", "from console.runtime.embedded import child_main; child_main()",
                "--fd", str(theirs.fileno())]
        if self.kind == "lab":
            args.append("--lab")
        if self.config is not None:
            args += ["--config", str(self.config)]
        # The child must never write on the console's terminal: its stderr goes to a file, read back
        # only if it dies.
        self._stderr = tempfile.TemporaryFile(prefix="ipsec-console-engine-")
        try:
            self._proc = subprocess.Popen(args, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                          stdout=self._stderr, stderr=self._stderr, cwd=os.getcwd(),
                                          env={**os.environ, "PYTHONPATH": _import_path()},
                                          start_new_session=True)  # no terminal signals: the console says when
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        try:
            first = await asyncio.wait_for(_read_frame(reader), START_TIMEOUT)
        except asyncio.TimeoutError:
            first = None
        if first is None or first[0] != "started":
            await self._reap()
            if first is not None and first[0] == "failed":
                raise RuntimeUnavailable(first[1])
            raise RuntimeUnavailable(f"the engine did not start{self._last_words()}")
        info = first[1]
        self._text = info["policy_text"] or ""
        self._policy = self._parse(self._text, info["policy_path"])
        self._inbox = Inbox()
        self._alive = True
        self._reader_task = asyncio.create_task(self._read(reader), name="engine process")
        self.capabilities = Capabilities(
            apply_policy=True,
            save_policy=self.kind != "lab" or os.access(self.config or ".", os.W_OK),
            packet_samples=True,
            notes=("lab",) if self.kind == "lab" else (),
        )

    def _check_privileges(self) -> None:
        from engine.policy.findings import PolicyError
        from engine.policy.parse import load_policy

        try:
            policy = load_policy(self.config)
        except PolicyError as exc:
            raise RuntimeUnavailable(_policy_problem(exc)) from None
        if policy.engine.datapath in ("kernel", "userspace") and os.geteuid() != 0:
            raise RuntimeUnavailable(
                f"datapath = \"{policy.engine.datapath}\" needs root (CAP_NET_ADMIN): run with sudo, "
                "attach to a daemon with `ipsec-console attach`, or try the lab")

    @staticmethod
    def _parse(text: str, path: str | None) -> Policy | None:
        from engine.policy.parse import parse_policy

        if not text:
            return None
        try:
            return parse_policy(text, path)
        except Exception as exc:  # noqa: BLE001  (the engine took it: a problem here is the console's to tell)
            log.warning("the console cannot read the running policy: %s", exc)
            return None

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Replies and events from the engine process, until it goes."""
        try:
            while True:
                msg = await _read_frame(reader)
                if msg is None:
                    break
                kind = msg[0]
                if kind == "events":
                    self._inbox.put_many(msg[1], msg[2])
                elif kind == "status_part":
                    self._parts.setdefault(msg[1], []).extend(msg[2])
                elif kind == "reply":
                    fut = self._pending.pop(msg[1], None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        finally:
            self._alive = False
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(RuntimeDisconnected(f"the engine process ended{self._last_words()}"))
            self._pending.clear()
            if self._inbox is not None:
                self._inbox.close()

    async def _request(self, *msg, rid: int | None = None):
        """Send a request and wait for its reply; returns the result or raises what the engine raised
        (as ``_RemoteError``)."""
        if not self._alive or self._writer is None:
            raise RuntimeDisconnected(f"the engine is not running{self._last_words()}")
        if rid is None:
            rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._writer.write(_frame((msg[0], rid, *msg[1:])))
        await self._writer.drain()
        reply = await fut
        if reply[2]:
            return reply[3]
        raise _RemoteError(*reply[3])

    async def stop(self) -> None:
        self._stopped = True
        if self._proc is None:
            return
        if self._alive:
            try:
                await asyncio.wait_for(self._request("stop"), STOP_TIMEOUT)
            except Exception as exc:  # noqa: BLE001  (stopping must end; say why it was not clean)
                log.error("stopping the engine failed: %r", exc)
        await self._reap()

    async def _reap(self) -> None:
        """End the child (it normally exits by itself after "stop") and release the socket."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                await asyncio.to_thread(proc.wait, 5)
            except subprocess.TimeoutExpired:
                proc.kill()  # our own child, by its PID
                await asyncio.to_thread(proc.wait, 5)
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)
            self._reader_task = None

    def _last_words(self) -> str:
        """The end of the engine's stderr, when it said something (a crash)."""
        f = self._stderr
        if f is None:
            return ""
        try:
            f.seek(0)
            text = f.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f": {text[-600:]}" if text else ""

    # ------------------------------------------------------------ observation
    async def status(self) -> StatusSnapshot:
        rid = next(self._ids)
        try:
            when, connections, pools = await self._request("status", rid=rid)
        except _RemoteError as exc:
            raise RuntimeDisconnected(f"status failed in the engine: {exc}") from None
        finally:
            parts = self._parts.pop(rid, ())
        return StatusSnapshot(when, tuple(parts), connections, pools)

    async def diagnostics(self, start: bool) -> dict | None:
        """Start measuring the engine loop's lateness and garbage collector passes (``start``), or stop
        and get the figures (benchmarks/console_engine.py)."""
        return await self._request("diag", start)

    async def events(self) -> AsyncIterator[Event]:
        inbox = self._inbox
        if inbox is None:
            return
        while True:
            await inbox.ready.wait()
            batch, dropped = inbox.take(UI_BATCH)
            if dropped:
                yield LogMessage(time.time(), "WARNING", "console",
                                 f"the engine is busier than the console shows: {dropped} log lines or messages were "
                                 "not shown (the SA tables stay right: they come from the status polls)")
            for event in batch:
                yield event
            if inbox.closed and not batch:
                if not self._stopped:
                    raise RuntimeDisconnected(f"the engine process ended{self._last_words()}")
                return
            # One turn of the console's loop between batches: what it does with them runs now.
            await asyncio.sleep(0)

    async def policy(self) -> tuple[Policy, str]:
        if self._policy is None:
            raise RuntimeDisconnected("the engine is not running")
        return self._policy, self._text

    # ------------------------------------------------------------ commands
    async def _command(self, method: str, *args, **kw):
        try:
            return await self._request("call", method, args, kw)
        except _RemoteError as exc:
            raise CommandError(exc.text) from None

    async def initiate(self, name: str, child: str | None = None) -> None:
        await self._command("initiate", name, child)

    async def terminate(self, name: str, *, unique_id: int | None = None) -> None:
        n = await (self._command("terminate", name, unique_id=unique_id) if self.kind != "lab"
                   else self._command("terminate", name))
        if n == 0:
            raise CommandError(f"'{name}' has no IKE SA to terminate")

    async def rekey(self, name: str, *, ike: bool = False, unique_id: int | None = None) -> None:
        n = await self._command("rekey", name, ike=ike, unique_id=unique_id)
        if n == 0:
            what = "IKE SA" if ike else "CHILD SA"
            raise CommandError(f"'{name}' has no established {what} to rekey")

    async def apply_policy(self, policy: Policy, text: str | None = None) -> PolicyApplied:
        if text is None:
            from engine.policy.serialize import policy_to_toml

            text = policy_to_toml(policy)
        old_text = self._text
        try:
            result = await self._request("apply_policy", text, policy.path)
        except _RemoteError as exc:
            raise CommandError(f"not applied: {exc.text}") from None
        self._policy, self._text = policy, text
        journal.record_applied(policy, result, old_text=old_text, new_text=text, via="console")
        return result


class _RemoteError(Exception):
    """An exception the engine process raised for a request: its type's name and message."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(f"{kind}: {text}")
        self.kind = kind
        self.text = text


def _import_path() -> str:
    """PYTHONPATH for the child: this checkout first (as the console imported it), then what was set."""
    here = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return here + (os.pathsep + rest if rest else "")


def _policy_problem(exc) -> str:
    first = exc.findings[0].format() if exc.findings else str(exc)
    more = f" (and {len(exc.findings) - 1} more: run ipsec-console check)" if len(exc.findings) > 1 else ""
    return f"the policy does not validate: {first}{more}"


# ====================================================================== the engine's side
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
                msg = await _read_frame(reader)
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
            await self._send(("failed", _policy_problem(exc)))
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
        while True:
            ev = await queue.get()
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
                self._events.append(_without_keys(ev))
                if len(self._events) > INBOX:
                    self._events.popleft()
                    self._dropped += 1
            self._have_events.set()

    async def _send_events(self) -> None:
        while True:
            await self._have_events.wait()
            self._have_events.clear()
            while self._events or self._counters is not None:
                batch = [self._events.popleft() for _ in range(min(SEND_BATCH, len(self._events)))]
                if self._counters is not None and len(batch) < SEND_BATCH:
                    batch.append(self._counters)
                    self._counters = None
                dropped, self._dropped = self._dropped, 0
                await self._send(("events", batch, dropped))
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
            await self._reply(rid, False, (type(exc).__name__, _message(exc)))
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
        sas = snap.ike_sas
        for i in range(0, len(sas), STATUS_SLICE):
            await self._send(("status_part", rid, sas[i:i + STATUS_SLICE]))
            await asyncio.sleep(0)  # packets and timers between slices
        await self._reply(rid, True, (snap.time, snap.connections, snap.pools))

    async def _reply(self, rid: int, ok: bool, payload) -> None:
        await self._send(("reply", rid, ok, payload))

    async def _send(self, msg) -> None:
        if self.writer is None or self.writer.is_closing():
            return
        self.writer.write(_frame(msg))
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


def _quiet_collector() -> None:
    """The engine's garbage collector policy (see the module docstring): what lives now (modules, the
    policy, the SAs) is frozen; young generations are collected as usual (they are small); a full
    pass never runs by itself, since what the engine lets go is freed by reference counting (it makes
    no reference cycles: see tests/engine/test_datapath_scale.py and the diagnostics' ``garbage``)."""
    gc.collect()
    gc.freeze()
    threshold0, threshold1, _ = gc.get_threshold()
    gc.set_threshold(threshold0, threshold1, 1 << 30)


class _Diagnostics:
    """How late the engine loop runs a timer armed every 5 ms, and how long the garbage collector's
    passes take, between start and `finish` (for benchmarks/console_engine.py)."""

    PERIOD = 0.005

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lags: list[tuple[float, float]] = []
        """(when due, how late) of each timer, on the monotonic clock."""
        self.gc: list[tuple[int, float, float]] = []
        """(generation, start, end) of each collector pass."""
        self._gc_t0 = 0.0
        gc.callbacks.append(self._gc)
        gc.collect(1)
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

    def finish(self) -> dict:
        self.handle.cancel()
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
        return {"lags": self.lags, "gc": self.gc, "gc_objects": tracked, "garbage": dict(garbage.most_common(10)),
                "garbage_total": sum(garbage.values())}


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
    _register_lazy_summary()
    sys.exit(asyncio.run(_EngineProcess(args).main()))
