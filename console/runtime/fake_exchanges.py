"""The fake runtime's IKE exchanges (console/runtime/fake.py), as the engine would report them: the
IKE_SA_INIT and IKE_AUTH pairs of an SA that comes up, the extra CHILD SAs, and the scripted failures
(NO_PROPOSAL_CHOSEN with both proposal lists, TS_UNACCEPTABLE, AUTHENTICATION_FAILED)."""

from __future__ import annotations

from engine.events import (
    ExchangeReceived,
    ExchangeSent,
    IkeSaStateChanged,
    IkeState,
    MessageSummary,
    NegotiationFailed,
    PayloadDetail,
)
from engine.policy.model import ConnectionConfig

from console.runtime.fake_model import LEGACY_IKE_PROPOSALS, LOCAL_ADDR, LOCAL_IKE_PROPOSALS, _Ike


class ScriptedExchanges:
    """Mixin of FakeRuntime: the exchanges and state changes of its scripted SAs (module docstring)."""

    def _msg(self, ike: _Ike, exchange: str, mid: int, response: bool, payloads: tuple[str, ...],
             details: tuple[PayloadDetail, ...] = (), notifies: tuple[str, ...] = (), retransmit: int = 0,
             initiator_flag: bool | None = None) -> MessageSummary:
        return MessageSummary(
            exchange=exchange, mid=mid, response=response,
            initiator_flag=ike.initiator if initiator_flag is None else initiator_flag,
            spi_i=ike.spi_i, spi_r=ike.spi_r if (exchange != "IKE_SA_INIT" or response) else 0,
            length=200 + 40 * len(payloads), payloads=payloads, notifies=notifies, details=details,
            retransmit=retransmit,
        )

    def _exchange(self, ike: _Ike, sent: bool, msg: MessageSummary, dt: float = 0.0) -> None:
        cls = ExchangeSent if sent else ExchangeReceived
        local = (LOCAL_ADDR, ike.local_port)
        remote = (ike.remote_addr, ike.remote_port)
        self._emit(cls(ike_sa=ike.unique_id, connection=ike.connection, message=msg, time=self.now + dt,
                       local=local, remote=remote))
        arrow = "sending" if sent else "received"
        self._log("debug", "engine.ike", f"{arrow} {msg.brief()}", ike.connection)

    @staticmethod
    def _sa_detail(proposals: tuple[str, ...]) -> PayloadDetail:
        return PayloadDetail("SA", tuple((f"proposal {i + 1}", p) for i, p in enumerate(proposals)))

    def _init_pair(self, ike: _Ike, conn: ConnectionConfig, t: float) -> None:
        init_payloads = ("SA", "KE", "No", "N(NATD_S_IP)", "N(NATD_D_IP)", "N(FRAG_SUP)")
        details = (
            self._sa_detail(LOCAL_IKE_PROPOSALS),
            PayloadDetail("KE", (("group", "CURVE_25519"), ("public value", "32 bytes"))),
            PayloadDetail("No", (("nonce", "32 bytes"),)),
            PayloadDetail("N(NATD_S_IP)", (("hash", "20 bytes"),)),
            PayloadDetail("N(FRAG_SUP)", ()),
        )
        self._exchange(ike, ike.initiator, self._msg(ike, "IKE_SA_INIT", 0, False, init_payloads, details), t)
        resp_details = (
            PayloadDetail("SA", (("chosen", LOCAL_IKE_PROPOSALS[0]),)),
            PayloadDetail("KE", (("group", "CURVE_25519"), ("public value", "32 bytes"))),
            PayloadDetail("No", (("nonce", "32 bytes"),)),
        )
        self._exchange(ike, not ike.initiator,
                       self._msg(ike, "IKE_SA_INIT", 0, True, init_payloads, resp_details), t + 0.012)

    def _auth_pair(self, ike: _Ike, conn: ConnectionConfig, child: str, t: float, *,
                   response_notify: str | None = None) -> None:
        cfg = conn.child(child)
        ts_i = ", ".join(str(x) for x in cfg.local_ts)
        ts_r = ", ".join(str(x) for x in cfg.remote_ts)
        req = ("IDi", "IDr", "AUTH", "SA", "TSi", "TSr", "N(INIT_CONTACT)")
        details = (
            PayloadDetail("IDi", (("type", "FQDN"), ("id", ike.local_id))),
            PayloadDetail("IDr", (("type", "FQDN"), ("id", ike.remote_id))),
            PayloadDetail("AUTH", (("method", "shared key MIC"), ("data", "48 bytes, not shown"))),
            PayloadDetail("SA", (("proposal 1", "ESP:AES_GCM_16_256/NO_EXT_SEQ"),)),
            PayloadDetail("TSi", (("selectors", ts_i),)),
            PayloadDetail("TSr", (("selectors", ts_r),)),
        )
        self._exchange(ike, True, self._msg(ike, "IKE_AUTH", 1, False, req, details), t)
        if response_notify == "AUTHENTICATION_FAILED":
            resp: tuple[str, ...] = ("N(AUTH_FAILED)",)
            rdet = (PayloadDetail("N(AUTH_FAILED)", (("notify", "AUTHENTICATION_FAILED (24)"),)),)
        elif response_notify == "TS_UNACCEPTABLE":
            resp = ("IDr", "AUTH", "N(TS_UNACCEPT)")
            rdet = (
                PayloadDetail("IDr", (("type", "FQDN"), ("id", ike.remote_id))),
                PayloadDetail("AUTH", (("method", "shared key MIC"), ("data", "48 bytes, not shown"))),
                PayloadDetail("N(TS_UNACCEPT)", (("notify", "TS_UNACCEPTABLE (38)"),)),
            )
        else:
            resp = ("IDr", "AUTH", "SA", "TSi", "TSr")
            rdet = (
                PayloadDetail("IDr", (("type", "FQDN"), ("id", ike.remote_id))),
                PayloadDetail("AUTH", (("method", "shared key MIC"), ("data", "48 bytes, not shown"))),
                PayloadDetail("SA", (("chosen", "ESP:AES_GCM_16_256/NO_EXT_SEQ"),)),
                PayloadDetail("TSi", (("selectors", ts_i),)),
                PayloadDetail("TSr", (("selectors", ts_r),)),
            )
        notifies = (response_notify,) if response_notify else ()
        self._exchange(ike, False, self._msg(ike, "IKE_AUTH", 1, True, resp, rdet, notifies), t + 0.03)

    def _state(self, ike: _Ike, old: str, new: str, reason: str = "") -> None:
        ike.state = new
        self._emit(IkeSaStateChanged(ike_sa=ike.unique_id, connection=ike.connection,
                                     old=IkeState(old), new=IkeState(new), reason=reason))

    def _establish(self, conn: ConnectionConfig, *, initiator: bool = True, remote: str | None = None,
                   nat: bool = False, children: tuple[str, ...] | None = None) -> _Ike:
        ike = self._new_ike(conn, initiator=initiator, remote=remote, nat=nat, state="CONNECTING")
        self._state(ike, "CREATED", "CONNECTING")
        self._init_pair(ike, conn, 0.0)
        names = children if children is not None else tuple(c.name for c in conn.children)
        self._auth_pair(ike, conn, names[0], 0.02)
        ike.spi_r = ike.spi_r or self._spi64()
        ike.established = self.now
        self._state(ike, "CONNECTING", "ESTABLISHED")
        self._log("info", "engine.ike",
                  f"IKE_SA {conn.name}[{ike.unique_id}] established between {LOCAL_ADDR}[{ike.local_id}]"
                  f"...{ike.remote_addr}[{ike.remote_id}]", conn.name)
        for i, name in enumerate(names):
            if i:
                mid = 1 + i
                det = (PayloadDetail("SA", (("proposal 1", "ESP:AES_GCM_16_256/CURVE_25519/NO_EXT_SEQ"),)),
                       PayloadDetail("KE", (("group", "CURVE_25519"),)))
                pl = ("SA", "No", "KE", "TSi", "TSr")
                self._exchange(ike, True, self._msg(ike, "CREATE_CHILD_SA", mid, False, pl, det), 0.05 * i)
                self._exchange(ike, False, self._msg(ike, "CREATE_CHILD_SA", mid, True, pl, det), 0.05 * i + 0.01)
            self._new_child(ike, name)
        return ike

    def _fail(self, conn: ConnectionConfig, notify: str) -> _Ike:
        """Play one of the scripted failures for ``conn``."""
        self._failing.add(conn.name)
        if notify == "NO_PROPOSAL_CHOSEN":
            # The legacy peer initiates with what it has; we find nothing acceptable.
            ike = self._new_ike(conn, initiator=False, state="CONNECTING")
            ike.spi_r = 0
            self._state(ike, "CREATED", "CONNECTING")
            payloads = ("SA", "KE", "No", "N(NATD_S_IP)", "N(NATD_D_IP)")
            det = (self._sa_detail(LEGACY_IKE_PROPOSALS),
                   PayloadDetail("KE", (("group", "MODP_1024"), ("public value", "128 bytes"))))
            for rt in range(2):
                self._exchange(ike, False, self._msg(ike, "IKE_SA_INIT", 0, False, payloads, det,
                                                     retransmit=rt, initiator_flag=True), 2.0 * rt)
                self._exchange(ike, True, self._msg(
                    ike, "IKE_SA_INIT", 0, True, ("N(NO_PROP)",),
                    (PayloadDetail("N(NO_PROP)", (("notify", "NO_PROPOSAL_CHOSEN (14)"),)),),
                    ("NO_PROPOSAL_CHOSEN",), initiator_flag=True), 2.0 * rt + 0.001)
            self._emit(NegotiationFailed(
                ike_sa=ike.unique_id, connection=conn.name, exchange="IKE_SA_INIT", notify="NO_PROPOSAL_CHOSEN",
                reason="the peer offered only SHA-1/MD5 integrity with MODP_1024, none of which this policy accepts",
                sent_by_peer=False, local_proposals=LOCAL_IKE_PROPOSALS, remote_proposals=LEGACY_IKE_PROPOSALS))
            self._log("warning", "engine.ike", "received proposals unacceptable: "
                      + ", ".join(LEGACY_IKE_PROPOSALS), conn.name)
            self._state(ike, "CONNECTING", "DESTROYED", "NO_PROPOSAL_CHOSEN")
            del self._ikes[ike.unique_id]
            return ike
        ike = self._new_ike(conn, state="CONNECTING")
        self._state(ike, "CREATED", "CONNECTING")
        self._init_pair(ike, conn, 0.0)
        child = conn.children[0]
        self._auth_pair(ike, conn, child.name, 0.02, response_notify=notify)
        if notify == "TS_UNACCEPTABLE":
            ike.established = self.now
            self._state(ike, "CONNECTING", "ESTABLISHED")
            self._emit(NegotiationFailed(
                ike_sa=ike.unique_id, connection=conn.name, exchange="IKE_AUTH", notify=notify,
                reason=f"the peer does not accept the traffic selectors of CHILD {child.name}",
                child=child.name, sent_by_peer=True,
                local_ts=tuple(str(t) for t in child.local_ts), remote_ts=tuple(str(t) for t in child.remote_ts)))
            self._log("error", "engine.ike", "received TS_UNACCEPTABLE notify, no CHILD_SA built", conn.name)
        else:
            self._emit(NegotiationFailed(
                ike_sa=ike.unique_id, connection=conn.name, exchange="IKE_AUTH", notify=notify,
                reason="the peer could not verify our AUTH payload", sent_by_peer=True))
            self._log("error", "engine.ike", "received AUTHENTICATION_FAILED notify error", conn.name)
            self._state(ike, "CONNECTING", "DESTROYED", notify)
            del self._ikes[ike.unique_id]
        return ike
