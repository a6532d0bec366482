"""Receive-side stateful fragment checking (RFC 4301 §7.3) for inbound SAs whose selectors name
ports.

A non-first fragment carries no ports, so on its own it matches only port-agnostic selectors; a
strict receiver drops it (no NON_FIRST_FRAGMENTS_ALSO is ever negotiated). Our sender, like Linux
for its own traffic, sends a datagram's fragments by its first fragment's SA, and a Linux receiver
takes them (conntrack reassembles before the policy check); so here, with a `FragmentCheck` set on
an inbound SA (the userspace datapath sets one shared by all its SAs):

- a first fragment is checked like any packet; its datagram (IPv4: src, dst, protocol, ID; IPv6:
  src, dst, identification) on that SA then remembers whether it passed;
- a non-first fragment that fails the check on its own is accepted when its datagram's first
  fragment passed on the SAME SA, dropped (``policy_mismatch``) when it failed there, and held
  when the first fragment has not come yet: delivered (`ready`) or dropped when it does, dropped
  as ``policy_mismatch`` when it never does (`TIMEOUT`).

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
    """First fragments' verdicts per (SA, datagram), and fragments waiting for theirs."""

    def __init__(self, drops: dict) -> None:
        """``drops``: the datapath's drop counters (``frag_limit`` is counted there)."""
        self.drops = drops
        self.firsts: dict[tuple, tuple[float, bool]] = {}
        """(SPI, datagram) -> (when, the first fragment passed), oldest first."""
        self.held: dict[tuple, list] = {}
        """(SPI, datagram) -> [when, cost, sa, inner packets...], oldest first."""
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
        sa = entry[2]
        for pkt in entry[3:]:
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
        k = (sa.spi, key)
        if first:
            firsts = self.firsts
            firsts.pop(k, None)  # a repeated first fragment: its verdict now, its timeout anew
            if len(firsts) >= MAX_FIRSTS:
                del firsts[next(iter(firsts))]
            firsts[k] = (now, ok)
            if k in self.held:
                self._release(k, ok, now, "fragment of a datagram whose first fragment is outside the selectors")
            return ok
        if ok:
            return True  # a port-agnostic selector takes it on its own
        known = self.firsts.get(k)
        if known is not None:
            return known[1]
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
            self.drops["frag_limit"] = self.drops.get("frag_limit", 0) + len(gone) - 3
            if oldest == k:
                entry = None
        if entry is None:
            entry = held[k] = [now, 0, sa]
        entry[1] += cost
        entry.append(bytes(inner))
        self.bytes += cost

    def take(self) -> list:
        """The held fragments released since the last call, to deliver."""
        out, self.ready = self.ready, []
        return out


__all__ = ["HELD_COST", "MAX_FIRSTS", "MAX_HELD", "MAX_HELD_BYTES", "TIMEOUT", "FragmentCheck", "FragmentHeld",
           "datagram"]
