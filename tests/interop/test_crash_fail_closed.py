"""A crashed daemon fails closed and leaves nothing the next start does not clean
(issue 15 item 7): our daemon (userspace datapath) against charon in two
namespaces (tests/interop/lab.py). Needs root, strongSwan, tcpdump.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.interop.lab import ROOT, SIDES, lab
from tests.interop.lab_esp import Stopper, our_policy, wait_child

pytestmark = pytest.mark.interop

LEFT_IN, RIGHT_IN = SIDES["left"]["inner"], SIDES["right"]["inner"]


def _clear_icmp_on_the_wire(st: Stopper, net, seconds: float) -> int:
    """Send pings to the peer's inner address; count those that leave the left veth unencrypted."""
    dump = st.popen("ip", "netns", "exec", net.ns["left"], "tcpdump", "-n", "-l", "-i", "veth0", "icmp",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "listening" not in dump.stderr.readline():
        pass
    net.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-I", LEFT_IN, RIGHT_IN, check=False)
    time.sleep(seconds)
    os.killpg(dump.pid, signal.SIGTERM)
    out, _ = dump.communicate(timeout=5)
    return sum(1 for line in out.splitlines() if f"{LEFT_IN} > {RIGHT_IN}" in line)


def test_a_crashed_daemon_drops_tunnel_traffic_instead_of_sending_it_in_clear(tmp_path):
    with lab() as net, Stopper() as st:
        # A route the tunnel's traffic would take without the tunnel (a real gateway has a default route).
        net.exec("left", "ip", "route", "add", "198.51.100.128/25", "via", SIDES["right"]["addr"])
        st.charon(net, "right", tmp_path)
        ours = st.ours(net, "left", tmp_path, our_policy("left", start_action="start"))
        wait_child(ours)
        net.ping("left", RIGHT_IN, count=2, interval=0.1)
        os.kill(ours.proc.pid, signal.SIGKILL)
        ours.proc.wait(5)
        # The crash left the rule and the control socket; the backstop route keeps the traffic in.
        assert "lookup 4533" in net.exec("left", "ip", "rule").stdout
        assert ours.control.exists()
        table = net.exec("left", "ip", "route", "show", "table", "4533").stdout
        assert any(line.startswith(f"blackhole {RIGHT_IN} ") and "metric 4533" in line
                   for line in table.splitlines()), table
        assert _clear_icmp_on_the_wire(st, net, 0.5) == 0
        # The next start cleans it all, the stale control socket included, and the tunnel works again.
        _restart(ours)
        wait_child(ours)
        rules = [r for r in net.exec("left", "ip", "rule").stdout.splitlines() if "lookup 4533" in r]
        assert rules == ["4533:\tnot from all fwmark 0x4533 lookup 4533"]
        net.ping("left", RIGHT_IN, count=2, interval=0.1)
        assert ours.stop() == 0
        # A clean stop removes the backstops with the routes: the host's own routing applies again.
        assert net.exec("left", "ip", "route", "show", "table", "4533").stdout.strip() == ""
        assert "4533" not in net.exec("left", "ip", "rule").stdout
        assert not ours.control.exists()


def _restart(ours) -> None:
    """Start the daemon again on the same control path, over the crashed run's socket file
    (Ours.start() returns when the socket file exists, so wait for a daemon that answers)."""
    ours.stderr = open(ours.dir / "daemon.log", "ab")
    ours.proc = subprocess.Popen(
        ["ip", "netns", "exec", ours.lab.ns[ours.side], sys.executable, "-m", "console", "daemon",
         str(ours.config), "--control", str(ours.control), "-v"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=ours.stderr, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ours.proc.poll() is not None:
            raise RuntimeError(f"our daemon exited: {ours.log()}")
        if ours.cli("conns", check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"our daemon never answered on its control socket: {ours.log()}")
