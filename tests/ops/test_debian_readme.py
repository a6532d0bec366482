"""The README's two set-up commands, run exactly as written in a bare Debian
root of each supported release (12 bookworm with Python 3.11, 13 trixie with
Python 3.13; debootstrap, Debian's python3 only), as a new admin would paste them.

Needs root, debootstrap and the Debian and PyPI package archives. The roots are
cached (tests/ops/debian.py); a release takes about 2 minutes (apt and pip
downloads dominate). The test command runs a few representative test files,
chosen with PYTEST_ADDOPTS, so the whole suite does not run again in CI.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import fcntl
import time

import pytest

from tests.ops.debian import RELEASES, Overlay, ensure_base, readme_commands

pytestmark = [pytest.mark.slow, pytest.mark.debian]

SAMPLE_TESTS = ("tests/engine/test_policy_parse.py tests/engine/test_lab.py tests/console/test_app_shell.py "
                "-p no:cacheprovider")
"""What the README's test command runs in the root: policy parsing, a lab (IKE and ESP), the console."""
NEWER_PYTHON_TESTS = ("tests/engine/test_ike_exchanges.py tests/engine/test_esp_sa.py tests/engine/test_crypto_encr.py "
                      "tests/engine/test_crypto_ke.py tests/engine/test_pki_certs.py tests/engine/test_control_socket.py "
                      "tests/engine/test_control_limits.py tests/ops/test_control_socket_path.py "
                      "tests/ops/test_cli_outputs.py")
"""...and on a release whose python3 CI's own venv does not run (13: Python 3.13), about 30 s more of engine
(IKE, ESP, crypto, PKI), control socket and CLI tests: what found that 3.13's asyncio and json differ."""
SAMPLES = {"bookworm": SAMPLE_TESTS, "trixie": f"{NEWER_PYTHON_TESTS} {SAMPLE_TESTS}"}


def _require() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, chroot, mounts): run pytest as root")
    for tool in ("debootstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            pytest.skip(f"'{tool}' is missing: apt-get install debootstrap util-linux coreutils")


SUITES = pytest.mark.parametrize("suite", list(RELEASES), ids=[f"debian{v}-{s}" for s, (v, _) in RELEASES.items()])


def test_readme_names_two_commands_that_need_nothing_but_debian():
    run, test = readme_commands()
    for cmd in (run, test):
        assert "python3 -m venv .venv" in cmd and "apt-get install -y python3-venv" in cmd
        assert "PIP_BREAK_SYSTEM_PACKAGES" not in cmd and "--break-system-packages" not in cmd
    assert run.endswith("ipsec-console") and "pytest" in test


@SUITES
def test_readme_test_command_in_a_bare_debian_root(suite):
    _require()
    base = ensure_base(suite)
    assert not (base / "usr" / "bin" / "python3").exists(), "the cached root must stay bare"
    _, test = readme_commands()
    root = Overlay(suite)
    try:
        # The command exactly as written; PYTEST_ADDOPTS only narrows which tests it runs.
        argv = root.command(f"export PYTEST_ADDOPTS='{SAMPLES[suite]}'\n{test}")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-6000:]
        assert "externally-managed-environment" not in out
        summary = re.search(r"(\d+) passed", out)
        assert summary and int(summary.group(1)) > 50, out[-3000:]
        assert " failed" not in out.splitlines()[-1]
        # Debian's python3, not this machine's pyenv: the venv was made from /usr/bin/python3.
        cfg = (root.upper / "root" / "ipsec-console" / ".venv" / "pyvenv.cfg").read_text()
        assert "home = /usr/bin" in cfg, cfg
        # ... and the release's own python3 (3.11 on 12, 3.13 on 13).
        assert re.search(rf"^version = {re.escape(RELEASES[suite][1])}\.", cfg, re.M), cfg
    finally:
        root.remove()


@SUITES
def test_readme_run_command_opens_the_lab_in_a_bare_debian_root(suite):
    _require()
    ensure_base(suite)
    run, _ = readme_commands()
    root = Overlay(suite)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of 100x30, running the command as pasted
        try:
            os.execvp("unshare", root.command(run))
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    screen = b""
    try:
        deadline = time.monotonic() + 900
        quit_sent = None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break  # the terminal closed: the command ended
                if not chunk:
                    break
                screen += chunk
            # The lab is up when the console shows its label and the branch tunnel is installed.
            if quit_sent is None and b"LAB: simulated peers" in screen and b"INSTALLED" in screen:
                os.write(fd, b"\x11")  # ctrl+q
                quit_sent = time.monotonic()
            if quit_sent is not None and time.monotonic() - quit_sent > 30:
                raise AssertionError("the console did not quit on ctrl+q")
        _, status = os.waitpid(pid, 0)
        pid = 0
        tail = screen[-4000:].decode(errors="replace")
        assert quit_sent is not None, f"the lab never came up on screen:\n{tail}"
        assert os.waitstatus_to_exitcode(status) == 0, tail
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
        root.remove()
