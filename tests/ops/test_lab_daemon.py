"""The daemon running a lab policy (`ipsec-console daemon lab.toml`): SIGHUP applies hq's file again,
as README promises for the daemon; it killed the process (SIGHUP's default action), leaving its
control socket behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.ops.daemons import wait_for
from tests.ops.labcopy import lab_copy

ROOT = Path(__file__).resolve().parents[2]


def _cli(control: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "console", *args, "--control", str(control)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_sighup_reloads_a_lab_daemon(tmp_path):
    config = lab_copy(tmp_path)
    control = tmp_path / "control.sock"
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "console", "daemon", str(config), "--control", str(control)],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for(lambda: control.exists() or proc.poll() is not None, 30, what="the control socket")
        assert proc.poll() is None, log.read_text()
        wait_for(lambda: "daemon running the lab" in log.read_text(), 30, what="the lab up")
        config.write_text(config.read_text().replace('rekey_time = "10m"', 'rekey_time = "11m"', 1))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: "reloaded" in log.read_text() or proc.poll() is not None, 30, what="the reload")
        assert proc.poll() is None, f"SIGHUP killed the lab daemon (exit {proc.returncode})"
        assert "changed branch" in log.read_text()
        conns = json.loads(_cli(control, "conns", "--json").stdout)["connections"]
        assert [c for c in conns if c["name"] == "branch"]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert not control.exists()
