"""NAT mapping changes seen in inbound ESP-in-UDP, as the kernel reports them (esp4/esp6 input:
an authenticated packet of an SA with an encap template whose source address or port differs
from the SA's peer -> km_new_mapping -> XFRM_MSG_MAPPING; with XFRMA_MTIMER_THRESH at most once
per threshold unless the port changes again). The userspace datapath checks the source itself
(`engine.datapath.userspace_io.open_esp`, once per run of packets of one SA, on authenticated
packets only); the kernel datapath reads the kernel's messages and deduplicates them here."""

from __future__ import annotations

import ipaddress

from engine.events import NatMappingChanged

MAPPING_HOLD = 10.0
"""Seconds before the same unfollowed change is reported again: the engine may have declined it
(we are the NATed initiator), and a packet flow must not turn into one event per packet. Also
the XFRMA_MTIMER_THRESH of the kernel datapath's inbound ESP-in-UDP SAs (the kernel's
mapping_maxage)."""


class MappingWatch:
    """The peer (address, port) each UDP-encapsulated inbound SA expects, and the changes told."""

    __slots__ = ("expect", "_told")

    def __init__(self) -> None:
        self.expect: dict[int, tuple[str, int]] = {}
        """Inbound SPI -> the peer's (address, port): only SAs with UDP encapsulation."""
        self._told: dict[int, tuple[tuple, float]] = {}
        """Inbound SPI -> (the source last reported, when)."""

    def set(self, spi_in: int, addr: str, port: int, encap: bool) -> None:
        """The SA is installed or moved: its peer from now on."""
        if encap:
            if ":" in addr and "%" not in addr:
                try:
                    addr = str(ipaddress.IPv6Address(addr))  # as the socket names a source (inet_ntop)
                except ValueError:
                    pass
            self.expect[spi_in] = (addr, port)
        else:
            self.expect.pop(spi_in, None)
        self._told.pop(spi_in, None)

    def forget(self, spi_in: int) -> None:
        self.expect.pop(spi_in, None)
        self._told.pop(spi_in, None)

    def seen(self, spi_in: int, source: tuple, now: float) -> NatMappingChanged | None:
        """Authenticated ESP of ``spi_in`` came from ``source`` (address, port): the event to
        report, or None (not a change, or this change was told less than MAPPING_HOLD ago)."""
        if self.expect.get(spi_in, source) == source:
            return None
        return self.tell(spi_in, source, now)

    def tell(self, spi_in: int, source: tuple, now: float) -> NatMappingChanged | None:
        """A change the kernel found: the event, unless told less than MAPPING_HOLD ago."""
        told = self._told.get(spi_in)
        if told is not None and told[0] == source and now - told[1] < MAPPING_HOLD:
            return None
        self._told[spi_in] = (source, now)
        return NatMappingChanged(spi_in=spi_in, remote_addr=source[0], remote_port=source[1])
