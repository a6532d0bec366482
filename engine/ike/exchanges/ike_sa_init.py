"""IKE_SA_INIT (RFC 7296 §1.2, §2.6, §2.10, §2.23): proposals, key
exchange, nonces, NAT detection, capabilities.

Rules (initiator):
- COOKIE: the same request again with the cookie first (§2.6); INVALID_KE_PAYLOAD
  naming a group we offer: again with that group (§1.2). Both restart at
  Message ID 0, at most MAX_INIT_RETRIES times.
- An error notify (NO_PROPOSAL_CHOSEN...): NegotiationFailed, the SA goes and
  keyingtries decides on another attempt. An answer that does not match our
  offer is treated the same way.
- N(REDIRECT) carrying our nonce: the connection starts over at that gateway
  (exchanges.redirect); one without it is a malformed answer.
- Success: keys are derived, IKE moves to the NAT-T port when a NAT is seen
  or encapsulation is forced, and IKE_AUTH follows (ike_auth.py).

Rules (responder; the front door has already checked size, SPIs, limits
and cookies, front_door.py):
- No SA, KE or Nonce, or a nonce outside 16-256 bytes: INVALID_SYNTAX, no state.
- No configured connection accepts the peer's proposals: NO_PROPOSAL_CHOSEN,
  no state; the reason names both sides' proposals (capped: the offer is the
  peer's text).
- A KE for another group than the chosen one: INVALID_KE_PAYLOAD naming ours.
- Otherwise a half-open IKE SA answers; it expires if IKE_AUTH does not follow.
"""

from __future__ import annotations

import logging
from typing import Protocol

from engine.crypto.errors import InvalidKeyExchange
from engine.crypto.kem import MlKemExchange
from engine.crypto.ke import KeyExchange, new_key_exchange, respond
from engine.events import IkeState, NegotiationFailed
from engine.ike import intermediate
from engine.ike import ppk_auth
from engine.ike import proposals as props
from engine.ike.errors import RemoteError
from engine.ike.exchange import Initiator, Label, Request, Responder, Table, first_of
from engine.ike.exchanges import redirect
from engine.ike.host import Addr, Ended, Host
from engine.ike.init import NONCE_SIZE, capability_notifies, check_nat, install_ike_keys, nat_notifies, \
    read_capabilities
from engine.ike.sa import HALF_OPEN_TIMEOUT, IkeSa
from engine.ike.text import notify_name
from engine.policy.model import ChildConfig, ConnectionConfig
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.message import IkeHeader, Message
from engine.wire.payloads import KePayload, NoncePayload, NotifyPayload, SaPayload

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_CONNECTING = IkeState.CONNECTING
_INTERMEDIATE_EXCHANGE_SUPPORTED = NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED

IKE_PORT = 500
"""RFC 7296 §2: MOBIKE's float (``derive_keys``) leaves a peer on another port where it is."""

log = logging.getLogger("engine.ike")
IKE_SA_INIT = ExchangeType.IKE_SA_INIT
MAX_INIT_RETRIES = 5


class S(Label):
    IDLE = "idle"
    SENT = "request sent"
    DONE = "done"
    ANSWERED = "answered"


class I(Label):  # noqa: E742
    START = "start"
    RESP_COOKIE = "COOKIE"
    RESP_INVALID_KE = "INVALID_KE_PAYLOAD naming a group we offer"
    RESP_TOO_MANY_RETRIES = "COOKIE or INVALID_KE_PAYLOAD once too often"
    RESP_REFUSED = "an error notify"
    RESP_MALFORMED = "an answer that does not match our offer"
    RESP_OK = "answer"
    RESP_REDIRECT = "REDIRECT with our nonce (RFC 5685 §4.2)"
    ABORT = "abort"
    REQ_MALFORMED = "request without SA, KE or a proper Nonce"
    REQ_NO_PROPOSAL = "no connection accepts the offer"
    REQ_WRONG_GROUP = "KE for another group than the chosen one"
    REQ_BAD_KE = "KE data that does not work"
    REQ_OK = "request"


TABLE = Table("IKE_SA_INIT", {
    (S.IDLE, I.START): (S.SENT, "send"),
    (S.IDLE, I.ABORT): (S.DONE, None),
    (S.SENT, I.RESP_COOKIE): (S.SENT, "resend_with_cookie"),
    (S.SENT, I.RESP_INVALID_KE): (S.SENT, "resend_with_group"),
    (S.SENT, I.RESP_TOO_MANY_RETRIES): (S.DONE, "give_up"),
    (S.SENT, I.RESP_REFUSED): (S.DONE, "refused"),
    (S.SENT, I.RESP_MALFORMED): (S.DONE, "give_up"),
    (S.SENT, I.RESP_OK): (S.DONE, "derive_keys"),
    (S.SENT, I.RESP_REDIRECT): (S.DONE, "follow_redirect"),
    (S.SENT, I.ABORT): (S.DONE, None),
    (S.DONE, I.ABORT): (S.DONE, None),
    # responder (stateless answers carry no SA)
    (S.IDLE, I.REQ_MALFORMED): (S.ANSWERED, "invalid_syntax"),
    (S.IDLE, I.REQ_NO_PROPOSAL): (S.ANSWERED, "no_proposal_chosen"),
    (S.IDLE, I.REQ_WRONG_GROUP): (S.ANSWERED, "invalid_ke_payload"),
    (S.IDLE, I.REQ_BAD_KE): (S.ANSWERED, "bad_ke"),
    (S.IDLE, I.REQ_OK): (S.ANSWERED, "create_sa"),
}, remote={I.RESP_COOKIE, I.RESP_INVALID_KE, I.RESP_TOO_MANY_RETRIES, I.RESP_REFUSED, I.RESP_MALFORMED, I.RESP_OK,
           I.RESP_REDIRECT,
           I.REQ_MALFORMED, I.REQ_NO_PROPOSAL, I.REQ_WRONG_GROUP, I.REQ_BAD_KE, I.REQ_OK},
    final={S.DONE, S.ANSWERED})


def uses_certs(conn: ConnectionConfig) -> bool:
    return conn.local.auth == "pubkey" or conn.remote.auth == "pubkey"


class IkeInit(Initiator):
    TABLE = TABLE
    INITIAL = S.IDLE
    name = "IKE_SA_INIT"

    def __init__(self, sa: IkeSa, children: list[ChildConfig], next_exchange) -> None:
        """``next_exchange(sa, children)``: the exchange that follows (IKE_AUTH,
        or IKE_INTERMEDIATE rounds before it)."""
        super().__init__(sa)
        self.children = children
        self.next_exchange = next_exchange
        self.cookie: bytes | None = None
        self.group: int | None = None
        self.ke: KeyExchange | MlKemExchange | None = None
        self.retries = 0
        self.to_send: list | None = None

    def request(self, now: float) -> Request | None:
        if self.state == S.IDLE:
            self.fire(I.START, now)
        out, self.to_send = self.to_send, None
        return Request(IKE_SA_INIT, out) if out is not None else None

    def send(self, now: float) -> None:
        sa, conn = self.sa, self.sa.conn
        if self.group is None:
            self.group = props.first_ke_group(conn.proposals)
        if self.ke is None or self.ke.group != self.group:
            self.ke = new_key_exchange(self.group)  # DH, or ML-KEM as the only key exchange
        if not sa.nonce_i:
            sa.nonce_i = sa.host.rng(NONCE_SIZE)
        self.offered = props.to_wire(conn.proposals, b"", first_ke=self.group)
        payloads: list = []
        if self.cookie is not None:
            payloads.append(NotifyPayload(NotifyType.COOKIE, data=self.cookie))
        payloads += [SaPayload(self.offered), KePayload(self.group, self.ke.public_bytes()),
                     NoncePayload(sa.nonce_i)]
        fake = sa.host.rng(20) if conn.encap else None
        payloads += nat_notifies(sa.spi_i, b"\0" * 8, sa.local, sa.remote, fake)
        payloads += capability_notifies(conn, want_hash_algorithms=uses_certs(conn))
        if any(p.additional_ke for p in conn.proposals):
            payloads.append(NotifyPayload(NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED))
        payloads += ppk_auth.init_notifies(conn)
        payloads += redirect.init_notifies(sa)
        if sa.state == IkeState.CREATED:
            sa.set_state(IkeState.CONNECTING)
        sa.restart_init()
        self.to_send = payloads

    def response(self, exchange: int, payloads: list, now: float) -> None:
        sa_payload, ke, nonce = first_of(payloads, SaPayload, KePayload, NoncePayload)
        cookie = bad_ke = error = None
        for p in payloads:
            if isinstance(p, NotifyPayload):
                if p.type == NotifyType.COOKIE:
                    cookie = cookie or p
                elif p.type == NotifyType.INVALID_KE_PAYLOAD:
                    bad_ke = bad_ke or p
                elif p.type < 16384:
                    error = error or p
        if cookie is not None or bad_ke is not None:
            self.retries += 1
            if self.retries > MAX_INIT_RETRIES:
                self.fire(I.RESP_TOO_MANY_RETRIES, now, reason="too many IKE_SA_INIT retries "
                          f"({'COOKIE' if cookie is not None else 'INVALID_KE_PAYLOAD'})")
            elif cookie is not None:
                self.fire(I.RESP_COOKIE, now, cookie=cookie.data)
            else:
                group = int.from_bytes(bad_ke.data[:2], "big") if len(bad_ke.data) >= 2 else 0
                if group == self.group or not props.offers_ke_group(self.sa.conn.proposals, group):
                    ours = ", ".join(props.describe_configured(self.sa.conn.proposals))
                    self.fire(I.RESP_MALFORMED, now, reason=f"peer asks for key exchange group {group}, which we "
                              f"do not offer (ours: {ours})")
                else:
                    self.fire(I.RESP_INVALID_KE, now, group=group)
            return
        gateway, bad = redirect.gateway_of(payloads, self.sa.nonce_i)
        if gateway is not None:
            self.fire(I.RESP_REDIRECT, now, gateway=gateway)
            return
        if bad:
            self.fire(I.RESP_MALFORMED, now, reason=f"the peer sent {bad}")
            return
        if error is not None:
            self.fire(I.RESP_REFUSED, now, notify_type=error.type)
            return
        sa = self.sa
        if sa_payload is None or ke is None or nonce is None or len(sa_payload.proposals) != 1:
            self.fire(I.RESP_MALFORMED, now, reason="IKE_SA_INIT response lacks SA, KE or Nonce")
            return
        chosen = props.accept_response(sa_payload.proposals[0], self.offered)
        if chosen is None:
            self.fire(I.RESP_MALFORMED, now, reason="the peer chose a proposal we did not offer")
        elif ke.group != self.group or chosen.ke != self.group:
            self.fire(I.RESP_MALFORMED, now, reason=f"peer's KE group {ke.group} does not match the chosen proposal")
        elif not 16 <= len(nonce.data) <= 256:
            self.fire(I.RESP_MALFORMED, now, reason=f"peer nonce of {len(nonce.data)} bytes")
        elif chosen.additional_rounds and not any(isinstance(p, NotifyPayload) and p.type ==
                                                  NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED for p in payloads):
            self.fire(I.RESP_MALFORMED, now, reason="the peer chose additional key exchanges without "
                      "INTERMEDIATE_EXCHANGE_SUPPORTED (RFC 9370 §2.2.1)")
        elif sa.spi_r == b"\0" * 8:
            self.fire(I.RESP_MALFORMED, now, reason="the peer answered without a responder SPI")
        else:
            try:
                shared = self.ke.compute_shared(ke.data)
            except InvalidKeyExchange as exc:
                self.fire(I.RESP_MALFORMED, now, reason=f"peer's key exchange data is invalid: {exc}")
                return
            self.fire(I.RESP_OK, now, chosen=chosen, nonce_r=nonce.data, shared=shared, payloads=payloads)

    def resend_with_cookie(self, now: float, cookie: bytes) -> None:
        self.cookie = cookie
        self.send(now)

    def resend_with_group(self, now: float, group: int) -> None:
        log.info("%s[%d]: peer prefers group %d, retrying", self.sa.name, self.sa.unique_id, group,
                 extra={"connection": self.sa.name})
        self.group = group
        self.send(now)

    def give_up(self, now: float, reason: str) -> None:
        sa = self.sa
        sa.fail(IKE_SA_INIT, "NONE", reason, now)
        sa.destroy(now, reason, Ended("failed", reason))

    def refused(self, now: float, notify_type: int) -> None:
        sa = self.sa
        n = notify_name(notify_type)
        ours = props.describe_offer_short(self.offered)
        if n == "NO_PROPOSAL_CHOSEN":
            reason = ("the peer accepted none of our IKE proposals. We offered: " + "; ".join(ours)
                      + ". Add one the peer accepts to 'proposals' (its log names what it wants).")
        else:
            reason = f"the peer refused IKE_SA_INIT with {n}"
        sa.fail(IKE_SA_INIT, n, reason, now, sent_by_peer=True, local_proposals=ours)
        sa.destroy(now, reason, Ended("failed", reason))

    def follow_redirect(self, now: float, gateway: str) -> None:
        redirect.follow(self.sa, gateway, IKE_SA_INIT, self.children, now)

    def derive_keys(self, now: float, chosen, nonce_r: bytes, shared: bytes, payloads: list) -> None:
        sa = self.sa
        sa.chosen = chosen
        sa.nonce_r = nonce_r
        read_capabilities(sa, payloads)
        # §2.23: against the addresses of the packet that brought the answer, not where we sent.
        local, remote = sa.received_on or (sa.local, sa.remote)
        nat = check_nat(payloads, sa.spi_i, sa.spi_r, local, remote)
        if nat is not None:
            sa.nat.local_behind, sa.nat.remote_behind = nat
        install_ike_keys(sa, shared)
        # As charon's ike_natd process_i: to the NAT-T ports when a NAT was found, or, with MOBIKE on,
        # whenever the peer does NAT-T (it sent NAT-D): RFC 4555 §3.3 (whether it does MOBIKE is known
        # only after IKE_AUTH, and later there is no exchange to switch ports with). Not from a peer on
        # a port of its own: charon's float_ports keeps such a port, where ours would guess its NAT-T one.
        if sa.nat.any or sa.conn.encap or (sa.conn.mobike and nat is not None and sa.remote[1] == IKE_PORT):
            sa.float_ports()
        sa.start(self.next_exchange(sa, self.children), now, front=True)

    def failed(self, now: float, reason: str) -> None:
        self.give_up(now, reason)

    def abort(self, now: float) -> None:
        self.fire(I.ABORT, now)

    def migrate(self, sa) -> bool:
        return False


# ====================================================================== responder
class Door(Protocol):
    """What the IKE_SA_INIT responder needs from the front door."""

    host: Host

    def candidates(self, local: Addr, remote: Addr) -> list[ConnectionConfig]: ...
    def stateless(self, header: IkeHeader, payloads: list, local: Addr, remote: Addr, now: float, *,
                  request: Message, name: str = "") -> bool: ...
    def uid(self, spi_i: bytes, remote: Addr) -> int: ...
    def admit(self, sa: IkeSa, now: float) -> None: ...
    def warn(self, now: float, message: str, name: str) -> None: ...


class IkeSaInitResponder(Responder):
    TABLE = TABLE
    INITIAL = S.IDLE
    name = "IKE_SA_INIT"

    def __init__(self, door: Door, message: Message, local: Addr, remote: Addr) -> None:
        super().__init__(None)
        self.door = door
        self.message = message
        self.local = local
        self.remote = remote

    def answer(self, now: float) -> IkeSa | None:
        """Answer the request: statelessly, or with a new half-open IKE SA (returned)."""
        sa_p, ke, nonce = first_of(self.message.payloads, SaPayload, KePayload, NoncePayload)
        if sa_p is None or ke is None or nonce is None or not 16 <= len(nonce.data) <= 256:
            self.fire(I.REQ_MALFORMED, now)
            return None
        candidates = self.door.candidates(self.local, self.remote)
        chosen = None
        accepted: list[ConnectionConfig] = []
        # Additional key exchanges run in IKE_INTERMEDIATE: only with a peer that has it (RFC 9370 §2.2.1).
        self.intermediate = any(isinstance(p, NotifyPayload) and p.type == _INTERMEDIATE_EXCHANGE_SUPPORTED
                                for p in self.message.payloads)
        for conn in candidates:
            c = props.select(sa_p.proposals, conn.proposals, with_additional=self.intermediate)
            if c is not None:
                if chosen is None:
                    chosen = c
                if c == chosen or (c.encr, c.prf, c.integ, c.ke, c.additional) == (
                        chosen.encr, chosen.prf, chosen.integ, chosen.ke, chosen.additional):
                    accepted.append(conn)
        if chosen is None:
            self.fire(I.REQ_NO_PROPOSAL, now, candidates=candidates, offer=sa_p.proposals)
            return None
        if ke.group != chosen.ke:
            self.fire(I.REQ_WRONG_GROUP, now, chosen=chosen, name=accepted[0].name)
            return None
        try:
            pool = self.door.host.key_pool
            reply, shared = respond(chosen.ke, ke.data, pool.take(chosen.ke) if pool is not None else None)
        except InvalidKeyExchange as exc:
            log.info("invalid KE from %s: %s", self.remote[0], exc)
            self.fire(I.REQ_BAD_KE, now, name=accepted[0].name)
            return None
        self.fire(I.REQ_OK, now, chosen=chosen, accepted=accepted, reply=reply, shared=shared, nonce_i=nonce.data)
        return self.sa

    def _stateless(self, now: float, notify_payload: NotifyPayload, name: str = "") -> bool:
        return self.door.stateless(self.message.header, [notify_payload], self.local, self.remote, now,
                                   request=self.message, name=name)

    def invalid_syntax(self, now: float, name: str = "") -> None:
        self.door.host.count("malformed")
        self._stateless(now, NotifyPayload(NotifyType.INVALID_SYNTAX), name)

    def bad_ke(self, now: float, name: str = "") -> None:
        # charon's ike_init.c: "applying KE public value failed" -> NO_PROPOSAL_CHOSEN.
        self.door.host.count("malformed")
        self._stateless(now, NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN), name)

    def invalid_ke_payload(self, now: float, chosen, name: str) -> None:
        log.info("%s: peer sent a KE for another group, asking for %d (INVALID_KE_PAYLOAD)",
                 self.remote[0], chosen.ke)
        self.door.host.count("invalid_ke_sent")
        self._stateless(now, NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, data=chosen.ke.to_bytes(2, "big")), name)

    def no_proposal_chosen(self, now: float, candidates: list[ConnectionConfig], offer) -> None:
        door, remote = self.door, self.remote
        name = candidates[0].name if len(candidates) == 1 else ""
        shown = self._stateless(now, NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN), name)
        door.host.count("no_proposal_chosen")
        if not shown:
            return  # a flood: counted, not described
        # The offer is the peer's text: at most OFFERS proposals, with a count of the rest.
        offered = props.describe_offer_short(offer)
        if not candidates:
            reason = (f"no connection is configured for {remote[0]} -> {self.local[0]}: add one whose "
                      "remote_addrs include the peer")
            ours: tuple[str, ...] = ()
        else:
            ours = tuple(x for c in candidates for x in props.describe_configured(c.proposals))
            reason = (f"none of the IKE proposals from {remote[0]} is acceptable. The peer offered: "
                      f"{'; '.join(offered)}. We accept: {'; '.join(ours)}.")
            kem = props.additional_ke_mismatch(offer, [p for c in candidates for p in c.proposals])
            if kem is not None:
                reason += f" The {kem}."
        uid = door.uid(self.message.header.spi_i, remote)
        door.host.emit(NegotiationFailed(uid, name, "IKE_SA_INIT", "NO_PROPOSAL_CHOSEN", reason, None, False,
                                         ours, offered))
        door.warn(now, f"{name or remote[0]}: {reason}", name)

    def create_sa(self, now: float, chosen, accepted: list[ConnectionConfig], reply: bytes, shared: bytes,
                  nonce_i: bytes) -> None:
        door, host = self.door, self.door.host
        header = self.message.header
        payloads = list(self.message.payloads)
        conn = accepted[0]
        sa = IkeSa(host, conn, initiator=False, unique_id=door.uid(header.spi_i, self.remote), local=self.local,
                   remote=self.remote, spi_i=header.spi_i, spi_r=host.ids.new_ike_spi(), now=now)
        self.sa = sa
        sa.candidates = tuple(accepted)
        sa.chosen = chosen
        sa.nonce_i = nonce_i
        sa.nonce_r = host.rng(NONCE_SIZE)
        sa.init_request = self.message.raw
        sa.mid_in = 1
        read_capabilities(sa, payloads)
        nat = check_nat(payloads, sa.spi_i, b"\0" * 8, self.local, self.remote)
        if nat is not None:
            sa.nat.local_behind, sa.nat.remote_behind = nat
        install_ike_keys(sa, shared)
        intermediate.begin(sa)
        sa.set_state(_CONNECTING)
        door.admit(sa, now)
        sa.half_open_deadline = now + HALF_OPEN_TIMEOUT
        sa.summary_event(False, IKE_SA_INIT, 0, False, payloads, len(self.message.raw), now)
        fake = host.rng(20) if conn.encap else None
        response = [SaPayload((chosen.to_wire(),)), KePayload(chosen.ke, reply),
                    NoncePayload(sa.nonce_r)]
        response += nat_notifies(sa.spi_i, sa.spi_r, self.local, self.remote, fake)
        response += capability_notifies(conn, want_hash_algorithms=any(uses_certs(c) for c in accepted))
        if self.intermediate:
            response.append(NotifyPayload(NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED))
        sa.use_ppk = sa.use_ppk and any(ppk_auth.wants_ppk(c) for c in accepted)
        if sa.use_ppk:
            response.append(ppk_auth.use_ppk())
        response += host.auth.certreq_payloads(accepted)
        sa.send_response(IKE_SA_INIT, 0, response, now)


def answer(door: Door, message: Message, local: Addr, remote: Addr, now: float) -> IkeSa | None:
    """An IKE_SA_INIT request the front door let through."""
    try:
        return IkeSaInitResponder(door, message, local, remote).answer(now)
    except RemoteError:
        door.host.count("malformed")
        return None
