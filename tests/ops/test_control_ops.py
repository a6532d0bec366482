"""reload, stats and the change journal through the control socket and the CLI
(an engine on loopback with no datapath, as in tests/engine/test_control_socket.py)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from engine.datapath.base import NullDatapath
from engine.ops import journal
from engine.policy.parse import load_policy
from engine.runtime.client import ControlClient, ControlError
from engine.runtime.control import ControlServer
from engine.runtime.engine import EngineRuntime

from tests.loopback import addr

ROOT = Path(__file__).resolve().parents[2]
# On this process's own loopback address (tests/loopback.py): another test run at the same time listens on
# the same ports, and the engine refuses a busy address and port.
POLICY = """\
# the admin's note: keep this comment
[engine]
datapath = "kernel"
listen = ["127.0.0.1"]
ike_port = 25800
natt_port = 25801
secrets = "s.toml"
state_dir = "state"

[connections.tun]
local_addrs = ["127.0.0.1"]
remote_addrs = ["127.0.0.9"]
local = { auth = "psk", id = "a.example" }
remote = { auth = "psk", id = "b.example" }

[connections.tun.children.lan]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/25"]
""".replace("127.0.0.1", addr(1))


@pytest.fixture
async def server(tmp_path):
    (tmp_path / "s.toml").write_text('[ike.x]\nsecret = "control-ops-psk-0123456789abcdef"\n')
    (tmp_path / "s.toml").chmod(0o600)
    path = tmp_path / "gw.toml"
    path.write_text(POLICY)
    rt = EngineRuntime(load_policy(path), datapath=NullDatapath(), policy_text=POLICY)
    await rt.start()
    srv = ControlServer(rt, str(tmp_path / "run" / "control.sock"))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
        await rt.stop(delete=False)


async def _cli(server, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "console", *args, "--control",
                                                    str(server.path)], cwd=ROOT, capture_output=True, text=True,
                                   timeout=60)


async def test_reload_applies_the_file_and_journals_who_and_the_diff(server, tmp_path):
    path = Path(server.runtime.policy.path)
    path.write_text(POLICY.replace('remote_ts = ["198.51.100.128/25"]', 'remote_ts = ["198.51.100.192/26"]'))
    run = await _cli(server, "reload")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "reloaded: changed tun"
    assert str(server.runtime.policy.connections[0].children[0].remote_ts[0]) == "198.51.100.192/26"
    [entry] = journal.read(tmp_path / "state")
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert entry["action"] == "apply" and entry["via"] == "control" and entry["who"]["user"] == me
    assert entry["who"]["pid"] and entry["who"]["pid"] != os.getpid()  # the CLI process, from SO_PEERCRED
    assert '-remote_ts = ["198.51.100.128/25"]' in entry["diff"] and "+remote_ts" in entry["diff"]
    assert entry["result"]["changed"] == ["tun"]
    assert os.stat(tmp_path / "state" / "journal.jsonl").st_mode & 0o777 == 0o600


async def test_reload_of_a_broken_file_changes_nothing(server, tmp_path):
    path = Path(server.runtime.policy.path)
    path.write_text(POLICY.replace('datapath = "kernel"', 'datapath = "warp"'))
    run = await _cli(server, "reload")
    assert run.returncode == 1
    assert "does not validate" in run.stderr and "engine.datapath" in run.stderr
    assert server.runtime.policy.engine.datapath == "kernel"
    path.write_text(POLICY.replace("ike_port = 25800", "ike_port = 25802"))
    c = ControlClient(str(server.path))
    try:
        with pytest.raises(ControlError, match="needs a restart; nothing was changed"):
            await c.call("reload")
    finally:
        await c.close()
    assert journal.read(tmp_path / "state") == []


async def test_apply_policy_is_journaled_too(server, tmp_path):
    c = ControlClient(str(server.path))
    try:
        await c.call("apply-policy", text=POLICY.replace("a.example", "c.example"))
    finally:
        await c.close()
    [entry] = journal.read(tmp_path / "state")
    assert entry["via"] == "control" and "+local = { auth = \"psk\", id = \"c.example\" }" in entry["diff"]


async def test_stats_like_swanctl(server):
    server.runtime.initiate("tun")
    run = await _cli(server, "stats")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("uptime: ") and ", since " in lines[0]
    assert any(ln.startswith("IKE_SAs: 1 total, 1 half-open") for ln in lines), lines
    data = json.loads((await _cli(server, "stats", "--json")).stdout)
    assert data["ike_sas"]["total"] == 1 and data["datapath"] == "none" and data["rss"] > 0


def test_version_and_pki_help():
    run = subprocess.run([sys.executable, "-m", "console", "--version"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("ipsec-console 0.") and "control protocol 1" in run.stdout
    run = subprocess.run([sys.executable, "-m", "console", "pki", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0
    for sub in ("init-ca", "issue", "revoke", "crl", "list"):
        assert sub in run.stdout


async def test_an_apply_from_the_embedded_console_is_journaled(tmp_path):
    from console.runtime.embedded import EmbeddedRuntime
    from tests.ops.labcopy import lab_copy

    config = lab_copy(tmp_path, engine='state_dir = "state"')
    rt = EmbeddedRuntime.lab(config)
    await rt.start()
    try:
        text = config.read_text().replace('dpd_delay = "10s"', 'dpd_delay = "20s"', 1)
        from engine.policy.parse import parse_policy

        await rt.apply_policy(parse_policy(text, config), text)
    finally:
        await rt.stop()
    [entry] = journal.read(config.parent / "state")
    assert entry["via"] == "console" and '+dpd_delay = "20s"' in entry["diff"]
    assert entry["result"]["changed"] == ["branch"]


async def test_initiate_of_an_unknown_child_names_it(server):
    """`initiate tun --child nosuch` answered just "nosuch" (a KeyError's key), which reads like a
    success message or a connection name; it must say what is missing and where."""
    c = ControlClient(str(server.path))
    try:
        with pytest.raises(ControlError) as err:
            await c.call("initiate", name="tun", child="nosuch")
    finally:
        await c.close()
    assert str(err.value) == "connection 'tun' has no CHILD SA config named 'nosuch' (it has: lan)"
    assert not server.runtime.endpoint.sas


async def test_a_state_dir_that_is_a_file_neither_stops_the_daemon_nor_fails_an_apply(server, tmp_path, caplog):
    """[engine] state_dir naming a file: the daemon died at start with a FileExistsError traceback
    (its usage counters), and an apply that had been made answered "internal error" (the journal)."""
    from engine.ops.usage import UsageTracker

    (tmp_path / "state").write_text("not a folder\n")
    tracker = UsageTracker(server.runtime)  # what the daemon's Services build at start
    assert not tracker.enabled
    assert any("state" in r.getMessage() and "not a folder" in r.getMessage() for r in caplog.records)
    c = ControlClient(str(server.path))
    try:
        result = await c.call("apply-policy", text=POLICY.replace("a.example", "c.example"))
    finally:
        await c.close()
    assert result["changed"] == ["tun"]
    assert (tmp_path / "state").read_text() == "not a folder\n"
    assert any("journal" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
