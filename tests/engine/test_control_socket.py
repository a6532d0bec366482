"""The control socket on its own: permissions, stale sockets, the JSON-lines
protocol and its errors (no root, no namespaces: an engine on loopback with
no datapath)."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import pytest

from engine.datapath.base import NullDatapath
from engine.runtime.client import ControlClient, ControlError
from engine.runtime.control import ControlServer
from engine.runtime.engine import EngineRuntime
from tests.engine.ike_pair import connection, policy
from tests.loopback import addr


def _policy():
    # Loopback on a port nobody listens on: commands work, nothing answers.
    conn = connection(local=addr(1), remote="127.0.0.9", local_port=25500)
    return policy(conn, address=addr(1), ike_port=25500, natt_port=25501)


@pytest.fixture
async def server(tmp_path):
    rt = EngineRuntime(_policy(), datapath=NullDatapath(), policy_text="# the policy text\n")
    await rt.start()
    srv = ControlServer(rt, str(tmp_path / "run" / "control.sock"))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
        await rt.stop(delete=False)


async def test_socket_is_0600_in_a_0700_folder(server):
    mode = os.stat(server.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(server.path.parent).st_mode) == 0o700


async def test_commands_and_errors(server):
    c = ControlClient(str(server.path))
    try:
        assert (await c.call("version"))["protocol"] == 1
        assert (await c.call("get-policy"))["text"] == "# the policy text\n"
        conns = (await c.call("list-conns"))["connections"]
        assert conns[0]["name"] == "tun" and conns[0]["state"] == "down"
        assert (await c.call("initiate", name="tun"))["initiated"] == "tun"
        sas = (await c.call("list-sas"))["ike_sas"]
        assert sas and sas[0]["state"] == "CONNECTING"
        with pytest.raises(ControlError, match="no connection named 'nosuch'"):
            await c.call("initiate", name="nosuch")
        with pytest.raises(ControlError, match="unknown command"):
            await c.call("frobnicate")
        with pytest.raises(ControlError, match="does not validate") as exc:
            await c.call("apply-policy", text="[engine]\ndatapath = 'warp'\n")
        assert any("engine.datapath" in f for f in exc.value.findings)
        assert (await c.call("terminate", name="tun"))["deleted"] == 1
    finally:
        await c.close()


async def test_garbage_lines_get_an_error_and_the_connection_lives(server):
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(b"this is not json\n[1, 2]\n" + json.dumps({"id": 3, "cmd": "version"}).encode() + b"\n")
    await writer.drain()
    answers = [json.loads(await reader.readline()) for _ in range(3)]
    assert [a["ok"] for a in answers] == [False, False, True] and answers[2]["id"] == 3
    writer.close()


async def test_subscribers_get_events_and_replayed_history(server):
    rt = server.runtime
    rt.initiate("tun")  # history: a state change and an IKE_SA_INIT request
    await asyncio.sleep(0.05)
    c = ControlClient(str(server.path))
    try:
        events = c.events_raw(replay=True)
        first = await asyncio.wait_for(events.__anext__(), 5)
        assert first["type"] in ("IkeSaStateChanged", "ExchangeSent")
    finally:
        await c.close()


async def test_installed_events_reach_subscribers_without_their_keys(server):
    rt = server.runtime
    key = bytes(range(0x40, 0x60))
    rt.publish(_installed(key))
    c = ControlClient(str(server.path))
    try:
        events = c.events_raw(replay=True)
        for _ in range(50):
            ev = await asyncio.wait_for(events.__anext__(), 5)
            if ev["type"] == "ChildSaInstalled":
                break
        else:
            raise AssertionError("the ChildSaInstalled event was not replayed")
        line = json.dumps(ev)
        assert ev["spi_in"] == 0x1001 and "keys" not in ev
        assert key.hex() not in line and key[:8].hex() not in line
    finally:
        await c.close()


def _installed(key: bytes):
    from engine.events import ChildKeys, ChildSaInstalled
    from engine.secret import Secret

    k = Secret(key)
    return ChildSaInstalled(ike_sa=1, connection="tun", child="lan", unique_id=1, reqid=1, protocol="esp",
                            mode="tunnel", spi_in=0x1001, spi_out=0x2002, local_addr="127.0.0.1",
                            remote_addr="127.0.0.9", local_ts=(), remote_ts=(), encr_id=20,
                            encr_key_length=256, integ_id=None, esn=False, keys=ChildKeys(k, k, k, k))


async def test_a_stale_socket_is_replaced_but_a_live_one_or_a_file_is_not(tmp_path, server):
    rt = server.runtime
    # a live daemon already serves this path
    with pytest.raises(OSError, match="another daemon"):
        await ControlServer(rt, str(server.path)).start()
    # a plain file is never replaced
    other = tmp_path / "not-a-socket"
    other.write_text("precious")
    with pytest.raises(OSError, match="not a socket"):
        await ControlServer(rt, str(other)).start()
    assert other.read_text() == "precious"
    # a socket nobody serves (a crashed daemon) is replaced
    import socket

    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()
    srv = ControlServer(rt, str(stale))
    await srv.start()
    await srv.stop()
    assert not stale.exists()
