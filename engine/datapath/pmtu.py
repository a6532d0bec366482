"""Path MTU towards a peer, for the userspace datapath.

Outer ESP packets always leave with DF set (``IP_PMTUDISC_DO`` on the
engine's NAT-T and raw ESP sockets), so none is ever fragmented on the
wire; transport mode and AH leave with their datagram's own header, and a
datagram reassembled for a transport-mode SA leaves as outer fragments
without DF (engine.datapath.reassembly). When the path carries less than the packets we send (a router
answered "fragmentation needed", or the local link is smaller), the kernel
refuses the next send with EMSGSIZE (EINVAL for a UDP GSO batch); the
datapath then asks the kernel what the path MTU to that peer now is
(`probe`: ``IP_MTU`` of a connected UDP socket carrying the engine's
fwmark, so it sees the same route as the ESP) and limits each SA to the
inner packet size that still fits (`inner_limit`). Larger inner packets
are then fragmented before encryption when they may be (IPv4 without DF)
or answered with ICMP "too big" (see engine.datapath.offload).

The kernel forgets a learned path MTU after ``net.ipv4.route.mtu_expires``
(10 minutes); `REPROBE` seconds after learning one, the datapath asks again
so a path that grew back is used in full.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from engine.datapath.tun import SO_MARK

if TYPE_CHECKING:
    from engine.datapath.userspace_path import Pair

log = logging.getLogger("engine.datapath.userspace")

IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT = 0
IP_PMTUDISC_WANT = 1
IP_PMTUDISC_DO = 2
IP_MTU = getattr(socket, "IP_MTU", 14)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)
IPV6_PMTUDISC_DONT = 0
IPV6_PMTUDISC_WANT = 1
IPV6_PMTUDISC_DO = 2
REPROBE = 60.0
"""Seconds after which a reduced path MTU is asked for again."""
MAX_OVERHEAD = 40 + 8 + 8 + 16 + 16 + 15 + 2
"""Most an ESP packet adds to its inner packet here: IPv6 header, UDP, SPI + sequence number, IV,
ICV, padding, trailer: paths at least this much above the TUN MTU need no sizing."""
MIN_INNER = 576
"""Smallest inner packet limit we apply (the IPv4 minimum datagram every host must take)."""


def set_df(sock: socket.socket, on: bool = True) -> None:
    """Outer packets of ``sock`` with DF and no local fragmentation (on), or the kernel's default."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO if on else IPV6_PMTUDISC_WANT)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO if on else IP_PMTUDISC_WANT)


def probe(remote: str, port: int, fwmark: int) -> int | None:
    """The kernel's current path MTU towards ``remote`` (as the engine's marked sockets route), or None."""
    family = socket.AF_INET6 if ":" in remote else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)
            except OSError:
                pass
            s.connect((remote, port or 4500))
            if family == socket.AF_INET6:
                return s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
            return s.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return None


def esp_overhead(sa, encap: bool) -> tuple[int, int]:
    """(bytes added around the inner packet, block alignment) of an outbound ESP SA: outer IP
    header, UDP header when encapsulated, SPI + sequence number, IV, ICV, and the 2-byte trailer;
    the padding then rounds payload + trailer up to the alignment."""
    outer = 40 if sa.version == 6 else 20
    ivs = getattr(sa, "_ivs", 0)
    icvs = getattr(sa, "_icvs", 0)
    align = getattr(sa, "_align", 4)
    return outer + (8 if encap else 0) + 8 + ivs + icvs, align


def inner_limit(path_mtu: int, sa, encap: bool) -> int:
    """The largest inner packet whose ESP packet fits ``path_mtu``."""
    fixed, align = esp_overhead(sa, encap)
    room = path_mtu - fixed
    return max(MIN_INNER, (room // align) * align - 2)


class PathMtu:
    """The userspace datapath's path MTU handling (a part of `UserspaceDatapath`, which brings
    ``loop``, ``fwmark``, ``mtu`` (the TUN device's) and ``_reduced``, the senders whose path MTU
    was learned smaller)."""

    def _limits(self, mtu: int) -> bool:
        """Whether a path of ``mtu`` is narrower than what the TUN device's packets need after ESP."""
        return mtu < self.mtu + MAX_OVERHEAD

    def _clock(self) -> float:
        return self.loop.time() if self.loop is not None else 0.0

    def route_mtu(self, sender) -> int:
        """The kernel's MTU towards ``sender``'s peer now, kept in ``sender.mtu`` (0: unknown). One
        that limits is asked again later (`_reprobe`): the path may grow back."""
        sender.mtu = probe(sender.dest[0], sender.dest[1], self.fwmark) or 0
        if sender.mtu and self._limits(sender.mtu) and sender not in self._reduced:
            sender.pmtu_at = self._clock()
            self._reduced.add(sender)
        return sender.mtu

    def learn_pmtu(self, sender) -> bool:
        """The kernel refused a packet as too big for the path: size the peer's SAs to the path MTU."""
        mtu = probe(sender.dest[0], sender.dest[1], self.fwmark)
        if mtu is None or (sender.pmtu and mtu >= sender.pmtu) or not self._limits(mtu):
            return False
        log.info("path MTU to %s is %d: inner packets above what fits are fragmented (IPv4 without DF) or "
                 "answered with ICMP too-big", sender.dest[0], mtu)
        self._size_pairs(sender, mtu, self._clock())
        return True

    def _size_pairs(self, sender, mtu: int, now: float) -> None:
        sender.pmtu = mtu
        sender.pmtu_at = now
        self._reduced.add(sender)
        for pair in sender.pairs:
            self._size_pair(pair, mtu)

    def _size_pair(self, pair: Pair, mtu: int) -> None:
        """The pair's inner packet limit for a path of ``mtu``; 0 (no check) when every packet of the
        TUN device fits anyway. Tunnel-mode ESP only (AH and transport mode keep the kernel's limits)."""
        ev = pair.ev
        if ev.mode == "tunnel" and ev.protocol == "esp":
            limit = inner_limit(mtu, pair.outbound, ev.encap)
            pair.max_inner = limit if limit < self.mtu else 0

    def _reprobe(self, now: float) -> None:
        """Ask again for path MTUs learned smaller a while ago (RFC 1191 §6.3, RFC 8201 §4: a reduced
        PMTU is probed again; the kernel itself forgets a learned one after 10 minutes), for the
        SAs' inner packet limit (``pmtu``) and for the route MTU outer fragments are cut to
        (``mtu``): both follow a path that grew back."""
        if not self._reduced:
            return
        for sender in list(self._reduced):
            if now - sender.pmtu_at < REPROBE:
                continue
            mtu = probe(sender.dest[0], sender.dest[1], self.fwmark)
            sender.mtu = mtu or 0
            if mtu is not None and self._limits(mtu):
                if mtu != sender.pmtu:
                    self._size_pairs(sender, mtu, now)  # larger again (or smaller), still not all of it
                else:
                    sender.pmtu_at = now
                continue
            self._reduced.discard(sender)
            was, sender.pmtu = sender.pmtu, 0
            for pair in sender.pairs:
                pair.max_inner = 0
            if mtu is not None and was:
                log.info("path MTU to %s is back to %d", sender.dest[0], mtu)
