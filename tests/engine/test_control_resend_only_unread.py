"""Review of the control slots (cli15): ControlClient sends a request again after the daemon ended its
connection as idle (IDLE_EVICTED) only when that request was never read on the connection that was
ended. Two ways it ran a command twice: an answer (a refusal) that came in the same read as the
eviction line was taken for an unread request; and two calls after an eviction opened two connections,
so the end of the one the client no longer tracked failed, and resent, a request in progress on the
other (a `reload` answered later ran twice)."""

from __future__ import annotations

import asyncio
import json

import pytest

from engine.runtime import control
from engine.runtime.client import ControlClient, ControlError
from engine.runtime.control_wire import IDLE_EVICTED
from tests.engine.test_control_limits import server  # noqa: F401 (fixture)

EVICTED = json.dumps({"id": None, "ok": False, "error": IDLE_EVICTED, "disconnected": IDLE_EVICTED}).encode() + b"\n"


class FakeDaemon:
    """A control socket scripted per test: ``answer(conn, req)`` returns the bytes to write (after which
    the connection is closed when they end with the eviction line)."""

    def __init__(self, path: str, answer) -> None:
        self.path = path
        self.answer = answer
        self.requests: list[tuple[int, str]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        conn = self.connections
        self.writers.append(writer)
        try:
            while raw := await reader.readline():
                req = json.loads(raw)
                self.requests.append((conn, req["cmd"]))
                out = await self.answer(conn, req)
                writer.write(out)
                await writer.drain()
                if out.endswith(EVICTED):
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        self.server.close()


def _ok(req, result="done") -> bytes:
    return json.dumps({"id": req["id"], "ok": True, "result": result}).encode() + b"\n"


@pytest.fixture
async def daemon(tmp_path):
    made = []

    async def make(answer):
        d = FakeDaemon(str(tmp_path / "control.sock"), answer)
        await d.start()
        made.append(d)
        return d

    yield make
    for d in made:
        await d.stop()


async def test_a_refusal_read_with_the_eviction_line_is_not_sent_again(daemon):
    async def answer(conn, req):
        # the answer, and (the client was slow to read it) the eviction line behind it in one read
        refusal = json.dumps({"id": req["id"], "ok": False, "error": "'c' has no IKE SA"}).encode() + b"\n"
        return refusal + EVICTED

    d = await daemon(answer)
    client = ControlClient(d.path, timeout=5)
    try:
        with pytest.raises(ControlError, match="has no IKE SA"):
            await client.call("terminate", name="c")
        assert [cmd for _, cmd in d.requests] == ["terminate"]
    finally:
        await client.close()


async def test_an_unread_request_is_sent_again_once(daemon):
    async def answer(conn, req):
        return EVICTED if conn == 1 and req["cmd"] == "rekey" else _ok(req)

    d = await daemon(answer)
    client = ControlClient(d.path, timeout=5)
    try:
        assert await client.call("rekey", name="c") == "done"  # the daemon "did not read" it on conn 1
        assert d.requests == [(1, "rekey"), (2, "rekey")]
    finally:
        await client.close()


async def test_calls_after_an_eviction_share_one_new_connection_and_none_runs_twice(daemon):
    reload_may_answer = asyncio.Event()

    async def answer(conn, req):
        if conn == 1:  # the first connection: answered, then ended as idle
            return _ok(req) + EVICTED
        if req["cmd"] == "reload":
            await reload_may_answer.wait()  # a long reload
            return _ok(req, "reloaded")
        # a quick call: the daemon ends its connection as idle after answering it (were it a
        # connection of its own, a reload in progress on another would be no business of this end)
        return _ok(req) + EVICTED

    d = await daemon(answer)
    client = ControlClient(d.path, timeout=5)
    try:
        assert await client.call("version") == "done"
        await asyncio.sleep(0.1)  # the eviction line read: the next calls need a new connection
        reload = asyncio.create_task(client.call("reload"))
        quick = asyncio.create_task(client.call("version"))
        await asyncio.sleep(0.3)
        reload_may_answer.set()
        assert await asyncio.wait_for(reload, 5) == "reloaded"
        assert await asyncio.wait_for(quick, 5) == "done"
        assert [cmd for _, cmd in d.requests].count("reload") == 1
        assert d.connections == 2  # one new connection for both
    finally:
        await client.close()


async def test_a_subscription_sent_again_after_an_eviction_streams_events(daemon):
    async def answer(conn, req):
        if conn == 1:
            return EVICTED if req["cmd"] == "subscribe" else _ok(req)  # idle long, then ended: unread
        if req["cmd"] == "subscribe":
            event = json.dumps({"event": {"type": "IkeSaStateChanged", "new": "ESTABLISHED"}}).encode() + b"\n"
            return _ok(req, "subscribed") + event
        return _ok(req)

    d = await daemon(answer)
    client = ControlClient(d.path, timeout=5)
    try:
        assert await client.call("version") == "done"
        stream = client.events_raw()
        first = await asyncio.wait_for(stream.__anext__(), 5)  # not "the daemon ended the subscription"
        assert first["type"] == "IkeSaStateChanged"
        assert d.requests == [(1, "version"), (1, "subscribe"), (2, "subscribe")]
        await stream.aclose()
    finally:
        await client.close()


async def test_a_request_woken_up_as_its_connection_is_evicted_is_never_run(server, monkeypatch):  # noqa: F811
    """The daemon side of the proof: a request line that reached an idle connection in the very turn of
    the loop in which a newcomer evicts it (its handler woken by the line, not yet run) is never read:
    the eviction cancels the handler before readline returns the line. So a request failed by
    IDLE_EVICTED was not run, and the client's resend runs it once."""
    monkeypatch.setattr(control, "IDLE_EVICT", 0.0)
    ran: list[dict] = []
    handle = server.handle

    def counting(req, peer=None):
        if req["cmd"] == "rekey":
            ran.append(req)
            return {"rekeyed": 1}
        return handle(req, peer)

    monkeypatch.setattr(server, "handle", counting)
    r, w = await asyncio.open_unix_connection(str(server.path))
    w.write(b'{"id": 0, "cmd": "version"}\n')
    assert json.loads(await asyncio.wait_for(r.readline(), 5))["ok"]
    await asyncio.sleep(0.05)  # idle, waiting for a line
    (conn,) = server._open
    # One turn of the loop: the line arrives (the handler is woken) and a newcomer evicts the connection.
    conn.reader.feed_data(b'{"id": 1, "cmd": "rekey", "name": "c"}\n')
    server._evict_idle()
    assert json.loads(await asyncio.wait_for(r.readline(), 5))["disconnected"] == IDLE_EVICTED
    assert await asyncio.wait_for(r.read(), 5) == b""
    await asyncio.sleep(0.05)
    assert ran == [] and server._open == set()
    w.close()
