"""SA selection and the per-packet ESP paths shared by the userspace (TUN)
and lab datapaths.

`SaPath` keeps the installed CHILD SA pairs (in a `engine.esp.Sad`, which
also owns counters, lifetimes and packet samples), decides what happens to
an outbound packet (SPD lookup, then the newest usable pair of the deciding
child), and dispatches inbound ESP by SPI.

Per-packet cost is kept to a dict lookup: the decision for a flow is cached
(key: the address bytes of the packet, or addresses + protocol + ports when
some selector or rule looks at ports) and the cache is dropped whenever an
SA or the policy changes.

Make-before-break on rekey (RFC 7296 §2.8): the initiator of a rekey uses
the new outbound SA as soon as it is installed (the responder already has
the inbound half). The responder holds its new outbound SA back until the
peer proves it has the new SA (first packet on the new inbound SA) or
deletes the old one; meanwhile the old pair keeps carrying traffic. Old
inbound SAs accept packets until their ChildSaDeleted. No packet is lost
in either role.

Threading: everything here runs on one thread (the asyncio loop); the
datapaths never touch a `SaPath` from elsewhere.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from engine.esp import EspDrop, InboundSa, OutboundSa, Sad, SaExpired, ip
from engine.events import ChildSaInstalled, Event, PacketSample
from engine.policy.model import Policy
from engine.policy.spd import Spd, SpdEntry, computed_priority

log = logging.getLogger("engine.datapath")

Sender = Callable[[bytes, tuple], object]


class Pair:
    """One installed CHILD SA pair and how its outbound packets leave."""

    __slots__ = ("active", "child_key", "dest", "ev", "inbound", "jumbo", "outbound", "send")

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
        self.jumbo = False
        """The peer takes whole TCP super-packets in one ESP packet (see engine.datapath.userspace_gso)."""


class SaPath:
    """Installed pairs, the outbound decision and the inbound dispatch (see the module docstring)."""

    def __init__(self, policy: Policy, *, sample_every: int = 0) -> None:
        """``sample_every``: a PacketSample per that many packets of an SA; 0 leaves sampling to
        `arm_samples` (time-based) or off."""
        self.sad = Sad()
        self.sad.set_sampling(sample_every)
        self.sample_every = sample_every
        self.drops = self.sad.drops
        """Drops tied to no SA (no_sa, discard_rule, malformed): the Sad's dict, shared."""
        self.inbound: dict[int, InboundSa] = {}
        """Inbound SAs by SPI: the receive path's one lookup."""
        self.pairs: dict[int, Pair] = {}
        """Pairs by inbound SPI."""
        self.by_child: dict[tuple[str, str], list[Pair]] = {}
        """(connection, child) -> its pairs, oldest first."""
        self.pending: dict[int, Pair] = {}
        """Inbound SPI -> pair whose outbound SA waits for the peer (rekey responder)."""
        self.flows: dict = {}
        self.rule_flows: Counter = Counter()
        """Flows each bypass/discard rule decided (for ``audit``'s unused rules); counted when a flow
        is first decided, so a flow the cache keeps counts once until the next SA change."""
        """Flow key -> Pair or a drop reason (str)."""
        self.lingering: set[int] = set()
        """Inbound SPIs of removed (rekeyed) pairs still accepting packets in flight."""
        self.addr_only = True
        """Whether the flow key may be the addresses alone (no selector or rule looks at ports)."""
        self._drop_samples = 0
        self._drop_armed = False
        self.send_failed = 0
        """Protected packets the socket refused (buffer full, no route): lost like on a busy link."""
        self._send_errors: dict[int, int] = {}
        self._events: list[Event] = []
        """Drop samples of packets that never reached an SA (the SAs' own events live in the Sad)."""
        self.policy = policy
        self._spd = Spd()
        self._rebuild()

    # ------------------------------------------------------------ install / remove
    def install(self, ev: ChildSaInstalled, send: Sender, dest: tuple) -> Pair:
        """Build and install the pair of ``ev``; raises SaConfigError (nothing installed then)."""
        if ev.spi_in in self.lingering:
            self.forget(ev.spi_in)
        inbound, outbound = self.sad.install_event(ev)
        pair = Pair(ev, inbound, outbound, send, dest)
        old = self.pairs.get(ev.rekeyed_from) if ev.rekeyed_from is not None else None
        if old is not None and not ev.initiator:
            pair.active = False
            self.pending[ev.spi_in] = pair
        self.inbound[ev.spi_in] = inbound
        self.pairs[ev.spi_in] = pair
        self.by_child.setdefault(pair.child_key, []).append(pair)
        self._rebuild()
        return pair

    def remove(self, spi_in: int, *, linger: bool = False) -> Pair | None:
        """Remove a pair; a new pair waiting for this one takes over its traffic.

        With ``linger`` (a rekeyed SA) the inbound half keeps accepting packets
        still in flight until `forget` (charon's delete_rekeyed_delay); it no
        longer carries outbound traffic either way.
        """
        pair = self.pairs.pop(spi_in, None)
        if pair is None:
            if not linger:
                self.forget(spi_in)
            return None
        self.pending.pop(spi_in, None)
        kids = self.by_child.get(pair.child_key, [])
        if pair in kids:
            kids.remove(pair)
        if not kids:
            self.by_child.pop(pair.child_key, None)
        for waiting in list(self.pending.values()):
            if waiting.ev.rekeyed_from == spi_in:
                self.activate(waiting)
        if linger:
            self.lingering.add(spi_in)
        else:
            self.sad.remove(spi_in)
            self.inbound.pop(spi_in, None)
        self._rebuild()
        return pair

    def forget(self, spi_in: int) -> None:
        """Drop what `remove(linger=True)` kept."""
        if spi_in in self.lingering and spi_in not in self.pairs:
            self.lingering.discard(spi_in)
            self.sad.remove(spi_in)
            self.inbound.pop(spi_in, None)

    def activate(self, pair: Pair) -> None:
        """The peer has the new SA: send on it from now on."""
        log.debug("CHILD SA %s{%d}: sending on the rekeyed SA %08x from now on", pair.ev.child, pair.ev.unique_id,
                  pair.ev.spi_out)
        pair.active = True
        self.pending.pop(pair.ev.spi_in, None)
        self.flows.clear()

    def apply_policy(self, policy: Policy) -> None:
        self.policy = policy
        self._rebuild()

    def _rebuild(self) -> None:
        """New SPD (the policy's entries plus the concrete selectors of installed SAs), empty flow cache."""
        entries: list[SpdEntry] = list(Spd(self.policy, include_ike_bypass=False).entries())
        for pair in self.pairs.values():
            ev = pair.ev
            try:
                prio = self.policy.connection(ev.connection).child(ev.child).priority
            except KeyError:
                prio = None
            for l in ev.local_ts:
                for r in ev.remote_ts:
                    if l.version != r.version or l.dynamic or r.dynamic:
                        continue
                    entries.append(SpdEntry("protect", l, r, prio if prio is not None else computed_priority(l, r),
                                            connection=ev.connection, child=ev.child, mode=ev.mode,
                                            ipsec_protocol=ev.protocol, explicit_priority=prio is not None,
                                            order=10_000_000))
        self._spd = Spd.from_entries(entries)
        self.addr_only = all(not (e.local.protocol or e.remote.protocol) and e.local.any_port
                             and e.remote.any_port for e in entries)
        self.flows.clear()

    # ------------------------------------------------------------ outbound
    def flow_key(self, pkt) -> object:
        """The cache key of an outbound packet (see the module docstring)."""
        v = pkt[0] >> 4
        if v == 4:
            if self.addr_only:
                return pkt[12:20]
            ihl = (pkt[0] & 15) * 4
            return pkt[12:20], pkt[9], pkt[ihl:ihl + 4] if not (pkt[6] & 0x1F or pkt[7]) else b""
        if self.addr_only:
            return pkt[8:40]
        return pkt[8:40], pkt[6], pkt[40:44]

    def decide(self, pkt) -> Pair | str:
        """The pair that protects ``pkt``, or the drop reason (``no_sa``, ``discard_rule``, ``malformed``)."""
        try:
            src, dst, proto, sport, dport = ip.flow(pkt)
        except ip.IpError:
            return "malformed"
        if proto in (1, 58) and sport is not None:
            sport, dport = sport >> 8, sport & 0xFF
        d = self._spd.lookup(src, dst, proto, sport, dport)
        if d.rule is not None and d.action in ("bypass", "discard"):
            self.rule_flows[d.rule] += 1
        if d.action == "discard":
            return "discard_rule"
        if d.action != "protect":
            return "no_sa"
        for pair in reversed(self.by_child.get((d.connection, d.child), ())):
            if pair.active and not pair.outbound.expired and pair.outbound.matches_packet(pkt):
                return pair
        return "no_sa"

    def lookup(self, pkt) -> Pair | str:
        """`decide`, cached per flow."""
        try:
            key = self.flow_key(pkt)
        except IndexError:
            return "malformed"
        hit = self.flows.get(key)
        if hit is None:
            hit = self.flows[key] = self.decide(pkt)
        return hit

    def drop(self, reason: str, pkt, now: float) -> None:
        """Count an outbound drop tied to no SA (and sample it now and then)."""
        self.drops[reason] += 1
        every = self.sample_every
        if every:
            self._drop_samples += 1
            take = self._drop_samples % every == 1 or every == 1
        else:
            take = self._drop_armed
        if take:
            self._drop_armed = False
            self._events.append(PacketSample(time=now, direction="drop", spi=0, seq=0, outer=bytes(pkt),
                                             inner=bytes(pkt), verdict=reason))

    def arm_samples(self) -> None:
        """Time-based sampling (with ``sample_every=0``): the next packet of each SA direction, and
        the next drop, become a PacketSample. A datapath calls this periodically, so samples keep
        coming at a few per second whatever the packet rate."""
        for pair in self.pairs.values():
            _sample_once(pair.inbound)
            _sample_once(pair.outbound)
        self._drop_armed = True

    def output(self, pkt, now: float) -> bool:
        """Protect and send one outbound IP packet; False when it was dropped (and counted)."""
        pair = self.lookup(pkt)
        if pair.__class__ is str:
            self.drop(pair, pkt, now)
            return False
        try:
            wire = pair.outbound.protect(pkt, now)
        except SaExpired:
            # The pair just ran out (hard limit): a rekeyed pair may take over, else no SA.
            self.flows.clear()
            pair = self.lookup(pkt)
            if pair.__class__ is str:
                self.drop(pair, pkt, now)
                return False
            try:
                wire = pair.outbound.protect(pkt, now)
            except SaExpired:
                self.drop("no_sa", pkt, now)
                return False
        except ValueError:
            self.drop("malformed", pkt, now)
            return False
        try:
            pair.send(wire, pair.dest)
        except OSError as exc:
            self.send_error(exc, pair)
            return False
        return True

    def send_error(self, exc: OSError, pair: Pair) -> None:
        """Count a refused send (the packet is lost, as on a full NIC queue); log each kind once."""
        self.send_failed += 1
        n = self._send_errors[exc.errno] = self._send_errors.get(exc.errno, 0) + 1
        if n == 1 or n % 10000 == 0:
            log.warning("sending ESP to %s failed (%d times so far): %s", pair.dest[0], n, exc)

    # ------------------------------------------------------------ inbound
    def input(self, data, now: float) -> bytes | None:
        """Check and decapsulate one ESP payload (SPI..ICV, e.g. from the NAT-T socket); the inner
        packet, or None (dropped and counted). Transport-mode SAs are served too (the SAD rebuilds
        the IP header a UDP socket does not show)."""
        if len(data) < 8:
            self.drops["malformed"] += 1
            return None
        spi = int.from_bytes(data[:4], "big")
        sa = self.inbound.get(spi)
        try:
            if sa is not None and not sa.full_ip:
                inner = sa.unprotect(data, now)
            else:
                inner = self.sad.unprotect_esp(data, now)  # counts no_sa itself
        except EspDrop:
            return None
        if self.pending and spi in self.pending:
            self.activate(self.pending[spi])
        return inner

    def input_full(self, packet, now: float) -> bytes | None:
        """A whole IP packet carrying ESP, ESP-in-UDP or AH (raw sockets); None when dropped."""
        try:
            inner = self.sad.unprotect_ip(packet, now)  # counts malformed and no_sa itself
        except EspDrop:
            return None
        if self.pending:
            for spi in list(self.pending):
                if self.pending[spi].inbound.packets:
                    self.activate(self.pending[spi])
        return inner

    # ------------------------------------------------------------ events, counters
    def drain(self) -> list[Event]:
        out = self._events
        self._events = []
        sad = self.sad
        while (ev := sad.next_event()) is not None:
            out.append(ev)
        return out

    def rule_counters(self) -> dict[str, int]:
        """Flows decided per rule name since start (see ``rule_flows``)."""
        return dict(self.rule_flows)

    def counters(self):
        drops = {r: n for r, n in self.drops.items() if n}
        if self.send_failed:
            drops["send_failed"] = self.send_failed
        return list(self.sad.counters()), drops


def _sample_once(sa) -> None:
    """Make the SA's next packet a PacketSample, and none after it (until armed again)."""
    sa.set_sampling(1)  # the next packet crosses the sample threshold...
    sa.sample_every = 1 << 62  # ...which then moves out of reach
