"""Installed CHILD SA pairs of the userspace datapath and their entries in `SaPath`'s selector index
(engine.datapath.userspace_path): what a pair's traffic selectors become, and the packet match."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable

from engine.esp import InboundSa, OutboundSa
from engine.events import ChildSaInstalled
from engine.policy.spd import computed_priority
from engine.policy.ts import TrafficSelector

Sender = Callable[[bytes, tuple], object]
_PROTECT_RANK = 2
"""SpdEntry's action rank of ``protect`` (discard 0, bypass 1): ties go to the safer action."""
_SA_ORDER = 10_000_000
"""Installed pairs' entries come after every policy entry of the same priority (as before the
index: they were appended to the policy's entries), in install order among themselves."""


class Pair:
    """One installed CHILD SA pair and how its outbound packets leave."""

    __slots__ = ("active", "child_key", "dest", "entries", "ev", "inbound", "max_inner", "outbound", "send",
                 "seq", "sender")

    def __init__(self, ev: ChildSaInstalled, inbound: InboundSa, outbound: OutboundSa,
                 send: Sender, dest: tuple) -> None:
        self.ev = ev
        self.inbound = inbound
        self.outbound = outbound
        self.active = True
        """False while a rekey responder waits for the peer to switch (see the module docstring)."""
        self.send = send
        """``send(wire_bytes, dest)``: a socket's sendto, or the lab's loopback sender."""
        self.dest = dest
        self.child_key = (ev.connection, ev.child)
        self.entries: list[tuple] = []
        """This pair's selector entries in the SaPath's index (see `_entries`)."""
        self.seq = 0
        """Install order (newer pairs have larger numbers)."""
        self.max_inner = 0
        """Largest inner packet whose ESP packet fits the path MTU to the peer; 0 = not limited (yet)."""
        self.sender = None
        """The datapath's batching sender for this pair's peer, if it has one."""


def _int(addr) -> int:
    return int(addr)


def _entries(pair: Pair, prio: int | None, seq: int) -> list[tuple]:
    """Index entries of a pair: one per local x remote selector of the same IP version.

    (llo, lhi, rlo, rhi, proto, l_any, lsp, lep, r_any, rsp, rep, sort key, in SPD, pair, IP version). A
    ``dynamic`` selector resolves to the SA's own address (as the SA's packet check does) and takes
    part in pair selection only, not in SPD decisions (a policy template decides those).
    """
    ev = pair.ev
    order = _SA_ORDER + seq
    return [(llo, lhi, rlo, rhi, proto, l_any, lsp, lep, r_any, rsp, rep, (priority, _PROTECT_RANK, order), in_spd,
             pair, version)
            for llo, lhi, rlo, rhi, proto, l_any, lsp, lep, r_any, rsp, rep, priority, in_spd, version
            in _entry_shapes(tuple(ev.local_ts), tuple(ev.remote_ts), ev.local_addr, ev.remote_addr,
                               pair.inbound.version, prio)]


@functools.lru_cache(maxsize=1024)
def _entry_shapes(local_ts: tuple, remote_ts: tuple, local_addr: str, remote_addr: str, version: int,
                  prio: int | None) -> tuple[tuple, ...]:
    """What `_entries` makes of a pair's selectors, without the pair (the CHILD SAs of a connection
    mostly share their selectors and addresses): the entries less sort key and pair, the priority
    in their place."""
    locals_ = local_ts or (TrafficSelector.any(version),)
    remotes = remote_ts or (TrafficSelector.any(version),)
    out = []
    for l0 in locals_:
        l = l0.resolve(ipaddress.ip_address(local_addr)) if l0.dynamic else l0
        for r0 in remotes:
            r = r0.resolve(ipaddress.ip_address(remote_addr)) if r0.dynamic else r0
            if l.version != r.version:
                continue
            in_spd = bool(local_ts and remote_ts) and not (l0.dynamic or r0.dynamic)
            priority = prio if prio is not None else computed_priority(l, r)
            proto = l.protocol or r.protocol
            out.append((_int(l.start), _int(l.end), _int(r.start), _int(r.end), proto,
                        l.any_port, l.start_port, l.end_port, r.any_port, r.start_port, r.end_port,
                        priority, in_spd, l.version))
    return tuple(out)


def _port_ok(any_port: bool, lo: int, hi: int, port: int | None) -> bool:
    if any_port:
        return True
    if port is None:
        return lo == 65535 and hi == 0  # OPAQUE: packets whose ports are unknown
    return lo <= port <= hi


def _matches(e: tuple, s: int, d: int, proto: int, sport, dport) -> bool:
    return (e[0] <= s <= e[1] and e[2] <= d <= e[3] and (not e[4] or e[4] == proto)
            and _port_ok(e[5], e[6], e[7], sport) and _port_ok(e[8], e[9], e[10], dport))
