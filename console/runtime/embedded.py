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

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

from console.runtime.base import Capabilities, CommandError, Runtime, RuntimeDisconnected, RuntimeUnavailable
from console.runtime.engine_link import INBOX, frame, policy_problem, read_frame
from engine.events import CountersSnapshot, Event, LogMessage, PolicyApplied
from engine.ops import journal
from engine.policy.model import Policy
from engine.status import StatusSnapshot

UI_BATCH = 500
"""Events the console takes per turn of its loop (one EventsArrived message at most this big)."""
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
"""Seconds the engine gets to delete its SAs and stop before it is killed."""

log = logging.getLogger("console.runtime")


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
        args = [sys.executable, "-c", "from console.runtime.engine_process import child_main; child_main()",
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
            first = await asyncio.wait_for(read_frame(reader), START_TIMEOUT)
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
            raise RuntimeUnavailable(policy_problem(exc)) from None
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
                msg = await read_frame(reader)
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
        self._writer.write(frame((msg[0], rid, *msg[1:])))
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
        done = await (self._command("terminate", name, unique_id=unique_id) if self.kind != "lab"
                      else self._command("terminate", name))
        if done.deleted == 0 and not done.retry_stopped and not done.resolving and not done.untrapped:
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
