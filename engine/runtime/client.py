"""Client side of the control socket (see engine.runtime.control for the
protocol): used by the CLI commands and by the console's attached runtime."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator

from engine.events import Event, from_dict as event_from_dict
from engine.runtime.control_wire import IDLE_EVICTED

DEFAULT_CONTROL = "/run/ipsec-console/control.sock"
CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the daemon to accept a connection (a wedged daemon's backlog fills)."""
CHANGES = frozenset({"initiate", "terminate", "rekey", "roam", "reload", "apply-policy"})
"""Commands that change something: one whose answer did not come in time may still be carried out."""


class ControlError(Exception):
    """The daemon refused a command (``findings`` lists validation errors)."""

    def __init__(self, message: str, findings: list[str] | None = None) -> None:
        super().__init__(message)
        self.findings = findings or []


class _Unread(ControlError):
    """The daemon ended the connection as idle (IDLE_EVICTED) before this call's request was read: the
    daemon only ends a connection that waits for a request line, after answering every earlier one."""


def connect_problem(path: str, exc: OSError) -> str:
    """Why connecting to the control socket at ``path`` failed, and what to do, in words."""
    if isinstance(exc, FileNotFoundError):
        return f"no daemon at {path} (start one with: ipsec-console daemon CONFIG)"
    if isinstance(exc, PermissionError):
        return f"permission denied on {path} (the control socket is root-only: use sudo)"
    if isinstance(exc, ConnectionRefusedError):
        return f"no daemon listening at {path} (a socket left by one that stopped?)"
    return f"cannot connect to {path}: {exc.strerror or exc}"


def check_reachable(path: str, timeout: float = 2.0) -> None:
    """Raise ControlError (connect_problem) unless something accepts a connection at ``path``: a
    blocking look before a full-screen console is started on a daemon that is not there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError as exc:
            raise ControlError(connect_problem(path, exc)) from None


async def _connect_unix(path: str, limit: float) -> socket.socket:
    """A connected unix socket, or asyncio.TimeoutError after ``limit`` seconds of a full backlog (a
    daemon that does not accept). asyncio's own connect took EAGAIN for success: the first read then
    failed with EINVAL, a traceback instead of a reason."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)  # a unix socket connects at once or says EAGAIN, never EINPROGRESS
            return sock
        except BlockingIOError:
            sock.close()
            if loop.time() >= deadline:
                raise asyncio.TimeoutError from None
            await asyncio.sleep(0.05)
        except BaseException:
            sock.close()
            raise


class ControlClient:
    def __init__(self, path: str | None = None, *, timeout: float | None = None) -> None:
        self.path = path or DEFAULT_CONTROL
        self.timeout = timeout
        """Seconds to wait for the answer to a call (None: no limit). Events wait as long as they take;
        connecting is bounded by CONNECT_TIMEOUT (or this, when shorter) either way."""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._events: asyncio.Queue | None = None
        self._pump: asyncio.Task | None = None
        self.disconnected: str | None = None
        """Why the daemon ended the connection, when it said so (its last line)."""
        self._closing = False
        """close() was called: the end of the stream is ours, not the daemon's."""
        self._connecting = asyncio.Lock()
        """Calls made at once after an eviction share one new connection (each opened its own: the
        end of one the client no longer tracked then failed the calls in progress on another)."""

    async def connect(self) -> None:
        limit = CONNECT_TIMEOUT if self.timeout is None else min(self.timeout, CONNECT_TIMEOUT)
        try:
            sock = await _connect_unix(self.path, limit)
            self._reader, self._writer = await asyncio.open_unix_connection(sock=sock, limit=64 * 1024 * 1024)
        except asyncio.TimeoutError:  # first: on 3.11+ it is the builtin TimeoutError, an OSError
            raise ControlError(f"the daemon at {self.path} did not accept a connection within {limit:g}s "
                               "(wedged or overloaded?)") from None
        except OSError as exc:
            raise ControlError(connect_problem(self.path, exc)) from None
        self.disconnected = None
        # The calls of each connection: its end fails those, never those of a later connection.
        self._pending = {}
        self._pump = asyncio.create_task(self._read(self._reader, self._pending))

    async def _drop(self) -> None:
        """Forget a connection the daemon ended, so that the next call opens a new one."""
        if self._writer is not None:
            self._writer.close()
        self._writer = self._reader = self._pump = None

    async def close(self) -> None:
        self._closing = True
        if self._pump is not None:
            self._pump.cancel()
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except Exception:
                pass
        self._writer = None

    async def _read(self, reader: asyncio.StreamReader, pending: dict[int, asyncio.Future]) -> None:
        why = None
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if not isinstance(msg, dict):
                    continue
                if "event" in msg:
                    if self._events is not None:
                        self._events.put_nowait(msg["event"])
                    continue
                if msg.get("disconnected"):
                    why = str(msg["disconnected"])
                    if reader is self._reader:
                        self.disconnected = why
                    break
                fut = pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (asyncio.CancelledError, OSError, ValueError):
            pass
        finally:
            text = f"the daemon closed the connection: {why}" if why else "the daemon closed the connection"
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(_Unread(text) if why == IDLE_EVICTED else ControlError(text))
            # The end of the event stream; not after an eviction: a subscribed connection is never
            # evicted, so a subscribe it crossed is sent again and the stream has not begun.
            if self._events is not None and reader is self._reader and why != IDLE_EVICTED:
                self._events.put_nowait(None)

    def _closed_why(self) -> str:
        return f"the daemon closed the connection: {self.disconnected}" if self.disconnected \
            else "the daemon closed the connection"

    async def call(self, cmd: str, **args):
        try:
            return await self._call(cmd, args)
        except _Unread:
            # The daemon ended this connection as idle to make room for another client, just as the
            # request went out: it was not read (only connections waiting for a line are ended, after
            # every earlier answer), so it is sent again on a new connection. An answer, a refusal
            # included, is never sent again.
            return await self._call(cmd, args)

    async def _call(self, cmd: str, args: dict):
        async with self._connecting:
            if self._pump is not None and self._pump.done() and self.disconnected == IDLE_EVICTED:
                await self._drop()  # no request nor subscription was lost: a new connection serves as well
            if self._writer is None:
                await self.connect()
        if self._pump is not None and self._pump.done():
            raise ControlError(self._closed_why())  # no reader left to answer
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        pending = self._pending
        pending[rid] = fut
        try:
            self._writer.write(json.dumps({"id": rid, "cmd": cmd, **args}).encode() + b"\n")
            await self._writer.drain()
        except OSError:
            # The daemon closed the connection (too many open, a line too long): the reader ends
            # this call with the reason of the daemon's last line.
            pass
        try:
            msg = await asyncio.wait_for(fut, self.timeout)
        except asyncio.TimeoutError:
            later = "; it may still carry it out: look before trying again" if cmd in CHANGES else ""
            raise ControlError(f"no answer from the daemon at {self.path} to '{cmd}' within "
                               f"{self.timeout:g}s (wedged or very busy?){later}") from None
        finally:
            pending.pop(rid, None)
        if not msg.get("ok"):
            raise ControlError(msg.get("error", "failed"), msg.get("findings"))
        return msg.get("result")

    async def events_raw(self, *, replay: bool = False, plaintext: bool = False) -> AsyncIterator[dict]:
        """Event objects as the daemon sends them (JSON dicts); ``replay`` first
        delivers the daemon's recent negotiation history; ``plaintext`` asks for the
        decrypted inner packet of PacketSample events (left out otherwise). Raises
        ControlError when the daemon ends the subscription, with its reason (a reader
        too slow, stopping) or without one (it died: killed, crashed); ends quietly
        only when this client closed the connection itself."""
        await self.subscribe(replay=replay, plaintext=plaintext)
        while True:
            e = await self.next_event()
            if e is None:
                if self.disconnected:
                    raise ControlError(f"the daemon ended the subscription: {self.disconnected}")
                if not self._closing:
                    raise ControlError(f"the daemon at {self.path} went away without a word (killed or crashed?)")
                return
            yield e

    async def subscribe(self, *, replay: bool = False, plaintext: bool = False) -> None:
        """Start receiving events (see events_raw); returns once the daemon confirmed."""
        self._events = asyncio.Queue()
        await self.call("subscribe", replay=replay, plaintext=plaintext)

    async def next_event(self) -> dict | None:
        """The next event after subscribe(), or None once the daemon closed the connection."""
        return await self._events.get()

    async def events(self, *, replay: bool = False, plaintext: bool = False) -> AsyncIterator[Event]:
        async for e in self.events_raw(replay=replay, plaintext=plaintext):
            try:
                yield event_from_dict(e)
            except (KeyError, TypeError, ValueError):
                continue  # an event type from a newer daemon
