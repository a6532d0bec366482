"""The control socket: a unix stream socket (mode 0600) speaking JSON lines.

Protocol (version 1), documented in README.md ("Control protocol"):

- A request is one JSON object on one line: ``{"id": 7, "cmd": "list-sas"}``,
  with the command's arguments as further keys.
- Each request gets exactly one response line with the same ``id``:
  ``{"id": 7, "ok": true, "result": ...}`` or
  ``{"id": 7, "ok": false, "error": "what went wrong", "findings": [...]}``.
- After ``subscribe``, the connection also carries event lines
  ``{"event": {"type": "ChildSaInstalled", ...}}`` (engine.events.to_dict;
  keys never appear) until the client disconnects. Requests still work on
  a subscribed connection; clients tell lines apart by the ``event`` key.
- When the daemon ends a connection itself, its last line says why:
  ``{"id": null, "ok": false, "error": WHY, "disconnected": WHY}`` (too many
  connections, a request line too long, a subscriber that fell behind, the
  daemon stopping).

Commands: version, status, list-sas, list-conns, initiate {name, child?},
terminate {name, unique_id?}, rekey {name, ike?, unique_id?}, roam {name?}
(MOBIKE: our SAs move now to the source address the host uses towards their peers), get-policy,
apply-policy {text}, counters, subscribe {replay?, plaintext?}, reload (apply
the policy file again), stats (engine.ops.stats). PacketSample events carry the
decrypted inner packet only to a subscriber that set ``plaintext``. Every
applied change is recorded in the change journal with the peer's user
(SO_PEERCRED).

Bounds (a local client can be buggy or stuck; none may stall the engine):
at most MAX_CLIENTS connections: when all are taken, the one idle longest
(no request in progress, not subscribed, idle at least IDLE_EVICT seconds) is
ended with the line above to make room, so forgotten scripts cannot lock an
admin out (an evicted ControlClient reconnects on its next call); event
streams are never evicted, and with none to evict the newcomer gets the
line above and is closed;
request lines of at most MAX_REQUEST bytes and sane JSON
(engine.runtime.control_wire); long listings built SA by SA in slices that
let the event loop run (control_wire.SLICE, SLICE_ITEMS); a policy sent with
apply-policy parsed in a thread; a subscriber queue bounded in bytes
(engine.runtime.retention): one that falls behind is disconnected, and if
it does not even take its last line within FINAL_LINE_GRACE seconds, cut.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import resource
import stat
import time
from pathlib import Path

from engine.events import PacketSample, to_dict as event_to_dict
from engine.ike.errors import LocalError
from engine.ops import journal
from engine.ops import stats as ops_stats
from engine.runtime.control_wire import (
    IDLE_EVICTED,
    MAX_REQUEST,
    BadRequest,
    encode_sliced,
    event_line,
    join_list,
    line,
    dumps,
    object_pieces,
    parse_request,
)
from engine.runtime.retention import SubscriberDropped
from engine.status import to_dict as status_to_dict

log = logging.getLogger("engine.control")

PROTOCOL_VERSION = 1
MAX_CLIENTS = 32
"""Control connections served at once (the console uses two)."""
IDLE_EVICT = 10.0
"""Seconds a connection must have been idle (no request, no subscription) before a newcomer may
take its place when all MAX_CLIENTS are open."""
FINAL_LINE_GRACE = 10.0
"""Seconds a dropped subscriber has to take its last line before the connection is cut."""
_WRITE_PIECE = 256 * 1024  # bytes written between two turns of the event loop


class ControlServer:
    def __init__(self, runtime, path: str, *, max_clients: int = MAX_CLIENTS) -> None:
        self.runtime = runtime
        self.path = Path(path)
        self.max_clients = max_clients
        self.refused = 0
        """Connections refused because MAX_CLIENTS were open."""
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task] = set()
        self._open: set[_Connection] = set()
        self._stopping = False
        self._transports: set[asyncio.BaseTransport] = set()
        """Every accepted connection's transport, from the accept on (its handler may not have run yet)."""
        self._bound: tuple[int, int] | None = None
        """(st_dev, st_ino) of the socket we bound: stop() removes that file only, never another
        daemon's socket nor a file or folder that was at the path when start() refused it."""

    async def check_free(self) -> None:
        """Raise OSError if start() would refuse the path (another daemon serves it, or it is not a
        socket): the daemon asks before it starts its engine, whose datapath would touch the kernel."""
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise OSError(f"{self.path} exists and is not a socket; refusing to replace it")
            if await _alive(self.path):
                raise OSError(f"another daemon is serving {self.path}")

    async def start(self) -> None:
        folder = self.path.parent
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
        if self.path.exists() or self.path.is_symlink():
            await self.check_free()
            self.path.unlink()  # stale socket of a crashed daemon
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others can connect
        try:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_unix_server(
                lambda: _TrackedProtocol(asyncio.StreamReader(limit=MAX_REQUEST), self._client, self),
                path=str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        st = self.path.lstat()
        self._bound = (st.st_dev, st.st_ino)
        log.info("control socket %s", self.path)

    async def stop(self) -> None:
        if self._server is not None:
            # Stop accepting, then let connections already accepted get their transports before the
            # server closes: one accepted a moment before close() finds the server closed as asyncio
            # builds its transport (an AssertionError logged, the socket left open: Python 3.11), and
            # on 3.13 one whose handler had not run was collected open ("Exception ignored").
            self._stopping = True
            loop = asyncio.get_running_loop()
            for sock in self._server.sockets:
                try:
                    loop.remove_reader(sock.fileno())
                except (NotImplementedError, ValueError, OSError):
                    pass
            for _ in range(3):
                await asyncio.sleep(0)
            self._server.close()
            for conn in list(self._open):
                conn.goodbye(STOPPING)
            for t in list(self._clients):
                t.cancel()
            # A connection accepted a moment ago has no handler running yet, so nothing else closes
            # it. close() flushes a goodbye line written above.
            for transport in list(self._transports):
                transport.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
            self._server = None
        bound, self._bound = self._bound, None
        try:
            st = self.path.lstat()
            if bound is not None and (st.st_dev, st.st_ino) == bound:
                self.path.unlink()
        except FileNotFoundError:
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.max_clients:
            self._evict_idle()
        if len(self._clients) >= self.max_clients:
            self.refused += 1
            why = (f"too many control connections ({self.max_clients} open, none idle for {IDLE_EVICT:g}s: "
                   "each is answering, streaming events or was used just now); try again shortly, or close "
                   "one (a console, `ipsec-console events`)")
            log.warning("control socket: refused a connection: %d open, the limit", self.max_clients)
            writer.write(line({"id": None, "ok": False, "error": why, "disconnected": why}))
            writer.close()  # no wait: this client may never read
            return
        task = asyncio.current_task()
        self._clients.add(task)
        peer = journal.peer_of(writer.get_extra_info("socket"))
        conn = _Connection(self, reader, writer, peer)
        conn.task = task
        self._open.add(conn)
        try:
            await conn.serve()
        finally:
            self._clients.discard(task)
            self._open.discard(conn)

    def _evict_idle(self) -> None:
        """Make room: end the connection idle longest (at least IDLE_EVICT seconds, no request being
        answered, no subscription). Its slot is free at once; its task ends on its own."""
        now = asyncio.get_running_loop().time()
        idle = [c for c in self._open if c.idle_since is not None and c.pump is None
                and now - c.idle_since >= IDLE_EVICT and c.task in self._clients]
        if not idle:
            return
        victim = min(idle, key=lambda c: c.idle_since)
        log.info("control socket: all %d connections taken: closed one idle for %.0fs",
                 self.max_clients, now - victim.idle_since)
        self._clients.discard(victim.task)
        self._open.discard(victim)
        victim.goodbye(IDLE_EVICTED)
        victim.writer.close()
        victim.task.cancel()

    # ------------------------------------------------------------ commands
    def handle(self, req: dict, peer: journal.Who | None = None):
        rt = self.runtime
        cmd = req["cmd"]
        if cmd == "version":
            return {"protocol": PROTOCOL_VERSION, "engine": "ipsec-console"}
        if cmd == "initiate":
            child = req.get("child")
            if child is not None and not isinstance(child, str):
                raise ValueError("'child' must be a string")
            if child is not None:
                _check_child(rt.policy, _name(req), child)
            rt.initiate(_name(req), child)
            return {"initiated": _name(req)}
        if cmd == "terminate":
            done = rt.terminate(_name(req), unique_id=_unique_id(req))
            return {"deleted": done.deleted, "retry_stopped": done.retry_stopped, "resolving": done.resolving,
                    "untrapped": list(done.untrapped)}
        if cmd == "rekey":
            return {"rekeyed": rt.rekey(_name(req), ike=bool(req.get("ike")), unique_id=_unique_id(req))}
        if cmd == "roam":
            name = req.get("name")
            if name is not None and not isinstance(name, str):
                raise ValueError("'name' must be a string")
            return {"moved": rt.roam(name)}
        if cmd == "get-policy":
            path = rt.policy.path
            return {"path": os.path.abspath(path) if path else path, "text": rt.policy_text,
                    "files": public_files(rt.policy)}
        if cmd == "stats":
            return ops_stats.collect(rt)
        raise ValueError(f"unknown command {cmd!r:.80}")

    async def listing(self, rid, cmd: str) -> list[bytes] | None:
        """The pieces of the answer line of a listing command, built in slices; None for another command."""
        rt = self.runtime
        if cmd in ("status", "list-sas"):
            now, wall = rt.now(), time.time()
            sas = await encode_sliced(rt.endpoint.sas, lambda sa: _info(rt.sa_status(sa, now)))
            fields = [("time", [dumps(wall)]), ("ike_sas", join_list(sas))]
            if cmd == "status":
                fields.append(("connections", join_list(await self._connections())))
                fields.append(("pools", [dumps([status_to_dict(p) for p in rt.pools()])]))
        elif cmd == "list-conns":
            fields = [("connections", join_list(await self._connections()))]
        elif cmd == "counters":
            read = getattr(rt.datapath, "counters_async", None)  # thousands of SAs: in steps
            counters, drops = await read() if read is not None else rt.datapath.counters()
            encoded = await encode_sliced(counters, status_to_dict)
            fields = [("sas", join_list(encoded)), ("drops", [dumps(drops)]), ("ike", [dumps(dict(rt.endpoint.stats))])]
        else:
            return None
        head = b'{"id":' + dumps(rid) + b',"ok":true,"result":'
        return [head, *object_pieces(fields), b"}\n"]

    async def _connections(self) -> list[bytes]:
        rt = self.runtime
        states = rt.connection_states()
        return await encode_sliced(rt.policy.connections, lambda c: status_to_dict(rt.connection_info(c, states)))

    async def apply(self, req: dict, peer: journal.Who | None = None):
        from engine.ops.reload import policy_lock
        from engine.pki.errors import PkiError
        from engine.policy.findings import PolicyError
        from engine.policy.parse import parse_policy

        text = req.get("text")
        if not isinstance(text, str):
            raise ValueError("apply-policy needs 'text'")
        async with policy_lock(self.runtime):  # after a reload already reading, never before it
            try:
                # Parsing is pure but can take a second on a large policy: off the event loop.
                policy = await asyncio.to_thread(parse_policy, text, self.runtime.policy.path)
            except PolicyError as exc:
                raise _Failure("the policy does not validate; nothing was changed",
                               [f.format() for f in exc.findings]) from None
            old_text = self.runtime.policy_text
            try:
                applied = self.runtime.apply_policy(policy, text)
            except PkiError as exc:
                raise _Failure(f"credentials could not be loaded; nothing was changed: {exc}", []) from None
        journal.record(policy, action="apply", via="control", old_text=old_text, new_text=text, who=peer,
                       result={"added": list(applied.added), "removed": list(applied.removed),
                               "changed": list(applied.changed)})
        return event_to_dict(applied)

    async def reload(self, peer: journal.Who | None):
        from engine.ops.reload import ReloadError, reload_from_file_async

        try:
            applied = await reload_from_file_async(self.runtime, via="control", who=peer)
        except ReloadError as exc:
            raise _Failure(str(exc), exc.lines()) from None
        return event_to_dict(applied)


STOPPING = "the daemon is stopping"
"""The last line a client gets when the daemon stops (``disconnected``)."""

MAX_SERVED_FILE = 256 * 1024


def public_files(policy) -> dict[str, str]:
    """The text of the files a policy names that a console needs to read it from elsewhere (lab peer
    policies, certificates, CA certificates, CRLs), by the name the policy uses. Never the secrets
    file nor a private key: those are not named here. Unreadable, large or binary files are left out."""
    base = Path(policy.path).parent if policy.path else Path.cwd()
    names: list[str] = list(policy.lab.peers) if policy.lab is not None else []
    names += list(policy.engine.crls)
    for c in policy.connections:
        names += list(c.local.certs) + list(c.remote.cacerts)
    out: dict[str, str] = {}
    for name in dict.fromkeys(names):
        target = Path(name) if os.path.isabs(name) else base / name
        try:
            st = target.stat()
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SERVED_FILE:
                continue  # a FIFO or a device would be read forever, on the event loop
            text = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "PRIVATE KEY" in text:
            continue  # a key file named where a certificate belongs is never sent
        out[name] = text
    return out


class _TrackedProtocol(asyncio.StreamReaderProtocol):
    """The protocol of start_unix_server, which also keeps its transport in a set while it is open."""

    def __init__(self, reader, callback, server: ControlServer) -> None:
        super().__init__(reader, callback)
        self._server = server
        self._mine = None

    def connection_made(self, transport) -> None:
        self._mine = transport
        self._server._transports.add(transport)
        super().connection_made(transport)
        if self._server._stopping:  # accepted as the server stopped: its handler may never run
            transport.close()

    def connection_lost(self, exc) -> None:
        self._server._transports.discard(self._mine)
        super().connection_lost(exc)


class _Connection:
    """One client: requests in order, answers and event lines under one lock."""

    def __init__(self, server: ControlServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: journal.Who | None = None) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.lock = asyncio.Lock()
        self.pump: asyncio.Task | None = None
        self._cut: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None
        self.idle_since: float | None = asyncio.get_running_loop().time()
        """Loop time since which no request is in progress (None while one is)."""

    async def send(self, pieces: list[bytes]) -> None:
        async with self.lock:
            size = 0
            for piece in pieces:
                if self.writer.transport.is_closing():
                    # The client left: writing on would only make asyncio warn once per piece.
                    raise ConnectionResetError("the client closed the connection")
                self.writer.write(piece)
                size += len(piece)
                if size >= _WRITE_PIECE:
                    size = 0
                    await self.writer.drain()
                    await asyncio.sleep(0)  # drain() does not yield while the buffer is low
            await self.writer.drain()

    async def reply(self, obj) -> None:
        await self.send([line(obj)])

    def goodbye(self, why: str) -> None:
        """The last line, as the server stops: written without waiting (the transport flushes it as
        it closes), and only between lines (a line being sent in pieces is left whole)."""
        if not self.lock.locked() and not self.writer.transport.is_closing():
            self.writer.write(line({"id": None, "ok": False, "error": why, "disconnected": why}))

    async def serve(self) -> None:
        try:
            while True:
                self.idle_since = asyncio.get_running_loop().time()
                try:
                    raw = await self.reader.readline()
                except ValueError:  # longer than MAX_REQUEST: the rest of it would read as garbage
                    why = f"request line longer than {MAX_REQUEST} bytes"
                    await self.reply({"id": None, "ok": False, "error": why, "disconnected": why})
                    break
                if not raw:
                    break
                self.idle_since = None
                try:
                    req = parse_request(raw)
                except BadRequest as exc:
                    await self.reply({"id": None, "ok": False, "error": f"bad request: {exc}"})
                    continue
                await self.dispatch(req)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away (or the server stops): nothing to answer
        finally:
            if self.pump is not None:
                self.pump.cancel()
            if self._cut is not None:
                self._cut.cancel()
            self.writer.close()

    async def dispatch(self, req: dict) -> None:
        server, rid, cmd = self.server, req.get("id"), req["cmd"]
        if cmd == "subscribe":
            if self.pump is None:
                self.pump = asyncio.create_task(self._pump(bool(req.get("replay")), bool(req.get("plaintext"))))
            await self.reply({"id": rid, "ok": True, "result": "subscribed"})
            return
        try:
            pieces = await server.listing(rid, cmd)
            if pieces is None:
                if cmd == "apply-policy":
                    result = await server.apply(req, self.peer)
                elif cmd == "reload":
                    result = await server.reload(self.peer)
                else:
                    result = server.handle(req, self.peer)
                pieces = [line({"id": rid, "ok": True, "result": result})]
        except _Failure as exc:
            pieces = [line({"id": rid, "ok": False, "error": str(exc), "findings": exc.findings})]
        except (LocalError, KeyError, ValueError, TypeError) as exc:
            pieces = [line({"id": rid, "ok": False, "error": _message(exc)})]
        except Exception as exc:  # a bug must not take the daemon down, nor go unanswered
            log.exception("control command %r failed", cmd[:80])
            pieces = [line({"id": rid, "ok": False, "error": f"internal error: {exc}"})]
        await self.send(pieces)

    async def _pump(self, replay: bool, plaintext: bool = False) -> None:
        rt = self.server.runtime
        q = rt.subscribe(replay=replay)
        q.on_drop = self._dropped
        try:
            while True:
                event = await q.get()
                if not plaintext and isinstance(event, PacketSample) and event.inner:
                    # Decrypted traffic leaves only for a subscriber that asked for it.
                    event = dataclasses.replace(event, inner=b"")
                try:
                    pieces = await event_line(event)
                except ValueError:
                    log.exception("event %s could not be encoded", type(event).__name__)
                    continue
                await self.send(pieces)
        except SubscriberDropped as exc:
            why = f"subscription ended: {exc}"
            await self.reply({"id": None, "ok": False, "error": why, "disconnected": why})
            self.writer.close()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            rt.unsubscribe(q)

    def _dropped(self, reason: str) -> None:
        # The pump may be stuck writing to a client that does not read: cut it if it
        # has not taken its last line in time.
        self._cut = asyncio.get_running_loop().call_later(FINAL_LINE_GRACE, self._abort)

    def _abort(self) -> None:
        transport = self.writer.transport
        if not transport.is_closing() or transport.get_write_buffer_size():
            log.warning("control socket: cut a subscriber that did not read its last line in %.0fs",
                        FINAL_LINE_GRACE)
            transport.abort()


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft limit of open files to its hard limit, where allowed
    (connections, SAs and sockets then run out long after 1024). Returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.info("could not raise the open files limit from %d to %d: %s", soft, hard, exc)
    return soft, hard


def _info(info):
    return None if info is None else status_to_dict(info)


class _Failure(Exception):
    def __init__(self, message: str, findings: list[str]) -> None:
        super().__init__(message)
        self.findings = findings


def _message(exc: Exception) -> str:
    """A readable error: KeyError's str() is the repr of its key."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def _check_child(policy, name: str, child: str) -> None:
    """A readable refusal for an unknown CHILD config (the engine raises a KeyError of its name alone);
    an unknown connection is left to the engine's own message."""
    conn = next((c for c in policy.connections if c.name == name), None)
    if conn is not None and all(c.name != child for c in conn.children):
        have = ", ".join(c.name for c in conn.children) or "none"
        raise LocalError(f"connection '{name}' has no CHILD SA config named '{child}' (it has: {have})")


def _unique_id(req: dict) -> int | None:
    value = req.get("unique_id")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError("'unique_id' must be an integer")
    return value


def _name(req: dict) -> str:
    name = req.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("this command needs 'name'")
    return name


async def _alive(path: Path) -> bool:
    try:
        _, w = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 0.5)
    except (OSError, asyncio.TimeoutError):
        return False
    w.close()
    return True
