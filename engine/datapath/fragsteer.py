"""Outbound fragments follow their first fragment's decision (stateful fragment checking, RFC 4301
§7.3), for the userspace datapath's SPD when some selector or rule looks at ports.

Only a datagram's first fragment carries the ports; on its own a non-first fragment matches no
selector that names ports (it was dropped as ``no_sa``) or matches another SA than its first
fragment (an OPAQUE or port-less one), and left by it. Linux, for its own traffic, fragments the
inner packet after the policy lookup, so every fragment leaves by the flow's SA; a Linux gateway
does the same for forwarded fragments only when conntrack reassembled them first. Charon's libipsec
reads no ports from fragments at all. RFC 4301 §7.3 wants NON_FIRST_FRAGMENTS_ALSO negotiated
before non-first fragments go over an SA with port selectors (nobody negotiates it, charon
neither): a strict receiver drops them; a Linux host reassembles before its policy check and
takes them, and so does this engine's userspace datapath (stateful checking on the receive side,
engine.esp.fragcheck). Here, as Linux does:

- a first fragment is decided like any packet (flow cache and SPD, by its ports); its datagram
  (IPv4: src, dst, protocol, ID; IPv6: src, dst, identification) then remembers that flow key
  and the first fragment's headers, so the datagram's other fragments get the first fragment's
  decision, through the flow cache (a rekey or a policy change is seen as for any packet);
- a non-first fragment that comes before its first fragment (reordered on the way) is held until
  the first fragment decides, then leaves by the same SA (or is dropped for the same reason);
- a datagram all of whose bytes went is forgotten (`engine.esp.fragcheck.Pieces`), as Linux frees a
  complete fragment queue: a later fragment under its key (the IPv4 ID used again, which a busy
  host does within `TIMEOUT`) waits for its own first fragment instead of taking the old decision.

Bounded like Linux's fragment queues, on whatever the hosts behind the TUN device send: at most
`MAX_FIRSTS` datagrams remembered (the oldest forgotten first), `MAX_HELD` datagrams with held
fragments and `MAX_HELD_BYTES` bytes held (the oldest dropped, ``frag_limit``), and `TIMEOUT`
seconds for both (held fragments whose first fragment never came are dropped, ``frag_timeout``).
Each fragment costs O(1) dict operations. Packets whose selectors and rules look at addresses only
never come here (every fragment of a datagram has the first fragment's addresses).
"""

from __future__ import annotations

from engine.esp import ip
from engine.esp.fragcheck import Pieces, expired

MAX_FIRSTS = 4096
"""Datagrams whose first fragment's decision is remembered at most (about 400 bytes each)."""
MAX_HELD = 128
"""Datagrams with fragments waiting for their first fragment at most."""
MAX_HELD_BYTES = 1 << 20
"""Bytes of fragments held at most (each counted with `HELD_COST` of bookkeeping)."""
HELD_COST = 128
"""Bookkeeping counted per held fragment, so tiny fragments cannot hold more than the cap says."""
TIMEOUT = 5.0
"""Seconds a first fragment's decision is remembered, and a fragment held waiting for its first:
fragments of a datagram leave their host back to back, reordering is a matter of milliseconds."""
HELD = "held"
"""The decision for a fragment kept until its first fragment decides (nothing to count yet)."""


class FragKey(tuple):
    """Flow-cache key of a fragment: ``(datagram key, is first fragment)``. Never cached: `SaPath.miss`
    sends it here."""

    __slots__ = ()


def fragment_key(pkt) -> FragKey | None:
    """The FragKey of an IPv4 or IPv6 fragment, None for a packet that is not one; raises IpError
    for an IPv6 packet whose extension headers do not fit, IndexError for a truncated header."""
    if pkt[0] >> 4 == 4:
        if pkt[6] & 0x3F or pkt[7]:  # MF or an offset
            if len(pkt) < 20:
                raise IndexError("IPv4 header is truncated")  # malformed, as SaPath.lookup has it
            return FragKey((bytes(pkt[12:20]) + bytes(pkt[9:10]) + bytes(pkt[4:6]), not (pkt[6] & 0x1F or pkt[7])))
        return None
    got = ip.ipv6_fragment(pkt)
    return FragKey(got) if got is not None else None


class FragmentSteer:
    """First fragments' flow keys, and fragments waiting for theirs (see the module docstring)."""

    def __init__(self, drops: dict) -> None:
        """``drops``: the datapath's drop counters, counted into."""
        self.drops = drops
        self.firsts: dict[bytes, tuple[float, object, bytes, Pieces]] = {}
        """Datagram -> (when, the first fragment's flow key, its headers, the pieces that came),
        oldest first; forgotten once the datagram is whole (at its next fragment, see `known`)."""
        self.held: dict[bytes, list] = {}
        """Datagram -> [when, cost, fragments...], oldest first."""
        self.bytes = 0

    def _count(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n

    def expire(self, now: float) -> None:
        """Forget what is older than `TIMEOUT` (held fragments are dropped and counted)."""
        for key in expired(self.firsts, now, TIMEOUT):
            del self.firsts[key]
        for key in expired(self.held, now, TIMEOUT):
            self._drop(key, "frag_timeout")

    def _drop(self, key: bytes, reason: str) -> None:
        entry = self.held.pop(key)
        self.bytes -= entry[1]
        self._count(reason, len(entry) - 2)

    def first(self, key: bytes, flow_key, head: bytes, now: float, pkt=None) -> list:
        """A first fragment (``pkt``) was decided under ``flow_key``: remember it for its datagram;
        returns the datagram's fragments held so far (to send now, in the order they came)."""
        firsts = self.firsts
        firsts.pop(key, None)  # a repeated first fragment (or a reused ID) starts its timeout again
        if len(firsts) >= MAX_FIRSTS:
            del firsts[next(iter(firsts))]
        pieces = Pieces()
        if pkt is not None:
            pieces.add(pkt)
        firsts[key] = (now, flow_key, head, pieces)
        entry = self.held.pop(key, None)
        if entry is None:
            return []
        self.bytes -= entry[1]
        return entry[2:]

    def known(self, key: bytes, now: float, pkt=None):
        """``(flow key, headers)`` of the datagram's first fragment, or None. The non-first fragment
        ``pkt`` is counted: once the datagram is whole it is forgotten, so a later fragment under
        its key (the IPv4 ID used again, within `TIMEOUT` at high rates) waits for a first fragment
        of its own instead of taking this datagram's decision (Linux frees a complete fragment
        queue too). The ambiguity left is Linux's: a datagram that lost a fragment is remembered
        until its timeout."""
        got = self.firsts.get(key)
        if got is None or now - got[0] >= TIMEOUT:
            return None
        pieces = got[3]
        if pieces.done is not None:
            if now != pieces.done:
                del self.firsts[key]
                return None
            # The same instant: the fragment that made it whole looked up again (the TUN loop's
            # slow path after the fast path's protect refused it, an SA expiry's retry).
        elif pkt is not None and pieces.add(pkt):
            pieces.done = now
        return got[1], got[2]

    def hold(self, key: bytes, pkt, now: float) -> None:
        """Keep a non-first fragment until its first fragment decides (bounded, see the module)."""
        cost = len(pkt) + HELD_COST
        held = self.held
        entry = held.get(key)
        # Room first: the oldest datagrams go (this one too, if it is the oldest and still too big).
        while held and (self.bytes + cost > MAX_HELD_BYTES or (entry is None and len(held) >= MAX_HELD)):
            oldest = next(iter(held))
            self._drop(oldest, "frag_limit")
            if oldest == key:
                entry = None
        if cost > MAX_HELD_BYTES:
            self._count("frag_limit")
            return
        if entry is None:
            entry = held[key] = [now, 0]
        entry[1] += cost
        entry.append(bytes(pkt))
        self.bytes += cost


def first_fragment_key(pkt) -> tuple:
    """(flow key, headers that decide like it) of a first fragment: the key `SaPath.flow_key` gives
    the whole datagram."""
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 15) * 4
        proto = pkt[9]
        return (pkt[12:20], proto, pkt[ihl:ihl + ip.SELECTOR_BYTES[proto]]), bytes(pkt[:ihl + 4])
    try:
        _src, _dst, proto, sport, dport = ip.flow(pkt)
    except ip.IpError:
        return (pkt[8:40], None), bytes(pkt[:40])  # decided "malformed" (never cached)
    # What decide() reads of it, in a packet without the extension headers.
    if sport is None:
        tail = b""
    elif proto in (1, 58):
        tail = bytes((sport >> 8, sport & 0xFF))
    else:
        tail = sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return (pkt[8:40], proto, sport, dport), bytes(pkt[:6]) + bytes((proto,)) + bytes(pkt[7:40]) + tail


def steer_fragment(path, key: FragKey, pkt, now: float | None):
    """The decision for a fragment when some selector looks at ports (RFC 4301 §7.3): a first
    fragment's, by its ports; the others get their first fragment's, or wait for it. ``path`` is
    the SaPath; returns a Pair or a drop reason (`HELD` for a fragment kept)."""
    if now is None:
        now = path._clock
    else:
        path._clock = now
    steer = path.steer
    if steer.firsts or steer.held:
        steer.expire(now)
    datagram, first = key
    if first:
        plain, head = first_fragment_key(pkt)
        hit = path.flows.get(plain)
        if hit is None:
            hit = path.miss(plain, head)
        for held in steer.first(datagram, plain, head, now, pkt):
            path.output(held, now)  # came before their first fragment: they leave as it does
        return hit
    known = steer.known(datagram, now, pkt)
    if known is None:
        steer.hold(datagram, pkt, now)
        return HELD
    plain, head = known
    hit = path.flows.get(plain)
    return hit if hit is not None else path.miss(plain, head)


__all__ = ["HELD", "MAX_FIRSTS", "MAX_HELD", "MAX_HELD_BYTES", "TIMEOUT", "FragKey", "FragmentSteer",
           "first_fragment_key", "fragment_key", "steer_fragment"]
