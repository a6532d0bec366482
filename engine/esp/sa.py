"""What every SA direction shares: identity, counters, lifetimes, events.

`OutboundSa` and `InboundSa` are the two abstract directions; `engine.esp.esp`
and `engine.esp.ah` give the protocol-specific packet paths. The packet
paths keep their bookkeeping to a couple of integer compares: every limit
(soft/hard bytes and packets, the next packet sample) is folded into one
byte threshold and one packet threshold, and crossing either runs the
slow path here.

Sans-IO: nothing here reads a clock; ``now`` comes from the caller and is
only stored (last use, event times).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from engine.events import Event, PacketSample, RekeyRequested, SaCounters
from engine.esp import ip
from engine.esp.errors import DROP_REASONS, EspDrop, SaExpired
from engine.esp.fragcheck import datagram
from engine.esp.replay import make_window
from engine.esp.selector import CompiledTs, compile_selectors, covers_everything, matches
from engine.policy.ts import TrafficSelector

NEVER = 1 << 80
"""A threshold no counter reaches."""

SEQ_MAX_32 = (1 << 32) - 1
SEQ_MAX_64 = (1 << 64) - 1
SEQ_SOFT_32 = (1 << 32) - (1 << 20)
"""Without ESN, ask for a rekey about a million packets before the last number."""
SEQ_SOFT_64 = (1 << 64) - (1 << 32)


@dataclass(frozen=True)
class Lifetime:
    """Byte and packet limits of one SA direction; 0 means no limit."""

    soft_bytes: int = 0
    """Inner-packet bytes after which a rekey is requested."""
    hard_bytes: int = 0
    """Inner-packet bytes after which the SA stops (hard rekey request)."""
    soft_packets: int = 0
    hard_packets: int = 0


class SaCommon:
    """What both directions of a pair share, validated and compiled once per pair: the
    addresses as bytes, the selectors compiled for the packet check (`engine.esp.selector`),
    and what the inbound check derives from them."""

    __slots__ = ("mode", "tunnel", "esn", "local", "remote", "version", "encap", "local_port", "remote_port",
                 "local_ts", "remote_ts", "lifetime", "pair_spi", "reqid", "unique_id", "events",
                 "ts_any", "addr_only")

    def __init__(self, *, local_addr, remote_addr, mode: str = "tunnel", esn: bool = False,
                 local_ts: tuple[TrafficSelector, ...] = (), remote_ts: tuple[TrafficSelector, ...] = (),
                 encap: bool = False, local_port: int = 0, remote_port: int = 0,
                 lifetime: Lifetime = Lifetime(), pair_spi: int | None = None,
                 reqid: int = 0, unique_id: int = 0, events: list[Event] | None = None) -> None:
        """``pair_spi``: the pair's inbound SPI (None: each SA's own); ``events``: the list both SAs
        report to (None: a list of its own per SA)."""
        if mode not in ("tunnel", "transport"):
            raise ValueError(f"mode must be 'tunnel' or 'transport', got {mode!r}")
        self.mode = mode
        self.tunnel = mode == "tunnel"
        self.esn = esn
        self.local = ip.address_bytes(local_addr)
        self.remote = ip.address_bytes(remote_addr)
        if len(self.local) != len(self.remote):
            raise ValueError("local and remote addresses mix IPv4 and IPv6")
        self.version = 4 if len(self.local) == 4 else 6
        self.encap = encap
        self.local_port = local_port
        self.remote_port = remote_port
        self.local_ts, self.remote_ts, self.ts_any, self.addr_only = _compiled(
            tuple(local_ts), tuple(remote_ts), self.local, self.remote)
        self.lifetime = lifetime
        self.pair_spi = pair_spi
        self.reqid = reqid
        self.unique_id = unique_id
        self.events = events


@functools.lru_cache(maxsize=1024)
def _compiled(local_ts: tuple[TrafficSelector, ...], remote_ts: tuple[TrafficSelector, ...], local: bytes,
              remote: bytes) -> tuple[tuple[CompiledTs, ...], tuple[CompiledTs, ...], dict[int, bool], bool]:
    """The selectors compiled for the packet check, and what that check derives from them (read
    only, shared: the CHILD SAs of a connection mostly have the same selectors and addresses)."""
    local_cts = compile_selectors(local_ts, local)
    remote_cts = compile_selectors(remote_ts, remote)
    # An empty selector list places no limit on that side (SAs built by hand in tests/tools).
    ts_any = {v: (not remote_cts or covers_everything(remote_cts, v))
              and (not local_cts or covers_everything(local_cts, v)) for v in (4, 6)}
    # Selectors that look at addresses only: the check reads the two addresses, not the whole header.
    addr_only = all(not proto and any_port for _lo, _hi, proto, _s, _e, any_port in remote_cts + local_cts)
    return local_cts, remote_cts, ts_any, addr_only


class SaBase:
    """State shared by both directions of ESP and AH SAs (see the module docstring)."""

    __slots__ = (
        "spi", "pair_spi", "mode", "tunnel", "esn", "local", "remote", "version",
        "encap", "local_port", "remote_port", "local_ts", "remote_ts", "lifetime",
        "bytes", "packets", "drops", "last_used", "events", "expired",
        "reqid", "unique_id", "sample_every", "sampled",
        "_soft_done", "_bytes_next", "_pkts_next", "_next_sample", "_ndrops", "_snapshot", "_snap_drops",
    )

    protocol = ""
    """``esp`` or ``ah`` (class attribute)."""
    direction = ""
    """``in`` or ``out`` (class attribute)."""

    def __init__(self, spi: int, **kw) -> None:
        """``kw``: the settings of `SaCommon` (addresses, mode, selectors, lifetime, ...)."""
        self._start(spi, SaCommon(**kw))

    def _start(self, spi: int, common: SaCommon) -> None:
        """Take the pair's shared settings (validated and compiled once, see `SaCommon`)."""
        if not 0 < spi <= 0xFFFFFFFF:
            raise ValueError(f"SPI must be 1..0xffffffff, got {spi:#x}")
        self.spi = spi
        """This SA's SPI (in the packets it protects or accepts)."""
        self.pair_spi = spi if common.pair_spi is None else common.pair_spi
        """The inbound SPI of the pair: what RekeyRequested names."""
        self.mode = common.mode
        self.tunnel = common.tunnel
        self.esn = common.esn
        self.local = common.local
        self.remote = common.remote
        self.version = common.version
        self.encap = common.encap
        self.local_port = common.local_port
        self.remote_port = common.remote_port
        self.local_ts = common.local_ts
        self.remote_ts = common.remote_ts
        self.lifetime = common.lifetime
        self.bytes = 0
        """Inner (plaintext) IP bytes protected or delivered."""
        self.packets = 0
        self.drops = dict.fromkeys(DROP_REASONS, 0)
        self.last_used = None
        self.events = common.events if common.events is not None else []
        """Where RekeyRequested and PacketSample go; a Sad shares one list across its SAs."""
        self.expired = False
        """Hard limit reached: the SA no longer protects or accepts packets."""
        self.reqid = common.reqid
        self.unique_id = common.unique_id
        self.sample_every = 0
        self.sampled = None
        """Where this SA puts itself when it takes a sample (time-based sampling re-arms only those)."""
        self._soft_done = False
        self._next_sample = NEVER
        self._ndrops = 0
        self._snapshot = None
        self._snap_drops = 0
        self._rearm()

    # ---------------------------------------------------------- counters

    def set_sampling(self, every: int) -> None:
        """Emit a PacketSample every ``every`` packets (0: never)."""
        self.sample_every = every
        self._next_sample = self.packets + every if every else NEVER
        self._rearm()

    def sample_next(self) -> None:
        """Make the next packet a PacketSample, and none after it until asked again (time-based
        sampling: a datapath asks a few times per second). What ``set_sampling(1)`` then a far
        period would do, without recomputing the limits: the next sample is nearer than any."""
        self.sample_every = 1 << 62
        nxt = self._next_sample = self.packets + 1
        if nxt < self._pkts_next:
            self._pkts_next = nxt

    def _rearm(self) -> None:
        lt = self.lifetime
        if not (lt.hard_bytes or lt.hard_packets or lt.soft_bytes or lt.soft_packets):
            # No limits (most SAs: the IKE side rekeys by time): only a sample stops the fast path.
            self._bytes_next = NEVER
            self._pkts_next = self._next_sample
            return
        b = [lt.hard_bytes] if lt.hard_bytes else []
        p = [lt.hard_packets] if lt.hard_packets else []
        if not self._soft_done:
            if lt.soft_bytes:
                b.append(lt.soft_bytes)
            if lt.soft_packets:
                p.append(lt.soft_packets)
        p.append(self._next_sample)
        self._bytes_next = min(b, default=NEVER)
        self._pkts_next = min(p)

    def _limits(self, now: float, outer: bytes, inner: bytes, seq: int) -> None:
        """Slow path: a byte or packet threshold was crossed."""
        lt = self.lifetime
        if self.packets >= self._next_sample:
            self._next_sample = self.packets + self.sample_every
            self.events.append(PacketSample(time=now, direction=self.direction, spi=self.spi, seq=seq,
                                            outer=bytes(outer), inner=bytes(inner)))
            if self.sampled is not None:
                self.sampled.append(self)
        if not self._soft_done and (lt.soft_bytes and self.bytes >= lt.soft_bytes
                                    or lt.soft_packets and self.packets >= lt.soft_packets):
            self._soft_done = True
            what = "bytes" if lt.soft_bytes and self.bytes >= lt.soft_bytes else "packets"
            self.events.append(RekeyRequested(spi_in=self.pair_spi, hard=False,
                                              reason=f"soft {what} lifetime reached ({self.direction})"))
        if not self.expired and (lt.hard_bytes and self.bytes >= lt.hard_bytes
                                 or lt.hard_packets and self.packets >= lt.hard_packets):
            what = "bytes" if lt.hard_bytes and self.bytes >= lt.hard_bytes else "packets"
            self._expire(f"hard {what} lifetime reached ({self.direction})")
        self._rearm()

    def _expire(self, reason: str) -> None:
        self.expired = True
        self._soft_done = True
        self.events.append(RekeyRequested(spi_in=self.pair_spi, hard=True, reason=reason))

    def counters(self) -> SaCounters:
        """A snapshot of this direction's counters (the previous one again while the SA is idle:
        a gateway with thousands of idle SAs snapshots them every second)."""
        snap = self._snapshot
        if snap is not None and snap.packets == self.packets and self._snap_drops == self._ndrops \
                and snap.last_used == self.last_used and snap.bytes == self.bytes:
            return snap
        self._snap_drops = self._ndrops
        snap = self._snapshot = SaCounters(
            spi=self.spi, direction=self.direction, bytes=self.bytes, packets=self.packets,
            drops=tuple((r, n) for r, n in self.drops.items() if n), last_used=self.last_used)
        return snap

    @property
    def dropped(self) -> int:
        """Packets dropped so far, all reasons (the sum of ``drops``)."""
        return self._ndrops

    def _drop(self, reason: str, detail: str, data, now: float, seq: int = 0) -> EspDrop:
        """Count a drop (and maybe sample it); returns the exception to raise."""
        drops = self.drops
        n = drops[reason] = drops[reason] + 1
        self._ndrops += 1
        if self.sample_every and (n - 1) % self.sample_every == 0:
            self.events.append(PacketSample(time=now, direction="drop", spi=self.spi, seq=seq,
                                            outer=bytes(data), verdict=reason))
        return EspDrop(reason, detail)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.protocol} {self.mode} spi={self.spi:08x} "
                f"packets={self.packets}{' expired' if self.expired else ''}>")


class OutboundSa(SaBase):
    """One outbound SA: `protect` turns an IP packet into what goes on the wire.

    Tunnel-mode ESP returns the ESP payload (SPI .. ICV): what a UDP-encap
    socket or a raw IP-protocol-50 socket sends (`build_outer_ip` wraps it
    in an outer header when a full packet is needed). AH in either mode and
    transport-mode ESP return a full IP packet (`full_ip` is True), since
    the header is covered by AH's ICV or carries the packet's own addresses.
    """

    __slots__ = ("seq", "_seq_check", "_seq_max", "_seq_soft", "_unkeyed")

    direction = "out"
    full_ip = False
    """Whether protect() returns a whole IP packet (class attribute, set per subclass/mode)."""

    def __init__(self, spi: int, **kw) -> None:
        self._start(spi, SaCommon(**kw))
        self._start_out()

    def _start_out(self) -> None:
        self.seq = 0
        """The last sequence number sent (full 64 bits with ESN)."""
        self._seq_max = SEQ_MAX_64 if self.esn else SEQ_MAX_32
        self._seq_soft = SEQ_SOFT_64 if self.esn else SEQ_SOFT_32
        self._seq_check = self._seq_soft
        self._unkeyed = False
        """Built to be keyed on its first packet and not keyed yet: every packet then takes the
        slow path of `_next_seq` (``_seq_check`` 0), which keys it first."""

    def _key(self) -> None:
        """Key the transforms of an SA built unkeyed (see ``_unkeyed``); ends with `_keyed`."""
        raise NotImplementedError

    def _keyed(self) -> None:
        self._unkeyed = False
        self._arm_seq_check()

    def _arm_seq_check(self) -> None:
        """The sequence number from which protect() takes the slow path (`_next_seq`)."""
        self._seq_check = 0 if self.expired or self._unkeyed else (
            self._seq_soft if self.seq + 1 < self._seq_soft else 0)

    def start_at(self, seq: int) -> None:
        """Continue after sequence number ``seq`` (tests, or taking over an SA).

        Only forward: a number already used would repeat an AEAD nonce.
        """
        if not self.seq <= seq <= self._seq_max:
            raise ValueError(f"sequence number {seq} is outside {self.seq}..{self._seq_max}")
        self.seq = seq
        self._arm_seq_check()

    def _next_seq(self, seq: int) -> None:
        """Slow path of sequence numbering: soft rekey, last number, refusal; never wraps."""
        if self.expired:
            raise SaExpired(f"SA {self.spi:08x} has expired: use the rekeyed SA")
        if self._unkeyed:
            self._key()
            if seq < self._seq_check:
                return  # the fast path from now on, as for an SA keyed at once
        if seq > self._seq_max:
            self._expire("sequence numbers exhausted")
            raise SaExpired(f"SA {self.spi:08x} has used its last sequence number")
        if seq >= self._seq_soft and not self._soft_done:
            self._soft_done = True
            self._rearm()
            self.events.append(RekeyRequested(spi_in=self.pair_spi, hard=False,
                                              reason="sequence numbers running out"))
        if seq == self._seq_max:
            # The last number goes out; the SA is done after it.
            self._expire("sequence numbers exhausted")
        # Keep taking the slow path: only a few numbers remain after the soft mark.
        self._seq_check = 0

    def _expire(self, reason: str) -> None:
        super()._expire(reason)
        self._seq_check = 0

    def protect(self, packet: bytes, now: float) -> bytes:
        """Protect one IP packet; raises SaExpired, or ValueError for a packet that is not IP."""
        raise NotImplementedError

    def protect_all(self, packets: list, now: float) -> list[bytes] | None:
        """`protect` of each of ``packets`` in one call, where the SA's kind has such a path and
        nothing in the batch needs the slow one; None otherwise, with nothing done: the caller then
        protects them one by one. This base has no such path."""
        return None

    def build_outer_ip(self, body: bytes, *, ttl: int = 64, tos: int = 0, ident: int = 0) -> bytes:
        """Prefix an outer IPv4/IPv6 header (local -> remote) to a tunnel-mode ESP body.

        With UDP encapsulation a UDP header (`ip.udp_header`) is inserted too,
        so the result is what a raw socket would send.
        """
        if self.encap:
            udp = ip.udp_header(self.local, self.remote, self.local_port, self.remote_port, body)
            return b"".join((ip.ip_header(self.local, self.remote, ip.IPPROTO_UDP, 8 + len(body),
                                          ttl=ttl, tos=tos, ident=ident), udp, body))
        return ip.ip_header(self.local, self.remote, self._ip_proto, len(body), ttl=ttl, tos=tos,
                            ident=ident) + body

    _ip_proto = ip.IPPROTO_ESP

    def matches_packet(self, packet: bytes) -> bool:
        """Whether an outgoing packet falls in this SA's selectors (src local, dst remote)."""
        try:
            src, dst, proto, sport, dport = ip.flow(packet)
        except ip.IpError:
            return False
        return ((not self.local_ts or matches(self.local_ts, src, proto, sport))
                and (not self.remote_ts or matches(self.remote_ts, dst, proto, dport)))


class InboundSa(SaBase):
    """One inbound SA: `unprotect` checks and strips ESP/AH and returns the inner IP packet.

    It raises `EspDrop` (counted) for anything not to deliver, and returns
    None for an authentic packet with nothing to deliver (an ESP dummy
    packet, next header 59, RFC 4303 §2.6). The delivered packet must lie in
    the SA's selectors: source in ``remote_ts``, destination in ``local_ts``
    (an empty list places no limit on that side).
    """

    __slots__ = ("window", "_ts_any", "_addr_only", "_passed", "frag_check")

    direction = "in"
    full_ip = False
    """Whether unprotect() takes a whole IP packet rather than the ESP payload (class attribute)."""

    def __init__(self, spi: int, *, replay_window: int = 64, **kw) -> None:
        common = SaCommon(**kw)
        self._start(spi, common)
        self._start_in(replay_window, common)

    def _start_in(self, replay_window: int, common: SaCommon) -> None:
        self.window = make_window(replay_window)
        self._ts_any = common.ts_any
        self._addr_only = common.addr_only
        self._passed = None
        """Address-only selectors: the last inner source + destination (packed) that passed them."""
        self.frag_check = None
        """A `engine.esp.fragcheck.FragmentCheck`: non-first fragments follow their first fragment's
        verdict on this SA (RFC 4301 §7.3 stateful checking); None: they are checked on their own."""

    def unprotect(self, data: bytes, now: float) -> bytes | None:
        """Check and decapsulate one packet; raises EspDrop."""
        raise NotImplementedError

    def _policy_check(self, inner: bytes, now: float, data, seq: int) -> None:
        """Drop as policy_mismatch unless the inner packet is inside the selectors."""
        v = inner[0] >> 4
        if self._ts_any[v]:
            return
        if self._addr_only and len(inner) >= 40:
            pair = inner[12:20] if v == 4 else inner[8:40]
            if pair == self._passed:
                return  # the flow's packets share their addresses: one walk of the selectors per flow
            src, dst = (inner[12:16], inner[16:20]) if v == 4 else (inner[8:24], inner[24:40])
            n = len(src)
            if ((not self.remote_ts or any(len(t[0]) == n and t[0] <= src <= t[1] for t in self.remote_ts))
                    and (not self.local_ts or any(len(t[0]) == n and t[0] <= dst <= t[1] for t in self.local_ts))):
                self._passed = pair
                return
            raise self._drop("policy_mismatch", "inner packet outside the SA's traffic selectors",
                             data, now, seq)
        try:
            src, dst, proto, sport, dport = ip.flow(inner)
        except ip.IpError as exc:
            raise self._drop("malformed", f"inner packet: {exc}", data, now, seq) from None
        ok = ((not self.remote_ts or matches(self.remote_ts, src, proto, sport))
              and (not self.local_ts or matches(self.local_ts, dst, proto, dport)))
        fc = self.frag_check
        if fc is not None and not self._addr_only and (v == 6 or inner[6] & 0x3F or inner[7]):
            frag = datagram(inner)
            if frag is not None:
                ok = fc.check(self, frag[0], frag[1], ok, inner, now)  # raises FragmentHeld
        if not ok:
            raise self._drop("policy_mismatch", "inner packet outside the SA's traffic selectors",
                             data, now, seq)
