"""IKE_AUTH with EAP (RFC 7296 §2.16): several IKE_AUTH rounds, both roles.

    client   IDi [CERTREQ] [IDr] [CP] SA TSi TSr          (no AUTH: it wants EAP)
    gateway  IDr CERT AUTH EAP(Request)                   (the gateway proves itself first)
    client   EAP(Response)   ...   gateway EAP(Request)   (Identity, the method's rounds)
    gateway  EAP(Success)
    client   AUTH                                          (MAC with the MSK over its signed octets)
    gateway  AUTH [CP] SA TSi TSr                          (MAC with the MSK over its signed octets)

The MSK replaces the pre-shared key of §2.15's "shared key" AUTH; a method
that makes no MSK uses SK_pi / SK_pr. The engine.eap conversation objects do
the EAP part (EapServer for the gateway, EapPeer for our client).

Rules (gateway): the connection is chosen among those IKE_SA_INIT allowed
whose remote.auth is an EAP method and whose remote.id matches the client's
IDi; none: AUTHENTICATION_FAILED, saying in plain words that the peer wants
EAP. A request out of order (no EAP payload while EAP runs, no AUTH after
EAP-Success), an EAP failure or a wrong MSK AUTH end the IKE SA with
AUTHENTICATION_FAILED (EAP-Failure for the EAP ones) and the reason. EAP-TLS
checks the client's chain with the runtime's CRLs (CrlSource) and asks for
missing ones; a round whose CRL is being fetched is held unanswered, as
IKE_AUTH with certificates is (sa.held_request: the runtime's retry_held, or
the client's retransmission, takes it again), then decided with it.

Rules (client): the gateway's first answer must carry IDr, AUTH (checked as
any AUTH of ours: its certificate) and EAP; each further answer one EAP
payload; after EAP-Success we send our MSK AUTH, and the last answer's AUTH
must verify with the MSK. Anything else fails the IKE SA with the reason.
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime, timezone

from engine.crypto.auth import psk_auth_data
from engine.eap import EapPeer, EapServer, TlsCredentials, methods_for, peer_methods, server_methods
from engine.ike import certauth, ppk_auth
from engine.ike.auth import octets
from engine.ike.exchange import Label, Request, Table, error_notifies
from engine.ike.exchanges import mobike, redirect
from engine.ike.exchanges.ike_auth import IkeAuth, IkeAuthResponder
from engine.ike.host import Ended
from engine.ike.identity import identity_from_wire, matches
from engine.ike.intermediate import int_auth
from engine.ike.text import notify_name, short
from engine.policy.roadwarrior import eap_id_matches
from engine.policy.secrets import lookup_eap
from engine.wire.constants import AuthMethod, ExchangeType, NotifyType
from engine.wire.payloads import AuthPayload, EapPayload, IdPayload, NotifyPayload, SaPayload

IKE_AUTH = ExchangeType.IKE_AUTH
log = logging.getLogger("engine.ike")


class S(Label):
    IDLE = "idle"
    SENT = "first request sent"
    EAP = "EAP running"
    AUTH_SENT = "MSK AUTH sent"
    DONE = "done"
    # gateway
    CHOOSING = "choosing the connection"
    CHECKING = "checking an EAP response"
    EAP_DONE = "EAP succeeded, waiting for AUTH"
    CHECKING_AUTH = "checking the MSK AUTH"
    ANSWERED = "answered"


class I(Label):  # noqa: E742
    START = "start"
    RESP_REFUSED = "answer with an error notify, or without what the round needs"
    RESP_PEER_REJECTED = "the gateway's identity or AUTH is not acceptable"
    RESP_EAP = "answer with an EAP request"
    RESP_EAP_SUCCESS = "EAP-Success"
    RESP_EAP_FAILED = "EAP-Failure, or the EAP conversation failed"
    RESP_OK = "the last answer, its MSK AUTH verified"
    ABORT = "abort"
    # gateway
    REQ_FIRST = "first request (IDi, no AUTH)"
    NO_EAP_CONN = "no EAP connection accepts the peer"
    EAP_CONN = "an EAP connection accepts the peer"
    REQ_EAP = "request with an EAP payload"
    REQ_AUTH = "request with AUTH"
    REQ_OTHER = "request without what this round needs"
    REQ_GIVE_UP = "INFORMATIONAL during EAP (the client gives up, §2.21.2)"
    EAP_MORE = "the method goes on"
    EAP_OK = "EAP succeeded"
    EAP_BAD = "EAP failed"
    EAP_WAIT = "the method waits for a CRL being fetched"
    PEER_OK = "the MSK AUTH verifies"
    PEER_REJECTED = "the MSK AUTH does not verify"


TABLE = Table("IKE_AUTH (EAP)", {
    (S.IDLE, I.START): (S.SENT, "send"),
    (S.IDLE, I.ABORT): (S.DONE, None),
    (S.SENT, I.RESP_REFUSED): (S.DONE, "refused"),
    (S.SENT, I.RESP_PEER_REJECTED): (S.DONE, "reject_peer"),
    (S.SENT, I.RESP_EAP): (S.EAP, "eap_answer"),
    (S.SENT, I.RESP_EAP_FAILED): (S.DONE, "eap_failed"),  # EAP-Failure at once: the gateway cannot run EAP
    (S.SENT, I.ABORT): (S.DONE, "release"),
    (S.EAP, I.RESP_EAP): (S.EAP, "eap_answer"),
    (S.EAP, I.RESP_EAP_SUCCESS): (S.AUTH_SENT, "send_msk_auth"),
    (S.EAP, I.RESP_EAP_FAILED): (S.DONE, "eap_failed"),
    (S.EAP, I.RESP_REFUSED): (S.DONE, "refused"),
    (S.EAP, I.ABORT): (S.DONE, "release"),
    (S.AUTH_SENT, I.RESP_OK): (S.DONE, "establish"),
    (S.AUTH_SENT, I.RESP_REFUSED): (S.DONE, "refused"),
    (S.AUTH_SENT, I.RESP_PEER_REJECTED): (S.DONE, "reject_peer"),
    (S.AUTH_SENT, I.ABORT): (S.DONE, "release"),
    (S.DONE, I.ABORT): (S.DONE, None),
    # gateway
    (S.IDLE, I.REQ_FIRST): (S.CHOOSING, "choose"),
    (S.CHOOSING, I.NO_EAP_CONN): (S.ANSWERED, "refuse_eap"),
    (S.CHOOSING, I.EAP_CONN): (S.EAP, "begin"),
    (S.EAP, I.EAP_BAD): (S.ANSWERED, "eap_refused"),
    (S.EAP, I.REQ_EAP): (S.CHECKING, "eap_round"),
    (S.EAP, I.REQ_OTHER): (S.ANSWERED, "out_of_order"),
    (S.CHECKING, I.EAP_MORE): (S.EAP, None),
    (S.CHECKING, I.EAP_OK): (S.EAP_DONE, None),
    (S.CHECKING, I.EAP_BAD): (S.ANSWERED, "eap_refused"),
    (S.CHECKING, I.EAP_WAIT): (S.EAP, "hold"),
    (S.EAP_DONE, I.REQ_AUTH): (S.CHECKING_AUTH, "check_msk_auth"),
    (S.EAP_DONE, I.REQ_OTHER): (S.ANSWERED, "out_of_order"),
    (S.EAP_DONE, I.REQ_EAP): (S.ANSWERED, "out_of_order"),
    (S.EAP, I.REQ_GIVE_UP): (S.ANSWERED, "peer_gave_up"),
    (S.EAP_DONE, I.REQ_GIVE_UP): (S.ANSWERED, "peer_gave_up"),
    (S.CHECKING_AUTH, I.PEER_OK): (S.ANSWERED, "accept_eap"),
    (S.CHECKING_AUTH, I.PEER_REJECTED): (S.ANSWERED, "authentication_failed"),
}, remote={I.RESP_REFUSED, I.RESP_PEER_REJECTED, I.RESP_EAP, I.RESP_EAP_SUCCESS, I.RESP_EAP_FAILED, I.RESP_OK,
           I.REQ_FIRST, I.NO_EAP_CONN, I.EAP_CONN, I.REQ_EAP, I.REQ_AUTH, I.REQ_OTHER, I.REQ_GIVE_UP,
           I.EAP_MORE, I.EAP_OK, I.EAP_BAD, I.EAP_WAIT, I.PEER_OK, I.PEER_REJECTED},
    final={S.DONE, S.ANSWERED})


def msk_auth(sa, msk, initiator: bool, signed: bytes, sk_p: bytes | None = None) -> bytes:
    """AUTH with the EAP MSK as the shared key (§2.16); SK_pi / SK_pr when the method made none
    (``sk_p``: the unmodified SK_pi for RFC 8784's NO_PPK_AUTH)."""
    key = msk if msk is not None else sk_p if sk_p is not None else (sa.keys.sk_pi if initiator else sa.keys.sk_pr)
    return psk_auth_data(sa.chosen.prf, key, signed)


def _eap_text(identity: bytes | None) -> str:
    return (identity or b"").decode("utf-8", "replace")


# ====================================================================== our client
class EapAuth(IkeAuth):
    """IKE_AUTH as an EAP client (local.auth = eap-*): IkeAuth's first request without AUTH, then rounds."""

    TABLE = TABLE
    INITIAL = S.IDLE

    def __init__(self, sa, children) -> None:
        super().__init__(sa, children)
        conn = sa.conn
        ident = (conn.local.eap_id or (str(conn.local.id) if conn.local.id else sa.local[0])).encode()
        secret = lookup_eap(sa.host.auth.policy.secrets, ident)
        auth = sa.host.auth
        self.peer = EapPeer(ident, methods_for(conn.local.auth),
                            peer_methods(ident, password=secret.secret if secret else None,
                                         tls=tls_credentials(auth, conn), now=self._wall(sa),
                                         server_identity=conn.remote.id, crl_source=CrlSource(auth, sa)))
        self.idr: IdPayload | None = None
        self.failing: str | None = None
        """Why EAP failed, while the acknowledgement of the failure is in flight."""

    @staticmethod
    def _wall(sa) -> datetime:
        # EAP-TLS checks the gateway's chain at the time the conversation starts (no clock here).
        return datetime.fromtimestamp(sa.host.auth.wall_time(sa.last_received), timezone.utc)

    def request(self, now: float) -> Request | None:
        if self.state == S.IDLE:
            self.fire(I.START, now)
        out, self.to_send = self.to_send, None
        return Request(IKE_AUTH, out) if out is not None else None

    def response(self, exchange: int, payloads: list, now: float) -> None:
        self.round = self.state  # which round a refusal answers (refused runs after the table moved on)
        idr = auth = eap = None
        failed = False
        for p in payloads:
            if isinstance(p, IdPayload) and not p.initiator:
                idr = idr or p
            elif isinstance(p, AuthPayload):
                auth = auth or p
            elif isinstance(p, EapPayload):
                eap = eap or p
            elif isinstance(p, NotifyPayload) and p.type < 16384:
                failed = True
        if self.state == S.SENT:
            if failed or idr is None or auth is None or eap is None:
                self.fire(I.RESP_REFUSED, now, payloads=payloads)
                return
            why = self._check_gateway(idr, auth, payloads)
            if why:
                self.fire(I.RESP_PEER_REJECTED, now, reason=why)
                return
            self.idr = idr
        if self.state in (S.SENT, S.EAP):
            if eap is None:
                self.fire(I.RESP_REFUSED, now, payloads=payloads)
                return
            if self.failing is not None:  # the gateway's EAP-Failure after our acknowledgement
                self.fire(I.RESP_EAP_FAILED, now, reason=self.failing)
                return
            step = self.peer.receive(eap)
            if step.state == "success":
                self.fire(I.RESP_EAP_SUCCESS, now)
            elif step.state == "failure" and step.payload is not None:
                # The method acknowledges the failure (MS-CHAPv2's Failure response): the gateway
                # answers with EAP-Failure and ends its side too.
                self.failing = step.reason
                self.fire(I.RESP_EAP, now, payload=step.payload)
            elif step.state == "failure":
                self.fire(I.RESP_EAP_FAILED, now, reason=step.reason)
            else:
                self.fire(I.RESP_EAP, now, payload=step.payload)
            return
        # AUTH_SENT: the gateway's MSK AUTH
        if failed or auth is None:
            self.fire(I.RESP_REFUSED, now, payloads=payloads)
            return
        sa = self.sa
        why = self.ppk.answer(sa, payloads)  # the keys its AUTH is made with: PPK ones or not
        if why is not None:
            self.fire(I.RESP_PEER_REJECTED, now, reason=why)
            return
        signed = octets(sa.init_response, sa.nonce_i, sa.chosen.prf, sa.keys.sk_pr.reveal(), self.idr) \
            + int_auth(sa, self.auth_mid)
        if auth.method != AuthMethod.PSK or not hmac.compare_digest(
                msk_auth(sa, self.peer.msk, False, signed), auth.data):
            self.fire(I.RESP_PEER_REJECTED, now, reason="the gateway's AUTH made with the EAP key (MSK) does "
                      "not verify: it did not take part in our EAP conversation")
            return
        self.fire(I.RESP_OK, now, payloads=payloads)

    def _check_gateway(self, idr: IdPayload, auth: AuthPayload, payloads: list) -> str:
        sa, conn = self.sa, self.sa.conn
        peer = identity_from_wire(idr.id_type, idr.data)
        if not matches(conn.remote.id, peer):
            return (f"the gateway identified as '{short(peer.value)}' but we expect '{conn.remote.id}': fix "
                    "'remote.id' or the gateway's local ID")
        sa.local_id = identity_from_wire(self.idi.id_type, self.idi.data)
        sa.remote_id = peer
        signed = octets(sa.init_response, sa.nonce_i, sa.chosen.prf, sa.keys.sk_pr.reveal(), idr) \
            + int_auth(sa, self.auth_mid)
        ok, why = sa.host.auth.verify(sa, conn, auth, signed, payloads, peer)
        return "" if ok else why

    def refused(self, now: float, payloads: list) -> None:
        """AUTHENTICATION_FAILED, said for EAP (IkeAuth's words are about pre-shared keys)."""
        errors = error_notifies(payloads)
        if errors and errors[0].type != NotifyType.AUTHENTICATION_FAILED:
            super().refused(now, payloads)
            return
        round_ = getattr(self, "round", S.SENT)
        if self.failing is not None:
            reason = f"{self.peer.method_name} failed: {self.failing}"
        elif round_ == S.SENT:
            ours = short(identity_from_wire(self.idi.id_type, self.idi.data).value)
            reason = (f"the gateway refused our request to log in with EAP as '{ours}': it has no EAP "
                      "connection accepting this ID (check its remote.id and remote.auth, and our local.id)")
        elif round_ == S.EAP:
            reason = f"the gateway ended {self.peer.method_name} with AUTHENTICATION_FAILED"
        else:
            reason = ("the gateway refused our AUTH made with the EAP key (MSK) after EAP-Success: it "
                      "computed another key (a different EAP method implementation?)")
        self.release(now)
        self.sa.fail(IKE_AUTH, "AUTHENTICATION_FAILED", reason, now, sent_by_peer=True)
        self.sa.destroy(now, reason, Ended("failed", reason))

    def eap_answer(self, now: float, payload: EapPayload | None) -> None:
        self.to_send = [payload] if payload is not None else []

    def send_msk_auth(self, now: float) -> None:
        sa = self.sa
        # RFC 8784: the PPK goes with the message holding our AUTH (charon's ike_auth.c).
        self.ppk.switch(sa)

        def data(sk_pi: bytes) -> bytes:
            signed = octets(sa.init_request, sa.nonce_r, sa.chosen.prf, sk_pi, self.idi) + int_auth(sa, self.auth_mid)
            return msk_auth(sa, self.peer.msk, True, signed, sk_pi)

        self.to_send = [AuthPayload(AuthMethod.PSK, data(sa.keys.sk_pi.reveal())), *self.ppk.notifies(data)]
        sa.eap_identity = _eap_text(self.peer.identity)
        sa.eap_method = self.peer.method_name

    def eap_failed(self, now: float, reason: str) -> None:
        sa = self.sa
        reason = f"{self.peer.method_name} failed: {reason}"
        self.release(now)
        sa.fail(IKE_AUTH, "AUTHENTICATION_FAILED", reason, now, sent_by_peer=True)
        sa.destroy(now, reason, Ended("failed", reason))

    def abort(self, now: float) -> None:
        self.fire(I.ABORT, now)

    def creates(self) -> str | None:
        return self.child_cfg.name if self.child_cfg is not None and self.state != S.DONE else None


# ====================================================================== the gateway
class EapAuthResponder(IkeAuthResponder):
    """IKE_AUTH of a client that wants EAP: stays for every round (``accepts``) until answered."""

    TABLE = TABLE
    INITIAL = S.IDLE

    @property
    def finished(self) -> bool:
        return self.state in TABLE.final

    def accepts(self, exchange: int) -> bool:
        if exchange == ExchangeType.INFORMATIONAL:
            return self.state in (S.EAP, S.EAP_DONE)
        return exchange == IKE_AUTH and not self.finished

    def respond(self, exchange: int, payloads: list, now: float) -> list:
        self.answer = []
        self.after = None
        self.answer_delay = 0.0
        if self.state == S.IDLE:
            self.idi = self.idr_wanted = None
            self.child_wanted = self.initial_contact = False
            for p in payloads:
                if isinstance(p, IdPayload):
                    if p.initiator:
                        self.idi = self.idi or p
                    else:
                        self.idr_wanted = self.idr_wanted or p
                elif isinstance(p, SaPayload):
                    self.child_wanted = True
                elif isinstance(p, NotifyPayload) and p.type == NotifyType.INITIAL_CONTACT:
                    self.initial_contact = True
            self.first = payloads  # SA, TSi, TSr and CP are answered after EAP
            self.auth_mid = self.sa.peer_mid  # every AUTH covers IntAuth with this round's MID (RFC 9242)
            self.fire(I.REQ_FIRST, now)
            return self.answer
        if exchange == ExchangeType.INFORMATIONAL:
            self.fire(I.REQ_GIVE_UP, now, payloads=payloads)
            return self.answer
        eap = auth = None
        for p in payloads:
            if isinstance(p, EapPayload):
                eap = eap or p
            elif isinstance(p, AuthPayload):
                auth = auth or p
        if eap is not None:
            self.fire(I.REQ_EAP, now, eap=eap)
        elif auth is not None and self.state == S.EAP_DONE:
            self.fire(I.REQ_AUTH, now, auth=auth, payloads=payloads)
        else:
            self.fire(I.REQ_OTHER, now)
        return self.answer

    def choose(self, now: float) -> I:
        sa = self.sa
        peer = identity_from_wire(self.idi.id_type, self.idi.data)
        wanted = identity_from_wire(self.idr_wanted.id_type, self.idr_wanted.data) if self.idr_wanted else None
        eap_conns = [c for c in sa.candidates if c.remote.is_eap]
        if not eap_conns:
            return I.NO_EAP_CONN
        conn, why = sa.host.auth.select(eap_conns, peer, wanted)
        if conn is None:
            self.reason = f"the peer wants EAP, but {why}"
            return I.NO_EAP_CONN
        sa.conn = conn
        self.peer_id = peer
        return I.EAP_CONN

    def refuse_eap(self, now: float) -> None:
        if getattr(self, "reason", None):
            self.authentication_failed(now)
            return
        super().refuse_eap(now)

    def begin(self, now: float) -> I | None:
        """IDr, CERT and our AUTH (the gateway proves itself first), and the first EAP request."""
        sa, conn, auth = self.sa, self.sa.conn, self.sa.host.auth
        self.idr = auth.id_payload(conn, False, sa.local[0])
        sa.local_id = identity_from_wire(self.idr.id_type, self.idr.data)
        signed_r = octets(sa.init_response, sa.nonce_i, sa.chosen.prf, sa.keys.sk_pr.reveal(), self.idr) \
            + int_auth(sa, self.auth_mid)
        secrets = auth.policy.secrets
        eap_id = conn.remote.eap_id

        def password(identity: bytes):
            entry = lookup_eap(secrets, identity)
            return entry.secret if entry is not None else None

        methods = server_methods(passwords=password, tls=tls_credentials(auth, conn),
                                 now=datetime.fromtimestamp(auth.wall_time(now), timezone.utc),
                                 peer_identity=self.peer_id, random=sa.host.rng, crl_source=CrlSource(auth, sa))
        self.server = EapServer(methods_for(conn.remote.auth), methods, ask_identity=eap_id is not None,
                                ike_identity=str(self.peer_id).encode(),
                                accept_identity=lambda i: eap_id_matches(eap_id, i), random=sa.host.rng)
        step = self.server.start()
        self.answer = [self.idr, *auth.cert_payloads(conn), auth.auth_payload(sa, conn, signed_r)]
        if step.payload is not None:
            self.answer.append(step.payload)
        if step.state == "failure":  # e.g. EAP-TLS without a gateway certificate loaded
            self.reason = f"EAP for '{short(str(self.peer_id))}' could not start: {step.reason}"
            return I.EAP_BAD
        return None

    def eap_round(self, now: float, eap: EapPayload) -> I:
        step = self.server.receive(eap)
        if step.payload is not None:
            self.answer = [step.payload]
        # e.g. EAP-MSCHAPv2's retry after a wrong password (charon: sleep(RETRY_DELAY)): held on the SA
        # (sa.send_response), no memory beyond the answer every SA caches anyway.
        self.answer_delay = step.delay
        if step.state == "wait":
            self.waiting_for = step.reason
            return I.EAP_WAIT
        if step.state == "success":
            return I.EAP_OK
        if step.state == "failure":
            who = _eap_text(self.server.identity)
            self.reason = (f"{self.server.method_name} of '{short(who or str(self.peer_id))}' failed: "
                           f"{step.reason}")
            return I.EAP_BAD
        return I.EAP_MORE

    def hold(self, now: float) -> None:
        """EAP-TLS waits for a CRL the runtime fetches (as IKE_AUTH with certificates, certauth.Deferred):
        the request stays unanswered and is taken again when the fetch ends or the client retransmits."""
        log.debug("%s[%d]: IKE_AUTH held: %s", self.sa.name, self.sa.unique_id, self.waiting_for,
                  extra={"connection": self.sa.name})
        self.answer = None

    def eap_refused(self, now: float) -> None:
        # The EAP-Failure goes out (set by eap_round); then the half-open SA goes.
        self.after = "_drop"

    def peer_gave_up(self, now: float, payloads: list) -> None:
        """charon, for one, ends a failed EAP login with an INFORMATIONAL (AUTHENTICATION_FAILED)
        instead of answering the method's failure message: acknowledge it, and the SA goes."""
        server = self.server
        who = short(_eap_text(server.identity) or str(self.peer_id))
        notes = ", ".join(notify_name(p.type) for p in payloads if isinstance(p, NotifyPayload)) or "no notify"
        refused = getattr(server.method, "retries", 0) > 0
        self.reason = (f"{server.method_name} of '{who}' failed: "
                       + ("the gateway refused the login (wrong user name or password) and " if refused else "")
                       + f"the client gave up (INFORMATIONAL with {notes})")
        self.answer = []
        self.after = "_drop"

    def out_of_order(self, now: float) -> None:
        self.reason = f"the peer sent an IKE_AUTH request out of order during EAP ({self.state.value})"
        self.authentication_failed(now)

    def check_msk_auth(self, now: float, auth: AuthPayload, payloads: list) -> I:
        sa = self.sa
        # RFC 8784: the client's PPK_IDENTITY comes with its AUTH; ppk_required holds for EAP too.
        auth, why = ppk_auth.responder(sa, sa.conn, payloads, auth)
        if auth is None:
            self.reason = why
            return I.PEER_REJECTED
        signed = octets(sa.init_request, sa.nonce_r, sa.chosen.prf, sa.keys.sk_pi.reveal(), self.idi) \
            + int_auth(sa, self.auth_mid)
        if auth.method == AuthMethod.PSK and hmac.compare_digest(
                msk_auth(sa, self.server.msk, True, signed), auth.data):
            return I.PEER_OK
        self.reason = (f"the peer's AUTH after {self.server.method_name} does not verify with the EAP key "
                       f"(MSK, auth method {auth.method})")
        return I.PEER_REJECTED

    def accept_eap(self, now: float) -> None:
        sa = self.sa
        sa.remote_id = self.peer_id
        sa.eap_identity = _eap_text(self.server.identity)
        sa.eap_method = self.server.method_name
        sa.cert_subject = getattr(self.server.method, "subject", "")
        if self.refused_as_duplicate(now):
            return
        signed_r = octets(sa.init_response, sa.nonce_i, sa.chosen.prf, sa.keys.sk_pr.reveal(), self.idr) \
            + int_auth(sa, self.auth_mid)
        answer: list = [AuthPayload(AuthMethod.PSK, msk_auth(sa, self.server.msk, False, signed_r)),
                        *ppk_auth.responder_notifies(sa)]
        elsewhere = redirect.auth_redirect(sa, sa.conn)
        self.first, first = [], self.first
        if elsewhere is not None:
            self.answer = answer + elsewhere
            self.after = "_redirected"
            return
        answer += mobike.auth_notifies(sa, sa.conn, first)
        self.answer = answer + self.child_part(now, first, sa.eap_identity or str(sa.remote_id))
        self.after = "_establish"


def tls_credentials(auth, conn) -> TlsCredentials | None:
    """EAP-TLS credentials of a connection: our certificate and key, the CAs that sign the other side's
    (None when the connection has no certificate loaded: the method is then not offered)."""
    creds = auth.credentials
    if creds is None or conn.name not in creds.local:
        return None
    local = creds.local[conn.name]
    return TlsCredentials(tuple(local.certs), local.key, tuple(creds.cacerts.get(conn.name, ())),
                          tuple(creds.all_crls() if hasattr(creds, "all_crls") else creds.crls),  # fetched ones too
                          revocation=conn.remote.revocation)


class CrlSource:
    """EAP-TLS's view of the runtime's CRL fetcher (engine.eap.tls.CrlSource), as IKE_AUTH with
    certificates uses it (certauth.verify_auth): current CRLs, asking for missing ones, and which
    of those are being fetched now."""

    def __init__(self, auth, sa) -> None:
        self.auth, self.sa = auth, sa

    def crls(self) -> list:
        creds = self.auth.credentials
        if creds is None:
            return []
        return creds.all_crls() if hasattr(creds, "all_crls") else list(creds.crls)

    def want(self, uris) -> None:
        creds = self.auth.credentials
        if creds is not None and hasattr(creds, "want"):
            creds.want(uris)

    def pending(self, uris) -> list[str]:
        creds = self.auth.credentials
        if creds is None or not getattr(creds, "fetching", False):
            return []
        return certauth._pending(creds, uris, self.auth.wall_time(self.sa.last_received))

    def status(self, uris) -> str:
        creds = self.auth.credentials
        if creds is None or not getattr(creds, "fetching", False):
            return ""
        status = creds.crl_status
        return "; ".join(f"{u}: {status.get(u, 'being fetched now, a new attempt can succeed')}" for u in uris)


def ike_auth_for(sa, children) -> IkeAuth:
    """The IKE_AUTH our side starts: with EAP rounds when local.auth is an EAP method."""
    return EapAuth(sa, children) if sa.conn.local.is_eap else IkeAuth(sa, children)
