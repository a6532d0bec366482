"""Reload as an admin meets it (SIGHUP, ``ipsec-console reload``, the daemon starting): an error names
the file and the line of the key at fault, as ``check`` does; the file is read as load_policy reads
it (a FIFO at the path is refused, not read for ever on the event loop); the reading and validating
run off the event loop, as apply-policy's do."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from engine.ops import reload
from engine.runtime import daemon
from engine.runtime.client import ControlClient, ControlError

from tests.ops.test_control_ops import POLICY, server  # noqa: F401 (the fixture)


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


async def test_a_reload_error_names_the_file_and_line(server, tmp_path):  # noqa: F811
    path = Path(server.runtime.policy.path)
    broken = POLICY.replace('remote_ts = ["198.51.100.128/25"]', 'remote_ts = ["198.51.100.300/25"]')
    path.write_text(broken)
    c = ControlClient(str(server.path))
    try:
        with pytest.raises(ControlError, match="does not validate; nothing was changed") as info:
            await c.call("reload")
    finally:
        await c.close()
    line = _line_of(broken, "198.51.100.300")
    assert info.value.findings == [f"{path}:{line}:1: connections.tun.children.lan.remote_ts: error: bad traffic "
                                   "selector: '198.51.100.300/25': not an address, network or range"]
    assert str(server.runtime.policy.connections[0].children[0].remote_ts[0]) == "198.51.100.128/25"


async def test_a_sighup_reload_logs_the_file_and_line(server, caplog):  # noqa: F811
    path = Path(server.runtime.policy.path)
    path.write_text(POLICY.replace('id = "b.example"', 'id = "b.example", colour = "red"'))
    await daemon.reload_on_sighup(server.runtime)
    line = _line_of(path.read_text(), "colour")
    assert any(r.getMessage().startswith(f"{path}:{line}:") and "connections.tun.remote.colour" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


async def test_a_secrets_file_error_names_the_secrets_file_and_line(server, tmp_path):  # noqa: F811
    secrets = tmp_path / "s.toml"
    secrets.write_text('[ike.x]\nsecret = "control-ops-psk-0123456789abcdef"\nids = "not-a-list-or-an-id-?"\n'
                       "colour = 1\n")
    c = ControlClient(str(server.path))
    try:
        with pytest.raises(ControlError, match="does not validate") as info:
            await c.call("reload")
    finally:
        await c.close()
    assert info.value.findings and all(f.startswith(f"{secrets}:") for f in info.value.findings), \
        info.value.findings
    assert all(f.split(":")[1].isdigit() for f in info.value.findings)


async def test_a_fifo_at_the_policy_path_is_refused_and_the_daemon_serves_on(server):  # noqa: F811
    path = Path(server.runtime.policy.path)
    path.unlink()
    os.mkfifo(path)
    c = ControlClient(str(server.path))
    try:
        with pytest.raises(ControlError, match="cannot read the policy: .*nothing was changed"):
            await asyncio.wait_for(c.call("reload"), 10)
        assert (await c.call("version"))["protocol"] == 1
    finally:
        await c.close()
        path.unlink()


async def test_a_reload_reads_and_validates_off_the_event_loop(server, monkeypatch):  # noqa: F811
    threads: list[int] = []
    real = reload.parse_text

    def parse_text(text, path):
        threads.append(threading.get_ident())
        return real(text, path)

    monkeypatch.setattr(reload, "parse_text", parse_text)
    c = ControlClient(str(server.path))
    try:
        await c.call("reload")
    finally:
        await c.close()
    assert threads and threads[0] != threading.get_ident()


async def test_the_daemon_refuses_to_start_on_a_bad_policy_naming_the_line(tmp_path, capsys):
    path = tmp_path / "gw.toml"
    text = POLICY.replace('secrets = "s.toml"\n', "").replace("ike_port = 25800", "ike_port = 0")
    path.write_text(text)
    assert await daemon.serve(str(path), str(tmp_path / "control.sock")) == 1
    err = capsys.readouterr().err
    assert f"{path}:{_line_of(text, 'ike_port')}:1: engine.ike_port: error:" in err, err


async def test_a_secrets_path_that_is_a_folder_is_not_called_missing(server, tmp_path):  # noqa: F811
    secrets = tmp_path / "s.toml"
    secrets.unlink()
    secrets.mkdir()
    c = ControlClient(str(server.path))
    try:
        with pytest.raises(ControlError, match="does not validate; nothing was changed") as info:
            await c.call("reload")
    finally:
        await c.close()
    [finding] = info.value.findings
    assert finding.endswith(f"engine.secrets: error: secrets file '{secrets}' is not a regular file"), finding
    assert f"{Path(server.runtime.policy.path)}:" in finding


async def test_a_sighup_during_a_reload_reloads_again(server, monkeypatch):  # noqa: F811
    """A SIGHUP that came while a reload ran was dropped: that reload may have read the file before
    the edit the second SIGHUP announced, which then stayed unapplied."""
    from engine.ops.sdnotify import Notifier

    runs: list[int] = []
    release = asyncio.Event()

    async def slow_reload(runtime, notifier=None):
        runs.append(len(runs))
        await release.wait()

    monkeypatch.setattr(daemon, "reload_on_sighup", slow_reload)
    services = daemon.Services(server.runtime, Notifier({}))
    services.reloads.start()  # the daemon is running (Services.start)
    services.sighup()
    await asyncio.sleep(0)
    services.sighup()  # the admin saved again and sent another SIGHUP
    services.sighup()  # (and another: one more reload covers both)
    release.set()
    await services.reloads.task
    assert runs == [0, 1]


async def test_overlapping_reloads_apply_in_order(server, monkeypatch):  # noqa: F811
    """Reloads read and validate in a thread: two that overlap (a SIGHUP, `ipsec-console reload`) must
    not apply the file read first after the one read second (the later edit undone)."""
    path = Path(server.runtime.policy.path)
    first_read = threading.Event()
    go_on = threading.Event()
    real = reload.parse_text
    calls: list[str] = []

    def parse_text(text, p):
        calls.append(text)
        if len(calls) == 1:
            first_read.set()
            go_on.wait(10)  # the first reload is slow to validate...
        return real(text, p)

    monkeypatch.setattr(reload, "parse_text", parse_text)
    old = asyncio.create_task(reload.reload_from_file_async(server.runtime, via="test"))
    await asyncio.to_thread(first_read.wait, 10)
    path.write_text(POLICY.replace("a.example", "edited.example"))  # ...the admin edits meanwhile
    new = asyncio.create_task(reload.reload_from_file_async(server.runtime, via="test"))
    await asyncio.sleep(0.2)
    go_on.set()
    await old
    await new
    assert str(server.runtime.policy.connections[0].local.id) == "edited.example"
