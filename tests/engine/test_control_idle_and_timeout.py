"""Control slots and CLI timeouts (review items): when every control slot is taken, the connection idle
longest (not subscribed, no request in progress) is ended to make room, event streams are kept, and
the evicted client reconnects on its next call; a client's call to a daemon that accepts and never
answers ends with an error naming the socket and the seconds; connecting is bounded too."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from engine.runtime import client as client_mod, control
from engine.runtime.client import ControlClient, ControlError
from engine.runtime.control_wire import IDLE_EVICTED
from tests.engine.test_control_limits import server  # noqa: F401 (fixture)


async def _open(srv):
    return await asyncio.open_unix_connection(str(srv.path))


async def _ask(r, w, raw: bytes = b'{"id": 1, "cmd": "version"}\n') -> dict:
    w.write(raw)
    await w.drain()
    return json.loads(await asyncio.wait_for(r.readline(), 10))


async def test_the_oldest_idle_connection_makes_room_for_a_new_one(server, monkeypatch):  # noqa: F811
    monkeypatch.setattr(control, "IDLE_EVICT", 0.2)
    server.max_clients = 3
    oldest = await _open(server)
    assert (await _ask(*oldest))["ok"]
    await asyncio.sleep(0.05)
    newer = await _open(server)
    assert (await _ask(*newer))["ok"]
    events = await _open(server)  # a subscriber: never evicted however long it is quiet
    assert (await _ask(*events, b'{"id": 1, "cmd": "subscribe"}\n'))["result"] == "subscribed"
    await asyncio.sleep(0.3)
    admin = await _open(server)
    assert (await _ask(*admin, b'{"id": 5, "cmd": "version"}\n'))["ok"]  # served, not refused
    last = json.loads(await asyncio.wait_for(oldest[0].readline(), 5))
    assert last["disconnected"] == IDLE_EVICTED
    assert await asyncio.wait_for(oldest[0].read(), 5) == b""
    assert server.refused == 0
    assert (await _ask(*newer))["ok"]  # the others live on
    assert (await _ask(*admin))["ok"]
    # Full again (newer, events, admin): a fourth evicts the one idle longest, `newer`.
    await asyncio.sleep(0.3)
    another = await _open(server)
    assert (await _ask(*another))["ok"]
    assert json.loads(await asyncio.wait_for(newer[0].readline(), 5))["disconnected"] == IDLE_EVICTED
    for r, w in (events, admin, another):
        w.close()


async def test_with_only_busy_or_subscribed_connections_a_newcomer_is_refused(server, monkeypatch):  # noqa: F811
    monkeypatch.setattr(control, "IDLE_EVICT", 0.0)
    server.max_clients = 2
    subs = [await _open(server) for _ in range(2)]
    for r, w in subs:
        assert (await _ask(r, w, b'{"id": 1, "cmd": "subscribe"}\n'))["ok"]
    r3, w3 = await _open(server)
    assert "too many control connections" in json.loads(await asyncio.wait_for(r3.readline(), 5))["disconnected"]
    assert server.refused == 1
    for r, w in subs:
        w.close()


async def test_a_connection_idle_a_short_while_is_not_evicted(server):  # noqa: F811
    server.max_clients = 1
    first = await _open(server)
    assert (await _ask(*first))["ok"]
    r2, w2 = await _open(server)  # the first was idle far less than IDLE_EVICT: refused, as before
    assert "too many control connections" in json.loads(await asyncio.wait_for(r2.readline(), 5))["disconnected"]
    assert (await _ask(*first))["ok"]
    first[1].close()


async def test_an_evicted_client_reconnects_on_its_next_call(server, monkeypatch):  # noqa: F811
    monkeypatch.setattr(control, "IDLE_EVICT", 0.1)
    server.max_clients = 1
    idle = ControlClient(str(server.path))
    other = ControlClient(str(server.path))
    try:
        assert (await idle.call("version"))["protocol"] == control.PROTOCOL_VERSION
        await asyncio.sleep(0.2)
        assert (await other.call("version"))["protocol"] == control.PROTOCOL_VERSION
        await asyncio.sleep(0.2)
        assert (await idle.call("version"))["protocol"] == control.PROTOCOL_VERSION  # and evicts `other`
        await asyncio.sleep(0.2)
        assert (await other.call("version"))["protocol"] == control.PROTOCOL_VERSION
    finally:
        await idle.close()
        await other.close()


@pytest.fixture
async def wedged(tmp_path):
    """A daemon that accepts and never answers."""
    held = []

    async def hold(reader, writer):
        held.append(writer)
        await asyncio.sleep(3600)

    path = str(tmp_path / "wedged.sock")
    srv = await asyncio.start_unix_server(hold, path=path)
    try:
        yield path
    finally:
        for w in held:
            w.close()
        srv.close()


async def test_a_call_to_a_wedged_daemon_times_out_with_the_socket_and_seconds(wedged):
    client = ControlClient(wedged, timeout=0.3)
    try:
        with pytest.raises(ControlError, match=rf"no answer from the daemon at {wedged} to 'list-sas' within 0.3s"):
            await asyncio.wait_for(client.call("list-sas"), 10)
    finally:
        await client.close()


async def test_connecting_to_a_daemon_that_does_not_accept_times_out(tmp_path, monkeypatch):
    """A daemon whose accept loop is stuck: its backlog fills, and a connection then says EAGAIN.
    asyncio took that for success (the first read failed with EINVAL: a traceback, and no time limit).
    An event stream waits for events without limit, but not for the connection itself."""
    path = str(tmp_path / "full.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    fillers = []
    try:
        while True:  # fill the backlog
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            fillers.append(s)
            try:
                s.connect(path)
            except BlockingIOError:
                break
        monkeypatch.setattr(client_mod, "CONNECT_TIMEOUT", 0.3)
        client = ControlClient(path)
        with pytest.raises(ControlError, match=rf"the daemon at {path} did not accept a connection within 0.3s"):
            await asyncio.wait_for(client.events_raw().__anext__(), 10)
        await client.close()
        calls = ControlClient(path, timeout=0.2)
        with pytest.raises(ControlError, match="did not accept a connection within 0.2s"):
            await asyncio.wait_for(calls.call("list-sas"), 10)
        await calls.close()
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_the_cli_gives_up_on_a_wedged_daemon(tmp_path, capsys):
    from console.cli import main

    ready = []

    async def scenario():
        async def hold(reader, writer):
            await asyncio.sleep(3600)

        path = str(tmp_path / "wedged.sock")
        srv = await asyncio.start_unix_server(hold, path=path)
        ready.append(path)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, main, ["sas", "--control", path, "--timeout", "0.5"])
        finally:
            srv.close()

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == 1
    err = capsys.readouterr().err
    assert f"no answer from the daemon at {ready[0]} to 'list-sas' within 0.5s" in err


def test_every_control_command_takes_a_timeout():
    from console.cli import build_parser

    parser = build_parser()
    for argv in (["sas"], ["conns"], ["terminate", "x"], ["rekey", "x"], ["roam"], ["events"], ["reload"],
                 ["stats"], ["initiate", "x"]):
        assert parser.parse_args(argv).timeout > 0, argv
        assert parser.parse_args([*argv, "--timeout", "7"]).timeout == 7
