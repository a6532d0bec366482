"""CREATE_CHILD_SA for a new CHILD SA (RFC 7296 §1.3.1).

Rules (initiator):
- Only on an established IKE SA; a request queued on an IKE SA that was
  rekeyed meanwhile moves to the new one.
- TEMPORARY_FAILURE: try again in a few seconds (the peer is busy rekeying
  or deleting something, §2.25).
- INVALID_KE_PAYLOAD naming a PFS group we offer: once more with that group.
- Anything else without a CHILD SA: NegotiationFailed, nothing installed.

Rules (responder):
- While the IKE SA is being rekeyed or deleted: TEMPORARY_FAILURE (§2.25.2).
- Otherwise the first CHILD config whose selectors and proposals fit
  (child_sa.choose); NO_PROPOSAL_CHOSEN / TS_UNACCEPTABLE / INVALID_KE_PAYLOAD
  when none does.
"""

from __future__ import annotations


from engine.events import IkeState
from engine.ike.errors import ChildRefused, RemoteError
from engine.ike.exchanges import child_sa
from engine.ike.exchange import Initiator, Label, Request, Responder, Table, find, notify
from engine.ike.init import NONCE_SIZE
from engine.policy.model import ChildConfig
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.payloads import NoncePayload, NotifyPayload, SaPayload

CREATE_CHILD_SA = ExchangeType.CREATE_CHILD_SA
RETRY = (2.0, 10.0)
"""Seconds before a retry after TEMPORARY_FAILURE (random in this range: two
peers that collided do not collide again)."""


class S(Label):
    IDLE = "idle"
    SENT = "sent"
    DONE = "done"


class I(Label):  # noqa: E742
    START = "start"
    START_STALE = "start on an IKE SA that is not up"
    RESP_OK = "answer with the CHILD SA"
    RESP_TEMP_FAIL = "TEMPORARY_FAILURE"
    RESP_INVALID_KE = "INVALID_KE_PAYLOAD naming a group we offer"
    RESP_REFUSED = "refused or unusable answer"
    ABORT = "abort"
    REQ_IKE_BUSY = "request while the IKE SA is rekeyed or deleted"
    REQ_OK = "request"


TABLE = Table("CREATE_CHILD_SA (new CHILD SA)", {
    (S.IDLE, I.START): (S.SENT, "send"),
    (S.IDLE, I.START_STALE): (S.DONE, None),
    (S.IDLE, I.ABORT): (S.DONE, None),
    (S.SENT, I.RESP_OK): (S.DONE, "install"),
    (S.SENT, I.RESP_TEMP_FAIL): (S.DONE, "retry_later"),
    (S.SENT, I.RESP_INVALID_KE): (S.SENT, "resend_with_group"),
    (S.SENT, I.RESP_REFUSED): (S.DONE, "report"),
    (S.SENT, I.ABORT): (S.DONE, "release"),
    (S.DONE, I.ABORT): (S.DONE, None),
    # responder
    (S.IDLE, I.REQ_IKE_BUSY): (S.DONE, "temporary_failure"),
    (S.IDLE, I.REQ_OK): (S.DONE, "create"),
}, remote={I.RESP_OK, I.RESP_TEMP_FAIL, I.RESP_INVALID_KE, I.RESP_REFUSED, I.REQ_IKE_BUSY, I.REQ_OK},
    final={S.DONE})


class CreateChild(Initiator):
    TABLE = TABLE
    INITIAL = S.IDLE
    name = "CREATE_CHILD_SA"
    affects_children = True

    def __init__(self, sa, cfg: ChildConfig) -> None:
        super().__init__(sa)
        self.cfg = cfg
        self.offer: child_sa.ChildOffer | None = None
        self.to_send: list | None = None
        self.retried_group = False

    def request(self, now: float) -> Request | None:
        if self.state == S.IDLE:
            self.fire(I.START if self.sa.state == IkeState.ESTABLISHED else I.START_STALE, now)
        out, self.to_send = self.to_send, None
        return Request(CREATE_CHILD_SA, out) if out is not None else None

    def send(self, now: float, group: int | None = None) -> None:
        self.offer = child_sa.ChildOffer(self.sa, self.cfg, with_ke=True, group=group)
        self.to_send = self.offer.payloads(nonce=True)

    def response(self, exchange: int, payloads: list, now: float) -> None:
        if notify(payloads, NotifyType.TEMPORARY_FAILURE) is not None:
            self.fire(I.RESP_TEMP_FAIL, now)
            return
        group = self.offer.wanted_group(payloads) if self.offer.ke is not None else None
        if group is not None and not self.retried_group:
            self.retried_group = True
            self.fire(I.RESP_INVALID_KE, now, group=group)
            return
        try:
            shared = self.offer.shared_secret(payloads)
            nonce = find(payloads, NoncePayload)
            if nonce is None:
                raise self.offer.refused(payloads)
            child = self.offer.accept(self.sa, payloads, self.offer.nonce, nonce.data, shared, now)
        except ChildRefused as exc:
            self.fire(I.RESP_REFUSED, now, refusal=exc)
            return
        self.fire(I.RESP_OK, now, child=child)

    def install(self, now: float, child) -> None:
        self.sa.install_child(child, now)

    def retry_later(self, now: float) -> None:
        self.release(now)
        self.sa.defer(CreateChild(self.sa, self.cfg), now + self.sa.host.random.uniform(*RETRY))

    def resend_with_group(self, now: float, group: int) -> None:
        self.release(now)
        self.send(now, group)

    def report(self, now: float, refusal: ChildRefused) -> None:
        self.release(now)
        self.sa.fail(CREATE_CHILD_SA, refusal.notify, refusal.reason, now, sent_by_peer=True, **refusal.details)

    def release(self, now: float, **_) -> None:
        if self.offer is not None:
            self.offer.release(self.sa)
            self.offer = None

    def abort(self, now: float) -> None:
        self.fire(I.ABORT, now)

    def creates(self) -> str | None:
        return self.cfg.name if self.state != S.DONE else None


class CreateChildResponder(Responder):
    TABLE = TABLE
    INITIAL = S.IDLE
    name = "CREATE_CHILD_SA"

    def respond(self, exchange: int, payloads: list, now: float) -> list:
        self.answer: list = []
        self.child = None
        busy = self.sa.state != IkeState.ESTABLISHED
        self.fire(I.REQ_IKE_BUSY if busy else I.REQ_OK, now, payloads=payloads)
        return self.answer

    def temporary_failure(self, now: float, **_) -> None:
        self.answer = [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]

    def create(self, now: float, payloads: list) -> None:
        sa = self.sa
        nonce = find(payloads, NoncePayload)
        if nonce is None or find(payloads, SaPayload) is None:
            raise RemoteError(NotifyType.INVALID_SYNTAX, "CREATE_CHILD_SA without SA or Nonce")
        choice = child_sa.choose(sa, sa.conn.children, payloads, ignore_ke=False)
        shared, ke_reply = child_sa.responder_ke(choice, payloads)
        nonce_r = sa.host.rng(NONCE_SIZE)
        self.child, answer = child_sa.build(sa, choice, nonce.data, nonce_r, shared, now, None)
        self.answer = answer + [NoncePayload(nonce_r), *ke_reply, *child_sa.ts_reply(choice)]

    def responded(self, now: float) -> None:
        if self.child is not None:
            self.sa.install_child(self.child, now)
