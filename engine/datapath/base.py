"""What the runtime expects of a datapath (kernel XFRM, userspace TUN, lab).

The runtime hands every ChildSaInstalled / ChildSaDeleted to the datapath,
passes ESP-in-UDP datagrams it received on the NAT-T socket, and asks for
counters. A datapath reports back through ``runtime.datapath_event(event)``
(RekeyRequested, AcquireRequested, PacketSample, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from engine.events import ChildSaDeleted, ChildSaInstalled, SaCounters
from engine.policy.model import Policy


class Datapath(Protocol):
    name: str

    async def start(self, runtime) -> None:
        """Acquire resources (TUN device, netlink sockets); remove stale state of an earlier crash."""

    async def stop(self) -> None:
        """Remove everything this datapath installed."""

    def install(self, ev: ChildSaInstalled) -> None: ...

    def remove(self, ev: ChildSaDeleted) -> None: ...

    def apply_policy(self, policy: Policy) -> None:
        """Install bypass/discard rules and anything else derived from the policy."""

    def receive_esp(self, data: bytes, local: tuple[str, int], remote: tuple[str, int], now: float) -> None:
        """An ESP-in-UDP datagram (RFC 3948) from the NAT-T socket."""

    def counters(self) -> tuple[list[SaCounters], dict[str, int]]:
        """Per-SA counters and drops not tied to one SA."""


class NullDatapath:
    """Negotiates only: SAs are recorded, nothing is protected. For tests and
    for watching negotiations where no datapath is wanted."""

    name = "none"

    def __init__(self) -> None:
        self.installed: dict[int, ChildSaInstalled] = {}
        self.esp_dropped = 0

    async def start(self, runtime) -> None:
        self.runtime = runtime

    async def stop(self) -> None:
        self.installed.clear()

    def install(self, ev: ChildSaInstalled) -> None:
        self.installed[ev.spi_in] = ev

    def remove(self, ev: ChildSaDeleted) -> None:
        self.installed.pop(ev.spi_in, None)

    def move(self, ev) -> None:
        """MOBIKE moved a pair (engine.events.ChildSaMoved): nothing is installed to re-point."""
        old = self.installed.get(ev.spi_in)
        if old is not None:
            self.installed[ev.spi_in] = dataclasses.replace(old, local_addr=ev.local_addr, remote_addr=ev.remote_addr,
                                                            local_port=ev.local_port, remote_port=ev.remote_port,
                                                            encap=ev.encap)

    def apply_policy(self, policy: Policy) -> None:
        pass

    def receive_esp(self, data: bytes, local, remote, now: float) -> None:
        self.esp_dropped += 1

    def counters(self) -> tuple[list[SaCounters], dict[str, int]]:
        return [], {"no_datapath": self.esp_dropped} if self.esp_dropped else {}
