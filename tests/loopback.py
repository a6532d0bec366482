"""A loopback /24 of this test process's own (127.x.y.0/24 from its PID), for tests that listen on
fixed ports: two test runs at the same time on this machine (CI, several engineers) must not ask
for the same address and port. The engine's sockets refuse a busy one (engine.runtime.udp); with a
shared bind the kernel used to hand one run's datagrams to the other."""

from __future__ import annotations

import os

_PID = os.getpid()
NET = f"127.{100 + _PID // 256 % 150}.{_PID % 256}."
"""Never 127.0.0.x, where the shipped lab and the fixed-address tests live."""


def addr(host: int) -> str:
    """Host ``host`` (1-254) of this process's loopback /24."""
    return f"{NET}{host}"
