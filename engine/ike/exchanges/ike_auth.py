"""IKE_AUTH (RFC 7296 §1.2, §2.15; §2.16 EAP in exchanges.eap_auth): identities,
AUTH, the first CHILD SA.

Rules (initiator):
- The answer must carry IDr and AUTH, else it is a refusal (the peer's error
  notify, or AUTHENTICATION_FAILED): the SA goes, keyingtries decides.
- The peer's identity must match remote.id and its AUTH must verify; if not
  we tell it (INFORMATIONAL AUTHENTICATION_FAILED, §2.21.2) and the SA goes.
- The IKE SA is up even when the CHILD SA part was refused (§2.21.3); the
  other configured children follow with CREATE_CHILD_SA.

Rules (responder):
- Without IDi: INVALID_SYNTAX. Without AUTH the peer wants EAP (§2.16): the
  catalog hands such a request to exchanges.eap_auth; REQ_NO_AUTH here answers
  AUTHENTICATION_FAILED saying so (no connection of ours offers EAP).
- A CP(CFG_REQUEST) is answered from the connection's pools
  (engine.ike.config_payload); none to lease from: INTERNAL_ADDRESS_FAILURE
  and no CHILD SA (§3.15.4). MOBIKE_SUPPORTED is answered (exchanges.mobike);
  redirect_to sends the client elsewhere instead (exchanges.redirect).
- The connection is chosen among those IKE_SA_INIT allowed, by the peer's
  identity (and the IDr it asks for); none, or an AUTH that does not verify:
  AUTHENTICATION_FAILED and the half-open SA goes. A peer whose certificate
  names a CRL distribution point the runtime is fetching (and whose AUTH
  verifies) is held unanswered until the fetch ends (certauth.Deferred; its
  retransmissions are checked again), as charon waits for its fetch.
- Otherwise our IDr and AUTH; the CHILD SA part is answered on its own
  (a refusal there keeps the IKE SA, §2.21.3).
"""

from __future__ import annotations

import logging

from engine.events import IkeState
from engine.ike.auth import octets
from engine.ike.errors import ChildRefused, RemoteError
from engine.ike import config_payload
from engine.ike.exchanges import child_sa, mobike, redirect
from engine.ike.exchange import Initiator, Label, Request, Responder, Table, error_notifies
from engine.ike.exchanges.create_child import CreateChild
from engine.ike.exchanges.informational import Notify
from engine.ike.host import Ended
from engine.ike.identity import identity_from_wire, identity_to_wire, matches
from engine.ike import ppk_auth
from engine.ike.certauth import Deferred
from engine.ike.intermediate import int_auth
from engine.ike.ppk_auth import InitiatorPpk
from engine.ike.text import notify_name, short
from engine.policy.model import ChildConfig
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.payloads import AuthPayload, IdPayload, NotifyPayload, SaPayload

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_ESTABLISHED = IkeState.ESTABLISHED
_INITIAL_CONTACT = NotifyType.INITIAL_CONTACT

IKE_AUTH = ExchangeType.IKE_AUTH
log = logging.getLogger("engine.ike")


class S(Label):
    IDLE = "idle"
    SENT = "request sent"
    DONE = "done"
    # responder
    AUTHENTICATING = "checking the peer"
    ANSWERED = "answered"


class I(Label):  # noqa: E742
    START = "start"
    RESP_REFUSED = "answer without IDr and AUTH, or AUTHENTICATION_FAILED"
    RESP_PEER_REJECTED = "the peer's identity or AUTH is not acceptable"
    RESP_OK = "answer"
    ABORT = "abort"
    REQ_NO_ID = "request without IDi"
    REQ_NO_AUTH = "request without AUTH (EAP wanted)"
    REQ_AUTH = "request"
    PEER_UNKNOWN = "no connection accepts the peer"
    PEER_REJECTED = "the peer's AUTH does not verify"
    PEER_OK = "the peer is authenticated"
    PEER_PENDING = "the peer's revocation status is being fetched"


TABLE = Table("IKE_AUTH", {
    (S.IDLE, I.START): (S.SENT, "send"),
    (S.IDLE, I.ABORT): (S.DONE, None),
    (S.SENT, I.RESP_REFUSED): (S.DONE, "refused"),
    (S.SENT, I.RESP_PEER_REJECTED): (S.DONE, "reject_peer"),
    (S.SENT, I.RESP_OK): (S.DONE, "establish"),
    (S.SENT, I.ABORT): (S.DONE, "release"),
    (S.DONE, I.ABORT): (S.DONE, None),
    # responder
    (S.IDLE, I.REQ_NO_ID): (S.ANSWERED, "invalid_syntax"),
    (S.IDLE, I.REQ_NO_AUTH): (S.ANSWERED, "refuse_eap"),
    (S.IDLE, I.REQ_AUTH): (S.AUTHENTICATING, "authenticate"),
    (S.AUTHENTICATING, I.PEER_UNKNOWN): (S.ANSWERED, "authentication_failed"),
    (S.AUTHENTICATING, I.PEER_REJECTED): (S.ANSWERED, "authentication_failed"),
    (S.AUTHENTICATING, I.PEER_OK): (S.ANSWERED, "accept"),
    (S.AUTHENTICATING, I.PEER_PENDING): (S.ANSWERED, "hold"),
}, remote={I.RESP_REFUSED, I.RESP_PEER_REJECTED, I.RESP_OK, I.REQ_NO_ID, I.REQ_NO_AUTH, I.REQ_AUTH,
           I.PEER_UNKNOWN, I.PEER_REJECTED, I.PEER_OK, I.PEER_PENDING},
    final={S.DONE, S.ANSWERED})


class IkeAuth(Initiator):
    TABLE = TABLE
    INITIAL = S.IDLE
    name = "IKE_AUTH"

    def __init__(self, sa, children: list[ChildConfig]) -> None:
        super().__init__(sa)
        self.children = children
        self.child_cfg: ChildConfig | None = children[0] if children else None
        self.offer: child_sa.ChildOffer | None = None
        self.to_send: list | None = None

    def request(self, now: float) -> Request | None:
        if self.state == S.IDLE:
            self.fire(I.START, now)
        out, self.to_send = self.to_send, None
        return Request(IKE_AUTH, out) if out is not None else None

    def send(self, now: float) -> None:
        sa, conn, auth = self.sa, self.sa.conn, self.sa.host.auth
        self.idi = auth.id_payload(conn, True, sa.local[0])
        payloads: list = [self.idi, *auth.cert_payloads(conn), *auth.certreq_payloads([conn])]
        if sa.host.initial_contact(sa):
            payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))
        payloads += mobike.offer_notifies(sa, conn)
        if conn.remote.id is not None and conn.remote.id.kind not in ("any",) and "*" not in conn.remote.id.value:
            t, d = identity_to_wire(conn.remote.id, sa.remote[0])
            payloads.append(IdPayload(False, t, d))
        # Our identity is known now (the configured ID or our address): the PSK lookup needs it.
        sa.local_id = identity_from_wire(self.idi.id_type, self.idi.data)
        self.ppk = InitiatorPpk(sa, conn)
        mid = self.auth_mid = sa.mid_out

        def auth_data(sk_pi: bytes) -> AuthPayload:
            signed = octets(sa.init_request, sa.nonce_r, sa.chosen.prf, sk_pi, self.idi) + int_auth(sa, mid)
            return auth.auth_payload(sa, conn, signed)

        if not conn.local.is_eap:  # with EAP our AUTH (and the PPK) follows the EAP rounds (exchanges.eap_auth)
            self.ppk.switch(sa)
            payloads.append(auth_data(sa.keys.sk_pi.reveal()))
            payloads += self.ppk.notifies(lambda sk_pi: auth_data(sk_pi).data)
        cp = config_payload.request(conn)
        if cp is not None:
            payloads.append(cp)
        if self.child_cfg is not None:
            self.offer = child_sa.ChildOffer(sa, self.child_cfg, with_ke=False, nonce=False)
            payloads += self.offer.payloads(nonce=False)
        self.to_send = payloads

    def response(self, exchange: int, payloads: list, now: float) -> None:
        sa, conn = self.sa, self.sa.conn
        idr = auth = None
        auth_failed = False
        for p in payloads:  # one pass instead of three searches
            if isinstance(p, IdPayload) and not p.initiator:
                idr = idr or p
            elif isinstance(p, AuthPayload):
                auth = auth or p
            elif isinstance(p, NotifyPayload) and p.type == NotifyType.AUTHENTICATION_FAILED:
                auth_failed = True
        if auth_failed or auth is None or idr is None:
            self.fire(I.RESP_REFUSED, now, payloads=payloads)
            return
        peer = identity_from_wire(idr.id_type, idr.data)
        if not matches(conn.remote.id, peer):
            self.fire(I.RESP_PEER_REJECTED, now, reason=f"the peer identified as '{short(peer.value)}' but we "
                      f"expect '{conn.remote.id}': fix 'remote.id' or the peer's local ID")
            return
        sa.local_id = identity_from_wire(self.idi.id_type, self.idi.data)
        sa.remote_id = peer
        why = self.ppk.answer(sa, payloads)
        if why is not None:
            self.fire(I.RESP_PEER_REJECTED, now, reason=why)
            return
        signed = octets(sa.init_response, sa.nonce_i, sa.chosen.prf, sa.keys.sk_pr.reveal(), idr) \
            + int_auth(sa, sa.mid_out - 1)
        ok, why = sa.host.auth.verify(sa, conn, auth, signed, payloads, peer)
        if not ok:
            self.fire(I.RESP_PEER_REJECTED, now, reason=why)
            return
        self.fire(I.RESP_OK, now, payloads=payloads)

    def refused(self, now: float, payloads: list) -> None:
        sa = self.sa
        errors = error_notifies(payloads)
        n = notify_name(errors[0].type) if errors else "AUTHENTICATION_FAILED"
        if n == "AUTHENTICATION_FAILED":
            ours = short(identity_from_wire(self.idi.id_type, self.idi.data).value)
            reason = ("the peer rejected our authentication: check that both sides use the same "
                      f"pre-shared key for these IDs, and that our ID ({ours}) is the one the peer expects")
        else:
            reason = f"IKE_AUTH refused by the peer with {n}"
        self.release(now)
        sa.fail(IKE_AUTH, n, reason, now, sent_by_peer=True)
        sa.destroy(now, reason, Ended("failed", reason))

    def reject_peer(self, now: float, reason: str) -> None:
        sa = self.sa
        self.release(now)
        sa.fail(IKE_AUTH, "AUTHENTICATION_FAILED", reason, now)
        # Tell the peer (§2.21.2), then drop the SA without waiting for an answer.
        sa.start(Notify(sa, NotifyType.AUTHENTICATION_FAILED), now, front=True)
        sa.destroy(now, reason, Ended("failed", reason))

    def establish(self, now: float, payloads: list) -> None:
        sa = self.sa
        if redirect.redirected(sa, payloads, now, self.children):
            # The gateway is authenticated and sends us elsewhere instead (RFC 5685 §6).
            self.release(now)
            return
        sa.set_state(IkeState.ESTABLISHED)
        sa.established_at = now
        sa.schedule_lifetimes(now)
        sa.host.established(sa, now, initial_contact=False)
        mobike.accepted(sa, payloads)
        if not self._virtual_ips(now, payloads):
            return
        if self.offer is not None:
            try:
                child = self.offer.accept(sa, payloads, sa.nonce_i, sa.nonce_r, None, now)
            except ChildRefused as exc:
                self.offer.drop(sa, now, exc)
                self.offer = None
                sa.fail(IKE_AUTH, exc.notify, exc.reason, now, sent_by_peer=exc.by_peer, **exc.details)
            else:
                self.offer = None
                sa.install_child(child, now)
        for cfg in self.children[1:]:
            sa.start(CreateChild(sa, cfg), now)

    def _virtual_ips(self, now: float, payloads: list) -> bool:
        """The addresses we asked for (vips); without them the SA goes (§3.15.4)."""
        sa = self.sa
        why = config_payload.accept_reply(sa, sa.conn, payloads)
        if why is None:
            return True
        self.release(now)
        sa.fail(IKE_AUTH, "INTERNAL_ADDRESS_FAILURE", why, now, sent_by_peer=True)
        sa.delete(now, why)
        return False

    def failed(self, now: float, reason: str) -> None:
        self.release(now)
        self.sa.destroy(now, reason, Ended("failed", reason))

    def release(self, now: float, **_) -> None:
        if self.offer is not None:
            self.offer.release(self.sa)
            self.offer = None

    def abort(self, now: float) -> None:
        self.fire(I.ABORT, now)

    def migrate(self, sa) -> bool:
        return False

    def creates(self) -> str | None:
        return self.child_cfg.name if self.child_cfg is not None and self.state != S.DONE else None


class IkeAuthResponder(Responder):
    TABLE = TABLE
    INITIAL = S.IDLE
    name = "IKE_AUTH"

    def respond(self, exchange: int, payloads: list, now: float) -> list:
        self.answer: list = []
        self.after: str | None = None
        idi = idr = auth = None
        self.child_wanted = self.initial_contact = False
        for p in payloads:  # one pass instead of five searches
            if isinstance(p, IdPayload):
                if p.initiator:
                    idi = idi or p
                else:
                    idr = idr or p
            elif isinstance(p, AuthPayload):
                auth = auth or p
            elif isinstance(p, SaPayload):
                self.child_wanted = True
            elif isinstance(p, NotifyPayload) and p.type == _INITIAL_CONTACT:
                self.initial_contact = True
        if idi is None:
            self.fire(I.REQ_NO_ID, now)
        elif auth is None:
            self.idi = idi
            self.fire(I.REQ_NO_AUTH, now)
        else:
            self.fire(I.REQ_AUTH, now, payloads=payloads, idi=idi, idr=idr, auth=auth)
        return self.answer

    def refuse_eap(self, now: float) -> None:
        """An IKE_AUTH without AUTH: the client wants EAP (§2.16), which no connection offers."""
        peer = identity_from_wire(self.idi.id_type, self.idi.data)
        self.reason = (f"the peer '{short(peer.value)}' wants EAP (its IKE_AUTH has no AUTH payload, "
                       "RFC 7296 §2.16), but no connection of ours authenticates clients with EAP; set "
                       "remote.auth = \"eap-mschapv2\" (or \"eap-tls\") on its connection, or configure the "
                       "client for a pre-shared key or a certificate")
        self.authentication_failed(now)

    def invalid_syntax(self, now: float) -> None:
        raise RemoteError(NotifyType.INVALID_SYNTAX, "IKE_AUTH request without IDi or AUTH")

    def authenticate(self, now: float, payloads: list, idi: IdPayload, idr: IdPayload | None,
                     auth: AuthPayload) -> I:
        sa = self.sa
        peer = identity_from_wire(idi.id_type, idi.data)
        wanted = identity_from_wire(idr.id_type, idr.data) if idr else None
        conn, why = sa.host.auth.select(sa.candidates, peer, wanted)
        self.reason = why
        if conn is None:
            return I.PEER_UNKNOWN
        sa.conn = conn
        auth, why = ppk_auth.responder(sa, conn, payloads, auth)
        if auth is None:
            self.reason = why
            return I.PEER_REJECTED
        signed = octets(sa.init_request, sa.nonce_r, sa.chosen.prf, sa.keys.sk_pi.reveal(), idi) \
            + int_auth(sa, sa.peer_mid)
        # Not with a PPK: its keys are switched already, and a retransmission would switch them again.
        ok, why = sa.host.auth.verify(sa, conn, auth, signed, payloads, peer, may_defer=not sa.ppk_used)
        if isinstance(why, Deferred):
            self.reason = why
            return I.PEER_PENDING
        if not ok:
            self.reason = why
            return I.PEER_REJECTED
        sa.remote_id = peer
        self.payloads = payloads
        return I.PEER_OK

    def hold(self, now: float) -> None:
        """No answer yet (engine.ike.sa_receive holds the request): the peer retransmits it and it is
        checked again, with the CRL once fetched; the fetch's time limit bounds the wait."""
        log.info("%s[%d]: IKE_AUTH held: %s", self.sa.name, self.sa.unique_id, self.reason)
        self.answer = None

    def authentication_failed(self, now: float) -> None:
        self.answer = [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)]
        self.after = "_drop"

    def _drop(self, now: float) -> None:
        sa = self.sa
        sa.fail(IKE_AUTH, "AUTHENTICATION_FAILED", self.reason, now)
        sa.destroy(now, "authentication failed")

    def accept(self, now: float) -> None:
        sa, conn, auth, payloads = self.sa, self.sa.conn, self.sa.host.auth, self.payloads
        if self.refused_as_duplicate(now):
            return
        idr = auth.id_payload(conn, False, sa.local[0])
        sa.local_id = identity_from_wire(idr.id_type, idr.data)
        signed_r = octets(sa.init_response, sa.nonce_i, sa.chosen.prf, sa.keys.sk_pr.reveal(), idr) \
            + int_auth(sa, sa.peer_mid)
        answer: list = [idr, *auth.cert_payloads(conn), auth.auth_payload(sa, conn, signed_r),
                        *ppk_auth.responder_notifies(sa)]
        elsewhere = redirect.auth_redirect(sa, conn)
        if elsewhere is not None:  # RFC 5685 §6: no SA, TS or CP; the client goes elsewhere
            self.answer = answer + elsewhere
            self.after = "_redirected"
            return
        answer += mobike.auth_notifies(sa, conn, payloads)
        self.answer = answer + self.child_part(now, payloads, str(sa.remote_id))
        self.after = "_establish"

    def refused_as_duplicate(self, now: float) -> bool:
        """unique = keep: the peer is up from elsewhere; answer AUTHENTICATION_FAILED (charon's ike_auth
        build_r, "canceling IKE_SA setup due to uniqueness policy")."""
        why = self.sa.host.unique_refuses(self.sa, self.initial_contact)
        if why is None:
            return False
        self.reason = why
        self.authentication_failed(now)
        return True

    def child_part(self, now: float, payloads: list, identity: str) -> list:
        """The configuration reply and the first CHILD SA of our answer (``identity`` holds the lease)."""
        sa, conn = self.sa, self.sa.conn
        self.child = None
        cp = config_payload.respond(sa, conn, payloads, identity, now)
        answer = list(cp.payloads)
        if cp.refusal is not None:
            answer.append(NotifyPayload(cp.refusal))
            sa.fail(IKE_AUTH, notify_name(cp.refusal), cp.reason, now)
        elif self.child_wanted:
            try:
                choice = child_sa.choose(sa, conn.children, payloads, ignore_ke=True)
            except RemoteError as exc:
                answer.append(NotifyPayload(exc.notify))
                sa.fail(IKE_AUTH, notify_name(exc.notify), exc.reason, now, **exc.details)
            else:
                self.child, extra = child_sa.build(sa, choice, sa.nonce_i, sa.nonce_r, None, now, None)
                answer += extra + child_sa.ts_reply(choice)
        return answer

    def _establish(self, now: float) -> None:
        sa = self.sa
        sa.half_open_deadline = None
        sa.set_state(_ESTABLISHED)
        sa.established_at = now
        sa.schedule_lifetimes(now)
        sa.host.established(sa, now, initial_contact=self.initial_contact)
        if self.child is not None and sa.alive:
            sa.install_child(self.child, now)

    def _redirected(self, now: float) -> None:
        redirect.drop(self.sa, now)

    def responded(self, now: float) -> None:
        if self.after is not None:
            getattr(self, self.after)(now)
