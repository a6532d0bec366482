"""What the peer sends an IKE SA (RFC 7296 §2.1-§2.3, §2.21): answers to our requests, its
requests and our answers to them (a retransmitted request gets the same answer again), and
authenticated messages that cannot be decoded (a request is answered with the error, a
response fails its exchange). Functions of the IKE SA, bound in sa.py as its methods.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from engine.crypto.digests import sha256
from engine.events import IkeState
from engine.ike import sa_timers
from engine.ike.errors import IllegalTransition, LocalError, RemoteError
from engine.ike.exchange import Responder
from engine.ike.host import Addr
from engine.ike.sa_nat import UNSPECIFIED
from engine.ike.text import exchange_name, notify_name
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.errors import UnsupportedCriticalPayload, WireError
from engine.wire.message import Message
from engine.wire.payloads import NotifyPayload, SkfPayload

if TYPE_CHECKING:
    from engine.ike.sa import IkeSa

log = logging.getLogger("engine.ike")


def receive(sa: IkeSa, message: Message, local: Addr, remote: Addr, now: float) -> None:
    """An IKE message for this SA (header already matched by the endpoint)."""
    h = message.header
    if sa.pending:
        # Our rekey collision is undecided: the peer retransmits until it is.
        sa.host.count("pending_sa")
        return
    response = h.response
    if response:
        out = sa.outstanding
        if out is None or h.mid != out.mid or h.exchange != out.exchange:
            sa.host.count("unexpected_response")
            return
    else:
        if sa.cached is not None and sa.cached.held_until is not None:
            # Our answer to the last request waits (the EAP-MSCHAPv2 retry delay): a retransmission
            # answered now would skip the wait, and a next request cannot come before the answer.
            sa.host.count("held_answer_requests")
            return
        if sa.cached is not None and h.mid == sa.cached.mid:
            # A retransmitted request: replay our response (§2.1), all fragments,
            # but only once per fragment set (the first fragment triggers it), and only
            # for an identical copy: nothing else of it is authenticated, and the answer
            # goes to its source.
            if _is_first_fragment(message):
                if sa.cached.request is not None and hmac.compare_digest(sa.cached.request, _digest(message.raw)):
                    sa.host.count("retransmitted_request")
                    sa.transmit(sa.cached.datagrams, now, (local, remote))
                else:
                    sa.host.count("retransmit_mismatch")
            return
        if h.mid != sa.mid_in:
            sa.host.count("invalid_mid")
            return
    try:
        payloads, length, nfrag = sa._open(message)
    except RemoteError as exc:
        # Not authenticated (or not ours): dropped, Message IDs untouched, and where the answer
        # goes untouched too (a held request's answer, given later, would go to a forger's address).
        sa.host.count("integrity" if "integrity" in exc.reason else "malformed")
        log.debug("%s[%d]: dropped: %s", sa.name, sa.unique_id, exc.reason)
        return
    except WireError as exc:
        if not response:
            sa.request_via = (local, remote)  # authenticated, answered with the error
            if _is_first_fragment(message):
                sa.request_digest = _digest(message.raw)
        # Authenticated but undecodable: a request is still answered, with the
        # error, as that exchange's response (§2.21.2, §3.2), so the Message ID
        # moves on and a retransmission gets the same answer.
        sa.host.count("malformed")
        log.debug("%s[%d]: malformed %s: %s", sa.name, sa.unique_id, exchange_name(h.exchange), exc)
        if isinstance(exc, UnsupportedCriticalPayload):
            error = NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, data=bytes([exc.payload_type & 0xFF]))
        else:
            error = NotifyPayload(NotifyType.INVALID_SYNTAX)
        if response:
            response_failed(sa, f"undecodable {exchange_name(h.exchange)} response: {exc}", now)
        elif sa.sk is not None:
            sa.mid_in = h.mid + 1
            sa.send_response(h.exchange, h.mid, [error], now)
            if error.type == NotifyType.INVALID_SYNTAX and h.exchange in KNOWN_REQUESTS:
                sa.fail(h.exchange, "INVALID_SYNTAX", f"undecodable {exchange_name(h.exchange)} request: {exc}", now)
                end_after_invalid_syntax(sa, now, "we could not parse the peer's request")
        return
    if not response:
        sa.request_via = (local, remote)  # the answer goes where the request came from (§2.11)
        if _is_first_fragment(message):
            sa.request_digest = _digest(message.raw)  # what a retransmission must be (above)
    if payloads is None:
        return  # waiting for more fragments
    sa.last_received = now
    conn = sa.conn
    if conn is not None and conn.dpd_delay > 0 and sa.state in sa_timers.UP:
        sa.dpd_at = now + conn.dpd_delay  # as sa_timers.arm_dpd, inline: this runs for every message
    if remote != sa.remote or (not sa.floated and local[1] == sa.host.engine.natt_port) \
            or sa.local[0] in UNSPECIFIED:
        sa._update_remote(local, remote)
    sa.summary_event(False, h.exchange, h.mid, response, payloads, length, now, fragments=nfrag, via=(local, remote))
    sa.received_on = (local, remote)
    if response:
        if h.exchange == ExchangeType.IKE_SA_INIT:
            sa.spi_r = h.spi_r  # the responder's SPI arrives with its answer
            sa.init_response = message.raw  # the responder's AUTH signs it
        take_response(sa, h.exchange, payloads, now)
    else:
        take_request(sa, h.exchange, h.mid, payloads, now)


def take_response(sa: IkeSa, exchange: int, payloads: list, now: float) -> None:
    out = sa.outstanding
    sa.outstanding = None
    if sa.reassembly:
        sa._drop_reassembly(True)
    ex = out.initiator
    if exchange in FATAL_INVALID_SYNTAX and _invalid_syntax(payloads):
        # The peer could not parse our request and has dropped its IKE SA (§2.21.3; charon's
        # process_response destroys it at once for these two exchanges): ours goes too.
        sa.fail(exchange, "INVALID_SYNTAX", "the peer could not parse our request and closed the IKE SA",
                now, sent_by_peer=True)
        sa.destroy(now, "the peer could not parse our request (INVALID_SYNTAX)")
        return
    try:
        ex.response(exchange, payloads, now)
    except RemoteError as exc:
        sa.fail(exchange, notify_name(exc.notify), exc.reason, now, **exc.details)
        ex.failed(now, exc.reason)
    except LocalError as exc:
        if isinstance(exc, IllegalTransition):
            raise
        sa._local_failure(ex, str(exc), now)
    sa.kick(now)


def response_failed(sa: IkeSa, reason: str, now: float) -> None:
    out = sa.outstanding
    sa.outstanding = None
    sa._drop_reassembly(True)
    sa.fail(out.exchange, "INVALID_SYNTAX", reason, now)
    out.initiator.failed(now, reason)
    sa.kick(now)


def take_request(sa: IkeSa, exchange: int, mid: int, payloads: list, now: float) -> None:
    sa.mid_in = mid + 1
    sa.peer_mid = mid
    if sa.reassembly:
        sa._drop_reassembly(False)
    sa.held_request = None
    waiting = sa.responding if sa.responding is not None and not sa.responding.finished else None
    r = waiting if waiting is not None and waiting.accepts(exchange) else None
    try:
        if r is None:
            r = sa.host.exchanges.responder(sa, exchange, payloads)
        answer = r.respond(exchange, payloads, now)
        if answer is None:
            # Not answered yet (the responder waits for an exchange of ours to finish):
            # the peer retransmits, and the request is taken again then.
            sa.mid_in = mid
            sa.held_request = (exchange, mid, payloads)
            sa.host.count("held_requests")
            return
    except RemoteError as exc:
        n = exc.notify if exc.notify is not None else NotifyType.INVALID_SYNTAX
        sa.send_response(exchange, mid, [NotifyPayload(n, data=exc.data)], now)
        sa.fail(exchange, notify_name(n), exc.reason, now, **exc.details)
        if n == NotifyType.INVALID_SYNTAX and exchange in KNOWN_REQUESTS:
            end_after_invalid_syntax(sa, now, "the peer's request was badly formed")
            return
        if exchange == ExchangeType.IKE_INTERMEDIATE:
            # A refused round leaves the key chain broken: the setup cannot go on (charon's
            # ike_init returns FAILED). The answer stays for the peer's retransmissions.
            sa.host.keep_answer(sa, now)
            sa.destroy(now, f"IKE_INTERMEDIATE refused: {exc.reason}")
            return
        sa.kick(now)
        return
    except LocalError as exc:
        if isinstance(exc, IllegalTransition):
            raise
        n = NotifyType.AUTHENTICATION_FAILED if exchange == ExchangeType.IKE_AUTH else NotifyType.NO_PROPOSAL_CHOSEN
        sa.send_response(exchange, mid, [NotifyPayload(n)], now)
        sa.fail(exchange, "LOCAL", f"{exc} (local configuration)", now)
        if sa.state == IkeState.CONNECTING:
            sa.destroy(now, str(exc))
        return
    sa.send_response(exchange, mid, answer, now, r.answer_delay)
    keep_responding(sa, r, now)
    r.responded(now)
    sa.kick(now)


def retake_held(sa: IkeSa, now: float) -> None:
    """Take a held request again as if the peer had just retransmitted it (charon's worker answers
    the moment its fetch ends; the peer's next retransmission may be seconds away)."""
    held = sa.held_request
    if held is None or sa.state == IkeState.DESTROYED or sa.mid_in != held[1]:
        sa.held_request = None
        return
    take_request(sa, held[0], held[1], held[2], now)


KNOWN_REQUESTS = frozenset((ExchangeType.IKE_AUTH, ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL,
                            ExchangeType.IKE_INTERMEDIATE, ExchangeType.IKE_FOLLOWUP_KE))
"""Encrypted requests whose INVALID_SYNTAX answer ends the IKE SA (not IKE_SA_INIT, not an exchange
type we do not know: charon answers that one without ending anything)."""
FATAL_INVALID_SYNTAX = frozenset((ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL,
                                  ExchangeType.IKE_FOLLOWUP_KE))
"""Exchanges whose INVALID_SYNTAX answer ends the IKE SA here (an IKE_AUTH failure ends it anyway).
IKE_FOLLOWUP_KE too: our responder (KNOWN_REQUESTS) and charon's send_invalid_syntax end theirs."""


def _invalid_syntax(payloads: list) -> bool:
    for p in payloads:
        if p.__class__ is NotifyPayload and p.type == NotifyType.INVALID_SYNTAX:
            return True
    return False


def end_after_invalid_syntax(sa: IkeSa, now: float, why: str) -> None:
    """We answered INVALID_SYNTAX to an authenticated request: fatal in both peers (RFC 7296
    §2.21.3; charon's send_invalid_syntax destroys its IKE SA), so the peer drops its half
    without a Delete and keeping ours would leave a black hole until DPD. The answer stays
    a while for a retransmitted request."""
    sa.host.keep_answer(sa, now)
    sa.destroy(now, f"{why} (INVALID_SYNTAX is fatal to the IKE SA)")


def keep_responding(sa: IkeSa, r: Responder, now: float) -> None:
    """Remember the responder that waits for more rounds. A one-round exchange (a DPD) in
    between leaves it waiting; another multi-round one replaces it, and the rounds it gave
    up release what they reserved."""
    old = sa.responding
    if old is not None and old.finished:  # it finished in its ``responded`` after the last round
        old = sa.responding = None
    if r is old:
        if r.finished:
            sa.responding = None
    elif not r.finished:
        if old is not None:
            old.abandon(now)
        sa.responding = r
    if sa.responding is r:
        r.waiting(now)


def _digest(raw: bytes) -> bytes:
    return sha256(raw)


def _is_first_fragment(message: Message) -> bool:
    last = message.payloads[-1] if message.payloads else None
    return not isinstance(last, SkfPayload) or last.fragment_number == 1
