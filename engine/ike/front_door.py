"""The IKE_SA_INIT front door: the only input an unauthenticated, possibly
spoofed source can make us act on, so every cost here is bounded.

Before anything is decoded: the datagram fits ``max_packet`` (the endpoint
checks), SPIi is not zero (RFC 7296 §3.1), a retransmission of a request we
answered gets the same answer, a source holding ``block_threshold`` half-open
SAs is ignored (charon's block_threshold), and no more than
``init_limit_half_open`` half-open SAs exist at once. These limits hold even
against a peer that echoes every COOKIE (it then owns its address).

Cookies (§2.6): demanded once ``half_open_threshold`` half-open SAs exist, or
``cookie_threshold_ip`` from one address; made and checked with HMAC-SHA256
and hmac.compare_digest (engine.crypto.auth.verify_cookie), under a secret
that rotates every COOKIE_SECRET_LIFETIME seconds (the previous one is still
accepted, named by the cookie's version byte).

What reaches the log and the event stream from here is bounded too: offers
are described capped (engine.ike.text), warnings and per-message events of
stateless answers are rate-limited and what was left out is counted.
"""

from __future__ import annotations

import logging

from engine.crypto.auth import cookie_value, verify_cookie
from engine.events import ExchangeReceived, ExchangeSent
from engine.ike.addresses import addr_match
from engine.ike.exchanges import ike_sa_init
from engine.ike.exchange import find
from engine.ike.host import Addr, Host
from engine.ike.ratelimit import RateLimit
from engine.ike.registry import ZERO_SPI, Registry
from engine.ike.sa import IkeSa
from engine.policy.model import ConnectionConfig, Policy
from engine.wire.constants import FLAG_INITIATOR, FLAG_RESPONSE, NON_ESP_MARKER, ExchangeType, NotifyType
from engine.wire.errors import WireError
from engine.wire.message import IkeHeader, Message, decode_header, decode_message, encode_message
from engine.wire.payloads import NoncePayload, NotifyPayload
from engine.wire.summary import summarize_lazy

log = logging.getLogger("engine.ike")

COOKIE_SECRET_LIFETIME = 60.0
"""Seconds a cookie secret makes new cookies; cookies stay valid one lifetime more."""
INIT_IDS = 4096
"""IKE SA numbers remembered for recent IKE_SA_INIT requests."""
UNKNOWN_SPI_LOG_EVERY = 60.0
"""Seconds between log lines about messages for IKE SAs we do not know (one line, with a count)."""


class FrontDoor:
    def __init__(self, host: Host, registry: Registry, policy: Policy) -> None:
        self.host = host
        self.registry = registry
        self.policy = policy
        """Replaced by the endpoint when a new policy is applied."""
        self._secrets: dict[int, bytes] = {}
        self._version = -1
        self._rotated_at: float | None = None
        self._init_ids: dict[tuple[bytes, str, int], int] = {}
        self._warnings = RateLimit(rate=5.0, burst=20.0)
        self._events = RateLimit(rate=50.0, burst=200.0)
        self._invalid_spi = RateLimit(rate=10.0, burst=20.0)
        self._unknown_logged_at: float | None = None
        self._unknown_since_log = 0
        self.closed = False
        """Set by the endpoint's shutdown: no new IKE SA may start while ours are deleted."""

    # ------------------------------------------------------------ the door
    def receive(self, data: bytes, header: IkeHeader, local: Addr, remote: Addr, now: float) -> None:
        """An IKE_SA_INIT request (no marker, size already checked)."""
        host, registry, engine = self.host, self.registry, self.policy.engine
        if header.spi_r != ZERO_SPI:
            host.count("unknown_spi")
            return
        if header.spi_i == ZERO_SPI:
            host.count("invalid_spi")  # §3.1: the initiator's SPI is never zero
            return
        if self.closed:
            host.count("refused_shutting_down")  # it would be destroyed without a Delete moments later
            return
        key = (header.spi_i, remote[0], remote[1])
        old = registry.half_open(key)
        if old is not None:
            if old.init_request == data and old.cached is not None:
                host.count("retransmitted_request")
                old.transmit(old.cached.datagrams, now)
            return
        from_source = registry.half_open_by_ip.get(remote[0], 0)
        if from_source >= engine.block_threshold:
            host.count("blocked")
            return
        total = registry.half_open_count()
        if engine.init_limit_half_open and total >= engine.init_limit_half_open:
            host.count("half_open_refused")
            return
        try:
            message = decode_message(data, header=header)  # the endpoint decoded the header of data
        except WireError as exc:
            host.count("malformed")
            log.debug("malformed IKE_SA_INIT from %s: %s", remote[0], exc)
            return
        nonce = find(message.payloads, NoncePayload)
        if nonce is not None and (total >= engine.half_open_threshold or from_source >= engine.cookie_threshold_ip):
            self._rotate(now)
            first = message.payloads[0]
            echoed = first.data if isinstance(first, NotifyPayload) and first.type == NotifyType.COOKIE else b""
            if not verify_cookie(self._secrets, echoed, nonce.data, remote[0], header.spi_i):
                host.count("cookies_sent")
                cookie = cookie_value(self._secrets[self._version], nonce.data, remote[0], header.spi_i,
                                      self._version)
                self.stateless(header, [NotifyPayload(NotifyType.COOKIE, data=cookie)], local, remote, now,
                               request=message)
                return
        ike_sa_init.answer(self, message, local, remote, now)

    def unknown_spi(self, spis: tuple[bytes, bytes], exchange: int, flags: int, mid: int, local: Addr,
                    remote: Addr, now: float) -> None:
        """A message for an IKE SA we do not know (we restarted, or it was deleted). RFC 7296
        §2.21.4: a response is never answered; a request may be, unprotected, with
        INVALID_IKE_SPI, the SPIs and Message ID copied, from where it came (bounded: rate-limited).
        The peer then knows our side is gone instead of retransmitting into the void."""
        host = self.host
        host.count("unknown_spi")
        self._unknown_since_log += 1
        if self._unknown_logged_at is None or now - self._unknown_logged_at >= UNKNOWN_SPI_LOG_EVERY:
            self._unknown_logged_at = now
            log.info("%d IKE message(s) for unknown IKE SAs (the last from %s:%d, SPIs %s/%s): requests are "
                     "answered INVALID_IKE_SPI; the peer still holds an IKE SA we lost", self._unknown_since_log,
                     remote[0], remote[1], spis[0].hex(), spis[1].hex())
            self._unknown_since_log = 0
        if flags & FLAG_RESPONSE or ZERO_SPI in spis or not self._invalid_spi.allow(now):
            return
        answer_flags = FLAG_RESPONSE | (0 if flags & FLAG_INITIATOR else FLAG_INITIATOR)
        data = encode_message(exchange, mid, spis[0], spis[1], answer_flags,
                              [NotifyPayload(NotifyType.INVALID_IKE_SPI)])
        host.count("invalid_spi_sent")
        host.send(NON_ESP_MARKER + data if local[1] == self.policy.engine.natt_port else data, local, remote)

    def _rotate(self, now: float) -> None:
        if self._rotated_at is not None and now - self._rotated_at < COOKIE_SECRET_LIFETIME:
            return
        self._version = (self._version + 1) & 0xFF
        previous = self._secrets.get((self._version - 1) & 0xFF)
        self._secrets = {self._version: self.host.rng(32)}
        recent = self._rotated_at is not None and now - self._rotated_at < 2 * COOKIE_SECRET_LIFETIME
        if previous is not None and recent:
            self._secrets[(self._version - 1) & 0xFF] = previous
        self._rotated_at = now

    # ------------------------------------------------------------ for the IKE_SA_INIT responder (ike_sa_init.Door)
    def candidates(self, local: Addr, remote: Addr) -> list[ConnectionConfig]:
        out = []
        for conn in self.policy.connections:
            if conn.local_addrs and not any(addr_match(a, local[0]) for a in conn.local_addrs) and \
                    not any(local[0] in self.host.names.addresses(a) for a in conn.local_addrs):
                continue
            if conn.remote_addrs and not any(addr_match(a, remote[0]) for a in conn.remote_addrs) and \
                    not any(remote[0] in self.host.names.addresses(a) for a in conn.remote_addrs):
                continue  # (a host name matches the addresses the runtime last resolved for it)
            out.append(conn)
        return out

    def uid(self, spi_i: bytes, remote: Addr) -> int:
        """The IKE SA number for an initiator's IKE_SA_INIT: the same across its retries
        (COOKIE, INVALID_KE_PAYLOAD), so a stateless answer and the SA that follows
        appear as one negotiation."""
        key = (spi_i, remote[0], remote[1])
        uid = self._init_ids.get(key)
        if uid is None:
            uid = self._init_ids[key] = self.host.ids.next_ike_id()
            if len(self._init_ids) > INIT_IDS:
                self._init_ids.pop(next(iter(self._init_ids)))
        return uid

    def stateless(self, header: IkeHeader, payloads: list, local: Addr, remote: Addr, now: float, *,
                  request: Message, name: str = "") -> bool:
        """An IKE_SA_INIT answer without creating state (COOKIE, INVALID_KE_PAYLOAD,
        NO_PROPOSAL_CHOSEN, INVALID_SYNTAX). Both messages reach the negotiation
        view, at a bounded rate; False when their events were left out (counted)."""
        data = encode_message(ExchangeType.IKE_SA_INIT, 0, header.spi_i, ZERO_SPI, FLAG_RESPONSE, payloads)
        self.host.send(data, local, remote)
        if not self._events.allow(now):
            self.host.count("events_suppressed")
            return False
        uid = self.uid(header.spi_i, remote)
        self.host.emit(ExchangeReceived(uid, name, summarize_lazy(header, request.payloads), now, local, remote))
        self.host.emit(ExchangeSent(uid, name, summarize_lazy(decode_header(data), payloads), now, local, remote))
        return True

    def admit(self, sa: IkeSa, now: float) -> None:
        self.registry.add(sa)
        self.registry.enter_half_open(sa, (sa.spi_i, sa.remote[0], sa.remote[1]))
        self.host.changed(sa)

    def warn(self, now: float, message: str, name: str) -> None:
        limiter = self._warnings
        if not limiter.allow(now):
            self.host.count("warnings_suppressed")
            return
        if limiter.dropped:
            message += f" ({limiter.dropped} similar messages suppressed)"
            limiter.dropped = 0
        log.warning("%s", message, extra={"connection": name})
