"""CREATE_CHILD_SA rekeying the IKE SA (RFC 7296 §1.3.2, §2.18), collisions
(§2.8.2) and the lost or late messages around them.

The rekey creates a new IKE SA; its CHILD SAs, and the exchanges we had not
started, move there. "old" is the IKE SA being rekeyed, "ours" the new IKE SA
our exchange creates, "theirs" the one we created answering the peer's rekey
of old while ours was in flight (registered but deaf until the collision is
decided: the peer's requests on it are retransmitted until then).

Rules (initiator):
- Without a collision: ours takes the CHILD SAs; we delete old.
- Collision: the exchange holding the lowest of the four nonces created the
  redundant IKE SA. If that is ours, ours is deleted, theirs takes the CHILD
  SAs and old waits for the peer's delete; otherwise ours takes them, we
  delete old and theirs waits for the peer's delete.
- Our rekey fails (TEMPORARY_FAILURE, a refusal) or the peer deletes old
  while we wait, but we answered its rekey: theirs takes the CHILD SAs (the
  peer finished before our request reached it, and deletes old).
- The peer deletes old and we had no collision: the rekey is forgotten
  (§2.25.2) and old goes with its CHILD SAs.
- We start deleting old while our rekey is in flight: when the answer comes,
  the new IKE SA(s) the peer now holds are deleted too.
- The peer deletes old after we answered its rekey, while ours waits for its
  answer: that DELETE is left unanswered until our answer comes (the peer
  retransmits it, and answers our retransmissions meanwhile). The peer may
  have answered ours with an IKE SA it keeps for us to delete (it won); had
  we taken the DELETE first, old and its keys would be gone before that
  answer, and the peer would keep that SA until its own timeout (charon:
  30 s, then a DELETE we cannot read, retransmitted for its whole budget).
  At most HELD_DELETES times: a peer that does not answer us meanwhile gets
  its answer, and theirs takes the CHILD SAs as before.
- Additional key exchanges chosen (RFC 9370): one IKE_FOLLOWUP_KE round each
  (engine.ike.followup) before the new IKE SA is made from all the secrets;
  meanwhile the peer's rekeys get TEMPORARY_FAILURE. An answer that needs
  rounds while we are deleting old or after a collision is abandoned.
- TEMPORARY_FAILURE: try again in a few seconds; INVALID_KE_PAYLOAD naming a
  group we offer: once more with it; other refusals: try again later.
- An IKE SA waiting for the peer's delete (old after a rekey we answered,
  theirs when it lost) is dropped after twice the retransmission budget
  (sa.py): the peer may never learn of it when old was deleted before our
  answer reached it (the gap §2.8.2 leaves); charon drops it the same way.

Rules (responder):
- While we delete old, or it was already rekeyed: TEMPORARY_FAILURE.
- While a CHILD SA is being created, rekeyed or deleted (by us, or by the
  peer's exchanges we still wait on): TEMPORARY_FAILURE (§2.25.2).
- While we rekey old ourselves: answered, and theirs waits for our answer.
- Otherwise answered: the new IKE SA takes the CHILD SAs at once; old waits
  for the peer's delete. With additional key exchanges the answer carries the
  link for IKE_FOLLOWUP_KE and the new IKE SA is made after the last round
  (a rekey colliding with ours that needs them: TEMPORARY_FAILURE).
"""

from __future__ import annotations

import dataclasses
import logging

from engine.crypto.errors import InvalidKeyExchange
from engine.crypto.ke import new_key_exchange, respond
from engine.events import ChildState, IkeState
from engine.ike import proposals as props
from engine.ike.errors import RemoteError
from engine.ike.exchange import Initiator, Label, Request, Responder, Table, error_notifies, find, notify
from engine.ike import intermediate
from engine.ike.exchanges.create_child import RETRY
from engine.ike.followup import FollowupInitiator, FollowupResponder, InitiatesRounds, RespondsToRounds
from engine.ike.init import NONCE_SIZE, install_ike_keys
from engine.ike.proposals import Chosen
from engine.ike.sa import IkeSa
from engine.ike.status import ike_quantum_safe
from engine.ike.text import notify_name
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.payloads import KePayload, NoncePayload, NotifyPayload, SaPayload

log = logging.getLogger("engine.ike")
CREATE_CHILD_SA = ExchangeType.CREATE_CHILD_SA
REFUSED_RETRY = 60.0
HELD_DELETES = 3
"""How many times the peer's DELETE of old waits for our colliding rekey's answer."""


class S(Label):
    IDLE = "idle"
    SENT = "request sent"
    SENT_COLLIDED = "request sent; we answered the peer's rekey"
    SENT_CLOSING = "request sent; we are deleting the old IKE SA"
    SENT_COLLIDED_CLOSING = "request sent; collision; we are deleting the old IKE SA"
    FOLLOWUP = "IKE_FOLLOWUP_KE round sent"
    DECIDING = "request being answered"
    ROUNDS = "answered; IKE_FOLLOWUP_KE rounds to come"
    RESOLVING = "our IKE SA made, collision to decide"
    DONE = "done"
    ANSWERED = "answered"


class I(Label):  # noqa: E742
    START = "start"
    START_STALE = "start on an IKE SA that is not ESTABLISHED"
    RESP_OK = "answer with the new IKE SA"
    RESP_ROUNDS = "answer that needs IKE_FOLLOWUP_KE rounds"
    RESP_ROUND = "IKE_FOLLOWUP_KE answer, more rounds to come"
    RESP_TEMP_FAIL = "TEMPORARY_FAILURE"
    RESP_INVALID_KE = "INVALID_KE_PAYLOAD naming a group we offer"
    RESP_REFUSED = "refused or unusable answer"
    PEER_REKEYED = "we answered the peer's rekey"
    PEER_DELETED_IKE = "the peer deleted the old IKE SA"
    CLOSE = "we start deleting the old IKE SA"
    WON = "the lowest nonce is in the peer's exchange"
    LOST = "the lowest nonce is in our exchange"
    ABORT = "abort"
    REQ_CLOSING = "request while the IKE SA is deleted or already rekeyed"
    REQ_BUSY = "request while CHILD SAs or our own rekey are in flux"
    REQ_OK = "request"
    REQ_COLLISION = "request while we rekey the IKE SA"
    ANSWER_ONLY = "our answer completes the rekey (or refuses it)"
    ROUNDS_FOLLOW = "our answer needs IKE_FOLLOWUP_KE rounds"
    ABANDON = "the peer's rounds will not come (another request, the IKE SA gone)"
    REQ_ROUND = "IKE_FOLLOWUP_KE request"
    REQ_BAD_ROUND = "IKE_FOLLOWUP_KE request that does not fit"
    LAST_ROUND = "the last IKE_FOLLOWUP_KE round"


_FAILED = (I.RESP_TEMP_FAIL, I.RESP_REFUSED, I.RESP_INVALID_KE)

TABLE = Table("CREATE_CHILD_SA (IKE rekey)", {
    (S.IDLE, I.START): (S.SENT, "send"),
    (S.IDLE, I.START_STALE): (S.DONE, None),
    (S.IDLE, I.ABORT): (S.DONE, None),
    # no collision
    (S.SENT, I.RESP_OK): (S.DONE, "replace_old"),
    (S.SENT, I.RESP_ROUNDS): (S.FOLLOWUP, "send_round"),
    (S.FOLLOWUP, I.RESP_ROUND): (S.FOLLOWUP, "send_round"),
    (S.FOLLOWUP, I.RESP_OK): (S.DONE, "replace_old"),
    (S.FOLLOWUP, I.RESP_TEMP_FAIL): (S.DONE, "retry_soon"),
    (S.FOLLOWUP, I.RESP_REFUSED): (S.DONE, "retry_later"),
    (S.FOLLOWUP, I.PEER_DELETED_IKE): (S.DONE, "release"),
    (S.FOLLOWUP, I.ABORT): (S.DONE, "release"),
    (S.SENT_COLLIDED, I.RESP_ROUNDS): (S.DONE, "adopt_theirs"),
    (S.SENT_CLOSING, I.RESP_ROUNDS): (S.DONE, "release"),
    (S.SENT_COLLIDED_CLOSING, I.RESP_ROUNDS): (S.DONE, "close_theirs"),
    (S.SENT, I.RESP_TEMP_FAIL): (S.DONE, "retry_soon"),
    (S.SENT, I.RESP_INVALID_KE): (S.SENT, "resend_with_group"),
    (S.SENT, I.RESP_REFUSED): (S.DONE, "retry_later"),
    (S.SENT, I.PEER_REKEYED): (S.SENT_COLLIDED, "keep_theirs"),
    (S.SENT, I.PEER_DELETED_IKE): (S.DONE, "release"),
    (S.SENT, I.CLOSE): (S.SENT_CLOSING, None),
    (S.SENT, I.ABORT): (S.DONE, "release"),
    # collision (§2.8.2)
    (S.SENT_COLLIDED, I.RESP_OK): (S.RESOLVING, "make_ours"),
    (S.RESOLVING, I.WON): (S.DONE, "won"),
    (S.RESOLVING, I.LOST): (S.DONE, "lost"),
    **{(S.SENT_COLLIDED, f): (S.DONE, "adopt_theirs") for f in _FAILED},
    (S.SENT_COLLIDED, I.PEER_DELETED_IKE): (S.DONE, "adopt_theirs"),
    (S.SENT_COLLIDED, I.CLOSE): (S.SENT_COLLIDED_CLOSING, None),
    (S.SENT_COLLIDED, I.ABORT): (S.DONE, "release"),
    # deleting old meanwhile: whatever the peer now holds goes too
    (S.SENT_CLOSING, I.RESP_OK): (S.DONE, "close_ours"),
    **{(S.SENT_CLOSING, f): (S.DONE, "release") for f in _FAILED},
    (S.SENT_CLOSING, I.PEER_DELETED_IKE): (S.DONE, "release"),
    (S.SENT_CLOSING, I.ABORT): (S.DONE, "release"),
    (S.SENT_COLLIDED_CLOSING, I.RESP_OK): (S.DONE, "close_both"),
    **{(S.SENT_COLLIDED_CLOSING, f): (S.DONE, "close_theirs") for f in _FAILED},
    (S.SENT_COLLIDED_CLOSING, I.PEER_DELETED_IKE): (S.DONE, "close_theirs"),
    (S.SENT_COLLIDED_CLOSING, I.ABORT): (S.DONE, "release"),
    (S.DONE, I.ABORT): (S.DONE, None),
    # responder
    (S.IDLE, I.REQ_CLOSING): (S.ANSWERED, "temporary_failure"),
    (S.IDLE, I.REQ_BUSY): (S.ANSWERED, "temporary_failure"),
    (S.IDLE, I.REQ_OK): (S.DECIDING, "rekey"),
    (S.IDLE, I.REQ_COLLISION): (S.DECIDING, "rekey"),
    (S.DECIDING, I.ANSWER_ONLY): (S.ANSWERED, None),
    (S.DECIDING, I.ROUNDS_FOLLOW): (S.ROUNDS, None),
    (S.ROUNDS, I.REQ_ROUND): (S.ROUNDS, "answer_round"),
    (S.ROUNDS, I.REQ_BAD_ROUND): (S.ANSWERED, "refuse_round"),
    (S.ROUNDS, I.LAST_ROUND): (S.ANSWERED, "make_new"),
    (S.ROUNDS, I.ABANDON): (S.ANSWERED, "release_reserved"),
}, remote={I.RESP_OK, I.RESP_TEMP_FAIL, I.RESP_INVALID_KE, I.RESP_REFUSED, I.PEER_REKEYED, I.PEER_DELETED_IKE,
           I.REQ_CLOSING, I.REQ_BUSY, I.REQ_OK, I.REQ_COLLISION, I.RESP_ROUNDS, I.RESP_ROUND, I.REQ_ROUND,
           I.REQ_BAD_ROUND},
    final={S.DONE, S.ANSWERED})


def make_rekeyed_sa(old: IkeSa, *, initiator: bool, spi_i: bytes, spi_r: bytes, chosen: Chosen,
                    nonce_i: bytes, nonce_r: bytes, shared: bytes | list[bytes], now: float) -> IkeSa:
    """The new IKE SA, registered but not yet established. The initiator of the
    rekey becomes its original initiator (§2.18, the header role), but who set the
    connection up stays (charon's inherit_pre keeps COND_ORIGINAL_INITIATOR); SKEYSEED = prf(SK_d (old),
    g^ir (new) | Ni | Nr), with the IKE_FOLLOWUP_KE secrets after the nonces
    when ``shared`` lists several (RFC 9370 §2.2.4)."""
    host = old.host
    new = IkeSa(host, old.conn, initiator=initiator, unique_id=host.ids.next_ike_id(), local=old.local,
                remote=old.remote, spi_i=spi_i, spi_r=spi_r, now=now)
    new.connection_initiator = old.connection_initiator
    new.chosen = chosen.with_spi(b"")
    new.nonce_i, new.nonce_r = nonce_i, nonce_r
    secrets = [shared] if isinstance(shared, bytes) else shared
    install_ike_keys(new, secrets[0], old_sk_d=old.keys.sk_d.reveal(), old_prf=old.chosen.prf,
                     additional=b"".join(secrets[1:]))
    if len(secrets) > 1:
        intermediate.record_followup(new)
    # The gateway's view of our NAT mapping is hashed with the old SPIs (RFC 4555 §3.8): it starts anew.
    new.nat = dataclasses.replace(old.nat, mapped=None)
    new.floated = old.floated
    new.peer_fragmentation = old.peer_fragmentation
    new.peer_is_ours = old.peer_is_ours
    new.peer_hash_algorithms = old.peer_hash_algorithms
    new.local_id, new.remote_id = old.local_id, old.remote_id
    new.eap_identity = old.eap_identity  # before adopt: part of its identity key (registry.identity_of)
    new.candidates = old.candidates
    new.quantum_parent = ike_quantum_safe(old)
    new.last_received = now
    host.adopt(new)
    return new


def establish(new: IkeSa, now: float) -> None:
    new.pending = False
    new.set_state(IkeState.ESTABLISHED, "rekeyed")
    new.established_at = now
    new.schedule_lifetimes(now)


def wait_for_peer_delete(sa: IkeSa, now: float) -> None:
    """``sa`` was replaced; the peer deletes it. Twice the retransmission budget
    covers the peer retrying its rekey and then its delete."""
    sa.pending = False
    if sa.state != IkeState.REKEYED:
        sa.set_state(IkeState.REKEYED)
    sa.rekey_at = sa.dpd_at = sa.keepalive_at = sa.expire_at = None
    sa.deadline = now + 2 * sa.retransmit_budget()
    sa.host.changed(sa)


def lowest_nonce_is_ours(ours: IkeSa, theirs: IkeSa) -> bool:
    return min(ours.nonce_i, ours.nonce_r) < min(theirs.nonce_i, theirs.nonce_r)


class IkeRekey(InitiatesRounds, Initiator):
    TABLE = TABLE
    INITIAL = S.IDLE
    ABORT = I.ABORT
    name = "CREATE_CHILD_SA (IKE rekey)"

    def __init__(self, sa: IkeSa, group: int | None = None) -> None:
        super().__init__(sa)
        self.group = group
        self.spi: bytes | None = None
        self.ours: IkeSa | None = None
        self.theirs: IkeSa | None = None
        self.to_send: list | None = None
        self.exchange = CREATE_CHILD_SA
        self.retried_group = False
        self.followup: FollowupInitiator | None = None
        self.held_deletes = 0

    def request(self, now: float) -> Request | None:
        if self.state == S.IDLE:
            self.fire(I.START if self.sa.state == IkeState.ESTABLISHED else I.START_STALE, now)
        return self.queued_request()

    def send(self, now: float) -> None:
        sa = self.sa
        if sa.state == IkeState.ESTABLISHED:
            sa.set_state(IkeState.REKEYING)
        if self.spi is None:
            self.spi = sa.host.ids.new_ike_spi(rekeyed=sa)  # see sa_timers.hurry
        group = self.group or sa.chosen.ke
        self.ke = new_key_exchange(group)
        self.nonce = sa.host.rng(NONCE_SIZE)
        self.offered = props.to_wire(sa.conn.proposals, self.spi, first_ke=group)
        self.to_send = [SaPayload(self.offered), NoncePayload(self.nonce), KePayload(group, self.ke.public_bytes())]

    def response(self, exchange: int, payloads: list, now: float) -> None:
        if notify(payloads, NotifyType.TEMPORARY_FAILURE) is not None:
            self.fire(I.RESP_TEMP_FAIL, now)
            return
        if self.state == S.FOLLOWUP:
            self.round_answer(payloads, now)
            return
        bad_ke = notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if bad_ke is not None and len(bad_ke.data) >= 2 and not self.retried_group:
            group = int.from_bytes(bad_ke.data[:2], "big")
            if group != self.ke.group and props.offers_ke_group(self.sa.conn.proposals, group):
                self.retried_group = True
                self.fire(I.RESP_INVALID_KE, now, group=group)
                return
        errors = error_notifies(payloads)
        if errors:
            self.fire(I.RESP_REFUSED, now, reason=f"the peer refused to rekey the IKE SA with "
                      f"{notify_name(errors[0].type)}", notify_type=notify_name(errors[0].type))
            return
        sa_p = find(payloads, SaPayload)
        ke = find(payloads, KePayload)
        nonce = find(payloads, NoncePayload)
        chosen = props.accept_response(sa_p.proposals[0], self.offered) \
            if sa_p is not None and len(sa_p.proposals) == 1 else None
        if ke is None or nonce is None or chosen is None or len(chosen.spi) != 8 or chosen.spi == b"\0" * 8 \
                or ke.group != self.ke.group or not 16 <= len(nonce.data) <= 256:
            self.fire(I.RESP_REFUSED, now, reason="the peer's IKE rekey answer does not match our offer",
                      notify_type="INVALID_SYNTAX")
            return
        try:
            shared = self.ke.compute_shared(ke.data)
        except InvalidKeyExchange as exc:
            self.fire(I.RESP_REFUSED, now, reason=f"invalid KE in the IKE rekey answer: {exc}",
                      notify_type="INVALID_KE_PAYLOAD")
            return
        if chosen.additional_rounds:
            try:
                followup = FollowupInitiator(chosen.additional_rounds, shared, payloads)
            except RemoteError as exc:
                self.fire(I.RESP_REFUSED, now, reason=exc.reason, notify_type="INVALID_SYNTAX")
                return
            self.fire(I.RESP_ROUNDS, now, answer=dict(chosen=chosen, nonce_r=nonce.data), followup=followup)
            return
        self.fire(I.RESP_OK, now, chosen=chosen, nonce_r=nonce.data, shared=shared)

    def round_answer(self, payloads: list, now: float) -> None:
        errors = error_notifies(payloads)
        if errors:
            n = notify_name(errors[0].type)
            self.fire(I.RESP_REFUSED, now, reason=f"the peer refused IKE_FOLLOWUP_KE with {n}", notify_type=n)
            return
        try:
            self.followup.response(payloads)
        except RemoteError as exc:
            self.fire(I.RESP_REFUSED, now, reason=exc.reason, notify_type="INVALID_SYNTAX")
            return
        if self.followup.done:
            self.fire(I.RESP_OK, now, **self.answer, shared=self.followup.secrets)
        else:
            self.fire(I.RESP_ROUND, now)

    def failed(self, now: float, reason: str) -> None:
        self.maybe(I.RESP_REFUSED, now, reason=reason, notify_type="INVALID_SYNTAX")

    def survives_delete(self) -> bool:
        return self.maybe(I.CLOSE, 0.0)

    def migrate(self, sa) -> bool:
        return False  # a rekey of the old IKE SA means nothing on the new one

    # ------------------------------------------------------------ peer events
    def peer_rekeyed_ike(self, new: IkeSa, now: float) -> bool:
        return self.maybe(I.PEER_REKEYED, now, theirs=new)

    def peer_deleted_ike(self, now: float) -> None:
        self.maybe(I.PEER_DELETED_IKE, now)

    def accepts_collision(self) -> bool:
        return self.state == S.SENT

    def holds_peer_delete(self) -> bool:
        if self.state != S.SENT_COLLIDED or self.held_deletes >= HELD_DELETES:
            return False
        self.held_deletes += 1
        return True

    # ------------------------------------------------------------ actions
    def _make_ours(self, now: float, chosen: Chosen, nonce_r: bytes, shared: bytes) -> IkeSa:
        sa = self.sa
        ours = make_rekeyed_sa(sa, initiator=True, spi_i=self.spi, spi_r=chosen.spi, chosen=chosen,
                               nonce_i=self.nonce, nonce_r=nonce_r, shared=shared, now=now)
        self.spi = None  # registered now
        self.ours = ours
        return ours

    def replace_old(self, now: float, **answer) -> None:
        sa = self.sa
        ours = self._make_ours(now, **answer)
        establish(ours, now)
        sa.set_state(IkeState.REKEYED)
        sa.hand_over(ours, now)
        sa.delete(now, "rekeyed")

    def keep_theirs(self, now: float, theirs: IkeSa) -> None:
        self.theirs = theirs

    def _theirs(self) -> IkeSa | None:
        """Theirs, unless something (a shutdown) destroyed it meanwhile."""
        theirs = self.theirs
        return theirs if theirs is not None and theirs.alive else None

    def make_ours(self, now: float, **answer) -> I:
        ours, theirs = self._make_ours(now, **answer), self._theirs()
        return I.LOST if theirs is not None and lowest_nonce_is_ours(ours, theirs) else I.WON

    def won(self, now: float) -> None:
        sa, ours, theirs = self.sa, self.ours, self._theirs()
        if theirs is not None:
            log.info("%s[%d]: IKE rekey collision won, waiting for the peer to delete its IKE SA [%d]",
                     sa.name, sa.unique_id, theirs.unique_id, extra={"connection": sa.name})
            wait_for_peer_delete(theirs, now)
        establish(ours, now)
        sa.set_state(IkeState.REKEYED)
        sa.hand_over(ours, now)
        sa.delete(now, "rekeyed")

    def lost(self, now: float) -> None:
        sa, ours, theirs = self.sa, self.ours, self.theirs
        log.info("%s[%d]: IKE rekey collision lost, deleting the redundant IKE SA [%d]",
                 sa.name, sa.unique_id, ours.unique_id, extra={"connection": sa.name})
        establish(theirs, now)
        establish(ours, now)
        ours.delete(now, "rekey collision (redundant IKE SA)")
        sa.hand_over(theirs, now)
        wait_for_peer_delete(sa, now)

    def adopt_theirs(self, now: float, **_) -> None:
        """Our rekey failed but the peer's succeeded (it did not see the collision)."""
        sa, theirs = self.sa, self._theirs()
        self.release(now, keep_theirs=True)
        if theirs is None:
            self._restore()
            return
        establish(theirs, now)
        sa.hand_over(theirs, now)
        if sa.state == IkeState.REKEYING:
            wait_for_peer_delete(sa, now)

    def retry_soon(self, now: float) -> None:
        self.release(now)
        self._restore()
        self.sa.defer(IkeRekey(self.sa), now + self.sa.host.random.uniform(*RETRY))

    def retry_later(self, now: float, reason: str, notify_type: str) -> None:
        self.release(now)
        sa = self.sa
        sa.fail(CREATE_CHILD_SA, notify_type, reason, now, sent_by_peer=True,
                local_proposals=props.describe_offer_short(self.offered))
        self._restore()
        sa.rekey_at = now + REFUSED_RETRY
        sa.host.changed(sa)

    def resend_with_group(self, now: float, group: int) -> None:
        self.group = group
        self.send(now)

    def _restore(self) -> None:
        if self.sa.state == IkeState.REKEYING:
            self.sa.set_state(IkeState.ESTABLISHED)

    def close_ours(self, now: float, **answer) -> None:
        # The CHILD SAs stay with old and go with its delete (queued behind us).
        ours = self._make_ours(now, **answer)
        establish(ours, now)
        ours.delete(now, self.sa.delete_reason or "terminated")

    def close_both(self, now: float, **answer) -> None:
        self.close_ours(now, **answer)
        self.close_theirs(now)

    def close_theirs(self, now: float, **_) -> None:
        theirs = self._theirs()
        self.release(now, keep_theirs=True)
        if theirs is None:
            return
        establish(theirs, now)
        theirs.delete(now, self.sa.delete_reason or "terminated")

    def release(self, now: float, keep_theirs: bool = False, **_) -> None:
        self.followup = None
        if self.spi is not None:
            self.sa.host.ids.release_ike_spi(self.spi)
            self.spi = None
        theirs, self.theirs = self.theirs, None
        if theirs is not None and not keep_theirs and theirs.pending:
            theirs.destroy(now, "the IKE rekey it came from was abandoned")


class IkeRekeyResponder(RespondsToRounds, Responder):
    TABLE = TABLE
    INITIAL = S.IDLE
    ROUNDS, REQ_ROUND, REQ_BAD_ROUND, LAST_ROUND = S.ROUNDS, I.REQ_ROUND, I.REQ_BAD_ROUND, I.LAST_ROUND
    ABANDON = I.ABANDON
    pending_new: dict | None = None
    name = "CREATE_CHILD_SA (IKE rekey)"

    def respond(self, exchange: int, payloads: list, now: float) -> list:
        sa = self.sa
        self.answer: list = []
        if self.state == S.ROUNDS:
            return self.answer_followup(payloads, now)
        self.new: IkeSa | None = None
        active = sa.active
        if sa.state in (IkeState.DELETING, IkeState.REKEYED) or sa.pending:
            inp = I.REQ_CLOSING
        elif isinstance(active, IkeRekey) and active.accepts_collision():
            inp = I.REQ_COLLISION
        elif sa.state != IkeState.ESTABLISHED or _children_in_flux(sa):
            inp = I.REQ_BUSY
        else:
            inp = I.REQ_OK
        self.collision = inp == I.REQ_COLLISION
        self.fire(inp, now, payloads=payloads)
        return self.answer

    def release_reserved(self, now: float) -> None:
        """No new IKE SA after all: the IKE SPI our answer named is free again."""
        if self.pending_new is not None:
            self.sa.host.ids.release_ike_spi(self.pending_new["spi_r"])
        self.followup = self.pending_new = None

    def make_new(self, now: float) -> None:
        sa, p = self.sa, self.pending_new
        self.new = make_rekeyed_sa(sa, initiator=False, spi_i=p["chosen"].spi, spi_r=p["spi_r"], chosen=p["chosen"],
                                   nonce_i=p["nonce_i"], nonce_r=p["nonce_r"], shared=self.followup.secrets, now=now)
        self.new.pending = True
        self.followup = self.pending_new = None

    def rekey(self, now: float, payloads: list) -> I:
        sa = self.sa
        sa_p = find(payloads, SaPayload)
        nonce = find(payloads, NoncePayload)
        if sa_p is None or nonce is None or not 16 <= len(nonce.data) <= 256:
            raise RemoteError(NotifyType.INVALID_SYNTAX, "IKE rekey without SA or Nonce")
        chosen = props.select(sa_p.proposals, sa.conn.proposals)
        if chosen is None:
            offered = props.describe_offer_short(sa_p.proposals)
            raise RemoteError(NotifyType.NO_PROPOSAL_CHOSEN, "none of the peer's IKE rekey proposals is "
                              f"acceptable: it offered {'; '.join(offered)}",
                              details=dict(remote_proposals=offered,
                                           local_proposals=props.describe_configured(sa.conn.proposals)))
        ke = find(payloads, KePayload)
        if ke is None or ke.group != chosen.ke:
            raise RemoteError(NotifyType.INVALID_KE_PAYLOAD, "the peer's IKE rekey KE is not for the chosen group",
                              data=(chosen.ke or 0).to_bytes(2, "big"))
        if len(chosen.spi) != 8 or chosen.spi == b"\0" * 8:
            raise RemoteError(NotifyType.INVALID_SYNTAX, "IKE rekey proposal without a valid 8-byte SPI")
        try:
            reply, shared = respond(chosen.ke, ke.data)
        except InvalidKeyExchange as exc:
            # charon's ike_init.c (ke_failed): NO_PROPOSAL_CHOSEN, the IKE SA stays.
            raise RemoteError(NotifyType.NO_PROPOSAL_CHOSEN, f"invalid KE in IKE rekey: {exc}") from None
        if chosen.additional_rounds and self.collision:
            # Our own rekey is in flight: no IKE_FOLLOWUP_KE rounds interleaved with it.
            self.answer = [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
            return I.ANSWER_ONLY
        spi_r = sa.host.ids.new_ike_spi()
        nonce_r = sa.host.rng(NONCE_SIZE)
        if chosen.additional_rounds:
            self.followup = FollowupResponder(chosen.additional_rounds, shared, sa.host.rng)
            self.pending_new = dict(chosen=chosen, spi_r=spi_r, nonce_i=nonce.data, nonce_r=nonce_r)
            self.answer = [SaPayload((chosen.with_spi(spi_r).to_wire(),)), NoncePayload(nonce_r),
                           KePayload(chosen.ke, reply), self.followup.link_notify()]
            return I.ROUNDS_FOLLOW
        self.new = make_rekeyed_sa(sa, initiator=False, spi_i=chosen.spi, spi_r=spi_r, chosen=chosen,
                                   nonce_i=nonce.data, nonce_r=nonce_r, shared=shared, now=now)
        self.new.pending = True  # until responded: a collision keeps it so
        self.answer = [SaPayload((chosen.with_spi(spi_r).to_wire(),)), NoncePayload(nonce_r),
                       KePayload(chosen.ke, reply)]
        return I.ANSWER_ONLY

    def responded(self, now: float) -> None:
        sa, new = self.sa, self.new
        if new is None:
            return
        if self.collision:
            if sa.active is not None and sa.active.peer_rekeyed_ike(new, now):
                return  # our own rekey decides when its answer comes
            new.destroy(now, "collision with a rekey that is gone")
            return
        establish(new, now)
        sa.set_state(IkeState.REKEYED)
        sa.hand_over(new, now)
        wait_for_peer_delete(sa, now)


def _children_in_flux(sa: IkeSa) -> bool:
    active = sa.active
    if active is not None and active.affects_children and not active.finished:
        return True
    return any(c.state in (ChildState.REKEYING, ChildState.DELETING) for c in sa.children.values())
