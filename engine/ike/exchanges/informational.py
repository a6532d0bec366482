"""INFORMATIONAL (RFC 7296 §1.4, §1.5): deleting CHILD SAs and the IKE SA,
liveness checks (DPD, an empty request), and error notifies.

Rules (initiator):
- DELETE of a CHILD SA: it is DELETING until the answer; a CHILD SA that is
  already gone when the exchange starts is not deleted twice; one we created
  answering the peer waits until the peer shows it has that answer (its next
  request), or the peer would install it after our delete.
- DELETE of the IKE SA: destroyed when the peer answers (or when the
  retransmissions run out: nothing is left to detect).
- DPD: an empty request while the IKE SA is up; no answer after every
  retransmission means the peer is gone (sa.py, dpd_action).

Rules (responder):
- DELETE IKE: answered empty, then the IKE SA goes (the answer is kept a while
  for a retransmitted DELETE: endpoint.keep_answer); a rekey we have in flight
  hears of it first (it may adopt the peer's new IKE SA, ike_rekey.py). Not
  answered yet when that rekey waits for the answer that decides a collision
  (ike_rekey.py: holds_peer_delete).
- DELETE CHILD: answered with our SPIs of those pairs, except pairs we are
  deleting ourselves (§1.4.1: the two requests crossed); SPIs we do not know
  are ignored. A CHILD rekey we have in flight hears of it (child_rekey.py).
  Those that were INSTALLED, and the IKE SA if it was up, get their
  close_action (engine.ike.close_action).
- AUTHENTICATION_FAILED: the peer could not verify us after all; the SA goes.
- INVALID_SYNTAX (§2.21.3): the peer could not parse a message of ours; answered
  empty, then the SA goes, as charon does (ike_delete). Not on a rekeyed SA.
- REDIRECT to us as the original initiator (RFC 5685 §5): answered empty, then we
  start over at that gateway (exchanges.redirect); this SA goes once that one is up.
- Empty: liveness, answered empty. Anything else: answered empty.
"""

from __future__ import annotations

import logging

from engine.events import ChildState, IkeState
from engine.ike import close_action, proposals as props
from engine.ike.child import ChildSa
from engine.ike.exchange import Initiator, Label, Request, Responder, Table, notify
from engine.ike.exchanges import redirect
from engine.ike.host import Ended
from engine.ike.ratelimit import RateLimit
from engine.wire.constants import ExchangeType, NotifyType, ProtocolId
from engine.wire.payloads import DeletePayload, NotifyPayload

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_ESTABLISHED = IkeState.ESTABLISHED
_IKE = ProtocolId.IKE
_REKEYED = IkeState.REKEYED
_REKEYING = IkeState.REKEYING

log = logging.getLogger("engine.ike")
INFORMATIONAL = ExchangeType.INFORMATIONAL
RETRY = (2.0, 10.0)
"""Seconds before a deferred delete is tried again (random in this range)."""
DELETE_LOG_BURST = 10.0
DELETE_LOG_RATE = 0.1
"""Log lines about Deletes we ignore: a burst of ten, then one per ten seconds (endpoint-wide;
what is left out is counted as ``delete_logs_suppressed`` and summed up in the next line)."""


def delete_log_budget() -> RateLimit:
    return RateLimit(rate=DELETE_LOG_RATE, burst=DELETE_LOG_BURST)


class S(Label):
    IDLE = "idle"
    SENT = "sent"
    DONE = "done"


class I(Label):  # noqa: E742 (the table reads best with short names)
    START = "start"
    START_STALE = "start, but there is nothing left to do"
    START_UNCONFIRMED = "start, but the peer may not have our answer that created the CHILD SA yet"
    RESPONSE = "response"
    ABORT = "abort"
    # requests we answer
    REQ_DELETE_IKE = "delete of the IKE SA"
    REQ_DELETE_IKE_WAIT = "delete of the IKE SA while our rekey of it waits for its answer"
    REQ_DELETE_CHILDREN = "delete of CHILD SAs"
    REQ_AUTH_FAILED = "AUTHENTICATION_FAILED notify"
    REQ_INVALID_SYNTAX = "INVALID_SYNTAX notify: the peer could not parse a message of ours"
    REQ_REDIRECT = "REDIRECT notify from our gateway"
    REQ_EMPTY = "empty (liveness)"
    REQ_OTHER = "other notifies"


TABLE = Table("INFORMATIONAL", {
    # initiator: one request, one answer (DELETE CHILD, DELETE IKE, DPD, a notify)
    (S.IDLE, I.START): (S.SENT, "send"),
    (S.IDLE, I.START_STALE): (S.DONE, None),
    (S.IDLE, I.START_UNCONFIRMED): (S.DONE, "retry_soon"),
    (S.IDLE, I.ABORT): (S.DONE, None),
    (S.SENT, I.RESPONSE): (S.DONE, "done"),
    (S.SENT, I.ABORT): (S.DONE, None),
    (S.DONE, I.ABORT): (S.DONE, None),
    # responder
    (S.IDLE, I.REQ_DELETE_IKE): (S.DONE, "answer_delete_ike"),
    (S.IDLE, I.REQ_DELETE_IKE_WAIT): (S.DONE, "hold"),
    (S.IDLE, I.REQ_DELETE_CHILDREN): (S.DONE, "answer_delete_children"),
    (S.IDLE, I.REQ_AUTH_FAILED): (S.DONE, "answer_auth_failed"),
    (S.IDLE, I.REQ_INVALID_SYNTAX): (S.DONE, "answer_invalid_syntax"),
    (S.IDLE, I.REQ_REDIRECT): (S.DONE, "answer_redirect"),
    (S.IDLE, I.REQ_EMPTY): (S.DONE, "answer_empty"),
    (S.IDLE, I.REQ_OTHER): (S.DONE, "answer_empty"),
}, remote={I.RESPONSE, I.REQ_DELETE_IKE, I.REQ_DELETE_IKE_WAIT, I.REQ_DELETE_CHILDREN, I.REQ_AUTH_FAILED, I.REQ_EMPTY,
           I.REQ_OTHER, I.REQ_REDIRECT, I.REQ_INVALID_SYNTAX},
    final={S.DONE})


class _Informational(Initiator):
    TABLE = TABLE
    INITIAL = S.IDLE

    def request(self, now: float) -> Request | None:
        if self.state != S.IDLE:
            return None
        self.now = now
        self.fire(self.start_input(), now)
        return Request(INFORMATIONAL, self.payloads) if self.state == S.SENT else None

    def start_input(self) -> I:
        return I.START

    def send(self, now: float) -> None:
        self.payloads = self.build(now)

    def build(self, now: float) -> list:
        return []

    def response(self, exchange: int, payloads: list, now: float) -> None:
        self.fire(I.RESPONSE, now)

    def done(self, now: float) -> None:
        pass

    def abort(self, now: float) -> None:
        self.fire(I.ABORT, now)

    def migrate(self, sa) -> bool:
        return False


class DeleteChild(_Informational):
    name = "INFORMATIONAL (delete CHILD)"

    def __init__(self, sa, child: ChildSa, reason: str = "terminated") -> None:
        super().__init__(sa)
        self.child = child
        self.reason = reason

    def start_input(self) -> I:
        c, sa = self.child, self.sa
        if c.state in (ChildState.DELETED, ChildState.DELETING) or sa.children.get(c.spi_in) is not c:
            return I.START_STALE
        # Deleting an SA the peer does not know yet would leave it installed there.
        return I.START if sa.confirmed(c, self.now) else I.START_UNCONFIRMED

    def retry_soon(self, now: float) -> None:
        self.sa.defer(DeleteChild(self.sa, self.child, self.reason), now + self.sa.host.random.uniform(*RETRY))

    def build(self, now: float) -> list:
        c = self.child
        c.set_state(ChildState.DELETING)
        c.rekey_at = c.deadline = None
        return [DeletePayload(props.protocol_id(c.protocol), (c.spi_in,))]

    def done(self, now: float) -> None:
        self.sa.remove_child(self.child, now, self.reason)

    def holds_child(self, child: ChildSa) -> bool:
        return child is self.child and self.state == S.SENT

    def migrate(self, sa) -> bool:
        self.sa = sa  # the CHILD SA moved with the IKE SA's rekey
        return True


class DeleteRefused(_Informational):
    """Delete of the peer's half of a CHILD SA whose answer we refused (charon's
    delete_failed_sa): it installed that half when it answered. Our SPI, which the Delete
    names, is given back once the exchange is over."""

    name = "INFORMATIONAL (delete refused CHILD SA)"
    affects_children = True
    """The peer's IKE rekey waits for it (as charon's, whose child_create task runs until then):
    its half must not move to the new IKE SA under a Delete sent on this one."""

    def __init__(self, sa, protocol: int, spi: bytes) -> None:
        super().__init__(sa)
        self.protocol = protocol
        self.spi = spi

    def start_input(self) -> I:
        if self.sa.state == IkeState.ESTABLISHED:
            return I.START
        self._release()
        return I.START_STALE

    def build(self, now: float) -> list:
        return [DeletePayload(self.protocol, (self.spi,))]

    def done(self, now: float) -> None:
        self._release()

    def abort(self, now: float) -> None:
        if self.state != S.DONE:
            self._release()
        super().abort(now)

    def _release(self) -> None:
        self.sa.host.ids.release_spi(self.spi)

    def migrate(self, sa) -> bool:
        self.sa = sa  # the peer's half moved with its IKE SA's rekey
        return True


class DeleteIke(_Informational):
    name = "INFORMATIONAL (delete IKE)"

    def __init__(self, sa, reason: str) -> None:
        super().__init__(sa)
        self.reason = reason

    def build(self, now: float) -> list:
        return [DeletePayload(ProtocolId.IKE, ())]

    def done(self, now: float) -> None:
        self.sa.destroy(now, self.reason)


class Dpd(_Informational):
    """An empty INFORMATIONAL: is the peer still there? (§1.4, liveness)."""

    name = "INFORMATIONAL (DPD)"

    def start_input(self) -> I:
        return I.START if self.sa.state == IkeState.ESTABLISHED else I.START_STALE


class Notify(_Informational):
    """An error notify we send without waiting for anything (the IKE SA goes
    right after, e.g. AUTHENTICATION_FAILED after IKE_AUTH, §2.21.2)."""

    name = "INFORMATIONAL (notify)"

    def __init__(self, sa, notify_type: int) -> None:
        super().__init__(sa)
        self.notify_type = notify_type

    def build(self, now: float) -> list:
        return [NotifyPayload(self.notify_type)]


_CHILD_PROTOCOLS = (int(ProtocolId.AH), int(ProtocolId.ESP))
_LIVE = (ChildState.INSTALLED, ChildState.REKEYING)
_SPI_ZERO = bytes(4)
IGNORED_SHOWN = 4
"""Ignored SPIs named in one log line at most (a Delete may list hundreds)."""


def log_ignored(sa, ignored: list[str], now: float) -> None:
    """One INFO line for the Deletes of one request that named no SA of ours, within the
    endpoint's budget; over it, counted."""
    budget = sa.host.delete_log
    if not budget.allow(now):
        sa.host.count("delete_logs_suppressed")
        return
    shown = "; ".join(ignored[:IGNORED_SHOWN])
    if len(ignored) > IGNORED_SHOWN:
        shown += f"; and {len(ignored) - IGNORED_SHOWN} more"
    if budget.dropped:
        shown += f" ({budget.dropped} similar lines suppressed)"
        budget.dropped = 0
    log.info("%s[%d]: ignored a Delete from the peer: %s", sa.name, sa.unique_id, shown,
             extra={"connection": sa.name})


class InformationalResponder(Responder):
    TABLE = TABLE
    INITIAL = S.IDLE
    name = "INFORMATIONAL"

    def respond(self, exchange: int, payloads: list, now: float) -> list | None:
        self.answer: list | None = []
        self.after: str | None = None
        deletes = [p for p in payloads if isinstance(p, DeletePayload)]
        if any(d.protocol == _IKE for d in deletes):
            active = self.sa.active
            inp = I.REQ_DELETE_IKE_WAIT if active is not None and active.holds_peer_delete() else I.REQ_DELETE_IKE
        elif deletes:
            inp = I.REQ_DELETE_CHILDREN
        elif notify(payloads, NotifyType.AUTHENTICATION_FAILED) is not None:
            inp = I.REQ_AUTH_FAILED
        elif notify(payloads, NotifyType.INVALID_SYNTAX) is not None and self.sa.state != IkeState.REKEYED:
            inp = I.REQ_INVALID_SYNTAX  # charon ignores notifies on a rekeyed IKE SA
        elif self.sa.connection_initiator and notify(payloads, NotifyType.REDIRECT) is not None:
            inp = I.REQ_REDIRECT
        elif not payloads:
            inp = I.REQ_EMPTY
        else:
            inp = I.REQ_OTHER
        self.fire(inp, now, deletes=deletes, payloads=payloads)
        return self.answer

    def responded(self, now: float) -> None:
        if self.after is not None:
            getattr(self, self.after)(now)

    def answer_empty(self, now: float, **_) -> None:
        pass

    def answer_delete_ike(self, now: float, **_) -> None:
        self.after = "_destroy"

    def hold(self, now: float, **_) -> None:
        self.answer = None

    def _destroy(self, now: float) -> None:
        sa = self.sa
        reason = "rekeyed" if sa.state == _REKEYED else "deleted by peer"
        if sa.active is not None:
            sa.active.peer_deleted_ike(now)
        sa.host.keep_answer(sa, now)
        # close_action on an SA that was up (a rekey that adopted the peer's new SA took the children)
        ended = close_action.ike_closed(sa, reason) if sa.state in (_ESTABLISHED, _REKEYING) \
            else None
        sa.destroy(now, reason, ended)

    def answer_delete_children(self, now: float, deletes: list, **_) -> None:
        sa = self.sa
        ours: dict[int, list[bytes]] = {}
        self.removed: list[ChildSa] = []
        self.closed: list[ChildSa] = []
        ignored: list[str] = []
        for d in deletes:
            if d.protocol not in _CHILD_PROTOCOLS:
                ignored.append(f"protocol {d.protocol} names no CHILD SA")  # charon skips it too
                continue
            for spi in d.spis:
                child = sa.child_by_spi_out(spi, d.protocol)
                if child is None:
                    # Unknown or already gone: nothing to delete (§1.4.1).
                    proto = ProtocolId(d.protocol).name
                    ignored.append(f"{proto} SPI 0 names no SA" if spi == _SPI_ZERO else
                                   f"no {proto} CHILD SA of ours has outbound SPI {spi.hex()} (gone already, or "
                                   "never ours)")
                    continue
                if child in self.removed:
                    continue
                if child.state != ChildState.DELETING:
                    ours.setdefault(d.protocol, []).append(child.spi_in)
                if child.state == ChildState.INSTALLED:
                    self.closed.append(child)  # close_action: not a rekey's old SA, nor one we delete
                self.removed.append(child)
        self.answer = [DeletePayload(proto, tuple(spis)) for proto, spis in ours.items()]
        self.after = "_remove_children"
        if ignored:
            log_ignored(sa, ignored, now)

    def _remove_children(self, now: float) -> None:
        sa = self.sa
        for child in self.removed:
            sa.remove_child(child, now, "rekeyed" if child.state == ChildState.REKEYED else "deleted by peer")
            if sa.active is not None:
                sa.active.peer_deleted_child(child, now)
        for child in self.removed:
            self._replacement_deleted(child, now)
        if sa.alive:
            close_action.child_closed(sa, [c for c in self.closed if c.state == ChildState.DELETED], now)

    def _replacement_deleted(self, child: ChildSa, now: float) -> None:
        """The peer deleted the SA its own rekey made (``child``) while the SA that rekey replaced
        still waits here for the peer's Delete of it: the peer closes the CHILD SA, as charon
        reads it (child_delete.c destroy_and_reestablish: "if it deletes its winning SA first,
        we assume it wants to delete the CHILD_SA"; the old SA is never used again). The old SA
        is not put back in use: it stays replaced, gone with the peer's Delete or its deadline."""
        sa = self.sa
        old = sa.children.get(child.rekeyed_from) if child.rekeyed_from is not None else None
        if old is None or old.state != ChildState.REKEYED or old in self.removed or sa.holds_child(old):
            return
        if any(c.rekeyed_from == old.spi_in and c.state in _LIVE for c in sa.children.values()):
            return  # another SA replaced old (a collision's winner): the CHILD SA lives on there
        log.info("%s[%d]: the peer deleted CHILD SA %s{%d}, which replaced SPI %s: the CHILD SA is closed "
                 "(the replaced SA waits for the peer's Delete)", sa.name, sa.unique_id, child.config.name,
                 child.unique_id, old.spi_in.hex(), extra={"connection": sa.name})

    def answer_redirect(self, now: float, payloads: list, **_) -> None:
        self.redirect_payloads = payloads
        self.after = "_follow_redirect"

    def _follow_redirect(self, now: float) -> None:
        sa = self.sa
        gateway, bad = redirect.gateway_of(self.redirect_payloads)
        if gateway is None:
            log.info("%s[%d]: ignored %s", sa.name, sa.unique_id, bad, extra={"connection": sa.name})
            return
        redirect.follow(sa, gateway, INFORMATIONAL, (), now)

    def answer_invalid_syntax(self, now: float, **_) -> None:
        self.after = "_invalid_syntax"

    def _invalid_syntax(self, now: float) -> None:
        # RFC 7296 §2.21.3; charon answers it with its ike_delete task: the IKE SA goes.
        sa = self.sa
        sa.fail(INFORMATIONAL, "INVALID_SYNTAX", "the peer could not parse a message of ours and closes the "
                "IKE SA (INVALID_SYNTAX)", now, sent_by_peer=True)
        if sa.active is not None:
            sa.active.peer_deleted_ike(now)
        sa.host.keep_answer(sa, now)
        sa.destroy(now, "the peer could not parse our message (INVALID_SYNTAX)")

    def answer_auth_failed(self, now: float, **_) -> None:
        self.after = "_auth_failed"

    def _auth_failed(self, now: float) -> None:
        sa = self.sa
        sa.fail(ExchangeType.IKE_AUTH, "AUTHENTICATION_FAILED",
                "the peer could not verify our authentication: check the pre-shared key and IDs on both sides",
                now, sent_by_peer=True)
        sa.destroy(now, "peer rejected our AUTH", Ended("failed", "peer rejected our AUTH"))
