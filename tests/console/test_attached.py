"""The console attached to real daemons through the control socket (no root:
the lab's loopback policies, one daemon per endpoint). Closing the console
leaves the tunnels up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from console.app import ConsoleApp
from console.runtime.attached import AttachedRuntime
from console.screens.confirm import ConfirmScreen
from console.widgets.sa_tables import ChildSaTable
from engine.policy.samples import sample_path

from tests.console.conftest import screen_text, wait_for
from tests.ops.labcopy import lab_copy

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, control):
    return subprocess.run([sys.executable, "-m", "console", *args, "--control", str(control)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def daemons(tmp_path):
    # A copy of the lab on addresses and ports of this process: the shipped lab's 127.0.0.1 port 15500 is
    # anyone's (another test run, someone's lab), and the engine refuses a busy address and port.
    tmp_path = lab_copy(tmp_path).parent
    procs = {}
    try:
        for name in ("branch", "hq"):
            cfg = tmp_path / ("lab.toml" if name == "hq" else "lab-branch.toml")
            sock = tmp_path / f"{name}.sock"
            log = open(tmp_path / f"{name}.log", "wb")
            procs[name] = (subprocess.Popen([sys.executable, "-m", "console", "daemon", str(cfg), "--control",
                                             str(sock), "--datapath", "none"], cwd=ROOT, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True), sock)
            for _ in range(200):
                if sock.exists():
                    break
                time.sleep(0.05)
            assert sock.exists(), (tmp_path / f"{name}.log").read_text()
        yield {n: s for n, (p, s) in procs.items()}, tmp_path
    finally:
        for p, _ in procs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)


def _sas(control) -> list[dict]:
    r = _cli("sas", "--json", control=control)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["ike_sas"]


async def test_attached_console_shows_and_rekeys_and_leaves_tunnels_up(daemons):
    socks, tmp = daemons
    hq = socks["hq"]
    deadline = time.monotonic() + 20
    while not [sa for sa in _sas(hq) if sa["children"]]:
        assert time.monotonic() < deadline, (tmp / "hq.log").read_text()[-3000:]
        time.sleep(0.2)
    before = _sas(hq)[0]["children"][0]["spi_in"]
    app = ConsoleApp(AttachedRuntime(str(hq)))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.store.snapshot is not None, timeout=10, what="first status")
        table = app.screen.query_one(ChildSaTable)
        await wait_for(pilot, lambda: table.row_keys, timeout=10, what="CHILD SA row")
        text = screen_text(app)
        assert "attached" in text.lower() and f"{before:08x}" in text
        # the negotiation happened before we attached: the replayed history shows it
        await wait_for(pilot, lambda: app.store.negotiations, timeout=10, what="replayed negotiation")
        table.focus()
        await pilot.pause()
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_keys and f"{before:08x}" not in screen_text(app), timeout=10,
                       what="the new SPI")
    # the console is gone; the daemon and its tunnel are not
    after = _sas(hq)
    assert after and after[0]["state"] == "ESTABLISHED" and after[0]["children"][0]["spi_in"] != before


def test_sas_json_schema_and_control_commands(daemons):
    socks, tmp = daemons
    hq = socks["hq"]
    deadline = time.monotonic() + 20
    while not [sa for sa in _sas(hq) if sa["children"]]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    sa = _sas(hq)[0]
    for key in ("name", "unique_id", "state", "initiator", "spi_i", "spi_r", "local_addr", "local_port",
                "remote_addr", "remote_port", "local_id", "remote_id", "encr", "integ", "prf", "ke",
                "nat_local", "nat_remote", "established_ago", "rekey_in", "expire_in", "children"):
        assert key in sa, key
    child = sa["children"][0]
    for key in ("name", "unique_id", "reqid", "state", "protocol", "mode", "encap", "spi_in", "spi_out", "encr",
                "integ", "esn", "local_ts", "remote_ts", "bytes_in", "packets_in", "bytes_out", "packets_out",
                "installed_ago", "rekey_in", "expire_in", "drops"):
        assert key in child, key
    assert sa["name"] == "branch" and sa["local_id"] == "hq.lab.example"
    text = _cli("sas", control=hq).stdout
    assert f"{child['spi_in']:08x}" in text and "ESTABLISHED" in text
    conns = json.loads(_cli("conns", "--json", control=hq).stdout)["connections"]
    assert {c["name"] for c in conns} == {"branch", "roadwarrior"}
    assert _cli("rekey", "nosuch", control=hq).returncode == 1
    r = _cli("terminate", "branch", control=hq)
    assert r.returncode == 0 and "1 IKE SA" in r.stdout
    deadline = time.monotonic() + 10
    while _sas(hq):
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.fixture
def lab_daemon(tmp_path):
    """`ipsec-console daemon lab.toml --datapath lab`, started from the lab's folder with a relative path
    (a copy of the shipped lab on ports of its own: another run's lab must not share its sockets)."""
    tmp_path = lab_copy(tmp_path).parent
    sock = tmp_path / "hq.sock"
    log = open(tmp_path / "daemon.log", "wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "console", "daemon", "lab.toml", "--datapath", "lab",
                             "--control", str(sock)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        assert sock.exists(), (tmp_path / "daemon.log").read_text()
        yield sock, tmp_path
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)


def _events(control, *args, count: int, timeout: float = 15) -> list[dict]:
    proc = subprocess.Popen([sys.executable, "-m", "console", "events", "--control", str(control), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(json.loads(line))
    finally:
        proc.kill()
        proc.wait(5)
    return out


@pytest.mark.slow
def test_daemon_runs_the_whole_lab_and_initiate_returns_the_outcome(lab_daemon):
    sock, tmp = lab_daemon
    deadline = time.monotonic() + 20
    while not [sa for sa in _sas(sock) if sa["children"]]:  # the branch peer runs in the daemon too
        assert time.monotonic() < deadline, (tmp / "daemon.log").read_text()[-3000:]
        time.sleep(0.2)
    assert abs(json.loads(_cli("sas", "--json", control=sock).stdout)["time"] - time.time()) < 60
    r = _cli("initiate", "branch", control=sock)
    assert r.returncode == 0 and "already up" in r.stdout
    r = _cli("initiate", "roadwarrior", "--timeout", "20", control=sock)
    assert r.returncode == 1 and "NO_PROPOSAL_CHOSEN" in r.stderr, r.stdout + r.stderr
    r = _cli("terminate", "roadwarrior", control=sock)  # nothing up: a failure, as rekey's and swanctl's
    assert r.returncode == 1 and "deleting 0 IKE SA" in r.stdout, r.stdout + r.stderr
    r = _cli("events", "--type", "", control=sock)  # used to wait for events it could never print
    assert r.returncode == 1 and "--type needs an event type" in r.stderr, r.stdout + r.stderr
    assert _cli("terminate", "branch", control=sock).returncode == 0
    deadline = time.monotonic() + 10
    while [sa for sa in _sas(sock) if sa["name"] == "branch"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = _cli("initiate", "branch", "--timeout", "20", control=sock)
    assert r.returncode == 0 and "established successfully" in r.stdout, r.stdout + r.stderr
    assert _cli("initiate", "nosuch", control=sock).returncode == 1
    # events: --type filters; PacketSample carries no decrypted packet unless asked for
    samples = _events(sock, "--type", "PacketSample", count=4)
    assert len(samples) == 4 and {e["type"] for e in samples} == {"PacketSample"}
    assert all(not e["inner"] for e in samples)
    assert all(abs(e["time"] - time.time()) < 60 for e in samples)  # wall clock
    plain = _events(sock, "--type", "PacketSample", "--plaintext", count=6)
    assert any(e["inner"] for e in plain if e["direction"] in ("in", "out"))
    bad = subprocess.run([sys.executable, "-m", "console", "events", "--type", "Nope", "--control", str(sock)],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "unknown event type Nope" in bad.stderr


def test_daemon_refuses_the_lab_datapath_without_a_lab(tmp_path):
    src = sample_path("site-to-site.toml").parent
    for name in ("site-to-site.toml", "site-to-site.secrets.toml"):
        shutil.copy(src / name, tmp_path / name)
    os.chmod(tmp_path / "site-to-site.secrets.toml", 0o600)
    r = subprocess.run([sys.executable, "-m", "console", "daemon", str(tmp_path / "site-to-site.toml"),
                        "--datapath", "lab", "--control", str(tmp_path / "x.sock")], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "no [lab] section" in r.stderr and "--datapath none" in r.stderr


async def test_attach_from_another_folder_shows_the_policy_and_no_false_alert(lab_daemon):
    from console.screens.policies import PoliciesScreen
    from console.widgets.policy_tree import PolicyTree

    sock, tmp = lab_daemon  # the daemon was given "lab.toml", relative to its own folder
    app = ConsoleApp(AttachedRuntime(str(sock)))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.store.snapshot is not None, timeout=10, what="status")
        policy, _ = await app.runtime.policy()
        assert policy.path == str(tmp / "lab.toml")
        # The secrets file is the daemon's (root, 0600 in real life): the console never needs it.
        (tmp / "lab.secrets.toml").rename(tmp / "kept-by-the-daemon.toml")
        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, PoliciesScreen) and app.screen.validation,
                       timeout=10, what="policies")
        nodes = app.screen.query_one(PolicyTree).nodes()
        assert ("connection", "branch") in nodes and ("connection", "roadwarrior") in nodes
        assert app.screen.validation.ok, [f.format() for f in app.screen.validation.errors]
        await pilot.pause(0.5)
        assert not [a for a in app.store.alerts if a.kind in ("cert", "runtime")]


async def test_the_attached_console_reads_the_files_the_daemon_served(tmp_path):
    """A console that cannot read the daemon's folder parses its lab policy from the peer files the
    daemon serves with get-policy; the copies go when the console does."""
    from engine.runtime.control import public_files
    from engine.policy.parse import load_policy

    src = sample_path("lab.toml").parent
    for name in ("lab.toml", "lab-branch.toml", "lab-roadwarrior.toml", "lab.secrets.toml"):
        shutil.copy(src / name, tmp_path / name)
    served = public_files(load_policy(tmp_path / "lab.toml"))
    assert set(served) == {"lab-branch.toml", "lab-roadwarrior.toml"}  # never the secrets file
    rt = AttachedRuntime(str(tmp_path / "none.sock"))
    elsewhere = "/srv/not-readable-here/lab.toml"

    async def call(cmd, **args):
        assert cmd == "get-policy"
        return {"path": elsewhere, "text": (tmp_path / "lab.toml").read_text(), "files": served}

    rt._call = call
    policy, text = await rt.policy()
    assert policy.path == elsewhere and [c.name for c in policy.connections] == ["branch", "roadwarrior"]
    assert (rt.files_dir / "lab-branch.toml").read_text() == served["lab-branch.toml"]
    mirror = rt.files_dir
    await rt.stop()
    assert not mirror.exists()


def test_served_files_never_include_a_private_key(tmp_path):
    from engine.runtime.control import public_files

    (tmp_path / "gw.crt").write_text("-----BEGIN PRIVATE KEY-----\nnot a certificate\n-----END PRIVATE KEY-----\n")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    from engine.policy.model import AuthConfig, ConnectionConfig, Policy

    policy = Policy(path=str(tmp_path / "gw.toml"), connections=(ConnectionConfig(
        name="c", local=AuthConfig(auth="pubkey", certs=("gw.crt",)),
        remote=AuthConfig(auth="pubkey", cacerts=("ca.crt",))),))
    assert set(public_files(policy)) == {"ca.crt"}


@pytest.mark.parametrize("what", ["missing", "stale"])
def test_attach_to_no_daemon_fails_before_the_screen_is_taken(tmp_path, capsys, monkeypatch, what):
    """`ipsec-console attach` with no daemon started the full-screen app, then left with exit 2 and
    the terminal's escape codes around the message; now the message comes first and alone."""
    import socket as socket_module

    import console.app as app_module

    path = tmp_path / "control.sock"
    if what == "stale":  # a socket file nobody listens on (a daemon that was killed)
        s = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
        s.bind(str(path))
        s.close()

    def no_app(*a, **kw):
        raise AssertionError("the full-screen app was started")
    monkeypatch.setattr(app_module, "ConsoleApp", no_app)
    assert app_module.main(attach=str(path)) == 2
    err = capsys.readouterr().err
    assert ("no daemon at" if what == "missing" else "no daemon listening at") in err and str(path) in err, err


async def test_terminate_of_a_failing_connection_is_no_error_for_the_attached_runtime(monkeypatch):
    """The daemon's terminate answers retry_stopped when it cancelled a failed connection's next
    attempt (deleted 0): the console must not call that "no IKE SA to terminate"; an older daemon's
    answer has no retry_stopped."""
    from console.runtime.base import CommandError

    rt = AttachedRuntime("/nonexistent.sock")
    answers = iter([{"deleted": 0, "retry_stopped": True}, {"deleted": 0, "retry_stopped": False}, {"deleted": 0},
                    {"deleted": 2, "retry_stopped": False}])

    async def call(cmd, **args):
        assert cmd == "terminate"
        return next(answers)

    monkeypatch.setattr(rt, "_call", call)
    await rt.terminate("tun")
    for _ in range(2):
        with pytest.raises(CommandError, match="no IKE SA"):
            await rt.terminate("tun")
    await rt.terminate("tun")
