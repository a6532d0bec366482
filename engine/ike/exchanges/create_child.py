"""CREATE_CHILD_SA for a new CHILD SA (RFC 7296 §1.3.1).

Rules (initiator):
- Only on an established IKE SA; a request queued on an IKE SA that was
  rekeyed meanwhile moves to the new one.
- TEMPORARY_FAILURE: try again in a few seconds (the peer is busy rekeying
  or deleting something, §2.25).
- INVALID_KE_PAYLOAD naming a PFS group we offer: once more with that group.
- Anything else without a CHILD SA: NegotiationFailed, nothing installed.
- Additional key exchanges chosen (RFC 9370 §2.2.4, for a new CHILD SA as for
  a rekey): one IKE_FOLLOWUP_KE round each (engine.ike.followup), then the
  CHILD SA is made from all the secrets; a refused round leaves nothing.

Rules (responder):
- While the IKE SA is being rekeyed or deleted: TEMPORARY_FAILURE (§2.25.2).
- Otherwise the first CHILD config whose selectors and proposals fit
  (child_sa.choose); NO_PROPOSAL_CHOSEN / TS_UNACCEPTABLE / INVALID_KE_PAYLOAD
  when none does.
- Additional key exchanges chosen: the answer carries our SPI and the link for
  IKE_FOLLOWUP_KE; the CHILD SA is made after the last round. The SPI is given
  back when the rounds are abandoned (a bad round, another multi-round request,
  the IKE SA gone).
"""

from __future__ import annotations


from engine.events import IkeState
from engine.ike.errors import ChildRefused, RemoteError
from engine.ike.exchanges import child_sa
from engine.ike.exchange import Initiator, Label, Request, Responder, Table, find, notify
from engine.ike.followup import (FollowupInitiator, InitiatesChildRounds, RespondsToChildRounds, child_rounds,
                                 take_child_round)
from engine.ike.init import NONCE_SIZE
from engine.policy.model import ChildConfig
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.payloads import NoncePayload, SaPayload

CREATE_CHILD_SA = ExchangeType.CREATE_CHILD_SA
RETRY = (2.0, 10.0)
"""Seconds before a retry after TEMPORARY_FAILURE (random in this range: two
peers that collided do not collide again)."""


class S(Label):
    IDLE = "idle"
    SENT = "sent"
    FOLLOWUP = "IKE_FOLLOWUP_KE round sent"
    DONE = "done"
    # responder
    DECIDING = "request being answered"
    ROUNDS = "answered; IKE_FOLLOWUP_KE rounds to come"


class I(Label):  # noqa: E742
    START = "start"
    START_STALE = "start on an IKE SA that is not up"
    RESP_OK = "answer with the CHILD SA"
    RESP_ROUNDS = "answer that needs IKE_FOLLOWUP_KE rounds"
    RESP_ROUND = "IKE_FOLLOWUP_KE answer, more rounds to come"
    RESP_TEMP_FAIL = "TEMPORARY_FAILURE"
    RESP_INVALID_KE = "INVALID_KE_PAYLOAD naming a group we offer"
    RESP_REFUSED = "refused or unusable answer"
    ABORT = "abort"
    REQ_IKE_BUSY = "request while the IKE SA is rekeyed or deleted"
    REQ_OK = "request"
    ANSWER_ONLY = "our answer completes the CHILD SA (or refuses it)"
    ROUNDS_FOLLOW = "our answer needs IKE_FOLLOWUP_KE rounds"
    REQ_ROUND = "IKE_FOLLOWUP_KE request"
    REQ_BAD_ROUND = "IKE_FOLLOWUP_KE request that does not fit"
    LAST_ROUND = "the last IKE_FOLLOWUP_KE round"
    ABANDON = "the peer's rounds will not come (another request, the IKE SA gone)"


TABLE = Table("CREATE_CHILD_SA (new CHILD SA)", {
    (S.IDLE, I.START): (S.SENT, "send"),
    (S.IDLE, I.START_STALE): (S.DONE, None),
    (S.IDLE, I.ABORT): (S.DONE, None),
    (S.SENT, I.RESP_OK): (S.DONE, "install"),
    (S.SENT, I.RESP_ROUNDS): (S.FOLLOWUP, "send_round"),
    (S.FOLLOWUP, I.RESP_ROUND): (S.FOLLOWUP, "send_round"),
    (S.FOLLOWUP, I.RESP_OK): (S.DONE, "install"),
    (S.FOLLOWUP, I.RESP_TEMP_FAIL): (S.DONE, "retry_later"),
    (S.FOLLOWUP, I.RESP_REFUSED): (S.DONE, "report"),
    (S.FOLLOWUP, I.ABORT): (S.DONE, "release"),
    (S.SENT, I.RESP_TEMP_FAIL): (S.DONE, "retry_later"),
    (S.SENT, I.RESP_INVALID_KE): (S.SENT, "resend_with_group"),
    (S.SENT, I.RESP_REFUSED): (S.DONE, "report"),
    (S.SENT, I.ABORT): (S.DONE, "release"),
    (S.DONE, I.ABORT): (S.DONE, None),
    # responder
    (S.IDLE, I.REQ_IKE_BUSY): (S.DONE, "temporary_failure"),
    (S.IDLE, I.REQ_OK): (S.DECIDING, "create"),
    (S.DECIDING, I.ANSWER_ONLY): (S.DONE, None),
    (S.DECIDING, I.ROUNDS_FOLLOW): (S.ROUNDS, None),
    (S.ROUNDS, I.REQ_ROUND): (S.ROUNDS, "answer_round"),
    (S.ROUNDS, I.REQ_BAD_ROUND): (S.DONE, "refuse_round"),
    (S.ROUNDS, I.LAST_ROUND): (S.DONE, "make_new"),
    (S.ROUNDS, I.ABANDON): (S.DONE, "release_reserved"),
    (S.DONE, I.ABANDON): (S.DONE, None),
}, remote={I.RESP_OK, I.RESP_TEMP_FAIL, I.RESP_INVALID_KE, I.RESP_REFUSED, I.REQ_IKE_BUSY, I.REQ_OK,
           I.RESP_ROUNDS, I.RESP_ROUND, I.REQ_ROUND, I.REQ_BAD_ROUND},
    final={S.DONE})


class CreateChild(InitiatesChildRounds, Initiator):
    TABLE = TABLE
    INITIAL = S.IDLE
    ABORT = I.ABORT
    name = "CREATE_CHILD_SA"
    affects_children = True

    def __init__(self, sa, cfg: ChildConfig) -> None:
        super().__init__(sa)
        self.cfg = cfg
        self.offer: child_sa.ChildOffer | None = None
        self.to_send: list | None = None
        self.retried_group = False
        self.exchange = CREATE_CHILD_SA
        self.followup: FollowupInitiator | None = None

    def request(self, now: float) -> Request | None:
        if self.state == S.IDLE:
            self.fire(I.START if self.sa.state == IkeState.ESTABLISHED else I.START_STALE, now)
        return self.queued_request()

    def send(self, now: float, group: int | None = None) -> None:
        self.offer = child_sa.ChildOffer(self.sa, self.cfg, with_ke=True, group=group, with_additional=True)
        self.to_send = self.offer.payloads(nonce=True)

    def response(self, exchange: int, payloads: list, now: float) -> None:
        if self.state == S.DONE:
            return  # a round's answer after we gave the rounds up
        if notify(payloads, NotifyType.TEMPORARY_FAILURE) is not None:
            self.fire(I.RESP_TEMP_FAIL, now)
            return
        if self.state == S.FOLLOWUP:
            self.round_answer(payloads, now)
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
            chosen = self.offer.chosen(payloads)
            if chosen is not None and chosen.additional_rounds:
                self.fire(I.RESP_ROUNDS, now, answer=(payloads, nonce.data),
                          followup=child_rounds(chosen.additional_rounds, shared, payloads))
                return
            child = self.offer.accept(self.sa, payloads, self.offer.nonce, nonce.data, shared, now)
        except ChildRefused as exc:
            self.fire(I.RESP_REFUSED, now, refusal=exc)
            return
        self.fire(I.RESP_OK, now, child=child)

    def round_answer(self, payloads: list, now: float) -> None:
        try:
            if not take_child_round(self.followup, payloads, self.cfg.name):
                self.fire(I.RESP_ROUND, now)
                return
            first, nonce_r = self.answer
            child = self.offer.accept(self.sa, first, self.offer.nonce, nonce_r, self.followup.secrets, now)
        except ChildRefused as exc:
            self.fire(I.RESP_REFUSED, now, refusal=exc)
            return
        self.followup = None
        self.fire(I.RESP_OK, now, child=child)

    def install(self, now: float, child) -> None:
        self.sa.install_child(child, now)

    def retry_later(self, now: float) -> None:
        self.release(now)
        self.sa.defer(CreateChild(self.sa, self.cfg), now + self.sa.host.random.uniform(*RETRY))

    def report(self, now: float, refusal: ChildRefused) -> None:
        self.release(now, refusal)
        self.sa.fail(CREATE_CHILD_SA, refusal.notify, refusal.reason, now, sent_by_peer=refusal.by_peer,
                     **refusal.details)

    def release(self, now: float, refusal: ChildRefused | None = None, **_) -> None:
        self.followup = None
        if self.offer is not None:
            self.offer.drop(self.sa, now, refusal)
            self.offer = None

    def creates(self) -> str | None:
        return self.cfg.name if self.state != S.DONE else None


class CreateChildResponder(RespondsToChildRounds, Responder):
    TABLE = TABLE
    INITIAL = S.IDLE
    ROUNDS, REQ_ROUND, REQ_BAD_ROUND, LAST_ROUND = S.ROUNDS, I.REQ_ROUND, I.REQ_BAD_ROUND, I.LAST_ROUND
    ABANDON = I.ABANDON
    name = "CREATE_CHILD_SA"

    def respond(self, exchange: int, payloads: list, now: float) -> list:
        self.answer: list = []
        if self.state == S.ROUNDS:
            return self.answer_followup(payloads, now)
        self.child = None
        busy = self.sa.state != IkeState.ESTABLISHED
        self.fire(I.REQ_IKE_BUSY if busy else I.REQ_OK, now, payloads=payloads)
        return self.answer

    def create(self, now: float, payloads: list) -> I:
        sa = self.sa
        nonce = find(payloads, NoncePayload)
        if nonce is None or find(payloads, SaPayload) is None:
            raise RemoteError(NotifyType.INVALID_SYNTAX, "CREATE_CHILD_SA without SA or Nonce")
        choice = child_sa.choose(sa, sa.conn.children, payloads, ignore_ke=False, with_additional=True)
        shared, ke_reply = child_sa.responder_ke(choice, payloads)
        nonce_r = sa.host.rng(NONCE_SIZE)
        if choice.chosen.additional_rounds:
            self.answer = self.start_rounds(choice, nonce.data, nonce_r, shared, ke_reply, child_sa.ts_reply(choice))
            return I.ROUNDS_FOLLOW
        self.child, answer = child_sa.build(sa, choice, nonce.data, nonce_r, shared, now, None)
        self.answer = answer + [NoncePayload(nonce_r), *ke_reply, *child_sa.ts_reply(choice)]
        return I.ANSWER_ONLY

    def make_new(self, now: float) -> None:
        choice, nonce_i, nonce_r, spi_in = self.pending
        self.child, _ = child_sa.build(self.sa, choice, nonce_i, nonce_r, self.followup.secrets, now, None,
                                       spi_in=spi_in)
        self.followup = self.pending = None

    def responded(self, now: float) -> None:
        if self.child is not None:
            self.sa.install_child(self.child, now)

