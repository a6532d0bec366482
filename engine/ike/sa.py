"""The IKE SA, sans-IO (RFC 7296): what every exchange on it shares.

Message IDs and the window of one (§2.3), retransmission (§2.1), the cache
of our last response, SK protection and fragments (RFC 7383), the queue of
exchanges we want to start and the SA's own lifecycle. Functions of the SA
along the protocol's seams live beside it and are bound here as methods: what
time does to it (timers, lifetimes, DPD, deadlines) in ``sa_timers``, its CHILD
SAs in ``sa_children``, NAT and addresses in ``sa_nat``, SK decryption and
fragment reassembly in ``sa_fragments``, the peer's messages (its answers, its
requests and our answers to them) in ``sa_receive``. The exchanges themselves, both roles,
are in ``engine.ike.exchanges``, one module per exchange; the endpoint is
reached only through ``engine.ike.host.Host``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from engine.crypto.keys import IkeKeys
from engine.events import (
    ExchangeReceived,
    ExchangeSent,
    IkeSaStateChanged,
    IkeState,
    NegotiationFailed,
)
from engine.ike.child import ChildSa
from engine.ike.errors import IllegalTransition, LocalError
from engine.ike.exchange import Initiator, Request, Responder
from engine.ike.host import Addr, Ended, Host
from engine.ike.proposals import Chosen
from engine.ike.protection import DEFAULT_FRAGMENT_SIZE, Reassembly, SkCodec
from engine.ike import sa_children, sa_fragments, sa_nat, sa_receive, sa_timers
from engine.ike.sa_nat import NatState
from engine.ike.state import IKE_TRANSITIONS, check_ike
from engine.ike.text import exchange_name
from engine.policy.model import ConnectionConfig, Identity
from engine.wire.constants import FLAG_INITIATOR, FLAG_RESPONSE, NON_ESP_MARKER, ExchangeType
from engine.wire.message import encode_message
from engine.wire.summary import LazySummary

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_CREATED = IkeState.CREATED
_DESTROYED = IkeState.DESTROYED
_IKE_SA_INIT = ExchangeType.IKE_SA_INIT

log = logging.getLogger("engine.ike")

ZERO_SPI = b"\0" * 8
HALF_OPEN_TIMEOUT = 30.0  # charon's half_open_timeout
NO_HASH_ALGORITHMS: frozenset[int] = frozenset()
"""Shared by every SA whose peer sent no SIGNATURE_HASH_ALGORITHMS (each empty set costs 216 bytes)."""


@dataclass
class Outstanding:
    """Our request in flight (the window is one message)."""

    initiator: Initiator
    mid: int
    exchange: int
    datagrams: list[bytes]
    payloads: tuple
    next_at: float
    retransmits: int = 0
    hurried_at: float | None = None
    """When sa_timers.hurry last sent it ahead of its schedule."""


@dataclass
class CachedResponse:
    mid: int
    datagrams: list[bytes]
    held_until: float | None = None
    """Not sent yet: it goes at this time (sa_timers.handle), to ``held_via``. Until then the peer's
    requests, its retransmissions included, are dropped (answering those would skip the wait)."""
    held_via: tuple | None = None
    held_summary: tuple | None = None
    """(exchange, payloads) for the ExchangeSent event when it goes."""
    request: bytes | None = None
    """Digest of the request's (first fragment's) bytes: only an identical copy gets the answer
    again (charon's is_retransmit), not any message with its SPIs and Message ID."""


class IkeSa:
    """One IKE SA. Created by the endpoint (or a rekey), fed messages and timers."""

    # RFC 5685 as a client (engine.ike.exchanges.redirect): class defaults, set on the few SAs
    # that follow a redirect, so the thousands of others carry nothing for it.
    redirected_from: str | None = None
    """The gateway that redirected us here (REDIRECTED_FROM in our IKE_SA_INIT)."""
    redirected_at: tuple[float, ...] = ()
    """When the redirects that led here happened (loop detection)."""
    replaces: IkeSa | None = None
    """The established IKE SA this one follows from a redirect: deleted once this one is up."""
    held_request: tuple | None = None
    """(exchange, Message ID, payloads) of a request we hold unanswered (engine.ike.sa_receive),
    taken again by `retake_held` when what it waits for (a CRL being fetched) is there."""

    def __init__(self, host: Host, conn: ConnectionConfig | None, *, initiator: bool, unique_id: int,
                 local: Addr, remote: Addr, spi_i: bytes, spi_r: bytes = ZERO_SPI, now: float) -> None:
        self.host = host
        self.conn = conn
        self.original_initiator = initiator
        """We sent this IKE SA's IKE_SA_INIT, or its rekey (RFC 7296 §2.18): the header's Initiator
        flag, the SPI and key order. Not who set the connection up: see ``connection_initiator``."""
        self.connection_initiator = initiator
        """We set the connection up (charon's COND_ORIGINAL_INITIATOR, kept across IKE rekeys by
        ike_sa.c inherit_pre): the side that may move with MOBIKE, follows a REDIRECT, sends NAT-D
        in its DPDs, and stays put behind a NAT; a gateway whose client rekeyed stays the responder."""
        self.unique_id = unique_id
        self.local: Addr = local
        self.remote: Addr = remote
        self.spi_i = spi_i
        self.spi_r = spi_r
        self.state = _CREATED
        self.created_at = now
        self.established_at: float | None = None
        self.rekey_at: float | None = None
        self.expire_at: float | None = None
        self.last_received = now
        self.last_sent = now
        self.last_esp_in = float("-inf")
        """When the datapath last reported inbound ESP/AH on a CHILD SA of ours (``child_activity``):
        traffic proves the peer alive as well as an IKE message does (DPD waits for both)."""
        self.keepalive_at: float | None = None
        self.dpd_at: float | None = None
        self.half_open_deadline: float | None = None
        self.deadline: float | None = None
        """REKEYED: the peer should have deleted this SA by then; it is dropped after."""
        self.pending = False
        """A new IKE SA from the peer's rekey that collided with ours, not yet resolved:
        registered (its SPI is taken) but deaf until the collision is decided."""

        # Negotiated.
        self.chosen: Chosen | None = None
        self.keys: IkeKeys | None = None
        self.sk: SkCodec | None = None
        self.nonce_i = b""
        self.nonce_r = b""
        self.init_request = b""
        """IKE_SA_INIT request bytes as sent (AUTH signs them)."""
        self.init_response = b""
        self.nat = NatState()
        # An SA that starts on the NAT-T port (local_port = 4500) is there from IKE_SA_INIT on:
        # every message carries the non-ESP marker (RFC 3948 §2.2).
        self.floated = local[1] == host.engine.natt_port
        """IKE is on the NAT-T port (messages carry the non-ESP marker)."""
        self.peer_fragmentation = False
        self.peer_is_ours = False
        self.peer_redirect_supported = False
        """The peer announced REDIRECT_SUPPORTED in IKE_SA_INIT (RFC 5685)."""
        """The peer sent our Vendor ID."""
        self.peer_hash_algorithms: frozenset[int] = NO_HASH_ALGORITHMS
        self.local_id: Identity | None = None
        self.remote_id: Identity | None = None
        self.candidates: tuple[ConnectionConfig, ...] = ()
        """Responder: connections that matched addresses and IKE proposals in IKE_SA_INIT."""
        # Virtual IPs (RFC 7296 §3.15, engine.ike.config_payload).
        self.remote_vips: tuple[str, ...] = ()
        """Addresses we leased to the peer from our pools."""
        self.vip_holders: tuple = ()
        """Our leases' holder keys (engine.pools.Leases), released when this SA ends."""
        self.vip_pool = ""
        self.local_vips: tuple[str, ...] = ()
        """Addresses the peer (a gateway) assigned to us."""
        self.vip_dns: tuple[str, ...] = ()
        self.vip_subnets: tuple[str, ...] = ()
        self.eap_identity = ""
        """The EAP identity authenticated in IKE_AUTH (engine.ike.exchanges.eap_auth), empty without EAP."""
        self.eap_method = ""
        self.cert_subject = ""
        """Subject of the certificate the peer authenticated with inside EAP-TLS."""
        # MOBIKE (RFC 4555, engine.ike.exchanges.mobike).
        self.mobike = False
        """The peer and we agreed on MOBIKE in IKE_AUTH: it may move the SA (UPDATE_SA_ADDRESSES)."""
        self.mobike_addrs: tuple | None = None
        """(local, remote) the CHILD SAs were last put on by MOBIKE (or IKE_AUTH)."""
        self.mobike_moves = 0
        self.received_on: tuple[Addr, Addr] = (local, remote)
        """(local, remote) of the last authenticated request: MOBIKE moves the SA there."""
        self.peer_intermediate = False
        """The peer sent INTERMEDIATE_EXCHANGE_SUPPORTED (RFC 9242)."""
        self.intermediate = None
        """engine.ike.intermediate.Intermediate: RFC 9370 rounds before IKE_AUTH, or None."""
        self.use_ppk = False
        """Both sides sent USE_PPK (RFC 8784)."""
        self.ppk_used = False
        """A PPK went into this SA's SK_d, SK_pi, SK_pr (engine.ike.ppk_auth)."""
        self.quantum_parent = False
        """Rekeyed from a quantum-safe IKE SA: its keys derive from that SA's SK_d."""
        self.intermediate_plain: tuple[int, bytes] | None = None
        """(first inner payload type, inner plaintext) of the IKE_INTERMEDIATE message just
        received: its IntAuth covers them (RFC 9242 §3.3.2)."""

        # Message IDs (§2.3) and exchanges.
        self.mid_out = 0
        self.mid_in = 0
        self.peer_mid = -1
        """The highest Message ID of a request the peer sent us: it holds our answers to all before."""
        self.outstanding: Outstanding | None = None
        self.active: Initiator | None = None
        """The exchange we started and that has not finished (it owns ``outstanding``)."""
        self.queue: list[Initiator] = []
        """Exchanges to start, in order (a list: a few at most, and 570 bytes less per SA than a deque)."""
        self.deferred: list[tuple[float, Initiator]] = []
        """Exchanges to start later (retries after TEMPORARY_FAILURE)."""
        self.responding: Responder | None = None
        """A multi-round exchange the peer started and has not finished."""
        self.cached: CachedResponse | None = None
        self.reassembly: dict[tuple[bool, int], Reassembly] = {}
        self.request_via: tuple[Addr, Addr] | None = None
        self.request_digest: bytes | None = None
        """Of the last authenticated request (its first fragment), for the answer's CachedResponse."""
        """Where the peer's current request came from (local, remote): its answer goes back there."""

        self.children: dict[bytes, ChildSa] = {}
        """By our inbound SPI."""
        self.delete_reason = ""
        # Keys of this SA in the endpoint's indexes and timer heap.
        self.timer_key = 0
        self.half_open_key: tuple | None = None
        self.addr_key: tuple[str, str] | None = None
        self.identity_key: tuple[str, str, str] | None = None

    # ------------------------------------------------------------ basics
    @property
    def name(self) -> str:
        return self.conn.name if self.conn else ""

    @property
    def our_spi(self) -> bytes:
        return self.spi_i if self.original_initiator else self.spi_r

    @property
    def established(self) -> bool:
        return self.state in sa_timers.UP

    @property
    def alive(self) -> bool:
        return self.state != _DESTROYED

    @property
    def encap(self) -> bool:
        """ESP must be UDP-encapsulated: a NAT was seen or encap is forced."""
        return self.nat.any or bool(self.conn and self.conn.encap)

    def set_state(self, new: IkeState, reason: str = "") -> None:
        old = self.state
        if new == old:
            return
        if new not in IKE_TRANSITIONS[old]:
            check_ike(old, new)  # raises IllegalTransition
        self.state = new
        # State steps are DEBUG: the INFO log carries one line per CHILD SA established
        # and the failures, so a busy gateway does not pay for a log line per message.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s[%d]: %s -> %s%s", self.name, self.unique_id, old.value, new.value,
                      f" ({reason})" if reason else "", extra={"connection": self.name})
        self.host.emit(IkeSaStateChanged(self.unique_id, self.name, old, new, reason))
        self.host.changed(self)

    def fail(self, exchange: int, notify: str, reason: str, now: float, *, sent_by_peer: bool = False,
             child: str | None = None, local_proposals=(), remote_proposals=(), local_ts=(), remote_ts=(),
             level: int = logging.WARNING) -> None:
        log.log(level, "%s[%d]: %s failed: %s", self.name, self.unique_id, exchange_name(exchange), reason,
                extra={"connection": self.name})
        self.host.emit(NegotiationFailed(
            self.unique_id, self.name, exchange_name(exchange), notify, reason, child, sent_by_peer,
            tuple(local_proposals), tuple(remote_proposals), tuple(local_ts), tuple(remote_ts)))

    # ------------------------------------------------------------ sending
    def _flags(self, response: bool) -> int:
        flags = FLAG_INITIATOR if self.original_initiator else 0
        return flags | (FLAG_RESPONSE if response else 0)

    def encode(self, exchange: int, mid: int, payloads: list, response: bool) -> list[bytes]:
        flags = self._flags(response)
        if exchange == _IKE_SA_INIT:
            return [encode_message(exchange, mid, self.spi_i, self.spi_r, flags, payloads)]
        assert self.sk is not None
        frag = None
        if self.peer_fragmentation and self.conn is not None and self.conn.fragmentation:
            frag = self.host.fragment_size or DEFAULT_FRAGMENT_SIZE
        version = 6 if ":" in self.remote[0] else 4
        return self.sk.seal(exchange, mid, self.spi_i, self.spi_r, flags, payloads,
                            fragment_size=frag, ip_version=version,
                            marker_len=len(NON_ESP_MARKER) if self.floated else 0)

    def transmit(self, datagrams: list[bytes], now: float, via: tuple[Addr, Addr] | None = None) -> None:
        """Send to the peer; ``via`` (local, remote): where a request came from, which its
        answer must use, whatever the SA's ports (RFC 7296 §2.11; RFC 3948: the non-ESP
        marker only on the NAT-T port)."""
        if via is None:
            local, remote, marker = self.local, self.remote, self.floated
        else:
            local, remote = via
            marker = local[1] == self.host.engine.natt_port
        for d in datagrams:
            self.host.send(NON_ESP_MARKER + d if marker else d, local, remote)
        self.last_sent = now

    def summary_event(self, sent: bool, exchange: int, mid: int, response: bool, payloads, length: int,
                       now: float, retransmit: int = 0, fragments: int = 1,
                       via: tuple[Addr, Addr] | None = None) -> None:
        """``via`` (local, remote): where the message really went or came from, when not the SA's
        addresses (an answer goes where its request came from; a MOBIKE SA does not move for it)."""
        initiator = self.original_initiator if sent else not self.original_initiator
        flags = (FLAG_INITIATOR if initiator else 0) | (FLAG_RESPONSE if response else 0)
        summary = LazySummary((self.spi_i, self.spi_r, exchange, flags, mid), payloads, length=length,
                              retransmit=retransmit, fragments=fragments)  # summarize_lazy's, a call less
        cls = ExchangeSent if sent else ExchangeReceived
        local, remote = via if via is not None else (self.local, self.remote)
        self.host.emit(cls(self.unique_id, self.name, summary, now, local, remote))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s[%d]: %s %s", self.name, self.unique_id, "sending" if sent else "received",
                      summary.brief(), extra={"connection": self.name})

    def _send_request(self, ex: Initiator, req: Request, now: float) -> None:
        mid = self.mid_out
        self.mid_out += 1
        datagrams = self.encode(req.exchange, mid, req.payloads, response=False)
        if req.exchange == ExchangeType.IKE_SA_INIT:
            self.init_request = datagrams[0]
        self.outstanding = Outstanding(ex, mid, req.exchange, datagrams, tuple(req.payloads),
                                       now + self.retransmit_timeout(0))
        self.summary_event(True, req.exchange, mid, False, req.payloads, sum(map(len, datagrams)), now,
                            fragments=len(datagrams))
        self.transmit(datagrams, now)

    def restart_init(self) -> None:
        """IKE_SA_INIT again from MID 0 (after COOKIE or INVALID_KE_PAYLOAD, §2.6, §1.2)."""
        self.spi_r = ZERO_SPI
        self.mid_out = 0

    def send_response(self, exchange: int, mid: int, payloads: list, now: float, hold: float = 0.0) -> None:
        """Answer the peer's request; ``hold`` > 0: only that many seconds later (the EAP-MSCHAPv2
        retry delay), by the SA's timer."""
        datagrams = self.encode(exchange, mid, payloads, response=True)
        if exchange == _IKE_SA_INIT:
            self.init_response = datagrams[0]
        if hold > 0:
            self.cached = CachedResponse(mid, datagrams, now + hold, self.request_via, (exchange, payloads),
                                         self.request_digest)
            return
        self.cached = CachedResponse(mid, datagrams, request=self.request_digest)
        self.summary_event(True, exchange, mid, True, payloads, sum(map(len, datagrams)), now,
                            fragments=len(datagrams), via=self.request_via)
        self.transmit(datagrams, now, self.request_via)

    def retransmit_timeout(self, n: int) -> float:
        e = self.host.engine
        return e.retransmit_timeout * (e.retransmit_base ** n)

    def retransmit_budget(self) -> float:
        """How long a request is retried before the peer counts as gone."""
        e = self.host.engine
        return retransmit_budget(e.retransmit_timeout, e.retransmit_base, e.retransmit_tries)

    # ------------------------------------------------------------ exchanges we start
    def start(self, ex: Initiator, now: float, *, front: bool = False) -> None:
        if self.state == IkeState.DESTROYED:
            ex.abort(now)
            return
        if front:
            self.queue.insert(0, ex)
        else:
            self.queue.append(ex)
        self.kick(now)

    def defer(self, ex: Initiator, at: float) -> None:
        """Start ``ex`` at ``at`` (a retry), unless this SA is gone by then."""
        self.deferred.append((at, ex))
        self.host.changed(self)

    def kick(self, now: float) -> None:
        """Send the next request if the window is free."""
        while self.outstanding is None and self.state != _DESTROYED:
            ex = self.active
            if ex is None:
                if not self.queue:
                    return
                ex = self.queue.pop(0)
                self.active = ex
            try:
                req = ex.request(now)
            except LocalError as exc:
                if isinstance(exc, IllegalTransition):
                    raise
                self._local_failure(ex, str(exc), now)
                continue
            if self.state == IkeState.DESTROYED:
                return
            if req is None:
                if self.active is ex:
                    self.active = None
                continue
            self._send_request(ex, req, now)

    def _local_failure(self, ex: Initiator, reason: str, now: float) -> None:
        """Our own configuration stopped an exchange (a missing key, certificate...)."""
        if self.active is ex:
            self.active = None
        self.fail(ExchangeType.IKE_AUTH if self.state == IkeState.CONNECTING else ExchangeType.CREATE_CHILD_SA,
                  "LOCAL", f"{reason} (local configuration)", now)
        ex.abort(now)
        if self.state in (IkeState.CREATED, IkeState.CONNECTING):
            self.destroy(now, reason, Ended("failed", reason))

    def holds_child(self, child: ChildSa) -> bool:
        """An exchange of ours is creating, rekeying or deleting ``child``."""
        return self.active is not None and self.active.holds_child(child)

    # ------------------------------------------------------------ receiving: sa_receive.py
    receive = sa_receive.receive
    _response = sa_receive.take_response
    _response_failed = sa_receive.response_failed
    _request = sa_receive.take_request
    _keep_responding = sa_receive.keep_responding

    # ------------------------------------------------------------ the peer's NAT and address (§2.23): sa_nat.py
    _update_remote = sa_nat.update_remote
    float_ports = sa_nat.float_ports

    # ------------------------------------------------------------ protection and fragments (RFC 7383): sa_fragments.py
    _open = sa_fragments.open_message
    _drop_reassembly = sa_fragments.drop_reassembly

    # ------------------------------------------------------------ timers: sa_timers.py's functions as methods
    next_timer = sa_timers.next_timer
    handle_timer = sa_timers.handle
    schedule_lifetimes = sa_timers.schedule_lifetimes
    child_lifetimes = sa_timers.child_lifetimes
    superseded = sa_timers.superseded

    # ------------------------------------------------------------ children: sa_children.py's functions as methods
    install_child = sa_children.install_child
    remove_child = sa_children.remove_child
    confirmed = sa_children.confirmed
    child_by_spi_out = sa_children.child_by_spi_out
    hand_over = sa_children.hand_over


    # ------------------------------------------------------------ commands
    def delete(self, now: float, reason: str = "terminated") -> None:
        """Delete the IKE SA (and its children) with an INFORMATIONAL."""
        if self.state in (IkeState.DELETING, IkeState.DESTROYED):
            return
        if self.state in (IkeState.CREATED, IkeState.CONNECTING) or self.pending:
            # Nobody is authenticated yet: there is nothing to delete with the peer.
            self.destroy(now, reason)
            return
        self.delete_reason = reason
        for ex in self.queue:
            ex.abort(now)
        self.queue.clear()
        self.deferred.clear()
        self.set_state(IkeState.DELETING, reason)
        active = self.active
        if active is not None and not active.survives_delete():
            # The delete supersedes what is in flight; its answer is ignored.
            self.active = None
            self.outstanding = None
            active.abort(now)
        self.start(self.host.exchanges.ike_delete(self, reason), now)

    def destroy(self, now: float, reason: str, ended: Ended | None = None) -> None:
        """Drop the IKE SA without talking to the peer."""
        if self.state == _DESTROYED:
            return
        active, self.active = self.active, None
        self.outstanding = None
        if active is not None:
            active.abort(now)
        for ex in self.queue:
            ex.abort(now)
        self.queue.clear()
        self.deferred.clear()
        if self.responding is not None:
            self.responding.abandon(now)
        self.responding = None
        for child in list(self.children.values()):
            self.remove_child(child, now, f"IKE SA gone: {reason}")
        self.rekey_at = self.expire_at = self.dpd_at = self.keepalive_at = None
        self.half_open_deadline = self.deadline = None
        self.set_state(_DESTROYED, reason)
        # What is dead holds no keys, even if something still refers to the object.
        self.keys = None
        self.sk = None
        self.cached = None
        self.reassembly.clear()
        self.host.ended(self, ended or Ended("deleted", reason), now)


@functools.lru_cache(maxsize=16)
def retransmit_budget(timeout: float, base: float, tries: int) -> float:
    return sum(timeout * base ** n for n in range(tries + 1))

