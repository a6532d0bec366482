"""IKE_FOLLOWUP_KE rounds (RFC 9370 §2.2.4): the additional key exchanges of a
CREATE_CHILD_SA, one IKE_FOLLOWUP_KE exchange each, on the IKE SA the
CREATE_CHILD_SA ran on.

    CREATE_CHILD_SA  request:  SA, Ni, KEi(0) [, N(REKEY_SA), TS]
                     response: SA, Nr, KEr(0), N(ADDITIONAL_KEY_EXCHANGE)(link1)
    IKE_FOLLOWUP_KE  request:  N(ADDITIONAL_KEY_EXCHANGE)(link1), KEi(1)
                     response: KEr(1) [, N(ADDITIONAL_KEY_EXCHANGE)(link2) when more follow]
    ...

The keys are computed once, after the last round, from all shared secrets in
exchange order (engine.crypto.multi_ke). The responder names each next round
with fresh link data; a request with other link data gets STATE_NOT_FOUND.
What runs the rounds (ike_rekey, child_rekey) keeps one of these per exchange.
"""

from __future__ import annotations

import hmac
from typing import ClassVar

from engine.crypto.errors import CryptoError, InvalidKeyExchange
from engine.crypto.ke import new_key_exchange, respond
from engine.ike.errors import ChildRefused, RemoteError
from engine.ike.exchange import Initiator, Label, Request, Table, error_notifies, find, notify
from engine.ike.text import notify_name
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.errors import MalformedMessage
from engine.wire.payloads import KePayload, NoncePayload, NotifyPayload, SaPayload
from engine.wire.ppk import additional_key_exchange, additional_key_exchange_link
from engine.wire.summary import group_name

IKE_FOLLOWUP_KE = ExchangeType.IKE_FOLLOWUP_KE
LINK_SIZE = 8
ROUNDS_TIMEOUT = 20.0
"""RFC 9370 §2.2.4: a responder gives up rounds the initiator stopped after "some reasonable
period" (5-20 s). At least this long, and at least one retransmission budget, so a lost round
retransmitted by the peer is still answered."""


class FollowupInitiator:
    """Our side of the rounds after our CREATE_CHILD_SA was answered."""

    def __init__(self, rounds: tuple[tuple[int, int], ...], first_secret: bytes, response: list) -> None:
        """``response``: the CREATE_CHILD_SA answer (its link). Raises RemoteError without one."""
        self.rounds = rounds
        self.secrets = [first_secret]
        self.link = _link(response, "the CREATE_CHILD_SA answer chose additional key exchanges")
        self.ke = None

    @property
    def done(self) -> bool:
        return len(self.secrets) == len(self.rounds) + 1

    @property
    def last(self) -> bool:
        """The answer awaited is the last round's: the responder makes its SA when it sends it."""
        return len(self.secrets) == len(self.rounds)

    def request(self) -> list:
        group = self.rounds[len(self.secrets) - 1][1]
        self.ke = new_key_exchange(group)
        return [additional_key_exchange(self.link), KePayload(self.ke.group, self.ke.public_bytes())]

    def response(self, payloads: list) -> None:
        """Take one IKE_FOLLOWUP_KE answer; RemoteError (the notify to report) when unusable."""
        group = self.ke.group
        ke = find(payloads, KePayload)
        if ke is None or ke.group != group:
            raise RemoteError(NotifyType.INVALID_SYNTAX, f"IKE_FOLLOWUP_KE answer without a KE for "
                              f"{group_name(group)}")
        try:
            self.secrets.append(self.ke.compute_shared(ke.data))
        except (InvalidKeyExchange, CryptoError) as exc:
            raise RemoteError(NotifyType.INVALID_SYNTAX, f"invalid KE in IKE_FOLLOWUP_KE: {exc}") from None
        self.ke = None
        if not self.done:
            self.link = _link(payloads, "an IKE_FOLLOWUP_KE answer before the last")


def child_rounds(rounds, shared: bytes | None, answer: list) -> FollowupInitiator:
    """The rounds a CHILD SA's CREATE_CHILD_SA answer asks for; ChildRefused when they cannot start."""
    if shared is None:
        raise ChildRefused("NO_PROPOSAL_CHOSEN", "the peer chose additional key exchanges without a KE")
    try:
        return FollowupInitiator(rounds, shared, answer)
    except RemoteError as exc:
        raise ChildRefused("INVALID_SYNTAX", exc.reason) from None


def take_child_round(followup: FollowupInitiator, payloads: list, child: str) -> bool:
    """One IKE_FOLLOWUP_KE answer for CHILD SA ``child``: True once the last round is in.
    ChildRefused (the peer's error notify, or INVALID_SYNTAX) when it is unusable."""
    errors = error_notifies(payloads)
    if errors:
        n = notify_name(errors[0].type)
        raise ChildRefused(n, f"the peer refused IKE_FOLLOWUP_KE for CHILD SA '{child}' with {n}", by_peer=True)
    last = followup.last
    try:
        followup.response(payloads)
    except RemoteError as exc:
        raise ChildRefused("INVALID_SYNTAX", exc.reason, peer_made=last) from None
    return followup.done


class InitiatesRounds:
    """What the CREATE_CHILD_SA initiators that may go on with IKE_FOLLOWUP_KE rounds share
    (create_child, ike_rekey, child_rekey): the next request waits in ``to_send`` for
    ``exchange``; ``followup`` is a FollowupInitiator while rounds run. The exchange class
    names its table's ABORT input."""

    ABORT: ClassVar
    exchange: int
    to_send: list | None = None
    followup: FollowupInitiator | None = None

    def queued_request(self) -> Request | None:
        out, self.to_send = self.to_send, None
        return Request(self.exchange, out) if out is not None else None

    def send_round(self, now: float, answer=None, followup: FollowupInitiator | None = None) -> None:
        """The next IKE_FOLLOWUP_KE request; the first one keeps ``answer`` (the CREATE_CHILD_SA
        answer, what the SA is made from after the last round) and ``followup``."""
        if followup is not None:
            self.answer, self.followup = answer, followup
        self.exchange = IKE_FOLLOWUP_KE
        self.to_send = self.followup.request()

    def abort(self, now: float) -> None:
        self.fire(self.ABORT, now)


class InitiatesChildRounds(InitiatesRounds):
    """A CHILD SA initiator's rounds (create_child, child_rekey)."""

    def resend_with_group(self, now: float, group: int) -> None:
        self.release(now)
        self.send(now, group)


class FollowupResponder:
    """The peer's rounds after we answered its CREATE_CHILD_SA."""

    def __init__(self, rounds: tuple[tuple[int, int], ...], first_secret: bytes, rng) -> None:
        self.rounds = rounds
        self.secrets = [first_secret]
        self.rng = rng
        self.link = rng(LINK_SIZE)

    @property
    def done(self) -> bool:
        return len(self.secrets) == len(self.rounds) + 1

    @property
    def last(self) -> bool:
        """The answer awaited is the last round's: the responder makes its SA when it sends it."""
        return len(self.secrets) == len(self.rounds)

    def link_notify(self):
        return additional_key_exchange(self.link)

    def answer(self, payloads: list) -> list:
        """Our answer to one IKE_FOLLOWUP_KE request (RemoteError: the notify to answer with)."""
        n = notify(payloads, NotifyType.ADDITIONAL_KEY_EXCHANGE)
        if n is None or not hmac.compare_digest(n.data, self.link):
            raise RemoteError(NotifyType.STATE_NOT_FOUND, "IKE_FOLLOWUP_KE with unknown link data")
        group = self.rounds[len(self.secrets) - 1][1]
        ke = find(payloads, KePayload)
        if ke is None or ke.group != group:
            raise RemoteError(NotifyType.INVALID_SYNTAX, f"additional key exchange {len(self.secrets)} is "
                              f"{group_name(group)}, the peer sent "
                              f"{'no KE' if ke is None else group_name(ke.group)}")
        try:
            data, shared = respond(group, ke.data)
        except (InvalidKeyExchange, CryptoError) as exc:
            # charon's build_r_multi_ke: a KE that does not apply is NO_PROPOSAL_CHOSEN (the IKE
            # SA stays); a missing one, above, INVALID_SYNTAX.
            raise RemoteError(NotifyType.NO_PROPOSAL_CHOSEN, f"invalid KE in IKE_FOLLOWUP_KE: {exc}") from None
        self.secrets.append(shared)
        out: list = [KePayload(group, data)]
        if not self.done:
            self.link = self.rng(LINK_SIZE)
            out.append(self.link_notify())
        return out


def _link(payloads: list, what: str) -> bytes:
    n = notify(payloads, NotifyType.ADDITIONAL_KEY_EXCHANGE)
    if n is None:
        raise RemoteError(NotifyType.INVALID_SYNTAX, f"{what} without ADDITIONAL_KEY_EXCHANGE")
    try:
        return additional_key_exchange_link(n)
    except MalformedMessage as exc:
        raise RemoteError(NotifyType.INVALID_SYNTAX, str(exc)) from None


class RespondsToRounds:
    """What the CREATE_CHILD_SA responders that wait for IKE_FOLLOWUP_KE rounds share
    (create_child, ike_rekey, child_rekey). The exchange class names its table's ROUNDS state
    and its REQ_ROUND / REQ_BAD_ROUND / LAST_ROUND / ABANDON inputs; ``followup`` is a
    FollowupResponder. ABANDON leads to ``release_reserved``: the SPI our answer named is
    given back when the rounds will not come (RFC 9370 §2.2.4: the responder deletes the state
    of rounds the initiator does not continue)."""

    ROUNDS: ClassVar
    REQ_ROUND: ClassVar
    REQ_BAD_ROUND: ClassVar
    LAST_ROUND: ClassVar
    ABANDON: ClassVar
    followup: FollowupResponder | None = None

    def abandon(self, now: float) -> None:
        """The peer will not continue these rounds (it started another multi-round request, they
        timed out, or the IKE SA is gone): release what the answer reserved."""
        if self.state == self.ROUNDS:
            self.fire(self.ABANDON, now)

    def waiting(self, now: float) -> None:
        """Our answer went out and the next round is due: give the rounds up if it never comes."""
        if self.state == self.ROUNDS and self.followup is not None:
            at = now + max(ROUNDS_TIMEOUT, self.sa.retransmit_budget())
            self.sa.defer(RoundsTimeout(self.sa, self, len(self.followup.secrets)), at)

    def release_reserved(self, now: float) -> None:
        raise NotImplementedError

    def rounds_wanted(self) -> bool:
        """Whether what these rounds make is still wanted (child_rekey: the old SA still exists)."""
        return True

    def answer_followup(self, payloads: list, now: float) -> list:
        """Our answer to one IKE_FOLLOWUP_KE request (an error notify when it does not fit)."""
        self.answer = []
        try:
            if not self.rounds_wanted():
                # What the rounds would make could only be an orphan the initiator drops.
                raise RemoteError(NotifyType.STATE_NOT_FOUND, "IKE_FOLLOWUP_KE for a rekey of an SA that is "
                                  "being deleted or gone")
            answer = self.followup.answer(payloads)
        except RemoteError as exc:
            self.fire(self.REQ_BAD_ROUND, now, error=exc)
        else:
            self.fire(self.REQ_ROUND, now, answer=answer)
        return self.answer

    def accepts(self, exchange: int) -> bool:
        return exchange == IKE_FOLLOWUP_KE and self.state == self.ROUNDS

    def answer_round(self, now: float, answer: list):
        self.answer = answer
        return self.LAST_ROUND if self.followup.done else None

    def refuse_round(self, now: float, error: RemoteError) -> None:
        self.release_reserved(now)
        raise error

    def temporary_failure(self, now: float, **_) -> None:
        self.answer = [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]


class RespondsToChildRounds(RespondsToRounds):
    """A CHILD SA responder's rounds (create_child, child_rekey): ``pending`` is
    (choice, Ni, Nr, our inbound SPI) while the rounds run."""

    pending: tuple | None = None

    def start_rounds(self, choice, nonce_i: bytes, nonce_r: bytes, shared: bytes | None, ke_reply: list,
                     ts_reply: list) -> list:
        """Our CREATE_CHILD_SA answer when ``choice`` needs rounds: it names the inbound SPI
        reserved now (the CHILD SA is made after the last round) and the link of the first round."""
        sa = self.sa
        if shared is None:
            raise RemoteError(NotifyType.NO_PROPOSAL_CHOSEN, "additional key exchanges without a KE")
        self.followup = FollowupResponder(choice.chosen.additional_rounds, shared, sa.host.rng)
        spi_in = sa.host.ids.allocate_spi()
        self.pending = (choice, nonce_i, nonce_r, spi_in)
        answer = [SaPayload((choice.chosen.with_spi(spi_in).to_wire(),)), NoncePayload(nonce_r), *ke_reply,
                  self.followup.link_notify(), *ts_reply]
        if choice.mode == "transport":
            answer.insert(0, NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
        return answer

    def release_reserved(self, now: float) -> None:
        if self.pending is not None:
            self.sa.host.ids.release_spi(self.pending[3])
        self.followup = self.pending = None


class _T(Label):
    WAITING = "waiting for the next round"
    DONE = "done"


class _In(Label):
    DUE = "the time for the next round is up"
    ABORT = "abort"


TIMEOUT_TABLE = Table("IKE_FOLLOWUP_KE rounds timeout (sends nothing)", {
    (_T.WAITING, _In.DUE): (_T.DONE, "give_up"),
    (_T.WAITING, _In.ABORT): (_T.DONE, None),
    (_T.DONE, _In.ABORT): (_T.DONE, None),
}, remote=(), final={_T.DONE})


class RoundsTimeout(Initiator):
    """Gives up a peer's IKE_FOLLOWUP_KE rounds that stopped coming, releasing the SPI our answer
    reserved. A deferred job of the IKE SA (sa.defer), not an exchange: it sends nothing."""

    TABLE = TIMEOUT_TABLE
    INITIAL = _T.WAITING
    name = "IKE_FOLLOWUP_KE rounds timeout"

    def __init__(self, sa, responder: RespondsToRounds, rounds_done: int) -> None:
        super().__init__(sa)
        self.responder = responder
        self.rounds_done = rounds_done

    def request(self, now: float):
        self.maybe(_In.DUE, now)
        return None

    def give_up(self, now: float) -> None:
        r = self.responder
        if r.state == r.ROUNDS and r.followup is not None and len(r.followup.secrets) == self.rounds_done:
            r.abandon(now)  # no round came since this timeout was armed

    def abort(self, now: float) -> None:
        self.maybe(_In.ABORT, now)

    def migrate(self, sa) -> bool:
        return False  # the rounds belong to the IKE SA that answered them
