"""The IKE SA: one state machine per IKE SA (RFC 7296), sans-IO.

This module holds the machinery every exchange shares: message IDs and the
window of one (§2.3), retransmission with exponential backoff (§2.1), the
responder's cache of its last response, SK protection and fragmentation,
timers (rekey, expiry, DPD, NAT-T keepalives) and the queue of exchanges we
want to start. The exchanges themselves live in ``tasks`` (what we initiate)
and ``responder`` (what we answer).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from engine.crypto.keys import IkeKeys
from engine.events import (
    ChildState,
    ExchangeReceived,
    ExchangeSent,
    IkeSaStateChanged,
    IkeState,
    NegotiationFailed,
)
from engine.ike.child import ChildSa, deleted_event, installed_event
from engine.ike.errors import RemoteError
from engine.ike.proposals import Chosen
from engine.ike.protection import DEFAULT_FRAGMENT_SIZE, MAX_FRAGMENTS, Reassembly, SkCodec
from engine.ike.state import check_ike
from engine.policy.model import ConnectionConfig, Identity
from engine.wire.constants import (
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    NON_ESP_MARKER,
    ExchangeType,
    NotifyType,
)
from engine.wire.errors import UnsupportedCriticalPayload, WireError
from engine.wire.message import Message, decode_payloads, encode_message
from engine.wire.payloads import NotifyPayload, SkfPayload, SkPayload
from engine.wire.summary import summarize_lazy

log = logging.getLogger("engine.ike")

Addr = tuple[str, int]


@dataclass
class Outstanding:
    """Our request in flight (the window is one message)."""

    task: "Task"
    mid: int
    exchange: int
    datagrams: list[bytes]
    payloads: tuple
    next_at: float
    retransmits: int = 0


@dataclass
class CachedResponse:
    mid: int
    datagrams: list[bytes]


class Task:
    """An exchange we initiate. Subclasses build the request and handle the response."""

    exchange: int = ExchangeType.INFORMATIONAL
    name = "task"

    def build(self, sa: "IkeSa", now: float) -> list | None:
        """The request payloads, or None when the task has become pointless."""
        raise NotImplementedError

    def on_response(self, sa: "IkeSa", payloads: list, now: float) -> None:
        raise NotImplementedError

    def on_timeout(self, sa: "IkeSa", now: float) -> None:
        """The peer never answered: the IKE SA is dead (handled by IkeSa)."""


@dataclass
class NatState:
    local_behind: bool = False
    """Our NAT_DETECTION_DESTINATION_IP did not match: we are behind a NAT."""
    remote_behind: bool = False
    """The peer's NAT_DETECTION_SOURCE_IP did not match its address (or it fakes a NAT)."""

    @property
    def any(self) -> bool:
        return self.local_behind or self.remote_behind


class IkeSa:
    """One IKE SA. Created by the endpoint, which feeds it messages and timers."""

    def __init__(self, ep, conn: ConnectionConfig | None, *, initiator: bool, unique_id: int,
                 local: Addr, remote: Addr, spi_i: bytes, spi_r: bytes = b"\0" * 8, now: float) -> None:
        self.ep = ep
        self.conn = conn
        self.original_initiator = initiator
        self.unique_id = unique_id
        self.local: Addr = local
        self.remote: Addr = remote
        self.spi_i = spi_i
        self.spi_r = spi_r
        self.state = IkeState.CREATED
        self.created_at = now
        self.established_at: float | None = None
        self.rekey_at: float | None = None
        self.expire_at: float | None = None
        self.last_received = now
        self.last_sent = now
        self.keepalive_at: float | None = None
        self.dpd_at: float | None = None
        self.half_open_deadline: float | None = None

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
        self.floated = False
        """IKE moved to the NAT-T port (messages carry the non-ESP marker)."""
        self.peer_fragmentation = False
        self.peer_is_ours = False
        """The peer sent our Vendor ID."""
        self.peer_hash_algorithms: set[int] = set()
        self.peer_certreqs: list[bytes] = []
        self.local_id: Identity | None = None
        self.remote_id: Identity | None = None
        self.candidates: tuple[ConnectionConfig, ...] = ()
        """Responder: connections that matched addresses and IKE proposals in IKE_SA_INIT."""

        # Message IDs (§2.3).
        self.mid_out = 0
        self.mid_in = 0
        self.outstanding: Outstanding | None = None
        self.tasks: deque[Task] = deque()
        self.cached: CachedResponse | None = None
        self.reassembly: dict[tuple[bool, int], Reassembly] = {}

        self.children: dict[bytes, ChildSa] = {}
        """By our inbound SPI."""
        self.deleting_children: set[bytes] = set()
        self.rekeyed_by: IkeSa | None = None
        self.delete_reason = ""
        self.heap_time: float | None = None
        """The time of this SA's entry in the endpoint's timer heap (see IkeEndpoint.touch)."""
        self.half_open_key: tuple | None = None
        self.addr_key: tuple[str, str] | None = None
        self.identity_key: tuple[str, str] | None = None
        """Keys of this SA in the endpoint's indexes (see IkeEndpoint.register)."""

    # ------------------------------------------------------------ basics
    @property
    def name(self) -> str:
        return self.conn.name if self.conn else ""

    @property
    def our_spi(self) -> bytes:
        return self.spi_i if self.original_initiator else self.spi_r

    @property
    def established(self) -> bool:
        return self.state in (IkeState.ESTABLISHED, IkeState.REKEYING)

    @property
    def encap(self) -> bool:
        """ESP must be UDP-encapsulated: a NAT was seen or encap is forced."""
        return self.nat.any or bool(self.conn and self.conn.encap)

    def set_state(self, new: IkeState, reason: str = "") -> None:
        if new == self.state:
            return
        check_ike(self.state, new)
        old, self.state = self.state, new
        self.ep.state_changed(self, old, new)
        # State steps are DEBUG: the INFO log carries one line per CHILD SA established
        # and the failures, so a busy gateway does not pay for a log line per message.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s[%d]: %s -> %s%s", self.name, self.unique_id, old.value, new.value,
                      f" ({reason})" if reason else "", extra={"connection": self.name})
        self.ep.emit(IkeSaStateChanged(self.unique_id, self.name, old, new, reason))

    def fail(self, exchange: int, notify: str, reason: str, now: float, *, sent_by_peer: bool = False,
             child: str | None = None, local_proposals=(), remote_proposals=(), local_ts=(), remote_ts=()) -> None:
        log.warning("%s[%d]: %s failed: %s", self.name, self.unique_id, _ex_name(exchange), reason,
                    extra={"connection": self.name})
        self.ep.emit(NegotiationFailed(
            self.unique_id, self.name, _ex_name(exchange), notify, reason, child, sent_by_peer,
            tuple(local_proposals), tuple(remote_proposals), tuple(local_ts), tuple(remote_ts)))

    # ------------------------------------------------------------ sending
    def _flags(self, response: bool) -> int:
        flags = FLAG_INITIATOR if self.original_initiator else 0
        return flags | (FLAG_RESPONSE if response else 0)

    def encode(self, exchange: int, mid: int, payloads: list, response: bool) -> list[bytes]:
        flags = self._flags(response)
        if exchange == ExchangeType.IKE_SA_INIT:
            return [encode_message(exchange, mid, self.spi_i, self.spi_r, flags, payloads)]
        assert self.sk is not None
        frag = None
        if self.peer_fragmentation and self.conn is not None and self.conn.fragmentation:
            frag = self.ep.fragment_size or DEFAULT_FRAGMENT_SIZE
        version = 6 if ":" in self.remote[0] else 4
        return self.sk.seal(exchange, mid, self.spi_i, self.spi_r, flags, payloads,
                            fragment_size=frag, ip_version=version,
                            marker_len=len(NON_ESP_MARKER) if self.floated else 0)

    def transmit(self, datagrams: list[bytes], now: float) -> None:
        for d in datagrams:
            self.ep.transmit(NON_ESP_MARKER + d if self.floated else d, self.local, self.remote)
        self.last_sent = now

    def _summary_event(self, sent: bool, exchange: int, mid: int, response: bool, payloads, length: int,
                       now: float, retransmit: int = 0, fragments: int = 1) -> None:
        initiator = self.original_initiator if sent else not self.original_initiator
        flags = (FLAG_INITIATOR if initiator else 0) | (FLAG_RESPONSE if response else 0)
        summary = summarize_lazy((self.spi_i, self.spi_r, exchange, flags, mid), payloads, length=length,
                                 retransmit=retransmit, fragments=fragments)
        cls = ExchangeSent if sent else ExchangeReceived
        self.ep.emit(cls(self.unique_id, self.name, summary, now, self.local, self.remote))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s[%d]: %s %s", self.name, self.unique_id, "sending" if sent else "received",
                      summary.brief(), extra={"connection": self.name})

    def queue(self, task: Task, now: float, *, front: bool = False) -> None:
        if front:
            self.tasks.appendleft(task)
        else:
            self.tasks.append(task)
        self.kick(now)

    def kick(self, now: float) -> None:
        """Start the next queued exchange if the window is free."""
        while self.outstanding is None and self.tasks and self.state not in (IkeState.DESTROYED,):
            task = self.tasks.popleft()
            payloads = task.build(self, now)
            if payloads is None:
                continue
            self.send_request(task, payloads, now)

    def send_request(self, task: Task, payloads: list, now: float) -> None:
        mid = self.mid_out
        self.mid_out += 1
        datagrams = self.encode(task.exchange, mid, payloads, response=False)
        if task.exchange == ExchangeType.IKE_SA_INIT:
            self.init_request = datagrams[0]
        self.outstanding = Outstanding(task, mid, task.exchange, datagrams, tuple(payloads),
                                       now + self.ep.retransmit_timeout(0))
        self._summary_event(True, task.exchange, mid, False, payloads, sum(map(len, datagrams)), now,
                            fragments=len(datagrams))
        self.transmit(datagrams, now)

    def resend_init(self, task: Task, payloads: list, now: float) -> None:
        """IKE_SA_INIT again with MID 0 (after COOKIE or INVALID_KE_PAYLOAD)."""
        self.outstanding = None
        self.spi_r = b"\0" * 8
        self.mid_out = 0
        self.send_request(task, payloads, now)

    def send_response(self, exchange: int, mid: int, payloads: list, now: float) -> None:
        datagrams = self.encode(exchange, mid, payloads, response=True)
        if exchange == ExchangeType.IKE_SA_INIT:
            self.init_response = datagrams[0]
        self.cached = CachedResponse(mid, datagrams)
        self._summary_event(True, exchange, mid, True, payloads, sum(map(len, datagrams)), now,
                            fragments=len(datagrams))
        self.transmit(datagrams, now)

    # ------------------------------------------------------------ receiving
    def receive(self, message: Message, local: Addr, remote: Addr, now: float) -> None:
        """An IKE message for this SA (header already matched by the endpoint)."""
        h = message.header
        response = h.response
        if response:
            out = self.outstanding
            if out is None or h.mid != out.mid or h.exchange != out.exchange:
                self.ep.count("unexpected_response")
                return
        else:
            if self.cached is not None and h.mid == self.cached.mid:
                # A retransmitted request: replay our response (§2.1), all fragments,
                # but only once per fragment set (the first fragment triggers it).
                if self._is_first_fragment(message):
                    self.ep.count("retransmitted_request")
                    self.transmit(self.cached.datagrams, now)
                return
            if h.mid != self.mid_in:
                self.ep.count("invalid_mid")
                return
        try:
            payloads, length, nfrag = self._open(message, now)
        except RemoteError as exc:
            self.ep.count("integrity" if "integrity" in exc.reason else "malformed")
            log.debug("%s[%d]: dropped: %s", self.name, self.unique_id, exc.reason)
            return
        except UnsupportedCriticalPayload as exc:
            if not response:
                self._reject_request(h.exchange, h.mid,
                                     NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD,
                                                   data=bytes([exc.payload_type & 0xFF])), now)
            self.ep.count("malformed")
            return
        except WireError as exc:
            if not response and h.exchange != ExchangeType.IKE_SA_INIT:
                self._reject_request(h.exchange, h.mid, NotifyPayload(NotifyType.INVALID_SYNTAX), now)
            self.ep.count("malformed")
            log.debug("%s[%d]: malformed %s: %s", self.name, self.unique_id, _ex_name(h.exchange), exc)
            return
        if payloads is None:
            return  # waiting for more fragments
        self.last_received = now
        self._arm_dpd(now)
        self._update_remote(local, remote, message, now)
        self._summary_event(False, h.exchange, h.mid, response, payloads, length, now, fragments=nfrag)
        if response:
            out = self.outstanding
            self.outstanding = None
            if h.exchange == ExchangeType.IKE_SA_INIT:
                self.spi_r = h.spi_r  # the responder's SPI arrives with its answer
                self.init_response = message.raw  # the responder's AUTH signs it
            try:
                out.task.on_response(self, payloads, now)
            except RemoteError as exc:
                self.fail(out.exchange, _notify_name(exc.notify), exc.reason, now)
                self.destroy(now, exc.reason)
            self.kick(now)
        else:
            from engine.ike import responder

            self.mid_in = h.mid + 1
            try:
                responder.handle_request(self, h.exchange, h.mid, payloads, now)
            except RemoteError as exc:
                if exc.notify is not None:
                    self._reject_request(h.exchange, h.mid, NotifyPayload(exc.notify, data=exc.data), now)
                self.fail(h.exchange, _notify_name(exc.notify), exc.reason, now)
            self.kick(now)

    def _is_first_fragment(self, message: Message) -> bool:
        last = message.payloads[-1] if message.payloads else None
        return not isinstance(last, SkfPayload) or last.fragment_number == 1

    def _reject_request(self, exchange: int, mid: int, notify: NotifyPayload, now: float) -> None:
        if self.sk is None and exchange != ExchangeType.IKE_SA_INIT:
            return
        self.send_response(exchange, mid, [notify], now)

    def _open(self, message: Message, now: float) -> tuple[list | None, int, int]:
        """Decrypt (SK) or reassemble (SKF); returns (payloads or None, wire length, fragments)."""
        h = message.header
        last = message.payloads[-1] if message.payloads else None
        if h.exchange == ExchangeType.IKE_SA_INIT and not isinstance(last, (SkPayload, SkfPayload)):
            return list(message.payloads), len(message.raw), 1
        if self.sk is None:
            raise RemoteError(None, "encrypted message before keys exist")
        if isinstance(last, SkPayload):
            first, inner = self.sk.open(message)
            return decode_payloads(first, inner), len(message.raw), 1
        if isinstance(last, SkfPayload):
            if not (1 <= last.fragment_number <= last.total_fragments <= MAX_FRAGMENTS):
                raise RemoteError(None, "bad fragment numbering")
            skf, plaintext = self.sk.open_fragment(message)
            key = (h.response, h.mid)
            r = self.reassembly.get(key)
            if r is None:
                r = self.reassembly[key] = Reassembly(h.mid, skf.total_fragments)
            if not r.add(skf, plaintext, len(message.raw)):
                return None, 0, 0
            del self.reassembly[key]
            first, inner = r.assemble()
            return decode_payloads(first, inner), r.length, r.total
        if h.exchange == ExchangeType.INFORMATIONAL and not message.payloads and self.sk is not None:
            raise RemoteError(None, "unprotected INFORMATIONAL")
        raise RemoteError(None, f"unprotected {_ex_name(h.exchange)}")

    def _update_remote(self, local: Addr, remote: Addr, message: Message, now: float) -> None:
        """Follow the peer's NAT mapping on authenticated messages (§2.23)."""
        if remote != self.remote and self.sk is not None and (self.nat.remote_behind or remote[1] != self.remote[1]):
            log.info("%s[%d]: peer moved from %s:%d to %s:%d", self.name, self.unique_id,
                     *self.remote, *remote, extra={"connection": self.name})
            self.remote = remote
        if local[1] == self.ep.natt_port and not self.floated:
            self.floated = True
            self.local = local

    # ------------------------------------------------------------ timers
    def _arm_dpd(self, now: float) -> None:
        if self.conn is not None and self.conn.dpd_delay > 0 and self.established:
            self.dpd_at = now + self.conn.dpd_delay

    def next_timer(self) -> float | None:
        times = [self.rekey_at, self.expire_at, self.dpd_at, self.keepalive_at, self.half_open_deadline]
        if self.outstanding is not None:
            times.append(self.outstanding.next_at)
        for c in self.children.values():
            times.append(c.rekey_at)
            times.append(c.expire_at)
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        from engine.ike import tasks

        if self.state == IkeState.DESTROYED:
            return
        out = self.outstanding
        if out is not None and now >= out.next_at:
            if out.retransmits >= self.ep.retransmit_tries:
                self.outstanding = None
                self._peer_gone(out, now)
                return
            out.retransmits += 1
            out.next_at = now + self.ep.retransmit_timeout(out.retransmits)
            self.ep.count("retransmits")
            self._summary_event(True, out.exchange, out.mid, False, out.payloads, sum(map(len, out.datagrams)),
                                now, retransmit=out.retransmits, fragments=len(out.datagrams))
            self.transmit(out.datagrams, now)
        if self.half_open_deadline is not None and now >= self.half_open_deadline:
            self.half_open_deadline = None
            if self.state == IkeState.CONNECTING:
                self.fail(ExchangeType.IKE_AUTH, "TIMEOUT",
                          "the peer never completed IKE_AUTH (half-open SA timed out)", now)
                self.destroy(now, "half-open timeout")
                return
        if self.expire_at is not None and now >= self.expire_at:
            self.expire_at = None
            self.delete(now, reason="IKE SA lifetime expired")
            return
        if self.rekey_at is not None and now >= self.rekey_at:
            self.rekey_at = None
            if self.state == IkeState.ESTABLISHED:
                self.queue(tasks.RekeyIke(), now)
        if self.dpd_at is not None and now >= self.dpd_at:
            self.dpd_at = None
            if self.state == IkeState.ESTABLISHED and self.outstanding is None and not self.tasks:
                if now - self.last_received >= self.conn.dpd_delay:
                    self.queue(tasks.Dpd(), now)
                else:
                    self.dpd_at = self.last_received + self.conn.dpd_delay
        if self.keepalive_at is not None and now >= self.keepalive_at:
            if self.nat.local_behind and self.floated and self.established:
                self.ep.transmit(b"\xff", self.local, self.remote)
            self.keepalive_at = now + self.ep.keepalive_interval
        for child in list(self.children.values()):
            if child.expire_at is not None and now >= child.expire_at:
                child.expire_at = None
                child.rekey_at = None
                if child.state in (ChildState.REKEYED,):
                    self.remove_child(child, now, "rekeyed (old SA expired)")
                else:
                    self.queue(tasks.DeleteChild(child, "lifetime expired"), now)
            elif child.rekey_at is not None and now >= child.rekey_at:
                child.rekey_at = None
                if child.state == ChildState.INSTALLED and self.established:
                    self.queue(tasks.RekeyChild(child), now)

    def _peer_gone(self, out: Outstanding, now: float) -> None:
        """Retransmissions exhausted (§2.4): the IKE SA and its children are dead."""
        from engine.events import DpdTimeout

        reason = f"no response to {_ex_name(out.exchange)} after {out.retransmits} retransmissions"
        if self.state == IkeState.CONNECTING:
            self.fail(out.exchange, "TIMEOUT", f"{reason}: is the peer reachable and listening "
                      f"on {self.remote[0]}:{self.remote[1]}?", now)
            self.destroy(now, reason)
            self.ep.connection_failed(self, now)
            return
        action = "clear"
        if self.conn is not None:
            for c in self.children.values():
                if c.config.dpd_action != "clear":
                    action = c.config.dpd_action
                    break
        self.ep.emit(DpdTimeout(self.unique_id, self.name, action))
        out.task.on_timeout(self, now)
        children = [c.config for c in self.children.values() if c.state != ChildState.DELETED]
        self.destroy(now, f"peer gone: {reason}")
        self.ep.peer_gone(self, children, action, now)

    # ------------------------------------------------------------ lifetimes
    def schedule_lifetimes(self, now: float) -> None:
        c = self.conn
        if c is None:
            return
        if c.rekey_time > 0:
            jitter = self.ep.random.uniform(0, min(c.rand_time, c.rekey_time / 2)) if c.rand_time else 0.0
            self.rekey_at = now + c.rekey_time - jitter
            self.expire_at = now + c.rekey_time + c.over_time
        self._arm_dpd(now)
        if self.nat.local_behind:
            self.keepalive_at = now + self.ep.keepalive_interval

    def child_lifetimes(self, child: ChildSa, now: float) -> None:
        cfg = child.config
        if cfg.rekey_time > 0:
            jitter = self.ep.random.uniform(0, min(cfg.rand_time, cfg.rekey_time / 2)) if cfg.rand_time else 0.0
            child.rekey_at = now + cfg.rekey_time - jitter
        else:
            child.rekey_at = None
        child.expire_at = now + cfg.life_time if cfg.life_time > 0 else None

    # ------------------------------------------------------------ children
    def install_child(self, child: ChildSa, now: float) -> None:
        self.children[child.spi_in] = child
        child.set_state(ChildState.INSTALLED)
        self.child_lifetimes(child, now)
        if log.isEnabledFor(logging.INFO):
            log.info("%s[%d]: CHILD_SA %s{%d} established with SPIs %s_i %s_o and TS %s === %s (%s@%s)",
                     self.name, self.unique_id, child.config.name, child.unique_id, child.spi_in.hex(),
                     child.spi_out.hex(), " ".join(map(str, child.local_ts)), " ".join(map(str, child.remote_ts)),
                     self.remote_id, self.remote[0], extra={"connection": self.name})
        self.ep.emit(installed_event(child, ike_sa=self.unique_id, connection=self.name,
                                     local=self.local, remote=self.remote, encap=self.encap,
                                     peer_is_ours=self.peer_is_ours))

    def remove_child(self, child: ChildSa, now: float, reason: str) -> None:
        if child.state == ChildState.DELETED:
            return
        child.set_state(ChildState.DELETED)
        self.children.pop(child.spi_in, None)
        self.deleting_children.discard(child.spi_in)
        self.ep.release_spi(child.spi_in)
        self.ep.emit(deleted_event(child, ike_sa=self.unique_id, connection=self.name,
                                   local=self.local, remote=self.remote, reason=reason))

    def child_by_spi_out(self, spi: bytes) -> ChildSa | None:
        for c in self.children.values():
            if c.spi_out == spi:
                return c
        return None

    # ------------------------------------------------------------ commands
    def delete(self, now: float, reason: str = "terminated") -> None:
        """Delete the IKE SA (and its children) with an INFORMATIONAL."""
        from engine.ike import tasks

        if self.state in (IkeState.DELETING, IkeState.DESTROYED):
            return
        if self.state in (IkeState.CREATED, IkeState.CONNECTING):
            # Nobody is authenticated yet: there is nothing to delete with the peer.
            self.destroy(now, reason)
            return
        self.delete_reason = reason
        self.tasks.clear()
        self.outstanding = None  # the delete supersedes anything in flight
        self.set_state(IkeState.DELETING, reason)
        self.queue(tasks.DeleteIke(reason), now)

    def destroy(self, now: float, reason: str) -> None:
        """Drop the IKE SA without talking to the peer."""
        if self.state == IkeState.DESTROYED:
            return
        for child in list(self.children.values()):
            self.remove_child(child, now, f"IKE SA gone: {reason}")
        self.outstanding = None
        self.tasks.clear()
        self.rekey_at = self.expire_at = self.dpd_at = self.keepalive_at = self.half_open_deadline = None
        self.set_state(IkeState.DESTROYED, reason)
        self.ep.forget(self)


def _ex_name(exchange: int) -> str:
    try:
        return ExchangeType(exchange).name
    except ValueError:
        return str(exchange)


def _notify_name(notify: int | None) -> str:
    if notify is None:
        return "NONE"
    try:
        return NotifyType(notify).name
    except ValueError:
        return str(notify)


def find(payloads, cls, pred: Callable | None = None):
    for p in payloads:
        if isinstance(p, cls) and (pred is None or pred(p)):
            return p
    return None


def notify(payloads, ntype: int) -> NotifyPayload | None:
    for p in payloads:
        if isinstance(p, NotifyPayload) and p.type == ntype:
            return p
    return None


def error_notifies(payloads) -> list[NotifyPayload]:
    return [p for p in payloads if isinstance(p, NotifyPayload) and p.type < 16384]

