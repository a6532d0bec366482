"""The kernel datapath against a kernel with ESP and AH: one qemu boot
(tests/kernel/vm/run-in-vm) runs every test in tests/kernel/guest.

This machine's own kernel may lack ESP/AH (Firecracker builds do), so the
guest boots Debian's stock kernel. Everything is batched into one guest
pytest run: under emulation a boot costs seconds and ``import pyroute2``
about four.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from tests.kernel.guest.libreswan import missing as libreswan_missing

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "kernel" / "vm" / "run-in-vm"
APT = "apt-get install -y --no-install-recommends qemu-system-x86 linux-image-amd64 busybox-static"
GUEST_TIMEOUT = 720
"""~4 minutes on a quiet machine; a loaded one (CI beside other work) has taken 473 s."""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root: qemu shares the host's / with the guest (run pytest as root)"
    if shutil.which("qemu-system-x86_64") is None:
        return f"qemu-system-x86_64 missing: {APT}"
    if not any(Path("/lib/modules").glob("*/kernel/net/ipv4/esp4.ko*")) or not list(Path("/boot").glob("vmlinuz-*")):
        return f"no kernel with ESP/AH modules under /boot: {APT}"
    if not Path("/bin/busybox").is_file():
        return f"static busybox missing: {APT}"
    return None


@pytest.mark.kernel
@pytest.mark.slow
def test_kernel_datapath_in_qemu_guest(record_property):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ)
    env.update(
        # inside the guest every prerequisite exists: a skip there is a failure
        IPSEC_CONSOLE_REQUIRE_ALL="1",
        # the host tree is shared: do not write bytecode into it from the guest
        PYTHONDONTWRITEBYTECODE="1",
        # textual-snapshot, hypothesis, asyncio: unused here, ~30 s of imports under emulation
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        IPSEC_VM_TIMEOUT=str(GUEST_TIMEOUT),
    )
    cmd = [sys.executable, str(RUNNER), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-o", "addopts=", "-W", "ignore::pytest.PytestConfigWarning", "-rfEs", "--durations=5",
           "tests/kernel/guest"]
    no_libreswan = libreswan_missing()
    if no_libreswan:
        # The guest would skip that module, which the check below counts as a failure.
        if os.environ.get("IPSEC_CONSOLE_REQUIRE_ALL") == "1":
            pytest.fail(f"the Libreswan scenarios cannot run: {no_libreswan}", pytrace=False)
        warnings.warn(f"the qemu guest runs without its Libreswan scenarios: {no_libreswan}")
        cmd.append("--ignore=tests/kernel/guest/test_engine_vs_libreswan.py")
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=GUEST_TIMEOUT + 60)
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    record_property("guest_seconds", round(elapsed, 1))
    if proc.returncode != 0:
        pytest.fail(f"the kernel tests in the qemu guest failed (exit {proc.returncode}, {elapsed:.0f} s):\n"
                    f"{output[-30000:]}", pytrace=False)
    summary = re.search(r"(\d+) passed", output)
    assert summary and int(summary.group(1)) > 0, output
    assert not re.search(r"\d+ (failed|error|skipped)", output), output
