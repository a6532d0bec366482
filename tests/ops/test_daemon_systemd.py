"""The daemon under systemd: sd_notify READY/RELOADING/STOPPING, SIGHUP reloads
through apply_policy without touching unchanged SAs, journald-style logs, -v.

Two daemons on loopback (tests/ops/daemons.py), no root needed.
"""

from __future__ import annotations

import io
import logging
import os
import signal
from pathlib import Path

import pytest

from engine.ops.sdnotify import Notifier
from engine.runtime.daemon import JournalFormatter, setup_logging, under_journald
from tests.ops.daemons import Daemon, NotifySocket, addresses, policy, wait_for


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_notifier_sends_datagrams_to_the_socket_systemd_names(notify):
    n = Notifier({"NOTIFY_SOCKET": notify.path})
    assert n.enabled and n.ready("running x")
    msg = notify.wait_for("READY")
    assert msg["STATUS"] == "running x" and msg["MAINPID"] == str(os.getpid())
    assert n.reloading()
    assert "MONOTONIC_USEC" in notify.wait_for("RELOADING")
    assert not Notifier({}).enabled and not Notifier({}).ready("x")  # no systemd: a no-op


def test_watchdog_interval_is_half_the_timeout_and_only_for_this_process():
    assert Notifier({"WATCHDOG_USEC": "10000000"}).watchdog_interval == 5.0
    assert Notifier({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({}).watchdog_interval is None


def _pair(tmp_path, notify, conns=None):
    a, b = addresses()
    conns = conns or {"one": "aes256gcm16", "two": "aes256gcm16"}
    right = Daemon(tmp_path / "right", policy(b, a, conns, initiate=False), notify=notify.path)
    left = Daemon(tmp_path / "left", policy(a, b, conns, initiate=True), notify=notify.path)
    return left, right


def _established(d: Daemon, names: set[str]):
    sas = [s for s in d.sas() if s["state"] == "ESTABLISHED" and s["children"]]
    return sas if {s["name"] for s in sas} >= names else None


def test_ready_after_sockets_then_sighup_applies_the_changed_file_only(tmp_path, notify):
    left, right = _pair(tmp_path, notify)
    try:
        right.start()
        ready = notify.wait_for("READY")
        assert "running" in ready["STATUS"] and right.control.exists()  # ready means the socket serves
        left.start("-v")
        notify.wait_for("READY")
        before = {s["name"]: s for s in wait_for(lambda: _established(left, {"one", "two"}), 30, what="both IKE SAs")}

        # Change only connection "two": its ESP proposal.
        text = left.config.read_text()
        assert text.count('esp_proposals = ["aes256gcm16"]') == 2
        head, sep, tail = text.rpartition('esp_proposals = ["aes256gcm16"]')
        left.config.write_text(head + 'esp_proposals = ["aes128gcm16", "aes256gcm16"]' + tail)
        left.signal(signal.SIGHUP)
        notify.wait_for("RELOADING")
        notify.wait_for("READY")
        assert left.alive(), "SIGHUP must not kill the daemon"
        assert "reloaded" in wait_for(lambda: "reloaded" in left.log() and left.log(), 10, what="the reload log line")
        after = {s["name"]: s for s in wait_for(lambda: _established(left, {"one", "two"}), 30, what="both again")}
        one_b, one_a = before["one"], after["one"]
        assert (one_a["unique_id"], one_a["spi_i"], one_a["spi_r"]) == (one_b["unique_id"], one_b["spi_i"],
                                                                        one_b["spi_r"])
        assert [c["spi_in"] for c in one_a["children"]] == [c["spi_in"] for c in one_b["children"]]
        assert "added none, removed none, changed two" in left.log()

        # A file that does not validate: nothing changes, the daemon keeps running.
        left.config.write_text(left.config.read_text().replace('datapath = "userspace"', 'datapath = "warp"'))
        left.signal(signal.SIGHUP)
        notify.wait_for("RELOADING")
        status = notify.wait_for("READY")
        assert "reload failed" in status["STATUS"]
        assert left.alive() and "engine.datapath" in left.log()
        assert {s["name"] for s in _established(left, {"one"})} >= {"one", "two"}
    finally:
        left.stop()
        right.stop()
    assert any(m.get("STOPPING") == "1" for m in notify.messages) or notify.wait_for("STOPPING")


def test_minus_v_turns_on_debug_and_the_default_does_not(tmp_path, notify):
    left, right = _pair(tmp_path, notify, {"one": "aes256gcm16"})
    try:
        right.start()
        left.start("-v")
        wait_for(lambda: _established(left, {"one"}), 30, what="the IKE SA")
        assert " DEBUG " in left.log() and "CONNECTING" in left.log()
        assert " DEBUG " not in right.log() and " INFO " in right.log()
    finally:
        left.stop()
        right.stop()


def test_under_journald_lines_carry_a_priority_and_no_timestamp(tmp_path):
    a, b = addresses()
    d = Daemon(tmp_path / "j", policy(a, b, {"one": "aes256gcm16"}, initiate=False),
               env={"INVOCATION_ID": "0123456789abcdef0123456789abcdef"})
    try:
        d.start()
        wait_for(lambda: "daemon running" in d.log(), 10, what="the start line")
    finally:
        d.stop()
    lines = [ln for ln in d.log().splitlines() if ln.strip()]
    assert lines and all(ln[0] == "<" and ln[2] == ">" for ln in lines), lines
    assert any(ln.startswith("<6>engine.daemon: daemon running") for ln in lines)
    assert not any(ln[3:7].isdigit() for ln in lines)  # no "2026-..." of our own


def test_journal_stream_must_name_stderr(tmp_path):
    f = open(tmp_path / "err", "w")
    st = os.fstat(f.fileno())
    assert under_journald({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f)
    assert not under_journald({"JOURNAL_STREAM": "1:2"}, f)
    assert not under_journald({}, f)
    f.close()


def test_journal_formatter_prefixes_every_line_with_the_priority():
    fmt = JournalFormatter("%(name)s: %(message)s")
    rec = logging.LogRecord("engine.ike", logging.ERROR, __file__, 1, "two\nlines", None, None)
    assert fmt.format(rec) == "<3>engine.ike: two\n<3>lines"
    rec = logging.LogRecord("engine.ike", logging.DEBUG, __file__, 1, "x", None, None)
    assert fmt.format(rec) == "<7>engine.ike: x"


def test_setup_logging_levels():
    stream = io.StringIO()
    engine = logging.getLogger("engine")
    for verbose, level in ((0, logging.INFO), (1, logging.DEBUG)):
        h = setup_logging(verbose, env={}, stream=stream)
        try:
            assert engine.level == level
        finally:
            engine.removeHandler(h)
    engine.setLevel(logging.NOTSET)


def test_unit_file_is_valid_for_systemd(tmp_path):
    import shutil
    import subprocess

    unit = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "ipsec-console.service"
    text = unit.read_text()
    for needed in ("Type=notify", "RuntimeDirectory=ipsec-console", "StateDirectory=ipsec-console",
                   "ExecReload=/bin/kill -HUP $MAINPID", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE",
                   "DeviceAllow=/dev/net/tun rw", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert needed in text, needed
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing: apt-get install systemd")
    # verify needs the ExecStart binary: point it at a stand-in.
    fake = tmp_path / "ipsec-console"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    copy = tmp_path / "ipsec-console.service"
    copy.write_text(text.replace("/usr/local/bin/ipsec-console", str(fake)))
    run = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (run.stdout + run.stderr).splitlines()
                if "ipsec-console.service" in ln and "Failed to" not in ln]
    assert run.returncode == 0 and not problems, run.stdout + run.stderr
