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

Commands: version, status, list-sas, list-conns, initiate {name, child?},
terminate {name, unique_id?}, rekey {name, ike?, unique_id?}, get-policy,
apply-policy {text}, counters, subscribe {replay?, plaintext?}, reload (apply
the policy file again), stats (engine.ops.stats). PacketSample events carry the
decrypted inner packet only to a subscriber that set ``plaintext``. Every
applied change is recorded in the change journal with the peer's user
(SO_PEERCRED).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import stat
from pathlib import Path

from engine.events import PacketSample, to_dict as event_to_dict
from engine.ike.errors import LocalError
from engine.ops import journal
from engine.ops import stats as ops_stats
from engine.status import to_dict as status_to_dict

log = logging.getLogger("engine.control")

PROTOCOL_VERSION = 1
MAX_LINE = 4 * 1024 * 1024


class ControlServer:
    def __init__(self, runtime, path: str) -> None:
        self.runtime = runtime
        self.path = Path(path)
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task] = set()

    async def start(self) -> None:
        folder = self.path.parent
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise OSError(f"{self.path} exists and is not a socket; refusing to replace it")
            if await _alive(self.path):
                raise OSError(f"another daemon is serving {self.path}")
            self.path.unlink()  # stale socket of a crashed daemon
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others can connect
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        log.info("control socket %s", self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._clients):
                t.cancel()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients.add(task)
        peer = journal.peer_of(writer.get_extra_info("socket"))
        sub_task: asyncio.Task | None = None
        lock = asyncio.Lock()

        async def send(obj) -> None:
            async with lock:
                writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
                await writer.drain()

        try:
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    await send({"id": None, "ok": False, "error": "request line too long"})
                    break
                if not line:
                    break
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                        raise ValueError("a request is a JSON object with a string 'cmd'")
                except ValueError as exc:
                    await send({"id": None, "ok": False, "error": f"bad request: {exc}"})
                    continue
                rid = req.get("id")
                if req["cmd"] == "subscribe":
                    if sub_task is None:
                        sub_task = asyncio.create_task(self._pump(send, bool(req.get("replay")),
                                                                  bool(req.get("plaintext"))))
                    await send({"id": rid, "ok": True, "result": "subscribed"})
                    continue
                try:
                    result = self.handle(req, peer)
                    await send({"id": rid, "ok": True, "result": result})
                except _Failure as exc:
                    await send({"id": rid, "ok": False, "error": str(exc), "findings": exc.findings})
                except (LocalError, KeyError, ValueError) as exc:
                    await send({"id": rid, "ok": False, "error": _message(exc)})
                except Exception as exc:  # a bug must not take the daemon down
                    log.exception("control command %r failed", req.get("cmd"))
                    await send({"id": rid, "ok": False, "error": f"internal error: {exc}"})
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if sub_task is not None:
                sub_task.cancel()
            self._clients.discard(task)
            writer.close()

    async def _pump(self, send, replay: bool, plaintext: bool = False) -> None:
        q = self.runtime.subscribe(replay=replay)
        try:
            while True:
                event = await q.get()
                if not plaintext and isinstance(event, PacketSample) and event.inner:
                    # Decrypted traffic leaves only for a subscriber that asked for it.
                    event = dataclasses.replace(event, inner=b"")
                await send({"event": event_to_dict(event)})
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.runtime.unsubscribe(q)

    def handle(self, req: dict, peer: journal.Who | None = None):
        rt = self.runtime
        cmd = req["cmd"]
        if cmd == "version":
            return {"protocol": PROTOCOL_VERSION, "engine": "ipsec-console"}
        if cmd == "status":
            return status_to_dict(rt.status())
        if cmd == "list-sas":
            s = rt.status()
            return {"time": s.time, "ike_sas": [status_to_dict(i) for i in s.ike_sas]}
        if cmd == "list-conns":
            return {"connections": [status_to_dict(c) for c in rt.connections()]}
        if cmd == "initiate":
            rt.initiate(_name(req), req.get("child"))
            return {"initiated": _name(req)}
        if cmd == "terminate":
            return {"deleted": rt.terminate(_name(req), unique_id=req.get("unique_id"))}
        if cmd == "rekey":
            return {"rekeyed": rt.rekey(_name(req), ike=bool(req.get("ike")), unique_id=req.get("unique_id"))}
        if cmd == "get-policy":
            path = rt.policy.path
            return {"path": os.path.abspath(path) if path else path, "text": rt.policy_text,
                    "files": public_files(rt.policy)}
        if cmd == "apply-policy":
            return self._apply(req, peer)
        if cmd == "counters":
            sas, drops = rt.datapath.counters()
            return {"sas": [status_to_dict(c) for c in sas], "drops": drops, "ike": dict(rt.endpoint.stats)}
        if cmd == "stats":
            return ops_stats.collect(rt)
        if cmd == "reload":
            return self._reload(peer)
        raise ValueError(f"unknown command {cmd!r}")

    def _apply(self, req: dict, peer: journal.Who | None = None):
        from engine.pki.errors import PkiError
        from engine.policy.findings import PolicyError
        from engine.policy.parse import parse_policy

        text = req.get("text")
        if not isinstance(text, str):
            raise ValueError("apply-policy needs 'text'")
        try:
            policy = parse_policy(text, self.runtime.policy.path)
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

    def _reload(self, peer: journal.Who | None):
        from engine.ops.reload import ReloadError, reload_from_file

        try:
            applied = reload_from_file(self.runtime, via="control", who=peer)
        except ReloadError as exc:
            raise _Failure(str(exc), [f.format() for f in exc.findings]) from None
        return event_to_dict(applied)


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
            if target.stat().st_size > MAX_SERVED_FILE:
                continue
            text = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "PRIVATE KEY" in text:
            continue  # a key file named where a certificate belongs is never sent
        out[name] = text
    return out


class _Failure(Exception):
    def __init__(self, message: str, findings: list[str]) -> None:
        super().__init__(message)
        self.findings = findings


def _message(exc: Exception) -> str:
    """A readable error: KeyError's str() is the repr of its key."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


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
