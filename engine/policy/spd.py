"""The security policy database: which rule or child decides a packet's fate.

Entries come from every child (``protect``, one per local x remote selector
pair) and every rule (``bypass`` / ``discard``). The first matching entry in
evaluation order decides; the order is:

1. the priority, lower first. An explicit ``priority`` (1..99999) always comes
   before computed ones; computed priorities (100000 and up) are lower for
   more specific entries, like strongSwan's: longer prefixes (smaller
   address ranges) on both sides first, then a specific protocol, then
   narrower port ranges;
2. for equal priorities the safer action: discard, then bypass, then protect;
3. the order in the policy file.

Implicitly, the engine's own IKE traffic (UDP to/from our ike_port and
natt_port) always bypasses (priority 0), as charon's socket bypass policies do.

``dynamic`` selectors resolve to the connection's local/remote address when
``local_addrs``/``remote_addrs`` is a single IP; otherwise the entry is a
template (``Spd.templates()``) that only an established CHILD SA makes
concrete, and it takes no part in lookups.

Lookups run per packet in the userspace datapath: entries are flattened to
integer tuples once, and decisions are cached per 5-tuple.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from engine.policy.model import Policy
from engine.policy.parse import PRIORITY_MAX, single_host
from engine.policy.ts import PROTOCOL_NAMES, PROTOCOL_NUMBERS, TrafficSelector

Action = Literal["protect", "bypass", "discard"]
DecisionAction = Literal["protect", "bypass", "discard", "none"]
Direction = Literal["out", "in"]

PRIORITY_BASE = PRIORITY_MAX + 1
"""Computed priorities start here; explicit ones are below."""
_MAX_SPEC = 256 * 1024 + 512 + 2 * 128
_ACTION_RANK = {"discard": 0, "bypass": 1, "protect": 2}
IKE_RULE = "%ike"
"""Rule name of the implicit IKE bypass entries."""
CACHE_SIZE = 8192


def _prefix_equivalent(ts: TrafficSelector) -> int:
    bits = 32 if ts.version == 4 else 128
    return bits - (ts.address_count - 1).bit_length()


def _port_specificity(ts: TrafficSelector) -> int:
    """0 (any port) to 128 (one port): eighths of a bit of how much the range narrows the 16-bit space."""
    if ts.opaque_ports:
        return 128
    return 128 - int(math.log2(ts.end_port - ts.start_port + 1) * 8)


def computed_priority(local: TrafficSelector, remote: TrafficSelector) -> int:
    """strongSwan-like priority from selector sizes: more specific -> lower number.

    Longer (equivalent) prefixes weigh most, then a named protocol, then narrower port ranges.
    """
    spec = (_prefix_equivalent(local) + _prefix_equivalent(remote)) * 1024
    if local.protocol or remote.protocol:
        spec += 512
    spec += _port_specificity(local) + _port_specificity(remote)
    return PRIORITY_BASE + _MAX_SPEC - spec


@dataclass(frozen=True)
class SpdEntry:
    """One SPD entry: a local x remote selector pair and what to do with matching packets."""

    action: Action
    local: TrafficSelector
    """Selector for our side (source of outbound packets)."""
    remote: TrafficSelector
    """Selector for the peer's side."""
    priority: int
    """Lower wins. Explicit (1..99999) or computed (100000 and up); 0 for the implicit IKE bypass."""
    connection: str | None = None
    child: str | None = None
    rule: str | None = None
    mode: str | None = None
    """``tunnel`` or ``transport`` for protect entries."""
    ipsec_protocol: str | None = None
    """``esp`` or ``ah`` for protect entries."""
    explicit_priority: bool = False
    """The priority was written in the policy."""
    order: int = 0
    """Position in the policy, for ties."""

    @property
    def implicit(self) -> bool:
        return self.rule == IKE_RULE

    @property
    def name(self) -> str:
        if self.implicit:
            return "the engine's IKE traffic"
        if self.rule is not None:
            return f"rule '{self.rule}'"
        return f"child '{self.child}' of connection '{self.connection}'"

    def sort_key(self) -> tuple[int, int, int]:
        return (self.priority, _ACTION_RANK[self.action], self.order)


class Decision(NamedTuple):
    """What the SPD decided for one packet (a NamedTuple: cheap to build per packet)."""

    action: DecisionAction
    """``protect`` (by a child), ``bypass`` (in clear), ``discard`` (drop), ``none`` (no entry matched)."""
    connection: str | None
    child: str | None
    rule: str | None
    matched: tuple[TrafficSelector, TrafficSelector] | None
    """The (local, remote) selectors of the deciding entry."""
    entry: SpdEntry | None
    direction: Direction
    src: object
    """The source address as passed to lookup (str, ipaddress object or packed bytes)."""
    dst: object
    protocol: int
    sport: int | None
    dport: int | None

    def _packet(self) -> str:
        src, dst = _addr_text(*_as_int_addr(self.src)), _addr_text(*_as_int_addr(self.dst))
        proto = PROTOCOL_NUMBERS.get(self.protocol, f"protocol {self.protocol}").upper()
        if self.protocol in (1, 58) and self.sport is not None:
            where = f"{src} -> {dst} (type {self.sport}" + (f" code {self.dport})" if self.dport is not None else ")")
        else:
            where = (f"{src if self.sport is None else _hostport(src, self.sport)} -> "
                     f"{dst if self.dport is None else _hostport(dst, self.dport)}")
        return f"{'Outbound' if self.direction == 'out' else 'Inbound'} {proto} {where}"

    def explain(self) -> str:
        """One plain sentence for the console's "what happens to this packet?"."""
        packet = self._packet()
        e = self.entry
        if e is None:
            return (f"{packet} matches no rule or child, so no IPsec policy applies: "
                    "it passes unprotected, like traffic this policy does not manage.")
        if e.implicit:
            return f"{packet} is the engine's own IKE traffic, which always passes in clear so SAs can be negotiated."
        how = {"protect": f"is protected ({(e.ipsec_protocol or 'esp').upper()} {e.mode or 'tunnel'} mode) by",
               "bypass": "passes in clear (bypass) by",
               "discard": "is dropped (discard) by"}[e.action]
        prio = f"explicit priority {e.priority}" if e.explicit_priority else f"computed priority {e.priority}"
        return f"{packet} {how} {e.name}: it matches local {e.local} and remote {e.remote} ({prio})."


def _hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _as_int_addr(a) -> tuple[int, int]:
    """(version, integer) of a str, packed bytes or ipaddress object."""
    if isinstance(a, str):
        # inet_pton is several times faster than ipaddress.ip_address for text.
        try:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, a), "big")
        except OSError:
            try:
                return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, a), "big")
            except OSError:
                raise ValueError(f"{a!r} is not an IP address") from None
    if isinstance(a, (bytes, bytearray, memoryview)):
        b = bytes(a)
        if len(b) == 4:
            return 4, int.from_bytes(b, "big")
        if len(b) == 16:
            return 6, int.from_bytes(b, "big")
        raise ValueError(f"packed address of {len(b)} bytes")
    return a.version, int(a)


def _addr_text(version: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def _flat(e: SpdEntry) -> tuple:
    l, r = e.local, e.remote
    return (int(l.start), int(l.end), int(r.start), int(r.end), l.protocol or r.protocol,
            l.start_port, l.end_port, r.start_port, r.end_port, e)


def _port_ok(lo: int, hi: int, port: int | None) -> bool:
    if lo == 0 and hi == 65535:
        return True
    if port is None:
        return lo == 65535 and hi == 0  # OPAQUE matches packets whose ports are unknown
    return lo <= port <= hi


class Spd:
    """Ordered SPD entries of a policy, with a cached per-packet lookup."""

    def __init__(self, policy: Policy | None = None, *, include_ike_bypass: bool = True) -> None:
        entries: list[SpdEntry] = []
        templates: list[SpdEntry] = []
        if policy is not None:
            _collect(policy, entries, templates, include_ike_bypass)
        self._init(entries, templates)

    @classmethod
    def from_entries(cls, entries: Iterable[SpdEntry]) -> Spd:
        """An SPD of given entries (e.g. narrowed ones of established CHILD SAs)."""
        spd = cls.__new__(cls)
        spd._init(list(entries), [])
        return spd

    def _init(self, entries: list[SpdEntry], templates: list[SpdEntry]) -> None:
        self._entries = tuple(sorted(entries, key=SpdEntry.sort_key))
        self._templates = tuple(templates)
        self._by_version = {4: tuple(_flat(e) for e in self._entries if e.local.version == 4),
                            6: tuple(_flat(e) for e in self._entries if e.local.version == 6)}
        self._cache: dict[tuple, Decision] = {}

    def entries(self, *, include_implicit: bool = False) -> tuple[SpdEntry, ...]:
        """Entries in evaluation order (what a datapath installs); implicit IKE bypasses left out by default."""
        if include_implicit:
            return self._entries
        return tuple(e for e in self._entries if not e.implicit)

    def templates(self) -> tuple[SpdEntry, ...]:
        """Entries with unresolved ``dynamic`` selectors: made concrete only by an established CHILD SA."""
        return self._templates

    def lookup(self, src, dst, protocol: int | str, sport: int | None = None, dport: int | None = None, *,
               direction: Direction = "out") -> Decision:
        """Decide for one packet. ``src``/``dst``: str, ipaddress object or packed bytes.
        For ICMP pass the type as ``sport`` and the code as ``dport``."""
        key = (src, dst, protocol, sport, dport, direction)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        decision = self._lookup(src, dst, protocol, sport, dport, direction)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = decision
        return decision

    def _lookup(self, src, dst, protocol, sport, dport, direction) -> Decision:
        if isinstance(protocol, str):
            proto = PROTOCOL_NAMES[protocol.lower()]
        else:
            proto = protocol
        sv, s = _as_int_addr(src)
        dv, d = _as_int_addr(dst)
        if sv != dv:
            raise ValueError("source and destination are of different IP versions")
        if direction == "out":
            la, ra, lp, rp = s, d, sport, dport
        elif direction == "in":
            la, ra, lp, rp = d, s, dport, sport
        else:
            raise ValueError(f"direction must be 'out' or 'in', not {direction!r}")
        if proto in (1, 58):
            # ICMP type and code form one 16-bit "port" on both sides (RFC 7296 §3.13.1).
            lp = rp = None if sport is None else (sport << 8 | (dport or 0))
        found = None
        for llo, lhi, rlo, rhi, eproto, lplo, lphi, rplo, rphi, e in self._by_version[sv]:
            if llo <= la <= lhi and rlo <= ra <= rhi and (not eproto or eproto == proto) \
                    and _port_ok(lplo, lphi, lp) and _port_ok(rplo, rphi, rp):
                found = e
                break
        return Decision(
            action=found.action if found else "none",
            connection=found.connection if found else None,
            child=found.child if found else None,
            rule=found.rule if found else None,
            matched=(found.local, found.remote) if found else None,
            entry=found,
            direction=direction,
            src=src,
            dst=dst,
            protocol=proto, sport=sport, dport=dport,
        )


def _collect(policy: Policy, entries: list[SpdEntry], templates: list[SpdEntry], ike_bypass: bool) -> None:
    order = 0
    for rule in policy.rules:
        for l in rule.local_ts:
            for r in rule.remote_ts:
                if l.version != r.version:
                    continue
                entries.append(_entry(rule.action, l, r, rule.priority, order, rule=rule.name))
                order += 1
    for conn in policy.connections:
        local_host = single_host(conn.local_addrs)
        remote_host = single_host(conn.remote_addrs)
        for child in conn.children:
            for l0 in child.local_ts:
                for r0 in child.remote_ts:
                    l = l0.resolve(local_host) if (l0.dynamic and local_host is not None) else l0
                    r = r0.resolve(remote_host) if (r0.dynamic and remote_host is not None) else r0
                    kw = dict(connection=conn.name, child=child.name, mode=child.mode, ipsec_protocol=child.protocol)
                    if l.dynamic or r.dynamic:
                        templates.append(SpdEntry("protect", l, r, child.priority or 0,
                                                  explicit_priority=child.priority is not None, order=order, **kw))
                    elif l.version == r.version:
                        entries.append(_entry("protect", l, r, child.priority, order, **kw))
                    order += 1
    if ike_bypass:
        ports = sorted({policy.engine.ike_port, policy.engine.natt_port})
        for version in (4, 6):
            for port in ports:
                local = TrafficSelector.any(version)
                local = TrafficSelector(local.start, local.end, 17, port, port)
                entries.append(SpdEntry("bypass", local, TrafficSelector.any(version), 0, rule=IKE_RULE,
                                        explicit_priority=True, order=-1))


def _entry(action: Action, l: TrafficSelector, r: TrafficSelector, priority: int | None, order: int,
           **kw) -> SpdEntry:
    if priority is None:
        return SpdEntry(action, l, r, computed_priority(l, r), order=order, **kw)
    return SpdEntry(action, l, r, priority, explicit_priority=True, order=order, **kw)
