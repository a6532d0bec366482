"""Receive-side stateful fragment checking (RFC 4301 §7.3) for inbound SAs whose selectors name
ports.

A non-first fragment carries no ports, so on its own it matches only port-agnostic selectors; a
strict receiver drops it (no NON_FIRST_FRAGMENTS_ALSO is ever negotiated). Our sender, like Linux
for its own traffic, sends a datagram's fragments by its first fragment's SA, and a Linux receiver
takes them (conntrack reassembles before the policy check); so here, with a `FragmentCheck` set on
an inbound SA (the userspace datapath sets one shared by all its SAs):

- a first fragment is checked like any packet; its datagram (IPv4: src, dst, protocol, ID; IPv6:
  src, dst, identification) under that SA's selectors then remembers whether it passed (the SA
  that replaces it in a CHILD SA rekey has the same selectors, so a datagram split across the
  switch keeps its verdict);
- a non-first fragment that fails the check on its own is accepted when its datagram's first
  fragment passed the same selectors, dropped (``policy_mismatch``) when it failed them, and held
  when the first fragment has not come yet: delivered (`ready`) or dropped when it does, dropped
  as ``policy_mismatch`` when it never does (`TIMEOUT`);
- a datagram all of whose bytes came is forgotten (`Pieces`, as Linux frees a complete fragment
  queue): a later fragment under its key is a new datagram's (an IPv4 ID used again).

Bounded on what an authenticated peer sends: `MAX_FIRSTS` datagrams remembered (the oldest
forgotten), `MAX_HELD` datagrams and `MAX_HELD_BYTES` bytes held (the oldest dropped,
``frag_limit`` in the datapath's drops), `TIMEOUT` seconds for both. O(1) dict work per fragment.
Sans-IO: time comes in as ``now``.
"""

from __future__ import annotations

from engine.esp import ip
from engine.esp.errors import EspDrop

MAX_FIRSTS = 4096
"""Datagrams whose first fragment's verdict is remembered at most."""
MAX_HELD = 128
"""Datagrams with fragments waiting for their first fragment at most."""
MAX_HELD_BYTES = 1 << 20
"""Bytes of fragments held at most (each counted with `HELD_COST` of bookkeeping)."""
HELD_COST = 128
"""Bookkeeping counted per held fragment, so tiny fragments cannot hold more than the cap says."""
TIMEOUT = 5.0
"""Seconds a first fragment's verdict is remembered and a fragment waits for its first."""


class FragmentHeld(EspDrop):
    """Not a drop: an authentic non-first fragment kept until its first fragment decides (nothing
    to deliver now, nothing counted). An EspDrop so every caller delivers nothing."""

    def __init__(self) -> None:
        super().__init__("held", "non-first fragment waits for its first fragment")


def datagram(inner) -> tuple[bytes, bool] | None:
    """``(datagram key, is the first fragment)`` of an IP fragment, None for a whole packet (an IPv6
    atomic fragment is whole, RFC 6946) or one whose headers do not parse."""
    if inner[0] >> 4 == 4:
        if inner[6] & 0x3F or inner[7]:  # MF or an offset
            return (bytes(inner[12:20]) + bytes(inner[9:10]) + bytes(inner[4:6]),
                    not (inner[6] & 0x1F or inner[7]))
        return None
    if inner[6] not in ip.IPV6_WALKED:
        return None
    try:
        return ip.ipv6_fragment(inner)
    except ip.IpError:
        return None


MAX_SPANS = 8
"""Separate runs of bytes a datagram's `Pieces` keep track of at most (fragments far out of order);
past it the datagram is only forgotten by its timeout."""


def span(pkt) -> tuple[int, int, bool] | None:
    """``(start, end, is the last)`` of the bytes of its datagram an IPv4 or IPv6 fragment carries
    (after the IP or fragment header, by the header's length: TFC padding may follow), None when its
    headers do not parse."""
    n = len(pkt)
    if n < 40 and (n < 20 or pkt[0] >> 4 != 4):
        return None
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 15) * 4
        total = pkt[2] << 8 | pkt[3]
        if total > n or total < ihl:
            return None
        start = ((pkt[6] & 0x1F) << 8 | pkt[7]) * 8
        return start, start + total - ihl, not pkt[6] & 0x20
    total = 40 + (pkt[4] << 8 | pkt[5])
    if total > n:
        return None
    nh = pkt[6]
    off = 40
    while nh in ip.IPV6_WALKED:
        if off + 8 > total:
            return None
        if nh == ip.IPPROTO_FRAGMENT:
            frag = pkt[off + 2] << 8 | pkt[off + 3]
            start = frag & 0xFFF8
            return start, start + total - off - 8, not frag & 1
        nh, off = pkt[off], off + (((pkt[off + 1] + 2) * 4) if nh == ip.IPPROTO_AH else (pkt[off + 1] + 1) * 8)
    return None


class Pieces:
    """Which bytes of a datagram its fragments brought so far: once all came the datagram is done
    with, as Linux frees a fragment queue once complete, and a later fragment with its key (an
    IPv4 ID used again) belongs to a new datagram. Runs of bytes are merged, so a duplicate
    fragment (or one seen twice) never makes a datagram look whole early. A datagram whose pieces
    disagree (two different ends, data past the end: a reused ID mixed in) stops being tracked and
    is forgotten by its timeout."""

    __slots__ = ("total", "spans", "done")

    def __init__(self) -> None:
        self.total = -1
        """The datagram's length, once its last fragment came."""
        self.spans: list | None = []
        """Sorted, disjoint ``(start, end)`` runs that came; None: no longer tracked."""
        self.done: float | None = None
        """When the datagram became whole (for a caller that forgets it later, engine.datapath.fragsteer)."""

    def add(self, pkt) -> bool:
        """Count the fragment ``pkt``; True once every byte of its datagram came."""
        spans = self.spans
        if spans is None:
            return False
        got = span(pkt)
        if got is None:
            return False
        start, end, last = got
        total = self.total
        if last:
            if total >= 0 and total != end:
                self.spans = None
                return False
            self.total = total = end
        if total >= 0 and end > total:
            self.spans = None
            return False
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)  # in order: the common case
        else:
            out = []
            placed = False
            for s, e in spans:
                if placed or e < start:
                    out.append((s, e))
                elif end < s:
                    out += ((start, end), (s, e))
                    placed = True
                else:  # overlaps or touches: one run
                    start, end = min(s, start), max(e, end)
            if not placed:
                out.append((start, end))
            if len(out) > MAX_SPANS:
                self.spans = None
                return False
            self.spans = spans = out
        return total >= 0 and len(spans) == 1 and spans[0] == (0, total)


def expired(table: dict, now: float, timeout: float) -> list:
    """Keys of the entries of ``table`` (insertion order, each value starting with its time) that are
    ``timeout`` old, oldest first. Shared with engine.datapath.fragsteer."""
    out = []
    for key, entry in table.items():
        if now - entry[0] < timeout:
            break
        out.append(key)
    return out


class FragmentCheck:
    """First fragments' verdicts per (selectors, datagram), and fragments waiting for theirs."""

    def __init__(self, drops: dict) -> None:
        """``drops``: the datapath's drop counters (``frag_limit`` is counted there)."""
        self.drops = drops
        self.firsts: dict[tuple, tuple[float, bool, Pieces]] = {}
        """(selectors, datagram) -> (when, the first fragment passed, the pieces that came), oldest
        first; forgotten once the datagram is whole (a reused IPv4 ID is a new datagram then)."""
        self.held: dict[tuple, list] = {}
        """(selectors, datagram) -> [when, cost, (sa, inner packet)...], oldest first."""
        self.bytes = 0
        self.ready: list = []
        """Held fragments whose first fragment passed: to deliver (the datapath takes them)."""

    def expire(self, now: float) -> None:
        """Forget what is older than `TIMEOUT`; held fragments whose first never came are dropped."""
        for key in expired(self.firsts, now, TIMEOUT):
            del self.firsts[key]
        for key in expired(self.held, now, TIMEOUT):
            self._release(key, False, now, "non-first fragment whose first fragment never came")

    def _release(self, key: tuple, passed: bool, now: float, why: str = "") -> None:
        entry = self.held.pop(key)
        self.bytes -= entry[1]
        got = self.firsts.get(key)
        for sa, pkt in entry[2:]:
            if got is not None and got[2].add(pkt):
                del self.firsts[key]
                got = None
            if passed:
                sa.bytes += len(pkt)
                sa.packets += 1
                self.ready.append(pkt)
            else:
                sa._drop("policy_mismatch", why, pkt, now)

    def check(self, sa, key: bytes, first: bool, ok: bool, inner, now: float) -> bool:
        """The verdict for a fragment on ``sa`` whose own selector check gave ``ok``; raises
        `FragmentHeld` for a non-first fragment kept waiting."""
        if self.firsts or self.held:
            self.expire(now)
        # The verdict is the first fragment's ports against the selectors: any SA with the same
        # selectors shares it, as the SA that replaced it in a CHILD SA rekey (the peer may switch
        # between two fragments) or in a make-before-break reauthentication. The Linux kernel's
        # check after reassembly takes any SA of the policy's template (reqid) likewise.
        k = (sa.remote_ts, sa.local_ts, key)
        firsts = self.firsts
        if first:
            firsts.pop(k, None)  # a repeated first fragment: its verdict now, its timeout anew
            if len(firsts) >= MAX_FIRSTS:
                del firsts[next(iter(firsts))]
            pieces = Pieces()
            pieces.add(inner)
            firsts[k] = (now, ok, pieces)
            if k in self.held:
                self._release(k, ok, now, "fragment of a datagram whose first fragment is outside the selectors")
            return ok
        known = firsts.get(k)
        if known is not None:
            if known[2].add(inner):
                del firsts[k]  # whole: a later fragment under its key is a new datagram's
            return ok or known[1]
        if ok:
            return True  # a port-agnostic selector takes it on its own
        self._hold(sa, k, inner, now)
        raise FragmentHeld()

    def _hold(self, sa, k: tuple, inner, now: float) -> None:
        cost = len(inner) + HELD_COST
        held = self.held
        entry = held.get(k)
        # Room first: the oldest datagrams go (this one too, if it is the oldest and still too big).
        while held and (self.bytes + cost > MAX_HELD_BYTES or (entry is None and len(held) >= MAX_HELD)):
            oldest = next(iter(held))
            gone = held.pop(oldest)
            self.bytes -= gone[1]
            self.drops["frag_limit"] = self.drops.get("frag_limit", 0) + len(gone) - 2
            if oldest == k:
                entry = None
        if entry is None:
            entry = held[k] = [now, 0]
        entry[1] += cost
        entry.append((sa, bytes(inner)))
        self.bytes += cost

    def take(self) -> list:
        """The held fragments released since the last call, to deliver."""
        out, self.ready = self.ready, []
        return out


__all__ = ["HELD_COST", "MAX_FIRSTS", "MAX_HELD", "MAX_HELD_BYTES", "MAX_SPANS", "TIMEOUT", "FragmentCheck",
           "FragmentHeld", "Pieces", "datagram", "expired", "span"]
