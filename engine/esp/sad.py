"""The Security Association Database (RFC 4301 §4.4.2) of a userspace datapath.

`sa_pair_from_event` turns a `ChildSaInstalled` into an inbound and an
outbound SA whose transforms are keyed by each one's first packet (an SA
deleted unused never builds a cipher); `Sad` holds the installed pairs: inbound
by SPI, outbound by reqid (the newest pair of a reqid carries the traffic
after a rekey) or by the packet's selectors. It also collects what the SAs
report (RekeyRequested, PacketSample) for the runtime to drain, and counts
drops that belong to no SA (unknown SPI, discard rules).
"""

from __future__ import annotations

import functools
from collections import deque

from engine.crypto.encr import encr_keymat_size
from engine.crypto.errors import CryptoError
from engine.crypto.integ import Integ, integ_key_size
from engine.crypto.transforms import EncrId, IntegId
from engine.events import ChildSaDeleted, ChildSaInstalled, CountersSnapshot, Event, RekeyRequested, SaCounters
from engine.esp import ip
from engine.esp.ah import AhInboundSa, AhOutboundSa
from engine.esp.errors import DROP_REASONS, EspDrop
from engine.esp.esp import DeferredKeys, EspOutboundSa
from engine.esp.esp_inbound import EspInboundSa
from engine.esp.sa import InboundSa, Lifetime, OutboundSa, SaCommon


class SaConfigError(ValueError):
    """A ChildSaInstalled that cannot become SAs (unsupported transform, wrong key length, ...)."""


def _name(enum, value) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)


def sa_pair_from_event(ev: ChildSaInstalled, events: list[Event] | None = None) -> tuple[InboundSa, OutboundSa]:
    """Build the (inbound, outbound) SAs of an installed CHILD SA.

    Inbound uses ``keys.encr_in``/``integ_in`` and SPI ``spi_in``; outbound
    the ``_out`` keys and ``spi_out``. Raises SaConfigError naming the CHILD
    SA and what is wrong; nothing is half-built.
    """
    try:
        lifetime = _lifetime(ev.soft_bytes, ev.hard_bytes, ev.soft_packets, ev.hard_packets)
        integ_id = ev.integ_id or 0
        keys = ev.keys
        if integ_id:
            need = integ_key_size(integ_id)
            for label, key in (("integ_in", keys.integ_in), ("integ_out", keys.integ_out)):
                if len(key) != need:
                    raise SaConfigError(f"{label} is {len(key)} bytes, {_name(IntegId, integ_id)} needs {need}")
        if ev.protocol == "ah":
            if not integ_id:
                raise SaConfigError("AH needs an integrity transform")
            common = dict(local_addr=ev.local_addr, remote_addr=ev.remote_addr, mode=ev.mode, esn=ev.esn,
                          local_ts=ev.local_ts, remote_ts=ev.remote_ts, encap=ev.encap,
                          local_port=ev.local_port, remote_port=ev.remote_port, lifetime=lifetime,
                          pair_spi=ev.spi_in, reqid=ev.reqid, unique_id=ev.unique_id, events=events)
            inbound: InboundSa = AhInboundSa(ev.spi_in, integ=Integ(integ_id, keys.integ_in.reveal()),
                                             replay_window=ev.replay_window, **common)
            outbound: OutboundSa = AhOutboundSa(ev.spi_out, integ=Integ(integ_id, keys.integ_out.reveal()), **common)
            return inbound, outbound
        if ev.protocol != "esp":
            raise SaConfigError(f"protocol must be 'esp' or 'ah', got {ev.protocol!r}")
        if ev.encr_id is None:
            raise SaConfigError("ESP needs an encryption transform (ENCR_NULL for none)")
        need = encr_keymat_size(ev.encr_id, ev.encr_key_length)
        for label, key in (("encr_in", keys.encr_in), ("encr_out", keys.encr_out)):
            if len(key) != need:
                raise SaConfigError(f"{label} is {len(key)} bytes, {_name(EncrId, ev.encr_id)} needs {need}")
        # One SaCommon for both directions (addresses and selectors compiled once); the ciphers are
        # keyed by each direction's first packet (an SA deleted unused never builds them).
        common = SaCommon(local_addr=ev.local_addr, remote_addr=ev.remote_addr, mode=ev.mode, esn=ev.esn,
                          local_ts=ev.local_ts, remote_ts=ev.remote_ts, encap=ev.encap,
                          local_port=ev.local_port, remote_port=ev.remote_port, lifetime=lifetime,
                          pair_spi=ev.spi_in, reqid=ev.reqid, unique_id=ev.unique_id, events=events)
        encr_id, bits = ev.encr_id, ev.encr_key_length
        inbound = EspInboundSa.deferred(ev.spi_in, common, DeferredKeys(encr_id, bits, keys.encr_in, integ_id,
                                                                        keys.integ_in), ev.replay_window)
        outbound = EspOutboundSa.deferred(ev.spi_out, common, DeferredKeys(encr_id, bits, keys.encr_out, integ_id,
                                                                           keys.integ_out))
        return inbound, outbound
    except SaConfigError as exc:
        raise SaConfigError(f"{_where(ev)}: {exc}") from None
    except (CryptoError, ValueError) as exc:
        raise SaConfigError(f"{_where(ev)}: {exc}") from exc


def _where(ev: ChildSaInstalled) -> str:
    return f"CHILD SA {ev.connection}/{ev.child} {{{ev.unique_id}}}"


@functools.lru_cache(maxsize=256)
def _lifetime(soft_bytes: int, hard_bytes: int, soft_packets: int, hard_packets: int) -> Lifetime:
    # Shared (frozen): the CHILD SAs of one connection all have the same limits.
    return Lifetime(soft_bytes, hard_bytes, soft_packets, hard_packets)


class Sad:
    """Installed SA pairs of one datapath, plus the events they raise."""

    def __init__(self) -> None:
        self._inbound: dict[int, InboundSa] = {}
        self._outbound: dict[int, OutboundSa] = {}
        """Outbound SAs by their pair's inbound SPI."""
        self._by_reqid: dict[int, dict[int, None]] = {}
        """reqid -> inbound SPIs of its pairs, oldest first (a dict: O(1) removal, ordered)."""
        self._events: list[Event] = []
        self._queue: deque[Event] = deque()
        self.drops = dict.fromkeys(DROP_REASONS, 0)
        """Drops tied to no SA (unknown SPI, discard rules)."""
        self._sample_every = 0
        self._requested: set[tuple[int, bool]] = set()
        """(spi_in, hard) of the rekey requests already reported."""

    # --------------------------------------------------------- install

    def install(self, inbound: InboundSa, outbound: OutboundSa) -> None:
        """Add a pair; its events go to this SAD from now on."""
        if inbound.spi in self._inbound:
            raise ValueError(f"inbound SPI {inbound.spi:08x} is already installed")
        for sa in (inbound, outbound):
            if sa.events is not self._events:
                self._events.extend(sa.events)
                sa.events = self._events
            if self._sample_every:
                sa.set_sampling(self._sample_every)
        self._inbound[inbound.spi] = inbound
        self._outbound[inbound.spi] = outbound
        self._by_reqid.setdefault(inbound.reqid, {})[inbound.spi] = None

    def install_event(self, ev: ChildSaInstalled) -> tuple[InboundSa, OutboundSa]:
        """Build and install the pair of a ChildSaInstalled (raises SaConfigError)."""
        pair = sa_pair_from_event(ev, self._events)
        self.install(*pair)
        return pair

    def remove(self, spi_in: int) -> tuple[InboundSa, OutboundSa] | None:
        """Remove the pair whose inbound SPI is ``spi_in``; returns it (None if absent)."""
        inbound = self._inbound.pop(spi_in, None)
        if inbound is None:
            return None
        outbound = self._outbound.pop(spi_in)
        self._requested.discard((spi_in, False))
        self._requested.discard((spi_in, True))
        spis = self._by_reqid.get(inbound.reqid)
        if spis is not None:
            spis.pop(spi_in, None)
            if not spis:
                del self._by_reqid[inbound.reqid]
        return inbound, outbound

    def remove_event(self, ev: ChildSaDeleted) -> tuple[InboundSa, OutboundSa] | None:
        """Remove the pair a ChildSaDeleted names (None if it was not installed)."""
        return self.remove(ev.spi_in)

    # ---------------------------------------------------------- lookup

    def inbound(self, spi: int) -> InboundSa | None:
        return self._inbound.get(spi)

    def outbound(self, reqid: int) -> OutboundSa | None:
        """The outbound SA carrying a reqid's traffic: the newest installed pair that still sends."""
        for spi in reversed(self._by_reqid.get(reqid, ())):
            sa = self._outbound[spi]
            if not sa.expired:
                return sa
        return None

    def outbound_for_packet(self, packet: bytes) -> OutboundSa | None:
        """The newest live outbound SA whose selectors cover ``packet`` (src local, dst remote)."""
        for spi in reversed(self._outbound):
            sa = self._outbound[spi]
            if not sa.expired and sa.matches_packet(packet):
                return sa
        return None

    def pairs(self) -> list[tuple[InboundSa, OutboundSa]]:
        return [(sa, self._outbound[spi]) for spi, sa in self._inbound.items()]

    def spis(self) -> list[int]:
        """The inbound SPIs of every pair (a copy: cheaper than `pairs` for a walk done in slices)."""
        return list(self._inbound)

    def pair(self, spi_in: int) -> tuple[InboundSa, OutboundSa] | None:
        inbound = self._inbound.get(spi_in)
        return None if inbound is None else (inbound, self._outbound[spi_in])

    def __len__(self) -> int:
        return len(self._inbound)

    # --------------------------------------------------------- packets

    def unprotect_esp(self, data: bytes, now: float) -> bytes | None:
        """Dispatch an ESP payload (SPI..ICV, e.g. from a UDP-encap socket) by its SPI; raises EspDrop.

        A transport-mode SA gets the payload behind an IP header rebuilt from the
        SA's addresses (remote -> local), since a UDP socket does not show the original.
        """
        if len(data) < 8:
            self.drops["malformed"] += 1
            raise EspDrop("malformed", f"ESP packet of {len(data)} bytes")
        sa = self._inbound.get(int.from_bytes(data[:4], "big"))
        if sa is None or sa.protocol != "esp":
            self.drops["no_sa"] += 1
            raise EspDrop("no_sa", f"no SA with SPI {data[:4].hex()}")
        if sa.full_ip:
            try:
                data = ip.ip_header(sa.remote, sa.local, ip.IPPROTO_ESP, len(data)) + data
            except ip.IpError as exc:
                # More than an IPv4 packet holds (a datagram from the IPv6 socket naming an IPv4 SA).
                raise sa._drop("malformed", str(exc), data, now) from None
        return sa.unprotect(data, now)

    def unprotect_ip(self, packet: bytes, now: float) -> bytes | None:
        """Dispatch a whole received IP packet carrying ESP, ESP-in-UDP or AH by its SPI.

        For raw sockets and captures: tunnel-mode ESP SAs get the ESP payload,
        the others (AH, transport mode) the whole packet. Raises EspDrop.
        """
        try:
            v = ip.ip_version(packet)
            end = ip.packet_length(packet)
            if v == 4:
                off, proto = ip.ipv4_header_length(packet), packet[9]
            else:
                off, proto = 40, packet[6]
                while proto in (ip.IPPROTO_HOPOPTS, ip.IPPROTO_ROUTING, ip.IPPROTO_DSTOPTS):
                    if off + 8 > end:
                        raise ip.IpError("IPv6 extension headers run past the packet")
                    proto, off = packet[off], off + (packet[off + 1] + 1) * 8
            esp_at = off + 8 if proto == ip.IPPROTO_UDP else off
            spi_at = off + 4 if proto == ip.IPPROTO_AH else esp_at
            if proto not in (ip.IPPROTO_ESP, ip.IPPROTO_AH, ip.IPPROTO_UDP) or spi_at + 4 > end:
                raise ip.IpError(f"no ESP or AH header (protocol {proto})")
        except ip.IpError as exc:
            self.drops["malformed"] += 1
            raise EspDrop("malformed", str(exc)) from None
        spi = int.from_bytes(packet[spi_at:spi_at + 4], "big")
        sa = self._inbound.get(spi)
        if sa is None or sa.protocol != ("ah" if proto == ip.IPPROTO_AH else "esp"):
            self.drops["no_sa"] += 1
            raise EspDrop("no_sa", f"no SA with SPI {spi:08x}")
        return sa.unprotect(packet if sa.full_ip else packet[esp_at:end], now)

    def count_drop(self, reason: str) -> None:
        """Count a drop tied to no SA (e.g. ``discard_rule`` from the SPD)."""
        self.drops[reason] += 1

    def set_sampling(self, every: int) -> None:
        """PacketSample every ``every`` packets on every SA (0: off)."""
        self._sample_every = every
        for inbound, outbound in self.pairs():
            inbound.set_sampling(every)
            outbound.set_sampling(every)

    # ------------------------------------------------- events, counters

    def next_event(self) -> Event | None:
        """The oldest event not yet drained (RekeyRequested, PacketSample), or None.

        Both directions of a pair may hit a limit; a pair's soft and hard
        requests are each reported once.
        """
        if self._events:
            for ev in self._events:
                if isinstance(ev, RekeyRequested):
                    key = (ev.spi_in, ev.hard)
                    if key in self._requested:
                        continue
                    self._requested.add(key)
                self._queue.append(ev)
            self._events.clear()
        return self._queue.popleft() if self._queue else None

    def counters(self) -> tuple[SaCounters, ...]:
        """Both directions of every installed SA."""
        out: list[SaCounters] = []
        for inbound, outbound in self.pairs():
            out.append(inbound.counters())
            out.append(outbound.counters())
        return tuple(out)

    def snapshot(self, now: float) -> CountersSnapshot:
        """A CountersSnapshot event for the console."""
        return CountersSnapshot(time=now, sas=self.counters(),
                                drops=tuple((r, n) for r, n in self.drops.items() if n))
