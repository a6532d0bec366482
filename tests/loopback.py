"""A loopback /24 of this test process's own (127.x.y.0/24 from its PID and PID namespace), for tests that listen on
fixed ports: two test runs at the same time on this machine (CI, several engineers) must not ask
for the same address and port. The engine's sockets refuse a busy one (engine.runtime.udp); with a
shared bind the kernel used to hand one run's datagrams to the other."""

from __future__ import annotations

import os

try:
    # A run in a PID namespace of its own (the Debian roots of tests/ops/debian.py, beside the host's
    # runs on the same loopback) starts its PIDs at 1: its namespace tells it from the host's PIDs.
    _NS = os.stat("/proc/self/ns/pid").st_ino
except OSError:
    _NS = 0
_ID = (os.getpid() + _NS * 7919) % (150 * 256)
NET = f"127.{100 + _ID // 256}.{_ID % 256}."
"""Never 127.0.0.x, where the shipped lab and the fixed-address tests live."""


def addr(host: int) -> str:
    """Host ``host`` (1-254) of this process's loopback /24."""
    return f"{NET}{host}"
