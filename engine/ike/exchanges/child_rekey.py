"""CREATE_CHILD_SA rekeying a CHILD SA (RFC 7296 §1.3.3, §2.8), collisions
(§2.8.1) and the lost or late messages around them.

Rules (initiator; "old" is the CHILD SA we rekey, "ours" the SA our exchange
creates, "theirs" the SA we created answering the peer's rekey of the same
old SA while ours was in flight):
- Without a collision: ours is installed, old is deleted by us.
- Collision: the exchange holding the lowest of the four nonces created the
  redundant SA. If that is ours, we delete ours and wait for the peer to
  delete old; otherwise we delete old and wait for the peer to delete theirs.
- The peer's answer says TEMPORARY_FAILURE, CHILD_SA_NOT_FOUND or refuses,
  but we answered its rekey (a collision it did not see: our request reached
  it after it had finished): theirs is the replacement; the peer deletes old.
- The peer deleted old while our request was in flight (it won a collision,
  or closed it): old is gone at once (informational.py); when our answer
  comes, ours is kept if the answer gives it, and deleted if it lost a
  collision; a refusal leaves nothing to do.
- The peer deleted theirs while ours was in flight (it lost and knew first):
  there is no collision any more.
- TEMPORARY_FAILURE without a collision: try again in a few seconds.
  CHILD_SA_NOT_FOUND: the peer lost the SA; old goes and a new CHILD SA is
  created in its place, unless another CHILD SA with the same config and
  selectors is up (a new one would stay a redundant pair on both ends).
  Other refusals: old stays, retried later (its hard
  lifetime still applies).
- CHILD_SA_NOT_FOUND for an SA we created answering the peer, before the peer
  showed it has that answer (its next request, or a retransmission budget):
  it does not know the SA yet; try again in a few seconds.
- A replaced SA waiting for the peer's delete is not kept for ever: after
  twice the retransmission budget we delete it ourselves (sa.superseded), so
  both ends converge even when the peer lost track of it.

- Additional key exchanges chosen (RFC 9370 §2.2.4): one IKE_FOLLOWUP_KE round
  each (engine.ike.followup), then ours is made from all the secrets. Meanwhile
  the peer's rekey of old gets TEMPORARY_FAILURE; the peer deleting old
  abandons ours.

Rules (responder):
- An SA our own DELETE (in flight) removes: not answered until that DELETE
  is answered; the peer retransmits, and then learns the SA is gone. The
  peer may have answered our rekey of it while its own was in flight;
  charon 5.9.8, told TEMPORARY_FAILURE before our DELETE arrives, sets the SA
  back to INSTALLED, and our DELETE then no longer installs the outbound half
  of the SA our rekey created (traffic lost until a later rekey). With our
  DELETE first, its rekey ends on that DELETE. Only a DELETE already sent:
  the peer answers it whatever we hold, so no two requests wait on each
  other (a queued one could wait behind a request of ours the peer holds).
- While the IKE SA is being rekeyed or deleted: TEMPORARY_FAILURE (§2.25.2).
- Unknown SA: CHILD_SA_NOT_FOUND. An SA we are deleting or that was already
  replaced: TEMPORARY_FAILURE (§2.25.1). An unknown SA while our own
  CREATE_CHILD_SA waits for its answer: TEMPORARY_FAILURE, since it may be
  the SA that answer brings (lost on the way); a peer told CHILD_SA_NOT_FOUND
  drops it (charon does, silently) and we would install it alone.
- An SA we are rekeying ourselves: answered; our exchange resolves the
  collision when its answer comes (above). Otherwise answered, and old
  waits for the peer's delete.
- Additional key exchanges chosen: the answer carries the SPI and the link for
  IKE_FOLLOWUP_KE; the new SA is made after the last round (in a collision:
  TEMPORARY_FAILURE instead, no rounds interleaved with ours).
"""

from __future__ import annotations

import logging

from engine.events import ChildState, IkeState
from engine.ike.child import ChildSa
from engine.ike.errors import ChildRefused, RemoteError
from engine.ike.exchanges import child_sa
from engine.ike.exchange import Initiator, Label, Request, Responder, Table, error_notifies, find, notify
from engine.ike.exchanges.create_child import RETRY, CreateChild
from engine.ike.exchanges.informational import DeleteChild
from engine.ike.followup import FollowupInitiator, InitiatesChildRounds, RespondsToChildRounds
from engine.ike.init import NONCE_SIZE
from engine.ike.text import notify_name
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.payloads import NoncePayload, NotifyPayload, SaPayload

log = logging.getLogger("engine.ike")
CREATE_CHILD_SA = ExchangeType.CREATE_CHILD_SA
REFUSED_RETRY = 60.0
"""Seconds before another try after the peer refused a rekey outright."""


class S(Label):
    IDLE = "idle"
    SENT = "request sent"
    SENT_COLLIDED = "request sent; we answered the peer's rekey of the same SA"
    SENT_OLD_GONE = "request sent; the peer deleted the old SA"
    SENT_COLLIDED_OLD_GONE = "request sent; collision, and the peer deleted the old SA"
    RESOLVING = "our SA installed, collision to decide"
    RESOLVING_OLD_GONE = "our SA installed, collision to decide, old SA gone"
    FOLLOWUP = "IKE_FOLLOWUP_KE round sent"
    DONE = "done"
    # responder
    DECIDING = "request being answered"
    ROUNDS = "answered; IKE_FOLLOWUP_KE rounds to come"
    ANSWERED = "answered"
    HELD = "not answered: our DELETE of the SA goes first"


class I(Label):  # noqa: E742
    START = "start"
    START_STALE = "start, but the SA is gone, busy or the IKE SA is not up"
    RESP_OK = "answer with the new SA"
    RESP_ROUNDS = "answer that needs IKE_FOLLOWUP_KE rounds"
    RESP_ROUND = "IKE_FOLLOWUP_KE answer, more rounds to come"
    RESP_TEMP_FAIL = "TEMPORARY_FAILURE"
    RESP_NOT_FOUND = "CHILD_SA_NOT_FOUND"
    RESP_NOT_FOUND_YET = "CHILD_SA_NOT_FOUND for an SA the peer may not have our answer for yet"
    RESP_INVALID_KE = "INVALID_KE_PAYLOAD naming a group we offer"
    RESP_REFUSED = "refused or unusable answer"
    PEER_REKEYED = "we answered the peer's rekey of the same SA"
    PEER_DELETED_OLD = "the peer deleted the old SA"
    PEER_DELETED_THEIRS = "the peer deleted the SA its rekey created"
    WON = "the lowest nonce is in the peer's exchange"
    LOST = "the lowest nonce is in our exchange"
    ABORT = "abort"
    REQ_IKE_BUSY = "request while the IKE SA is rekeyed or deleted"
    REQ_OLD_OUR_DELETE_PENDING = "request for an SA our DELETE in flight removes"
    REQ_OLD_UNKNOWN = "request for an SA we do not have"
    REQ_OLD_MAYBE_COMING = "request for an SA we do not have while our CREATE_CHILD_SA waits for its answer"
    REQ_OLD_BUSY = "request for an SA being deleted or already replaced"
    REQ_OLD_INSTALLED = "request"
    REQ_COLLISION = "request for the SA we are rekeying"
    ANSWER_ONLY = "our answer completes the rekey (or refuses it)"
    ROUNDS_FOLLOW = "our answer needs IKE_FOLLOWUP_KE rounds"
    REQ_ROUND = "IKE_FOLLOWUP_KE request"
    REQ_BAD_ROUND = "IKE_FOLLOWUP_KE request that does not fit"
    LAST_ROUND = "the last IKE_FOLLOWUP_KE round"
    ABANDON = "the peer's rounds will not come (another request, old deleted, the IKE SA gone)"


_FAILED = (I.RESP_TEMP_FAIL, I.RESP_NOT_FOUND, I.RESP_REFUSED, I.RESP_INVALID_KE)

TABLE = Table("CREATE_CHILD_SA (CHILD rekey)", {
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
    (S.FOLLOWUP, I.RESP_NOT_FOUND): (S.DONE, "retry_later_unknown"),
    (S.FOLLOWUP, I.PEER_DELETED_OLD): (S.DONE, "release"),
    (S.FOLLOWUP, I.ABORT): (S.DONE, "release"),
    (S.SENT_COLLIDED, I.RESP_ROUNDS): (S.DONE, "adopt_theirs"),
    (S.SENT_OLD_GONE, I.RESP_ROUNDS): (S.DONE, "release"),
    (S.SENT_COLLIDED_OLD_GONE, I.RESP_ROUNDS): (S.DONE, "release"),
    (S.SENT, I.RESP_TEMP_FAIL): (S.DONE, "retry_soon"),
    (S.SENT, I.RESP_INVALID_KE): (S.SENT, "resend_with_group"),
    (S.SENT, I.RESP_REFUSED): (S.DONE, "retry_later"),
    (S.SENT, I.RESP_NOT_FOUND): (S.DONE, "recreate"),
    (S.SENT, I.RESP_NOT_FOUND_YET): (S.DONE, "retry_soon"),
    (S.SENT, I.PEER_REKEYED): (S.SENT_COLLIDED, "keep_theirs"),
    (S.SENT, I.PEER_DELETED_OLD): (S.SENT_OLD_GONE, None),
    (S.SENT, I.ABORT): (S.DONE, "release"),
    # collision (§2.8.1)
    (S.SENT_COLLIDED, I.RESP_OK): (S.RESOLVING, "install_ours"),
    (S.RESOLVING, I.WON): (S.DONE, "won"),
    (S.RESOLVING, I.LOST): (S.DONE, "lost"),
    **{(S.SENT_COLLIDED, f): (S.DONE, "adopt_theirs") for f in _FAILED},
    (S.SENT_COLLIDED, I.PEER_DELETED_OLD): (S.SENT_COLLIDED_OLD_GONE, None),
    (S.SENT_COLLIDED, I.PEER_DELETED_THEIRS): (S.SENT, "forget_theirs"),
    (S.SENT_COLLIDED, I.ABORT): (S.DONE, "release"),
    # the peer deleted the old SA while we waited
    (S.SENT_OLD_GONE, I.RESP_OK): (S.DONE, "install_only"),
    **{(S.SENT_OLD_GONE, f): (S.DONE, "release") for f in _FAILED},
    (S.SENT_OLD_GONE, I.ABORT): (S.DONE, "release"),
    (S.SENT_COLLIDED_OLD_GONE, I.RESP_OK): (S.RESOLVING_OLD_GONE, "install_ours"),
    (S.RESOLVING_OLD_GONE, I.WON): (S.DONE, "won_old_gone"),
    (S.RESOLVING_OLD_GONE, I.LOST): (S.DONE, "lost"),
    **{(S.SENT_COLLIDED_OLD_GONE, f): (S.DONE, "release") for f in _FAILED},
    (S.SENT_COLLIDED_OLD_GONE, I.PEER_DELETED_THEIRS): (S.SENT_OLD_GONE, "forget_theirs"),
    (S.SENT_COLLIDED_OLD_GONE, I.ABORT): (S.DONE, "release"),
    (S.DONE, I.ABORT): (S.DONE, None),
    # responder
    (S.IDLE, I.REQ_OLD_OUR_DELETE_PENDING): (S.HELD, "hold"),
    (S.IDLE, I.REQ_IKE_BUSY): (S.ANSWERED, "temporary_failure"),
    (S.IDLE, I.REQ_OLD_UNKNOWN): (S.ANSWERED, "not_found"),
    (S.IDLE, I.REQ_OLD_MAYBE_COMING): (S.ANSWERED, "temporary_failure"),
    (S.IDLE, I.REQ_OLD_BUSY): (S.ANSWERED, "temporary_failure"),
    (S.IDLE, I.REQ_OLD_INSTALLED): (S.DECIDING, "rekey"),
    (S.IDLE, I.REQ_COLLISION): (S.DECIDING, "rekey_collided"),
    (S.DECIDING, I.ANSWER_ONLY): (S.ANSWERED, None),
    (S.DECIDING, I.ROUNDS_FOLLOW): (S.ROUNDS, None),
    (S.ROUNDS, I.REQ_ROUND): (S.ROUNDS, "answer_round"),
    (S.ROUNDS, I.REQ_BAD_ROUND): (S.ANSWERED, "refuse_round"),
    (S.ROUNDS, I.LAST_ROUND): (S.ANSWERED, "make_new"),
    (S.ROUNDS, I.ABANDON): (S.ANSWERED, "release_reserved"),
}, remote={I.RESP_OK, I.RESP_TEMP_FAIL, I.RESP_NOT_FOUND, I.RESP_NOT_FOUND_YET, I.RESP_INVALID_KE, I.RESP_REFUSED,
           I.PEER_REKEYED,
           I.PEER_DELETED_OLD, I.PEER_DELETED_THEIRS, I.REQ_IKE_BUSY, I.REQ_OLD_UNKNOWN, I.REQ_OLD_BUSY,
           I.REQ_OLD_MAYBE_COMING, I.REQ_OLD_OUR_DELETE_PENDING,
           I.REQ_OLD_INSTALLED, I.REQ_COLLISION, I.RESP_ROUNDS, I.RESP_ROUND, I.REQ_ROUND, I.REQ_BAD_ROUND},
    final={S.DONE, S.ANSWERED, S.HELD})

_WAITING = (S.SENT, S.SENT_COLLIDED, S.SENT_OLD_GONE, S.SENT_COLLIDED_OLD_GONE)


def awaits_new_child(active) -> bool:
    """``active`` (our exchange in flight) is a CREATE_CHILD_SA waiting for the answer
    that makes a CHILD SA: the peer may already hold that SA and name its SPI."""
    if isinstance(active, ChildRekey):
        return active.state in _WAITING
    return isinstance(active, CreateChild) and active.creates() is not None


def deleting(sa, child: ChildSa) -> bool:
    """Our DELETE of ``child`` is in flight on ``sa`` (sent, not yet answered)."""
    return isinstance(sa.active, DeleteChild) and sa.active.holds_child(child)


def lowest_nonce_is_ours(ours: tuple[bytes, bytes], theirs: tuple[bytes, bytes]) -> bool:
    """Our exchange (Ni ours, Nr theirs) holds the lowest of the four nonces."""
    return min(ours) < min(theirs)


class ChildRekey(InitiatesChildRounds, Initiator):
    TABLE = TABLE
    INITIAL = S.IDLE
    ABORT = I.ABORT
    name = "CREATE_CHILD_SA (rekey)"
    affects_children = True

    def __init__(self, sa, child: ChildSa) -> None:
        super().__init__(sa)
        self.old = child
        self.offer: child_sa.ChildOffer | None = None
        self.ours: ChildSa | None = None
        self.theirs: ChildSa | None = None
        self.to_send: list | None = None
        self.exchange = CREATE_CHILD_SA
        self.retried_group = False
        self.followup: FollowupInitiator | None = None

    # ------------------------------------------------------------ requests and answers
    def request(self, now: float) -> Request | None:
        if self.state == S.IDLE:
            sa, old = self.sa, self.old
            ready = sa.state == IkeState.ESTABLISHED and old.state == ChildState.INSTALLED \
                and sa.children.get(old.spi_in) is old
            self.fire(I.START if ready else I.START_STALE, now)
        return self.queued_request()

    def send(self, now: float, group: int | None = None) -> None:
        # Whether the peer could have answered CHILD_SA_NOT_FOUND only because our
        # answer that created old had not reached it yet (judged when we ask).
        self.old_unconfirmed = not self.sa.confirmed(self.old, now)
        if self.old.state == ChildState.INSTALLED:
            self.old.set_state(ChildState.REKEYING)
        self.offer = child_sa.ChildOffer(self.sa, self.old.config, with_ke=True, rekey=self.old, group=group,
                                         with_additional=True)
        self.to_send = self.offer.payloads(nonce=True)

    def response(self, exchange: int, payloads: list, now: float) -> None:
        if self.state == S.DONE:
            return  # a round's answer after we abandoned the rounds
        if notify(payloads, NotifyType.TEMPORARY_FAILURE) is not None:
            self.fire(I.RESP_TEMP_FAIL, now)
            return
        if self.state == S.FOLLOWUP:
            self.round_answer(payloads, now)
            return
        if notify(payloads, NotifyType.CHILD_SA_NOT_FOUND) is not None:
            yet = self.state == S.SENT and self.old_unconfirmed
            self.fire(I.RESP_NOT_FOUND_YET if yet else I.RESP_NOT_FOUND, now)
            return
        # The peer did not answer CHILD_SA_NOT_FOUND: it knows old.
        self.old.unconfirmed_mid = None
        group = self.offer.wanted_group(payloads)
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
                try:
                    followup = FollowupInitiator(chosen.additional_rounds, shared, payloads)
                except RemoteError as exc:
                    raise ChildRefused("INVALID_SYNTAX", exc.reason) from None
                self.fire(I.RESP_ROUNDS, now, answer=(payloads, nonce.data), followup=followup)
                return
            ours = self.offer.accept(self.sa, payloads, self.offer.nonce, nonce.data, shared, now)
        except ChildRefused as exc:
            self.fire(I.RESP_REFUSED, now, refusal=exc)
            return
        self.fire(I.RESP_OK, now, ours=ours)

    def round_answer(self, payloads: list, now: float) -> None:
        errors = error_notifies(payloads)
        try:
            if errors:
                n = notify_name(errors[0].type)
                raise ChildRefused(n, f"the peer refused IKE_FOLLOWUP_KE with {n}", by_peer=True)
            last = self.followup.last
            try:
                self.followup.response(payloads)
            except RemoteError as exc:
                raise ChildRefused("INVALID_SYNTAX", exc.reason, peer_made=last) from None
            if not self.followup.done:
                self.fire(I.RESP_ROUND, now)
                return
            first, nonce_r = self.answer
            ours = self.offer.accept(self.sa, first, self.offer.nonce, nonce_r, self.followup.secrets, now)
        except ChildRefused as exc:
            if exc.notify == "STATE_NOT_FOUND":
                self.fire(I.RESP_NOT_FOUND, now)
            else:
                self.fire(I.RESP_REFUSED, now, refusal=exc)
            return
        self.followup = None
        self.fire(I.RESP_OK, now, ours=ours)

    def retry_later_unknown(self, now: float) -> None:
        self.retry_later(now, ChildRefused("STATE_NOT_FOUND", "the peer lost the IKE_FOLLOWUP_KE rounds of our rekey",
                                           by_peer=True))

    # ------------------------------------------------------------ peer events
    def holds_child(self, child: ChildSa) -> bool:
        return self.state in _WAITING and (child is self.old or child is self.theirs)

    def can_collide(self, old: ChildSa) -> bool:
        """The peer's rekey of ``old`` collides with ours and we can take it on."""
        return old is self.old and self.state == S.SENT

    def peer_rekeyed_child(self, old: ChildSa, new: ChildSa, now: float) -> bool:
        return old is self.old and self.maybe(I.PEER_REKEYED, now, theirs=new)

    def peer_deleted_child(self, child: ChildSa, now: float) -> None:
        if child is self.old:
            self.maybe(I.PEER_DELETED_OLD, now)
        elif child is self.theirs:
            self.maybe(I.PEER_DELETED_THEIRS, now)

    # ------------------------------------------------------------ actions
    def replace_old(self, now: float, ours: ChildSa) -> None:
        self.sa.install_child(ours, now)
        self._delete_old(now, "rekeyed")

    def _delete_old(self, now: float, reason: str) -> None:
        old = self.old
        if old.state == ChildState.DELETED:
            return
        old.set_state(ChildState.REKEYED)
        old.rekey_at = None
        self.sa.start(DeleteChild(self.sa, old, reason), now, front=True)

    def keep_theirs(self, now: float, theirs: ChildSa) -> None:
        self.theirs = theirs

    def forget_theirs(self, now: float) -> None:
        self.theirs = None

    def install_ours(self, now: float, ours: ChildSa) -> I:
        self.sa.install_child(ours, now)
        self.ours = ours
        return I.LOST if lowest_nonce_is_ours(ours.nonces, self.theirs.nonces) else I.WON

    def won(self, now: float) -> None:
        log.info("%s[%d]: CHILD rekey collision won, deleting the old SA %s", self.sa.name, self.sa.unique_id,
                 self.old.spi_in.hex(), extra={"connection": self.sa.name})
        self._delete_old(now, "rekeyed")
        self.won_old_gone(now)

    def won_old_gone(self, now: float) -> None:
        theirs = self.theirs
        if theirs.state == ChildState.INSTALLED:
            self.sa.superseded(theirs, now)  # the peer deletes the redundant SA it created

    def lost(self, now: float) -> None:
        sa = self.sa
        log.info("%s[%d]: CHILD rekey collision lost, deleting the redundant SA %s", sa.name, sa.unique_id,
                 self.ours.spi_in.hex(), extra={"connection": sa.name})
        self.ours.rekey_at = None
        sa.start(DeleteChild(sa, self.ours, "rekey collision (redundant SA)"), now, front=True)
        self._old_waits(now)

    def _old_waits(self, now: float) -> None:
        if self.old.state == ChildState.REKEYING:
            self.sa.superseded(self.old, now)  # the peer, whose rekey survived, deletes it

    def adopt_theirs(self, now: float, refusal: ChildRefused | None = None, **_) -> None:
        """Our rekey failed but the peer's succeeded (it did not see the collision)."""
        self.release(now, refusal)
        self._old_waits(now)

    def install_only(self, now: float, ours: ChildSa) -> None:
        self.sa.install_child(ours, now)

    def retry_soon(self, now: float) -> None:
        self.release(now)
        self._restore_old()
        self.sa.defer(ChildRekey(self.sa, self.old), now + self.sa.host.random.uniform(*RETRY))

    def retry_later(self, now: float, refusal: ChildRefused) -> None:
        self.release(now, refusal)
        self.sa.fail(CREATE_CHILD_SA, refusal.notify, refusal.reason, now, sent_by_peer=refusal.by_peer,
                     **refusal.details)
        self._restore_old()
        self.old.rekey_at = now + REFUSED_RETRY
        self.sa.host.changed(self.sa)

    def _restore_old(self) -> None:
        if self.old.state == ChildState.REKEYING:
            self.old.set_state(ChildState.INSTALLED)

    def recreate(self, now: float) -> None:
        """The peer does not know the SA (it lost its state): replace it with a new one,
        unless another pair already carries the same child (as charon checks too)."""
        sa, old = self.sa, self.old
        self.release(now)
        sa.remove_child(old, now, "the peer does not know it")
        twin = next((c for c in sa.children.values() if c.state in (ChildState.INSTALLED, ChildState.REKEYING)
                     and c.config.name == old.config.name and c.local_ts == old.local_ts
                     and c.remote_ts == old.remote_ts), None)
        if twin is not None:
            log.info("%s[%d]: the peer does not know CHILD SA %s; %s{%d} still carries it, no new one",
                     sa.name, sa.unique_id, old.spi_in.hex(), twin.config.name, twin.unique_id,
                     extra={"connection": sa.name})
            return
        log.info("%s[%d]: the peer does not know CHILD SA %s, creating it anew", sa.name, sa.unique_id,
                 old.spi_in.hex(), extra={"connection": sa.name})
        sa.start(CreateChild(sa, old.config), now, front=True)

    def release(self, now: float, refusal: ChildRefused | None = None, **_) -> None:
        self.followup = None
        if self.offer is not None and self.ours is None:
            self.offer.drop(self.sa, now, refusal)
        self.offer = None

    def migrate(self, sa) -> bool:
        self.sa = sa  # the CHILD SA moved with the IKE SA's rekey
        return True


class ChildRekeyResponder(RespondsToChildRounds, Responder):
    TABLE = TABLE
    INITIAL = S.IDLE
    ROUNDS, REQ_ROUND, REQ_BAD_ROUND, LAST_ROUND = S.ROUNDS, I.REQ_ROUND, I.REQ_BAD_ROUND, I.LAST_ROUND
    ABANDON = I.ABANDON
    name = "CREATE_CHILD_SA (rekey)"

    def respond(self, exchange: int, payloads: list, now: float) -> list | None:
        sa = self.sa
        self.answer: list | None = []
        if self.state == S.ROUNDS:
            return self.answer_followup(payloads, now)
        self.new: ChildSa | None = None
        self.collided = False
        rekey = notify(payloads, NotifyType.REKEY_SA)
        self.old = old = sa.child_by_spi_out(rekey.spi, rekey.protocol) if rekey is not None else None
        active = sa.active
        if old is not None and old.state == ChildState.DELETING and deleting(sa, old):
            inp = I.REQ_OLD_OUR_DELETE_PENDING
        elif sa.state != IkeState.ESTABLISHED:
            inp = I.REQ_IKE_BUSY
        elif old is None and awaits_new_child(active):
            inp = I.REQ_OLD_MAYBE_COMING
        elif old is None or old.state == ChildState.DELETED:
            inp = I.REQ_OLD_UNKNOWN
        elif old.state == ChildState.INSTALLED and not sa.holds_child(old):
            inp = I.REQ_OLD_INSTALLED
        elif old.state == ChildState.REKEYING and isinstance(active, ChildRekey) and active.can_collide(old):
            inp = I.REQ_COLLISION
        else:
            inp = I.REQ_OLD_BUSY
        self.fire(inp, now, payloads=payloads, rekey=rekey)
        return self.answer

    def hold(self, now: float, **_) -> None:
        log.debug("%s[%d]: the peer rekeys CHILD SA %s, which our DELETE removes: answered after it",
                  self.sa.name, self.sa.unique_id, self.old.spi_in.hex(), extra={"connection": self.sa.name})
        self.answer = None

    def not_found(self, now: float, rekey, **_) -> None:
        self.answer = [NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, protocol=rekey.protocol, spi=rekey.spi)]

    def rekey(self, now: float, payloads: list, **_) -> I:
        sa, old = self.sa, self.old
        old.unconfirmed_mid = None  # the peer names it: it knows it
        nonce = find(payloads, NoncePayload)
        if nonce is None or find(payloads, SaPayload) is None:
            raise RemoteError(NotifyType.INVALID_SYNTAX, "CREATE_CHILD_SA without SA or Nonce")
        try:
            choice = child_sa.choose(sa, [old.config], payloads, ignore_ke=False, with_additional=True)
        except RemoteError as exc:
            exc.details.setdefault("child", old.config.name)
            raise
        shared, ke_reply = child_sa.responder_ke(choice, payloads)
        nonce_r = sa.host.rng(NONCE_SIZE)
        if choice.chosen.additional_rounds:
            if shared is None:
                raise RemoteError(NotifyType.NO_PROPOSAL_CHOSEN, "additional key exchanges without a KE")
            if self.collided:
                # Our own rekey of old is in flight: no IKE_FOLLOWUP_KE rounds interleaved with it.
                self.answer = [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
                return I.ANSWER_ONLY
            self.answer = self.start_rounds(choice, nonce.data, nonce_r, shared, ke_reply, child_sa.ts_reply(choice))
            return I.ROUNDS_FOLLOW
        self.new, answer = child_sa.build(sa, choice, nonce.data, nonce_r, shared, now, old)
        self.answer = answer + [NoncePayload(nonce_r), *ke_reply, *child_sa.ts_reply(choice)]
        return I.ANSWER_ONLY

    def rekey_collided(self, now: float, **data) -> I:
        self.collided = True
        return self.rekey(now, **data)

    def rounds_wanted(self) -> bool:
        """A rekey of an SA deleted meanwhile (by either side) makes no SA: its peer gave it up."""
        return self.old.state not in (ChildState.DELETING, ChildState.DELETED)

    def make_new(self, now: float) -> None:
        choice, nonce_i, nonce_r, spi_in = self.pending
        self.new, _ = child_sa.build(self.sa, choice, nonce_i, nonce_r, self.followup.secrets, now, self.old,
                                     spi_in=spi_in)
        self.followup = self.pending = None

    def responded(self, now: float) -> None:
        sa, new = self.sa, self.new
        if new is None:
            return
        sa.install_child(new, now)
        if self.collided and sa.active is not None and sa.active.peer_rekeyed_child(self.old, new, now):
            return  # our own rekey of old decides when its answer comes
        if self.old.state == ChildState.INSTALLED:
            sa.superseded(self.old, now)  # the peer deletes it
