"""The control socket's path belongs to the daemon that bound it: a daemon that cannot start (another
one serves the path, or the path is a file or a folder) must leave the path as it found it, and a
daemon that stops removes only its own socket."""

from __future__ import annotations

import json

import pytest

from engine.runtime.control import ControlServer, _alive


async def test_a_second_daemon_leaves_the_first_ones_socket(tmp_path):
    path = tmp_path / "control.sock"
    first = ControlServer(None, str(path))
    await first.start()
    try:
        second = ControlServer(None, str(path))
        with pytest.raises(OSError, match="another daemon is serving"):
            await second.start()
        await second.stop()  # the daemon's cleanup after a failed start
        assert path.is_socket() and await _alive(path)
    finally:
        await first.stop()
    assert not path.exists()


async def test_a_file_or_folder_at_the_path_is_left_alone(tmp_path):
    regular = tmp_path / "regular.sock"
    regular.write_text("an admin's file\n")
    folder = tmp_path / "folder.sock"
    folder.mkdir()
    for path in (regular, folder):
        server = ControlServer(None, str(path))
        with pytest.raises(OSError, match="exists and is not a socket"):
            await server.start()
        await server.stop()  # neither deletes it nor raises (IsADirectoryError)
    assert regular.read_text() == "an admin's file\n" and folder.is_dir()


async def test_stop_leaves_a_socket_that_replaced_ours(tmp_path):
    path = tmp_path / "control.sock"
    old = ControlServer(None, str(path))
    await old.start()
    path.unlink()  # e.g. removed by hand, and a new daemon started on the path
    new = ControlServer(None, str(path))
    await new.start()
    try:
        await old.stop()
        assert path.is_socket() and await _alive(path)
    finally:
        await new.stop()
    assert not path.exists()


async def test_a_stopping_daemon_tells_its_subscribers_why(tmp_path):
    """`ipsec-console events` ended with exit 0 and no word when the daemon stopped, like a stream that
    is simply over; the daemon's last line now says it is stopping (README: "When the daemon ends a
    connection itself, its last line says why"), so the client raises and the CLI exits 1."""
    from engine.datapath.base import NullDatapath
    from engine.policy.parse import parse_policy
    from engine.runtime.client import ControlClient
    from engine.runtime.engine import EngineRuntime

    from tests.loopback import addr

    text = f'[engine]\ndatapath = "kernel"\nlisten = ["{addr(1)}"]\nike_port = 25870\nnatt_port = 25871\n'
    rt = EngineRuntime(parse_policy(text, str(tmp_path / "p.toml")), datapath=NullDatapath(), policy_text=text)
    await rt.start()
    server = ControlServer(rt, str(tmp_path / "control.sock"))
    await server.start()
    client = ControlClient(str(server.path))
    try:
        await client.subscribe()
        await server.stop()
        while await client.next_event() is not None:
            pass  # events published before the stop
        assert client.disconnected == "the daemon is stopping"
    finally:
        await client.close()
        await rt.stop(delete=False)


async def test_a_daemon_that_dies_without_a_word_ends_events_with_an_error(tmp_path):
    """kill -9 or a crash: no last line, only the end of the stream. `events` used to exit 0 as if the
    stream were simply over; the client now raises (the CLI exits 1), unless it closed the stream itself."""
    import asyncio

    from engine.runtime.client import ControlClient, ControlError

    path = str(tmp_path / "control.sock")
    writers: list = []

    async def serve(reader, writer):
        writers.append(writer)
        line = await reader.readline()
        rid = json.loads(line)["id"]
        writer.write(json.dumps({"id": rid, "ok": True, "result": None}).encode() + b"\n")
        writer.write(json.dumps({"event": {"type": "LogMessage"}}).encode() + b"\n")
        await writer.drain()

    server = await asyncio.start_unix_server(serve, path)
    try:
        client = ControlClient(path)
        got = []
        with pytest.raises(ControlError, match="went away without a word"):
            async for e in client.events_raw():
                got.append(e)
                writers[0].close()  # the daemon dies
        assert got == [{"type": "LogMessage"}]
        await client.close()

        ours = ControlClient(path)  # a client that ends the stream itself: no error
        stream = ours.events_raw()
        assert await stream.__anext__() == {"type": "LogMessage"}
        await ours.close()
        assert [e async for e in stream] == []
    finally:
        # Our side of each connection too: since Python 3.12.1 wait_closed() waits for every
        # connection, and a handler that returned leaves its transport open (it hung on 3.13).
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()
