"""SA selection and the per-packet ESP paths shared by the userspace (TUN)
and lab datapaths.

`SaPath` keeps the installed CHILD SA pairs (in a `engine.esp.Sad`, which
also owns counters, lifetimes and packet samples), decides what happens to
an outbound packet (SPD lookup, then the newest usable pair of the deciding
child), and dispatches inbound ESP by SPI. (The pairs and their index entries: engine.datapath.userspace_pairs;
fragments: engine.datapath.fragsteer and engine.datapath.reassembly.)

Cost: installing or removing a pair is O(1) amortised, whatever the number
of pairs (a gateway holding thousands of road warriors):

- The policy's own SPD entries (rules, configured children) are built once
  per policy. The concrete selectors of installed pairs live in an index:
  by remote address when the remote selector is one host (road warriors,
  host-to-host), in a short list otherwise (site-to-site subnets). A
  decision looks at the policy's entries (a handful) and at the pairs
  indexed under the packet's destination, never at all pairs.
- Outbound decisions are cached per flow (key: the address bytes of the
  packet, or addresses + protocol + ports when some selector or rule looks
  at ports). A new pair invalidates only the cached flows towards the hosts
  its remote selector names (all flows only for a subnet selector); a
  removed pair only the flows that used it.
- Time-based packet sampling re-arms only the SA directions whose sample
  was taken, and counter snapshots of idle SAs are reused.

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

import itertools
import logging
from collections import Counter

from engine.datapath.fragsteer import FragKey, FragmentSteer, fragment_key, steer_fragment
from engine.datapath.natmap import MappingWatch
from engine.datapath.reassembly import Reassembler, protect_fragment, refuse
from engine.datapath.userspace_pairs import Pair, Sender, _entries, _entry_shapes, _matches  # noqa: F401
from engine.esp import EspDrop, InboundSa, Sad, SaExpired, TransportFragment, ip
from engine.esp.fragcheck import FragmentCheck
from engine.events import ChildSaInstalled, Event, PacketSample
from engine.policy.model import Policy
from engine.policy.spd import Spd
from engine.slicing import Steps

log = logging.getLogger("engine.datapath")

FLOW_CACHE_MAX = 65536
"""Cached flow decisions kept at most; past it the cache starts over (a scan of many
destinations must not grow memory without bound)."""
COUNTERS_CHUNK = 500
selector_bytes = ip.SELECTOR_BYTES
"""SA pairs per slice of `SaPath.counters_async` (a millisecond or two)."""


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
        self.by_child: dict[tuple[str, str], dict[int, Pair]] = {}
        """(connection, child) -> its pairs by inbound SPI, oldest first."""
        self.pending: dict[int, Pair] = {}
        """Inbound SPI -> pair whose outbound SA waits for the peer (rekey responder)."""
        self._waiting_for: dict[int, list[Pair]] = {}
        """Old inbound SPI -> pending pairs that take over when it goes."""
        self.flows: dict = {}
        """Flow key -> Pair or a drop reason (str)."""
        self.rule_flows: Counter = Counter()
        """Flows each bypass/discard rule decided (for ``audit``'s unused rules); counted when a flow
        is decided, so a flow the cache keeps counts once until a change towards its destination."""
        self._flows_by_dst: dict[tuple[int, int], set] = {}
        """(IP version, destination) -> flow keys cached towards it (for invalidation)."""
        self._flows_by_pair: dict[int, set] = {}
        """Inbound SPI -> flow keys cached to that pair."""
        self.lingering: set[int] = set()
        """Inbound SPIs of removed (rekeyed) pairs still accepting packets in flight."""
        self.addr_only = True
        """Whether the flow key may be the addresses alone (no selector or rule looks at ports)."""
        self._port_entries = 0
        """Installed entries that look at protocol or ports."""
        self._policy_ports = False
        self._by_host: dict[tuple[int, int], dict[int, tuple]] = {}
        """(IP version, remote address) -> {entry id: entry} of single-host remote selectors."""
        self._wide: dict[int, dict[int, tuple]] = {4: {}, 6: {}}
        """IP version -> {entry id: entry} of remote selectors spanning several addresses."""
        self._seq = itertools.count(1)
        self._drop_samples = 0
        self._drop_armed = False
        self._time_sampling = False
        self._fired: list = []
        """SA directions whose time-based sample was taken since the last `arm_samples`."""
        self.frags = Reassembler(self.drops)
        """IPv4 datagrams of transport-mode SAs in reassembly (engine.datapath.reassembly)."""
        self.steer = FragmentSteer(self.drops)
        """Fragments following their first fragment's decision (engine.datapath.fragsteer)."""
        self.rx_frags = FragmentCheck(self.drops)
        """Inbound non-first fragments following their first fragment's check (engine.esp.fragcheck)."""
        self._clock = 0.0
        """The latest ``now`` seen (for a `lookup` without one)."""
        self.oversized = None
        """``oversized(pair, pkt, limit, now)``: the TUN loop's answer to a packet above its pair's
        ``max_inner`` (fragmented or ICMP too big), for the packets `output` sends (held fragments)."""
        self.send_failed = 0
        """Protected packets the socket refused (buffer full, no route): lost like on a busy link."""
        self._send_errors: dict[int, int] = {}
        self._events: list[Event] = []
        """Drop samples of packets that never reached an SA (the SAs' own events live in the Sad)."""
        self.natmap = MappingWatch()
        """The peer each UDP-encapsulated inbound SA expects; NAT mapping changes seen on them."""
        self.policy = policy
        self._prio: dict[tuple[str, str], int | None] = {}
        self._spd: Spd | None = None
        self.traps: set[tuple[str, str]] = set()
        """(connection, child) of ``start_action = "trap"`` children: a packet their policy protects
        while they have no SA asks for one (`take_acquires`) instead of only being dropped."""
        self.acquires: set[tuple[str, str]] = set()
        self._trapped = False
        """The last `decide` hit a trap: its "no_sa" is not cached, so the flow is decided again
        (and passes) once the SA is up, and asks again if the negotiation failed."""
        self.apply_policy(policy)

    # ------------------------------------------------------------ install / remove
    def install(self, ev: ChildSaInstalled, send: Sender, dest: tuple) -> Pair:
        """Build and install the pair of ``ev``; raises SaConfigError (nothing installed then)."""
        if ev.spi_in in self.lingering:
            self.forget(ev.spi_in)
        inbound, outbound = self.sad.install_event(ev)
        inbound.frag_check = self.rx_frags
        pair = Pair(ev, inbound, outbound, send, dest)
        pair.seq = next(self._seq)
        old = self.pairs.get(ev.rekeyed_from) if ev.rekeyed_from is not None else None
        if old is not None and not ev.initiator:
            pair.active = False
            self.pending[ev.spi_in] = pair
            self._waiting_for.setdefault(ev.rekeyed_from, []).append(pair)
        self.inbound[ev.spi_in] = inbound
        self.pairs[ev.spi_in] = pair
        if ev.encap:
            self.natmap.set(ev.spi_in, ev.remote_addr, ev.remote_port, True)
        kids = self.by_child.get(pair.child_key)
        if kids is None:
            kids = self.by_child[pair.child_key] = {}
        kids[ev.spi_in] = pair
        if self._time_sampling:
            # What _sample_once does, without two more calls on each install.
            inbound.sampled = outbound.sampled = self._fired
            inbound.sample_next()
            outbound.sample_next()
        self._index(pair)
        return pair

    def remove(self, spi_in: int, *, linger: bool = False) -> Pair | None:
        """Remove a pair; a new pair waiting for this one takes over its traffic.

        With ``linger`` (a rekeyed SA) the inbound half keeps accepting packets
        still in flight until `forget` (charon's delete_rekeyed_delay); it no
        longer carries outbound traffic either way.
        """
        self.natmap.forget(spi_in)  # a lingering (rekeyed) SA is not followed: its pair is gone
        pair = self.pairs.pop(spi_in, None)
        if pair is None:
            if not linger:
                self.forget(spi_in)
            return None
        self.pending.pop(spi_in, None)
        kids = self.by_child.get(pair.child_key)
        if kids is not None:
            kids.pop(spi_in, None)
            if not kids:
                del self.by_child[pair.child_key]
        self._unindex(pair)
        pair.entries = ()  # they point back at the pair: no cycle left for the collector
        for waiting in self._waiting_for.pop(spi_in, ()):
            if waiting.ev.spi_in in self.pending:
                self.activate(waiting)
        if pair.ev.rekeyed_from is not None:
            others = self._waiting_for.get(pair.ev.rekeyed_from)
            if others and pair in others:
                others.remove(pair)
        if linger:
            self.lingering.add(spi_in)
        else:
            self._retire(spi_in)
        return pair

    def forget(self, spi_in: int) -> None:
        """Drop what `remove(linger=True)` kept."""
        if spi_in in self.lingering and spi_in not in self.pairs:
            self.lingering.discard(spi_in)
            self._retire(spi_in)

    def _retire(self, spi_in: int) -> None:
        """Take a pair out of the SAD; its drops stay counted in ``drops`` (the datapath's totals
        must not shrink when an SA goes: a rekeyed SA's replay drops would otherwise vanish)."""
        gone = self.sad.remove(spi_in)
        self.inbound.pop(spi_in, None)
        if gone is not None:
            drops = self.drops
            for sa in gone:
                if sa.dropped:
                    for reason, n in sa.drops.items():
                        if n:
                            drops[reason] = drops.get(reason, 0) + n

    def activate(self, pair: Pair) -> None:
        """The peer has the new SA: send on it from now on."""
        log.debug("CHILD SA %s{%d}: sending on the rekeyed SA %08x from now on", pair.ev.child, pair.ev.unique_id,
                  pair.ev.spi_out)
        pair.active = True
        self.pending.pop(pair.ev.spi_in, None)
        self._invalidate_for(pair)

    def apply_policy(self, policy: Policy) -> None:
        """New policy SPD; the installed pairs' entries take the new child priorities."""
        self.policy = policy
        self._prio = {(c.name, k.name): k.priority for c in policy.connections for k in c.children}
        self._spd = Spd(policy, include_ike_bypass=False)
        self._policy_ports = any(e.local.protocol or e.remote.protocol or not e.local.any_port
                                 or not e.remote.any_port for e in self._spd.entries())
        for pair in list(self.pairs.values()):
            self._unindex(pair, invalidate=False)
            self._index(pair, invalidate=False)
        # The policy alone may look at ports (a [udp/53] rule) before any pair is installed.
        self._update_addr_only()
        self._clear_flows()

    def _index(self, pair: Pair, *, invalidate: bool = True) -> None:
        pair.entries = _entries(pair, self._prio.get(pair.child_key), pair.seq)
        wide = ports = False
        for e in pair.entries:
            v = e[14]
            if e[2] == e[3]:
                self._by_host.setdefault((v, e[2]), {})[id(e)] = e
            else:
                self._wide[v][id(e)] = e
                wide = True
            if e[4] or not e[5] or not e[8]:
                self._port_entries += 1
                ports = True
        if ports:  # addr_only changes with the count of port entries alone
            self._update_addr_only()
        if invalidate:
            if wide:
                self._clear_flows()
            else:
                self._invalidate_for(pair)

    def _unindex(self, pair: Pair, *, invalidate: bool = True) -> None:
        ports = False
        for e in pair.entries:
            v = e[14]
            if e[2] == e[3]:
                bucket = self._by_host.get((v, e[2]))
                if bucket is not None:
                    bucket.pop(id(e), None)
                    if not bucket:
                        del self._by_host[(v, e[2])]
            else:
                self._wide[v].pop(id(e), None)
            if e[4] or not e[5] or not e[8]:
                self._port_entries -= 1
                ports = True
        if invalidate:
            for key in self._flows_by_pair.pop(pair.ev.spi_in, ()):
                self.flows.pop(key, None)
            if ports:
                self._update_addr_only()

    def _update_addr_only(self) -> None:
        addr_only = not (self._policy_ports or self._port_entries)
        if addr_only != self.addr_only:
            self.addr_only = addr_only
            self._clear_flows()  # the keys change shape

    def _invalidate_for(self, pair: Pair) -> None:
        """Forget cached decisions a change of ``pair`` may alter: flows towards its remote hosts."""
        flows = self.flows
        for e in pair.entries:
            if e[2] != e[3]:
                self._clear_flows()
                return
            for key in self._flows_by_dst.pop((e[14], e[2]), ()):
                flows.pop(key, None)
        for key in self._flows_by_pair.pop(pair.ev.spi_in, ()):
            flows.pop(key, None)

    def _clear_flows(self) -> None:
        self.flows.clear()
        self._flows_by_dst.clear()
        self._flows_by_pair.clear()

    # ------------------------------------------------------------ outbound
    def flow_key(self, pkt) -> object:
        """The cache key of an outbound packet (see the module docstring)."""
        v = pkt[0] >> 4
        if v == 4:
            if self.addr_only:
                return pkt[12:20]
            if pkt[6] & 0x3F or pkt[7]:
                return fragment_key(pkt)  # decided as its first fragment is (`_fragment`)
            ihl = (pkt[0] & 15) * 4
            proto = pkt[9]
            # What the selectors read: ports; ICMP type and code only (RFC 4301 §4.4.1.1: the checksum
            # after them differs per ping); nothing of other protocols (IP-in-IP, OSPF: their first
            # bytes differ per packet, one flow would fill the cache).
            return pkt[12:20], proto, pkt[ihl:ihl + selector_bytes[proto]]
        if self.addr_only:
            return pkt[8:40]
        proto = pkt[6]
        if proto in ip.IPV6_WALKED:
            # Ports behind extension headers (options): keyed as decide() reads them.
            try:
                return fragment_key(pkt) or (pkt[8:40], *ip.flow(pkt)[2:])
            except ip.IpError:
                return pkt[8:40], None  # decided "malformed", which is never cached
        return pkt[8:40], proto, pkt[40:40 + selector_bytes[proto]]

    def expire_fragments(self, now: float) -> None:
        """Give up datagrams whose fragments stopped coming (the datapath's periodic tick)."""
        if self.frags.pending:
            self.frags.expire(now)
        steer = self.steer
        if steer.firsts or steer.held:
            steer.expire(now)
        rx = self.rx_frags
        if rx.firsts or rx.held:
            rx.expire(now)

    def take_released(self) -> list:
        """Inbound fragments that waited for their first fragment and passed with it since the last
        call (engine.esp.fragcheck): the datapath delivers them like `input`'s packets."""
        rx = self.rx_frags
        return rx.take() if rx.ready else []

    def miss(self, key, pkt, now: float | None = None) -> Pair | str:
        """Decide for a packet whose flow is not cached, and cache the decision under ``key``.
        A fragment's key is never cached: it gets its first fragment's decision (or ``held``)."""
        if key.__class__ is FragKey:
            return steer_fragment(self, key, pkt, now)
        hit = self.decide(pkt)
        if self._trapped:
            self._trapped = False
            return hit
        if hit == "malformed":
            # Not cached: the key (the address pair, maybe) would drop the flow's good packets too.
            return hit
        flows = self.flows
        if len(flows) >= FLOW_CACHE_MAX:
            self._clear_flows()
        flows[key] = hit
        v = pkt[0] >> 4
        dst = int.from_bytes(pkt[16:20] if v == 4 else pkt[24:40], "big")
        self._flows_by_dst.setdefault((v, dst), set()).add(key)
        if hit.__class__ is Pair:
            self._flows_by_pair.setdefault(hit.ev.spi_in, set()).add(key)
        return hit

    def decide(self, pkt) -> Pair | str:
        """The pair that protects ``pkt``, or the drop reason (``no_sa``, ``discard_rule``, ``malformed``)."""
        try:
            src, dst, proto, sport, dport = ip.flow(pkt)
        except ip.IpError:
            return "malformed"
        v = 4 if len(src) == 4 else 6
        s, d = int.from_bytes(src, "big"), int.from_bytes(dst, "big")
        # Installed pairs whose selectors take the packet (the SA's own check, ICMP type/code as ports).
        matching = []
        bucket = self._by_host.get((v, d))
        if bucket:
            matching.extend(e for e in bucket.values() if _matches(e, s, d, proto, sport, dport))
        wide = self._wide[v]
        if wide:
            matching.extend(e for e in wide.values() if _matches(e, s, d, proto, sport, dport))
        if proto in (1, 58) and sport is not None:
            sport, dport = sport >> 8, sport & 0xFF
        decision = self._spd.lookup(src, dst, proto, sport, dport)
        best = decision.entry.sort_key() if decision.entry is not None else None
        child = (decision.connection, decision.child) if decision.action == "protect" else None
        by_pair = False
        for e in matching:
            if e[12] and (best is None or e[11] < best):
                best = e[11]
                child = e[13].child_key
                by_pair = True
        if not by_pair and decision.rule is not None and decision.action in ("bypass", "discard"):
            self.rule_flows[decision.rule] += 1
        if child is None:
            return "discard_rule" if decision.action == "discard" else "no_sa"
        chosen = None
        for e in matching:
            pair = e[13]
            if (pair.child_key == child and pair.active and not pair.outbound.expired
                    and (chosen is None or pair.seq > chosen.seq)):
                chosen = pair
        if chosen is None and child in self.traps:
            self.acquires.add(child)
            self._trapped = True
        return chosen if chosen is not None else "no_sa"

    def take_acquires(self) -> set[tuple[str, str]]:
        """Trapped children that had traffic and no SA since the last call."""
        out, self.acquires = self.acquires, set()
        return out

    def lookup(self, pkt, now: float | None = None) -> Pair | str:
        """`decide`, cached per flow."""
        try:
            key = self.flow_key(pkt)
        except IndexError:
            return "malformed"
        hit = self.flows.get(key)
        if hit is None:
            hit = self.miss(key, pkt, now)
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
        coming at a few per second whatever the packet rate. Only the directions whose sample was
        taken need arming again: the others are still armed."""
        if not self._time_sampling:
            self._time_sampling = True
            for pair in self.pairs.values():
                for sa in (pair.inbound, pair.outbound):
                    sa.sampled = self._fired
                    _sample_once(sa)
        fired, self._fired[:] = list(self._fired), []
        for sa in fired:
            _sample_once(sa)
        self._drop_armed = True

    def output(self, pkt, now: float) -> bool:
        """Protect and send one outbound IP packet; False when it was dropped (and counted)."""
        pair = self.lookup(pkt, now)
        for retry in (False, True):
            if pair.__class__ is str:
                return refuse(self, pair, pkt, now)
            limit = pair.max_inner
            if limit and len(pkt) > limit and self.oversized is not None:
                self.oversized(pair, pkt, limit, now)  # the path MTU check of the TUN loop's fast path
                return True
            try:
                wire = pair.outbound.protect(pkt, now)
                break
            except SaExpired:
                if retry:
                    self.drop("no_sa", pkt, now)
                    return False
                # The pair just ran out (hard limit): a rekeyed pair may take over, else no SA.
                self._invalidate_for(pair)
                pair = self.lookup(pkt, now)
            except TransportFragment:
                return protect_fragment(self, pkt, now)  # RFC 4301 §7: transport mode protects it whole
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

    def source_seen(self, spi_in: int, source: tuple, now: float) -> None:
        """Authenticated ESP-in-UDP of ``spi_in`` came from ``source``: a NatMappingChanged to drain
        if it is not the SA's peer (engine.datapath.natmap)."""
        ev = self.natmap.seen(spi_in, source, now)
        if ev is not None:
            self._events.append(ev)

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

    async def counters_async(self, chunk: int = COUNTERS_CHUNK):
        """`counters`, at most ``chunk`` SA pairs and about a millisecond at a time with the loop free
        in between (thousands of SAs; a pair removed meanwhile is left out)."""
        sad = self.sad
        out: list = []
        steps = Steps(chunk)
        for spi in sad.spis():
            pair = sad.pair(spi)
            if pair is not None:
                out.append(pair[0].counters())
                out.append(pair[1].counters())
            if steps.done():
                await steps.next()
        drops = {r: n for r, n in self.drops.items() if n}
        if self.send_failed:
            drops["send_failed"] = self.send_failed
        return out, drops


def _sample_once(sa) -> None:
    """Make the SA's next packet a PacketSample, and none after it (until armed again)."""
    sa.sample_next()
