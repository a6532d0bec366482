"""IPv4 reassembly of the fragments read from the TUN device, for transport-mode SAs.

A transport-mode SA carries whole datagrams only (RFC 4301 §7; Linux's
xfrm protects the datagram first and fragments the ESP packet after): a
datagram larger than the TUN device's MTU reaches us as IPv4 fragments,
which are put back together here (RFC 791 / RFC 815), then the whole
datagram gets its SA and is protected once. Protecting each fragment on its
own gave the peer a transport-mode packet per fragment, each under the
fragment's header, which its kernel reassembles into overlapping pieces
and drops. IPv6 needs none of this: its fragment header is inside the ESP
payload.

What the TUN device hands us is our own hosts' traffic, still bounded like
Linux's ip_defrag: at most `MAX_DATAGRAMS` datagrams and `MAX_BYTES` bytes
in reassembly (the oldest goes to make room), `TIMEOUT` seconds from a
datagram's first fragment (``net.ipv4.ipfrag_time``). A fragment that
overlaps another drops its whole datagram (Linux's inet_frag_queue_insert,
RFC 5722 for IPv6); an exact duplicate is dropped alone. A reassembled
datagram gets an IP ID of our own (never 0) for its outer fragments. Drops
are counted in the datapath's drop counters (``frag_overlap``,
``frag_timeout``, ``frag_limit``, ``malformed``).
"""

from __future__ import annotations

import bisect
import errno
import os
import struct

from engine.datapath.offload import fragment_ipv4
from engine.esp import SaExpired, ip

MAX_DATAGRAMS = 256
"""Datagrams in reassembly at most; a new one beyond it pushes the oldest out."""
MAX_BYTES = 4 << 20
"""Bytes held at most (fragment data plus `PART_COST` each, `DATAGRAM_COST` a datagram): Linux's
ipfrag_high_thresh."""
PART_COST = 128
"""Bookkeeping counted per fragment, so tiny fragments cannot hold more memory than the cap says
(measured with tracemalloc: an 8-byte fragment takes about 129 bytes, its bytes object, two int
offsets and three list slots)."""
DATAGRAM_COST = 512
"""Bookkeeping counted per datagram (its record, lists, key and header: about 470 bytes)."""
TIMEOUT = 30.0
"""Seconds from a datagram's first fragment until it is given up (Linux's ipfrag_time)."""
_U16 = struct.Struct("!H")


def fragment_key(pkt) -> bytes:
    """(src, dst, protocol, ID) of an IPv4 fragment (RFC 791), as one bytes key."""
    return bytes(pkt[12:20]) + bytes(pkt[9:10]) + bytes(pkt[4:6])


class _Datagram:
    __slots__ = ("born", "starts", "ends", "datas", "total", "have", "header", "cost", "largest")

    def __init__(self, born: float) -> None:
        self.born = born
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.datas: list = []
        self.total = -1
        """Payload length, known once the last fragment (MF clear) came."""
        self.have = 0
        self.header = b""
        """The first fragment's IP header (offset 0): the whole datagram's header."""
        self.cost = 0
        self.largest = 0
        """Largest fragment seen (whole packet bytes)."""


class Reassembler:
    """IPv4 fragments in, whole datagrams out (see the module docstring)."""

    def __init__(self, drops: dict, *, max_datagrams: int = MAX_DATAGRAMS, max_bytes: int = MAX_BYTES,
                 timeout: float = TIMEOUT) -> None:
        """``drops``: the datapath's drop counters (reason -> count), counted into."""
        self.drops = drops
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.pending: dict[bytes, _Datagram] = {}
        """Key -> datagram in reassembly, oldest first (insertion order is age order)."""
        self.bytes = 0
        self.reassembled = 0
        """Datagrams put back together (statistics)."""
        self.ident = int.from_bytes(os.urandom(2), "big")
        """The IP ID the last reassembled datagram got (see `add`)."""

    def __contains__(self, key: bytes) -> bool:
        return key in self.pending

    def _count(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _forget(self, key: bytes, reason: str | None) -> None:
        d = self.pending.pop(key)
        self.bytes -= d.cost
        if reason:
            self._count(reason)

    def expire(self, now: float) -> None:
        """Give up the datagrams whose first fragment is older than the timeout."""
        pending = self.pending
        while pending:
            key = next(iter(pending))
            if now - pending[key].born < self.timeout:
                break
            self._forget(key, "frag_timeout")

    def add(self, pkt, now: float) -> tuple[bytes, int] | None:
        """Take one IPv4 fragment; ``(whole datagram, largest fragment's length)`` once its last
        missing piece came, else None (kept, or dropped and counted). The whole datagram has a
        new IP ID (see below)."""
        self.expire(now)
        try:
            ihl = ip.ipv4_header_length(pkt)
            total = ip.packet_length(pkt)
        except ip.IpError:
            self._count("malformed")
            return None
        frag = _U16.unpack_from(pkt, 6)[0]
        start = (frag & 0x1FFF) * 8
        more = frag & 0x2000
        data = bytes(pkt[ihl:total])
        end = start + len(data)
        key = fragment_key(pkt)
        d = self.pending.get(key)
        if not data or (more and len(data) & 7) or ihl + end > 0xFFFF:
            # RFC 791: every fragment but the last carries a multiple of 8 bytes; nothing may end
            # past an IPv4 datagram's largest size (Linux: "Oversized IP packet"); an empty
            # fragment drops its datagram too (Linux's ip_frag_queue).
            self._count("malformed")
            if d is not None:
                self._forget(key, None)
            return None
        if d is None:
            cost = len(data) + PART_COST + DATAGRAM_COST
            if cost > self.max_bytes:
                self._count("frag_limit")
                return None
            while self.pending and (len(self.pending) >= self.max_datagrams or self.bytes + cost > self.max_bytes):
                self._forget(next(iter(self.pending)), "frag_limit")
            d = self.pending[key] = _Datagram(now)
            d.cost = DATAGRAM_COST
            self.bytes += DATAGRAM_COST
        # Where the piece goes among the sorted pieces: it may touch its neighbours, not overlap them.
        i = bisect.bisect_left(d.starts, start)
        if i < len(d.starts) and d.starts[i] == start and d.ends[i] == end:
            self._count("frag_duplicate")  # RFC 5722 errata 3089: a duplicate alone is dropped
            return None
        if (i and d.ends[i - 1] > start) or (i < len(d.starts) and d.starts[i] < end):
            self._forget(key, "frag_overlap")
            return None
        if not more:
            if d.total >= 0 or (d.ends and d.ends[-1] > end):
                # A second last fragment, or data past this one: the datagram is corrupt (Linux).
                self._forget(key, "frag_overlap")
                return None
            d.total = end
        elif 0 <= d.total < end:
            self._forget(key, "frag_overlap")
            return None
        cost = len(data) + PART_COST
        if self.bytes + cost > self.max_bytes:
            self._forget(key, "frag_limit")
            return None
        d.starts.insert(i, start)
        d.ends.insert(i, end)
        d.datas.insert(i, data)
        d.have += len(data)
        d.cost += cost
        self.bytes += cost
        d.largest = max(d.largest, total)
        if not start:
            d.header = bytes(pkt[:ihl])
        if d.have != d.total:
            return None
        # Pieces that do not overlap and add up to the length cover it exactly.
        self._forget(key, None)
        if len(d.header) + d.total > 0xFFFF:
            self._count("malformed")  # the first fragment's options made it too long
            return None
        self.reassembled += 1
        hdr = bytearray(d.header)
        _U16.pack_into(hdr, 2, len(hdr) + d.total)
        # An IP ID of our own, never 0, before AH signs it: its fragments as ESP/AH share the one
        # protocol number whatever the datagram's own was, which the kernel numbered IDs by (two
        # datagrams' outer fragments then mixed at the peer); and a raw socket gives a packet
        # without DF and ID 0 a new ID, per outer fragment (Linux raw_send_hdrinc).
        self.ident = self.ident % 0xFFFF + 1
        _U16.pack_into(hdr, 4, self.ident)
        hdr[6] = hdr[7] = 0  # whole: no MF, no offset (DF clear, as its fragments had it)
        hdr[10] = hdr[11] = 0
        _U16.pack_into(hdr, 10, ip.checksum(hdr))
        return b"".join((hdr, *d.datas)), d.largest


def refuse(path, reason: str, pkt, now: float) -> bool:
    """Drop an outbound packet the SPD gave no pair; but an IPv4 fragment of a datagram in
    reassembly joins it (without its first fragment's ports it may match no selector).
    ``path`` is the SaPath."""
    if reason == "held":
        return False  # a fragment waiting for its first fragment (engine.datapath.fragsteer)
    frags = path.frags
    if (frags.pending and len(pkt) >= 20 and pkt[0] >> 4 == 4 and (pkt[6] & 0x3F or pkt[7])
            and fragment_key(pkt) in frags):
        return protect_fragment(path, pkt, now)
    path.drop(reason, pkt, now)
    return False


def protect_fragment(path, pkt, now: float) -> bool:
    """A fragment a transport-mode SA refused, or one whose datagram is in reassembly: into the
    reassembler; a datagram completed by it gets its SA (the ports are in it now) and leaves whole
    as one ESP/AH packet, cut into IPv4 fragments of the outer packet where it exceeds the route's
    MTU to the peer (Linux: xfrm output, then ip_fragment). ``path`` is the SaPath. False when
    nothing was sent."""
    got = path.frags.add(pkt, now)
    if got is None:
        return False
    whole, largest = got
    pair = path.lookup(whole)
    for attempt in (1, 2):
        if pair.__class__ is str:
            path.drop(pair, whole, now)
            return False
        if pair.outbound.tunnel:
            # Decided for a tunnel by the ports of its first fragment: tunnel mode carries
            # fragments as inner packets, so they go as they came (all on the datagram's SA).
            return _send_all(path, pair, fragment_ipv4(whole, largest), now)
        try:
            wire = pair.outbound.protect(whole, now)
            break
        except SaExpired:
            if attempt == 2:
                path.drop("no_sa", whole, now)
                return False
            path._invalidate_for(pair)  # a rekeyed pair may take over (as SaPath.output does)
            pair = path.lookup(whole)
        except ValueError:
            path.drop("malformed", whole, now)
            return False
    sender = pair.sender
    mtu = min((m for m in (getattr(sender, "pmtu", 0), getattr(sender, "mtu", 0)) if m), default=0)
    if mtu and len(wire) > mtu and wire[0] >> 4 == 4:
        # A header-including raw socket refuses a packet above the device MTU (raw_send_hdrinc):
        # the fragments are cut here. DF is clear: the datagram had fragments.
        pieces = fragment_ipv4(wire, mtu)
    else:
        pieces = (wire,)
    try:
        for piece in pieces:
            pair.send(piece, pair.dest)
    except OSError as exc:
        # Above the device's MTU: the route changed since sender.mtu was asked (or the asking
        # failed then); ask again and cut to what it says now, once.
        route_mtu = getattr(sender, "route_mtu", None)
        if exc.errno != errno.EMSGSIZE or route_mtu is None or wire[0] >> 4 != 4 or piece is not pieces[0]:
            path.send_error(exc, pair)
            return False
        new = route_mtu()
        if not new or new >= len(piece):
            path.send_error(exc, pair)
            return False
        try:
            for piece in fragment_ipv4(wire, new):
                pair.send(piece, pair.dest)
        except OSError as exc2:
            path.send_error(exc2, pair)
            return False
    return True


def _send_all(path, pair, packets, now: float) -> bool:
    sent = True
    for p in packets:
        try:
            pair.send(pair.outbound.protect(bytes(p), now), pair.dest)
        except SaExpired:
            path.drop("no_sa", p, now)
            sent = False
        except ValueError:
            path.drop("malformed", p, now)
            sent = False
        except OSError as exc:
            path.send_error(exc, pair)
            sent = False
    return sent


__all__ = ["DATAGRAM_COST", "MAX_BYTES", "MAX_DATAGRAMS", "PART_COST", "TIMEOUT", "Reassembler", "fragment_key",
           "protect_fragment", "refuse"]
