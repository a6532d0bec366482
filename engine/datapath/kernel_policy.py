"""Kernel SPD entries: traffic selectors -> XFRM selectors, priorities, templates.

The tag scheme (how :class:`~engine.datapath.kernel.KernelDatapath` knows
what it installed, also after a crash):

* every policy it installs has a priority in the band
  ``PRIORITY_BASE .. PRIORITY_BASE + PRIORITY_SPAN - 1``
  (367001600-367132671, i.e. 0x15E00000-0x15E1FFFF); and any template of such a
  policy carries one of our reqids;
* every SA it installs has a kernel reqid in
  ``REQID_BASE + 1 .. REQID_BASE + REQID_SPAN - 1`` (0x15E00001-0x15EFFFFF):
  kernel reqid = ``REQID_BASE + engine reqid``.

A priority band, not an XFRM mark, because a mark changes what a policy or SA
matches (only packets carrying that mark); a priority only orders policies.
The band is far above strongSwan's (about 200,000-800,000) and Libreswan's
(a few million) priorities: where another daemon's policy overlaps ours, theirs
wins, so starting ipsec-console never hijacks an existing tunnel.

Inside the band the SPD order is "most specific first, explicit priorities as
an override" (the policy model's SPD): an explicit ``priority = p`` (0-65535)
becomes ``PRIORITY_BASE + p``; otherwise ``PRIORITY_BASE + 65536 + rank``,
where rank grows with the wildcard bits of the selector (addresses, then
protocol, then ports) and, at equal specificity, discard < bypass < protect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.datapath.xfrm_netlink import (
    IPPROTO_AH,
    IPPROTO_ESP,
    XFRM_INF,
    XFRM_MODE_TRANSPORT,
    XFRM_MODE_TUNNEL,
    XFRM_POLICY_ALLOW,
    XFRM_POLICY_BLOCK,
    XFRM_POLICY_FWD,
    XFRM_POLICY_IN,
    XFRM_POLICY_OUT,
    XFRM_SHARE_ANY,
    address_bytes,
    address_text,
)
from engine.policy.ts import PROTOCOL_NUMBERS, TrafficSelector

PRIORITY_BASE = 0x15E00000
PRIORITY_SPAN = 0x20000
PRIORITY_EXPLICIT_SPAN = 0x10000
"""Explicit priorities 0..65535 map to the first half of the band."""

MAX_SELECTORS = 1024
"""Kernel selectors a CHILD SA (or a rule) may need per direction. Ranges become covering
networks and port blocks, and a CHILD SA needs their product: TS a peer narrowed to could
otherwise ask for millions of policies, each a netlink round trip on the event loop."""

REQID_BASE = 0x15E00000
REQID_SPAN = 0x100000
"""Engine reqids 1..1048575 map to kernel reqids REQID_BASE + reqid."""

AF_INET = int(socket.AF_INET)
AF_INET6 = int(socket.AF_INET6)

KIND_DISCARD = 0
KIND_BYPASS = 1
KIND_PROTECT = 2

DIR_NAMES = {XFRM_POLICY_IN: "in", XFRM_POLICY_OUT: "out", XFRM_POLICY_FWD: "fwd"}
MODES = {"tunnel": XFRM_MODE_TUNNEL, "transport": XFRM_MODE_TRANSPORT}
PROTOCOLS = {"esp": IPPROTO_ESP, "ah": IPPROTO_AH}


class PolicyError(ValueError):
    """Selectors or priorities that cannot become kernel policies."""


def is_our_priority(priority: int) -> bool:
    return PRIORITY_BASE <= priority < PRIORITY_BASE + PRIORITY_SPAN


def is_our_reqid(kernel_reqid: int) -> bool:
    return REQID_BASE < kernel_reqid < REQID_BASE + REQID_SPAN


def kernel_reqid(reqid: int) -> int:
    """The kernel reqid for an engine reqid (1..REQID_SPAN-1)."""
    if not 0 < reqid < REQID_SPAN:
        raise PolicyError(f"reqid {reqid} is outside 1..{REQID_SPAN - 1}")
    return REQID_BASE + reqid


def engine_reqid(kreqid: int) -> int:
    return kreqid - REQID_BASE


# ---------------------------------------------------------------- selectors

@dataclass(frozen=True)
class Selector:
    """One kernel selector (hashable: it is half of a policy's identity)."""

    family: int
    saddr: str
    prefixlen_s: int
    daddr: str
    prefixlen_d: int
    proto: int = 0
    sport: int = 0
    sport_mask: int = 0
    dport: int = 0
    dport_mask: int = 0

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "saddr": address_bytes(self.saddr),
            "prefixlen_s": self.prefixlen_s,
            "daddr": address_bytes(self.daddr),
            "prefixlen_d": self.prefixlen_d,
            "proto": self.proto,
            "sport": self.sport,
            "sport_mask": self.sport_mask,
            "dport": self.dport,
            "dport_mask": self.dport_mask,
        }

    def __str__(self) -> str:
        def side(addr: str, plen: int, port: int, mask: int) -> str:
            text = f"{addr}/{plen}"
            if mask == 0xFFFF:
                text += f":{port}"
            elif mask:
                text += f":{port}/0x{mask:04x}"
            return text

        proto = f" {PROTOCOL_NUMBERS.get(self.proto, self.proto)}" if self.proto else ""
        return (f"{side(self.saddr, self.prefixlen_s, self.sport, self.sport_mask)} -> "
                f"{side(self.daddr, self.prefixlen_d, self.dport, self.dport_mask)}{proto}")


def port_blocks(start: int, end: int) -> list[tuple[int, int]]:
    """Cover the port range [start, end] exactly with (port, mask) blocks."""
    if start == 0 and end == 0xFFFF:
        return [(0, 0)]
    if start > end:
        raise PolicyError(f"port range {start}-{end} is empty (OPAQUE ports cannot be a kernel selector)")
    blocks = []
    while start <= end:
        size = start & -start if start else 0x10000
        while size > end - start + 1:
            size >>= 1
        blocks.append((start, 0xFFFF & ~(size - 1)))
        start += size
    return blocks


def _icmp_blocks(ts: TrafficSelector) -> list[tuple[int, int, int, int]]:
    """ICMP type/code (in the TS port field, type in the high byte) as the
    kernel's (sport=type, mask, dport=code, mask)."""
    if ts.any_port:
        return [(0, 0, 0, 0)]
    t_lo, t_hi = ts.start_port >> 8, ts.end_port >> 8
    c_lo, c_hi = ts.start_port & 0xFF, ts.end_port & 0xFF
    if t_lo == t_hi:
        if (c_lo, c_hi) == (0, 0xFF):
            return [(t_lo, 0xFFFF, 0, 0)]
        return [(t_lo, 0xFFFF, c, 0xFFFF) for c in range(c_lo, c_hi + 1)]
    if (c_lo, c_hi) == (0, 0xFF):
        return [(t, m, 0, 0) for t, m in port_blocks(t_lo, t_hi)]
    raise PolicyError(f"{ts}: an ICMP type range with partial codes cannot be a kernel selector")


def _parts(src: TrafficSelector, dst: TrafficSelector):
    """(family, proto, source networks, destination networks, port pairs) of :func:`selectors`,
    whose product it is; None when the two cannot match together."""
    for ts in (src, dst):
        if ts.dynamic:
            raise PolicyError(f"{ts}: resolve 'dynamic' to an address before installing policies")
    if src.version != dst.version:
        return None
    if src.protocol and dst.protocol and src.protocol != dst.protocol:
        return None
    proto = src.protocol or dst.protocol
    family = AF_INET if src.version == 4 else AF_INET6
    if proto in (1, 58):
        # The kernel matches ICMP type as the source port and code as the
        # destination port; the type/code range is the packet sender's.
        icmp = src if not src.any_port else dst
        port_pairs = [((t, tm), (c, cm)) for t, tm, c, cm in _icmp_blocks(icmp)]
    else:
        sports = port_blocks(src.start_port, src.end_port) if proto else [(0, 0)]
        dports = port_blocks(dst.start_port, dst.end_port) if proto else [(0, 0)]
        port_pairs = [(s, d) for s in sports for d in dports]
    return family, proto, src.networks(), dst.networks(), port_pairs


def selector_count(src: TrafficSelector, dst: TrafficSelector) -> int:
    """How many selectors :func:`selectors` would give, without making them."""
    parts = _parts(src, dst)
    return 0 if parts is None else len(parts[2]) * len(parts[3]) * len(parts[4])


def check_selector_count(local_ts: Sequence[TrafficSelector], remote_ts: Sequence[TrafficSelector]) -> None:
    """Refuse TS that need more than MAX_SELECTORS kernel selectors per direction."""
    n = sum(selector_count(lts, rts) for lts in local_ts for rts in remote_ts)
    if n > MAX_SELECTORS:
        raise PolicyError(f"the traffic selectors need {n} kernel selectors per direction (at most "
                          f"{MAX_SELECTORS}): address ranges that are not networks and port ranges that are "
                          f"not blocks multiply")


def selectors(src: TrafficSelector, dst: TrafficSelector) -> list[Selector]:
    """Kernel selectors matching exactly the packets from ``src`` to ``dst``.

    Address ranges become the networks that cover them; port ranges become
    (port, mask) blocks. Empty when the two cannot match together (other
    address family, different protocols).
    """
    parts = _parts(src, dst)
    if parts is None:
        return []
    family, proto, snets, dnets, port_pairs = parts
    out = []
    for snet in snets:
        for dnet in dnets:
            for (sp, spm), (dp, dpm) in port_pairs:
                out.append(Selector(family, str(snet.network_address), snet.prefixlen,
                                    str(dnet.network_address), dnet.prefixlen,
                                    proto, sp, spm, dp, dpm))
    return out


# ---------------------------------------------------------------- priorities

def specificity_rank(sel: Selector, kind: int) -> int:
    """Lower is more specific: address bits first, then protocol, then port bits."""
    plen = sel.prefixlen_s + sel.prefixlen_d
    port_bits = bin(sel.sport_mask).count("1") + bin(sel.dport_mask).count("1")
    return (((256 - plen) * 2 + (0 if sel.proto else 1)) * 33 + (32 - port_bits)) * 3 + kind


def priority(sel: Selector, kind: int, explicit: int | None = None) -> int:
    """The kernel priority of a policy for ``sel`` (lower wins)."""
    if explicit is not None:
        if not 0 <= explicit < PRIORITY_EXPLICIT_SPAN:
            raise PolicyError(f"priority {explicit} is outside 0..{PRIORITY_EXPLICIT_SPAN - 1}")
        return PRIORITY_BASE + explicit
    return PRIORITY_BASE + PRIORITY_EXPLICIT_SPAN + specificity_rank(sel, kind)


# ---------------------------------------------------------------- policies

@dataclass(frozen=True)
class Template:
    """The SA a policy requires (one xfrm_user_tmpl)."""

    family: int
    src: str
    dst: str
    proto: int
    mode: int
    reqid: int
    """Kernel reqid."""

    def to_dict(self) -> dict:
        return {
            "id": {"daddr": self.dst, "spi": 0, "proto": self.proto},
            "family": self.family,
            "saddr": self.src,
            "reqid": self.reqid,
            "mode": self.mode,
            "share": XFRM_SHARE_ANY,
            "optional": 0,
            "aalgos": 0xFFFFFFFF,
            "ealgos": 0xFFFFFFFF,
            "calgos": 0xFFFFFFFF,
        }


@dataclass(frozen=True)
class PolicySpec:
    """One kernel policy as we want it."""

    dir: int
    sel: Selector
    action: int
    priority: int
    tmpl: Template | None = None

    @property
    def key(self) -> tuple[int, Selector]:
        """The kernel's identity of a policy (for us: no mark, no if_id, main type)."""
        return (self.dir, self.sel)

    def describe(self) -> str:
        what = {XFRM_POLICY_ALLOW: "allow", XFRM_POLICY_BLOCK: "block"}[self.action]
        if self.tmpl is not None:
            what = f"protect reqid 0x{self.tmpl.reqid:08x}"
        return f"{DIR_NAMES[self.dir]} {self.sel} ({what}, priority {self.priority})"

    def to_dict(self) -> dict:
        """Fields of an xfrm_userpolicy_info (plus 'attrs' with the template)."""
        d = {
            "sel": self.sel.to_dict(),
            "lft": infinite_lifetime(),
            "priority": self.priority,
            "dir": self.dir,
            "action": self.action,
            "share": XFRM_SHARE_ANY,
        }
        d["attrs"] = [("XFRMA_TMPL", [self.tmpl.to_dict()])] if self.tmpl is not None else []
        return d


def infinite_lifetime() -> dict:
    return {
        "soft_byte_limit": XFRM_INF,
        "hard_byte_limit": XFRM_INF,
        "soft_packet_limit": XFRM_INF,
        "hard_packet_limit": XFRM_INF,
    }


def _family(addr: str) -> int:
    return AF_INET if ipaddress.ip_address(addr).version == 4 else AF_INET6


def protect_policies(local_ts: Iterable[TrafficSelector], remote_ts: Iterable[TrafficSelector],
                     local_addr: str, remote_addr: str, protocol: str, mode: str, kreqid: int,
                     explicit_priority: int | None = None) -> list[PolicySpec]:
    """Policies of a CHILD SA (or of its trap): out, in and, in tunnel mode,
    fwd. Tunnel mode also gets an allow-only fwd policy for the outbound
    direction, so a discard rule does not drop traffic a gateway forwards
    into the tunnel (charon does the same)."""
    if protocol not in PROTOCOLS:
        raise PolicyError(f"protocol {protocol!r} is neither esp nor ah")
    if mode not in MODES:
        raise PolicyError(f"mode {mode!r} is neither tunnel nor transport")
    family = _family(local_addr)
    if _family(remote_addr) != family:
        raise PolicyError(f"{local_addr} and {remote_addr} are of different address families")
    proto, xmode = PROTOCOLS[protocol], MODES[mode]
    t_out = Template(family, local_addr, remote_addr, proto, xmode, kreqid)
    t_in = Template(family, remote_addr, local_addr, proto, xmode, kreqid)
    local_ts, remote_ts = list(local_ts), list(remote_ts)
    check_selector_count(local_ts, remote_ts)
    specs: dict[tuple, PolicySpec] = {}

    def add(direction: int, sel: Selector, action: int, tmpl: Template | None) -> None:
        spec = PolicySpec(direction, sel, action, priority(sel, KIND_PROTECT, explicit_priority), tmpl)
        specs.setdefault(spec.key, spec)

    for lts in local_ts:
        for rts in remote_ts:
            for sel in selectors(lts, rts):
                add(XFRM_POLICY_OUT, sel, XFRM_POLICY_ALLOW, t_out)
            for sel in selectors(rts, lts):
                add(XFRM_POLICY_IN, sel, XFRM_POLICY_ALLOW, t_in)
                if xmode == XFRM_MODE_TUNNEL:
                    add(XFRM_POLICY_FWD, sel, XFRM_POLICY_ALLOW, t_in)
    if xmode == XFRM_MODE_TUNNEL:
        for lts in local_ts:
            for rts in remote_ts:
                for sel in selectors(lts, rts):
                    add(XFRM_POLICY_FWD, sel, XFRM_POLICY_ALLOW, None)
    if not specs:
        raise PolicyError("the traffic selectors give no policy (no pair of the same address family)")
    return list(specs.values())


def rule_policies(action: str, local_ts: Sequence[TrafficSelector], remote_ts: Sequence[TrafficSelector],
                  explicit_priority: int | None = None) -> list[PolicySpec]:
    """Policies of a bypass (allow, no template) or discard (block) rule:
    both directions, for this host (out/in) and for forwarded traffic (fwd)."""
    if action == "bypass":
        xaction, kind = XFRM_POLICY_ALLOW, KIND_BYPASS
    elif action == "discard":
        xaction, kind = XFRM_POLICY_BLOCK, KIND_DISCARD
    else:
        raise PolicyError(f"rule action {action!r} is neither bypass nor discard")
    check_selector_count(local_ts, remote_ts)
    specs: dict[tuple, PolicySpec] = {}
    for lts in local_ts:
        for rts in remote_ts:
            for direction, src, dst in ((XFRM_POLICY_OUT, lts, rts), (XFRM_POLICY_IN, rts, lts),
                                        (XFRM_POLICY_FWD, rts, lts), (XFRM_POLICY_FWD, lts, rts)):
                for sel in selectors(src, dst):
                    spec = PolicySpec(direction, sel, xaction, priority(sel, kind, explicit_priority))
                    specs.setdefault(spec.key, spec)
    return list(specs.values())


def selector_from_kernel(sel: dict) -> Selector:
    """Our Selector for a decoded xfrm_selector (to compare with kernel dumps)."""
    return Selector(sel["family"], address_text(sel["saddr"], sel["family"]), sel["prefixlen_s"],
                    address_text(sel["daddr"], sel["family"]), sel["prefixlen_d"], sel["proto"],
                    sel["sport"], sel["sport_mask"], sel["dport"], sel["dport_mask"])
