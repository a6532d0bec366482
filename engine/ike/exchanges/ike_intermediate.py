"""IKE_INTERMEDIATE (RFC 9242) carrying RFC 9370 additional key exchanges,
between IKE_SA_INIT and IKE_AUTH: one exchange per negotiated
ADDITIONAL_KEY_EXCHANGE_n, in order.

Rules (initiator):
- Each round sends a KE payload of that round's method (an ML-KEM encapsulation
  key, or a DH public value); the answer must carry a KE of the same method.
- Each request and answer goes into the IntAuth chain with the keys that
  protected it; then every IKE SA key is replaced (RFC 9370 §2.2.2), and the
  next round (or IKE_AUTH, ike_auth.py) uses the new keys.
- An error notify, a missing or wrong KE, or KE data that does not work:
  NegotiationFailed, the SA goes (keyingtries decides on another attempt).
- Retransmission, loss and fragmentation (RFC 7383: an ML-KEM-1024 KE is
  1,568 bytes) are the IKE SA's, as for any exchange.

Rules (responder):
- Accepted only while the IKE SA is being set up, in order, as many as were
  negotiated; anything else is INVALID_SYNTAX. A KE of another method than the
  round's, or unusable KE data: INVALID_SYNTAX (RFC 9370 §2.2.2), and the
  half-open SA times out.
- Our answer goes out with the keys of the previous step; the keys are
  updated right after it (a retransmitted request gets the cached answer).
- IKE_AUTH before the last round is refused (exchanges/__init__.py).
"""

from __future__ import annotations

from engine.crypto.errors import CryptoError, InvalidKeyExchange
from engine.crypto.ke import new_key_exchange, respond
from engine.ike import intermediate
from engine.ike.errors import RemoteError
from engine.ike.exchange import Initiator, Label, Request, Responder, Table, error_notifies, find
from engine.ike.host import Ended
from engine.ike.text import notify_name
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.payloads import KePayload
from engine.wire.summary import group_name

IKE_INTERMEDIATE = ExchangeType.IKE_INTERMEDIATE


class S(Label):
    IDLE = "idle"
    SENT = "round sent"
    KEYED = "round done, keys updated"
    DONE = "done"
    # responder
    WAITING = "waiting for a round"
    ANSWERED = "round answered"
    FINISHED = "all rounds answered"


class I(Label):  # noqa: E742
    START = "start"
    RESP_OK = "answer with the round's KE"
    RESP_REFUSED = "answer with an error notify"
    RESP_MALFORMED = "answer without a usable KE"
    MORE = "more rounds to run"
    LAST = "last round done"
    ABORT = "abort"
    REQ_OK = "request with the round's KE"
    REQ_BAD = "request without the KE of the next round"
    REQ_BAD_KE = "request whose KE data does not apply"


TABLE = Table("IKE_INTERMEDIATE", {
    (S.IDLE, I.START): (S.SENT, "send_round"),
    (S.IDLE, I.ABORT): (S.DONE, None),
    (S.SENT, I.RESP_OK): (S.KEYED, "update_keys"),
    (S.SENT, I.RESP_REFUSED): (S.DONE, "refused"),
    (S.SENT, I.RESP_MALFORMED): (S.DONE, "give_up"),
    (S.SENT, I.ABORT): (S.DONE, None),
    (S.KEYED, I.MORE): (S.SENT, "send_round"),
    (S.KEYED, I.LAST): (S.DONE, "start_auth"),
    (S.DONE, I.ABORT): (S.DONE, None),
    # responder
    (S.WAITING, I.REQ_OK): (S.ANSWERED, "answer_round"),
    (S.WAITING, I.REQ_BAD): (S.FINISHED, "invalid_syntax"),
    (S.WAITING, I.REQ_BAD_KE): (S.FINISHED, "bad_ke"),
    (S.ANSWERED, I.MORE): (S.WAITING, None),
    (S.ANSWERED, I.LAST): (S.FINISHED, None),
}, remote={I.RESP_OK, I.RESP_REFUSED, I.RESP_MALFORMED, I.REQ_OK, I.REQ_BAD, I.REQ_BAD_KE},
    final={S.DONE, S.FINISHED})


def before(next_exchange):
    """The factory IKE_SA_INIT calls for what follows it: IKE_INTERMEDIATE
    rounds first when the chosen proposal has additional key exchanges."""
    def follow(sa, children):
        intermediate.begin(sa)
        if sa.intermediate is None:
            return next_exchange(sa, children)
        return IkeIntermediate(sa, children, next_exchange)
    return follow


class IkeIntermediate(Initiator):
    TABLE = TABLE
    INITIAL = S.IDLE
    name = "IKE_INTERMEDIATE"

    def __init__(self, sa, children, next_exchange) -> None:
        super().__init__(sa)
        self.children = children
        self.next_exchange = next_exchange
        self.ke = None
        self.mid = 0
        self.to_send: list | None = None

    def request(self, now: float) -> Request | None:
        if self.state == S.IDLE:
            self.fire(I.START, now)
        out, self.to_send = self.to_send, None
        return Request(IKE_INTERMEDIATE, out) if out is not None else None

    def send_round(self, now: float) -> None:
        sa = self.sa
        self.ke = new_key_exchange(sa.intermediate.next_group)
        payloads = [KePayload(self.ke.group, self.ke.public_bytes())]
        # request() runs right before the IKE SA sends with this Message ID.
        self.mid = sa.mid_out
        intermediate.chain_request(sa, intermediate.sent_octets(sa, self.mid, payloads, response=False))
        self.to_send = payloads

    def response(self, exchange: int, payloads: list, now: float) -> None:
        sa = self.sa
        errors = error_notifies(payloads)
        if errors:
            self.fire(I.RESP_REFUSED, now, notify_type=errors[0].type)
            return
        group = self.ke.group
        ke = find(payloads, KePayload)
        if ke is None or ke.group != group:
            got = "no KE" if ke is None else f"a KE for {group_name(ke.group)}"
            self.fire(I.RESP_MALFORMED, now, reason=f"the peer answered additional key exchange "
                      f"{sa.intermediate.done + 1} ({group_name(group)}) with {got}")
            return
        try:
            shared = self.ke.compute_shared(ke.data)
        except (InvalidKeyExchange, CryptoError) as exc:
            self.fire(I.RESP_MALFORMED, now, reason=f"peer's additional key exchange data is invalid: {exc}")
            return
        octets = intermediate.received_octets(sa, self.mid, response=True)
        self.fire(I.RESP_OK, now, octets=octets, shared=shared)

    def update_keys(self, now: float, octets: bytes, shared: bytes) -> I:
        sa = self.sa
        intermediate.chain_response(sa, octets)
        intermediate.update_keys(sa, shared)
        self.ke = None
        return I.LAST if sa.intermediate.complete else I.MORE

    def start_auth(self, now: float) -> None:
        self.sa.start(self.next_exchange(self.sa, self.children), now, front=True)

    def refused(self, now: float, notify_type: int) -> None:
        n = notify_name(notify_type)
        self._end(now, n, f"the peer refused IKE_INTERMEDIATE with {n}", sent_by_peer=True)

    def give_up(self, now: float, reason: str) -> None:
        self._end(now, "INVALID_SYNTAX", reason)

    def _end(self, now: float, notify: str, reason: str, sent_by_peer: bool = False) -> None:
        sa = self.sa
        sa.fail(IKE_INTERMEDIATE, notify, reason, now, sent_by_peer=sent_by_peer)
        sa.destroy(now, reason, Ended("failed", reason))

    def failed(self, now: float, reason: str) -> None:
        self.fire(I.ABORT, now)
        self.sa.destroy(now, reason, Ended("failed", reason))

    def abort(self, now: float) -> None:
        self.fire(I.ABORT, now)

    def migrate(self, sa) -> bool:
        return False


class IkeIntermediateResponder(Responder):
    TABLE = TABLE
    INITIAL = S.WAITING
    name = "IKE_INTERMEDIATE"

    def accepts(self, exchange: int) -> bool:
        return exchange == IKE_INTERMEDIATE

    def respond(self, exchange: int, payloads: list, now: float) -> list:
        sa = self.sa
        self.answer: list = []
        octets = intermediate.received_octets(sa, sa.peer_mid, response=False)
        group = sa.intermediate.next_group
        ke = find(payloads, KePayload)
        if ke is None or ke.group != group:
            got = "no KE" if ke is None else f"a KE for {group_name(ke.group)}"
            self.fire(I.REQ_BAD, now, reason=f"additional key exchange {sa.intermediate.done + 1} is "
                      f"{group_name(group)}, the peer sent {got}")
            return self.answer
        try:
            data, shared = respond(group, ke.data)
        except (InvalidKeyExchange, CryptoError) as exc:
            self.fire(I.REQ_BAD_KE, now, reason=f"peer's additional key exchange data is invalid: {exc}")
            return self.answer
        self.fire(I.REQ_OK, now, octets=octets, group=group, data=data, shared=shared)
        return self.answer

    def invalid_syntax(self, now: float, reason: str) -> None:
        raise RemoteError(NotifyType.INVALID_SYNTAX, reason)

    def bad_ke(self, now: float, reason: str) -> None:
        # charon's build_r_multi_ke (ke_failed): NO_PROPOSAL_CHOSEN; the setup ends either way.
        raise RemoteError(NotifyType.NO_PROPOSAL_CHOSEN, reason)

    def answer_round(self, now: float, octets: bytes, group: int, data: bytes, shared: bytes) -> None:
        sa = self.sa
        intermediate.chain_request(sa, octets)
        self.answer = [KePayload(group, data)]
        intermediate.chain_response(sa, intermediate.sent_octets(sa, sa.peer_mid, self.answer, response=True))
        self.shared = shared

    def responded(self, now: float) -> None:
        if self.state != S.ANSWERED:
            return
        sa = self.sa
        # The answer went out with the previous keys; from here on, the new ones.
        intermediate.update_keys(sa, self.shared)
        self.shared = b""
        self.fire(I.LAST if sa.intermediate.complete else I.MORE, now)
