"""Requests we answer on an existing IKE SA: IKE_AUTH, CREATE_CHILD_SA
(new CHILD, CHILD rekey, IKE rekey) and INFORMATIONAL (delete, liveness).
IKE_SA_INIT requests are answered by the endpoint, which creates the SA."""

from __future__ import annotations

import logging

from engine.crypto.errors import InvalidKeyExchange
from engine.crypto.ke import KeyExchange
from engine.events import ChildState, IkeState
from engine.ike import proposals as props
from engine.ike.auth import octets
from engine.ike.certauth import cert_payloads, local_id_payload
from engine.ike.child import ChildSa, derive_child_keys
from engine.ike.errors import RemoteError
from engine.ike.identity import identity_from_wire, identity_to_wire
from engine.ike.init import NONCE_SIZE
from engine.ike.sa import IkeSa, find, notify
from engine.ike.tasks import resolve_ts, ts_from_payload, ts_payload
from engine.policy.model import ChildConfig
from engine.policy.ts import narrow
from engine.wire.constants import ExchangeType, NotifyType, ProtocolId
from engine.wire.payloads import (
    AuthPayload,
    DeletePayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    SaPayload,
    TsPayload,
)

log = logging.getLogger("engine.ike")


def handle_request(sa: IkeSa, exchange: int, mid: int, payloads: list, now: float) -> None:
    if exchange == ExchangeType.IKE_AUTH:
        if sa.state != IkeState.CONNECTING or sa.original_initiator:
            raise RemoteError(NotifyType.INVALID_SYNTAX, "IKE_AUTH request on an established IKE SA")
        ike_auth(sa, mid, payloads, now)
    elif exchange == ExchangeType.CREATE_CHILD_SA:
        if not sa.established and sa.state != IkeState.REKEYED:
            raise RemoteError(NotifyType.INVALID_SYNTAX, "CREATE_CHILD_SA before the IKE SA is up")
        create_child_sa(sa, mid, payloads, now)
    elif exchange == ExchangeType.INFORMATIONAL:
        if sa.keys is None:
            raise RemoteError(None, "INFORMATIONAL before keys")
        informational(sa, mid, payloads, now)
    else:
        raise RemoteError(NotifyType.INVALID_SYNTAX, f"unexpected exchange type {exchange}")


# ====================================================================== CHILD selection
class ChildChoice:
    def __init__(self, cfg: ChildConfig, chosen: props.Chosen, local_ts, remote_ts, mode: str) -> None:
        self.cfg = cfg
        self.chosen = chosen
        self.local_ts = tuple(local_ts)
        self.remote_ts = tuple(remote_ts)
        self.mode = mode


def select_child(sa: IkeSa, children, payloads, *, ignore_ke: bool) -> ChildChoice:
    """The first child config whose selectors overlap the peer's and whose
    proposals match. Raises RemoteError(NO_PROPOSAL_CHOSEN | TS_UNACCEPTABLE)."""
    sa_p = find(payloads, SaPayload)
    tsi = find(payloads, TsPayload, lambda p: p.initiator)
    tsr = find(payloads, TsPayload, lambda p: not p.initiator)
    if sa_p is None or tsi is None or tsr is None:
        raise RemoteError(NotifyType.INVALID_SYNTAX, "CHILD SA request without SA, TSi or TSr")
    peer_ts = ts_from_payload(tsi)  # the initiator's side: our remote
    our_ts = ts_from_payload(tsr)
    transport = notify(payloads, NotifyType.USE_TRANSPORT_MODE) is not None
    ts_ok: list[ChildConfig] = []
    for cfg in children:
        remote = narrow(peer_ts, resolve_ts(cfg.remote_ts, sa.remote[0]))
        local = narrow(our_ts, resolve_ts(cfg.local_ts, sa.local[0]))
        if not remote or not local:
            continue
        ts_ok.append(cfg)
        chosen = props.select(sa_p.proposals, cfg.proposals, ignore_ke=ignore_ke)
        if chosen is None:
            continue
        mode = "transport" if transport and cfg.mode == "transport" else "tunnel"
        return ChildChoice(cfg, chosen, local, remote, mode)
    offered = props.describe_offer(sa_p.proposals)
    if not ts_ok:
        mine = [f"{', '.join(map(str, c.local_ts))} === {', '.join(map(str, c.remote_ts))}" for c in children]
        reason = (f"no CHILD config matches the peer's traffic selectors {', '.join(map(str, peer_ts))} === "
                  f"{', '.join(map(str, our_ts))}; ours are: {'; '.join(mine) or 'none'}. "
                  "Make our remote_ts cover the peer's local_ts and our local_ts cover its remote_ts.")
        exc = RemoteError(NotifyType.TS_UNACCEPTABLE, reason)
        exc.details = dict(remote_ts=tuple(map(str, peer_ts)) + ("===",) + tuple(map(str, our_ts)),
                           local_ts=tuple(s for c in children for s in (*map(str, c.local_ts), "===", *map(str, c.remote_ts))))
        raise exc
    ours = tuple(x for c in ts_ok for x in props.describe_configured(c.proposals))
    reason = (f"none of the peer's CHILD proposals is acceptable. The peer offered: {'; '.join(offered)}. "
              f"We accept: {'; '.join(ours)}.")
    exc = RemoteError(NotifyType.NO_PROPOSAL_CHOSEN, reason)
    exc.details = dict(remote_proposals=offered, local_proposals=ours)
    raise exc


def _child_failure(sa: IkeSa, exchange: int, exc: RemoteError, now: float, child: str | None = None) -> None:
    d = getattr(exc, "details", {})
    from engine.ike.sa import _notify_name

    sa.fail(exchange, _notify_name(exc.notify), exc.reason, now, child=child, **d)


def _new_child(sa: IkeSa, choice: ChildChoice, nonce_i: bytes, nonce_r: bytes, shared, now: float,
               rekey: ChildSa | None) -> tuple[ChildSa, list]:
    spi_in = sa.ep.allocate_spi()
    keys = derive_child_keys(sa.chosen.prf, sa.keys.sk_d.reveal(), choice.chosen, nonce_i, nonce_r,
                             initiator=False, shared=shared)
    child = ChildSa(
        config=choice.cfg, unique_id=sa.ep.next_child_id(), reqid=sa.ep.reqid_for(sa, choice.cfg, rekey),
        chosen=choice.chosen, spi_in=spi_in, spi_out=choice.chosen.spi, mode=choice.mode,
        local_ts=choice.local_ts, remote_ts=choice.remote_ts, keys=keys, initiator=False,
        installed_at=now, rekey_at=None, expire_at=None, nonces=(nonce_i, nonce_r), ke_group=choice.chosen.ke,
        rekeyed_from=rekey.spi_in if rekey is not None else None)
    response: list = []
    if choice.mode == "transport":
        response.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
    response.append(SaPayload((choice.chosen.with_spi(spi_in).to_wire(),)))
    return child, response


# ====================================================================== IKE_AUTH
def ike_auth(sa: IkeSa, mid: int, payloads: list, now: float) -> None:
    ep = sa.ep
    idi = find(payloads, IdPayload, lambda p: p.initiator)
    auth = find(payloads, AuthPayload)
    if idi is None or auth is None:
        raise RemoteError(NotifyType.INVALID_SYNTAX, "IKE_AUTH request without IDi or AUTH")
    peer = identity_from_wire(idi.id_type, idi.data)
    idr_req = find(payloads, IdPayload, lambda p: not p.initiator)
    wanted = identity_from_wire(idr_req.id_type, idr_req.data) if idr_req else None
    conn, why = ep.select_for_auth(sa, peer, wanted)
    if conn is None:
        _auth_failed(sa, mid, now, why)
        return
    sa.conn = conn
    signed = octets(sa.init_request, sa.nonce_r, sa.chosen.prf, sa.keys.sk_pi.reveal(), idi)
    ok, why = ep.verify_auth(sa, conn, auth, signed, payloads, peer)
    if not ok:
        _auth_failed(sa, mid, now, why)
        return
    sa.remote_id = peer
    idr = local_id_payload(ep, conn, False, sa.local[0])
    if idr is None:
        id_type, id_data = identity_to_wire(conn.local.id, sa.local[0])
        idr = IdPayload(False, id_type, id_data)
    sa.local_id = identity_from_wire(idr.id_type, idr.data)
    signed_r = octets(sa.init_response, sa.nonce_i, sa.chosen.prf, sa.keys.sk_pr.reveal(), idr)
    response: list = [idr, *cert_payloads(ep, conn), ep.auth_payload(sa, conn, signed_r, local=True)]
    child = None
    if find(payloads, SaPayload) is not None:
        try:
            choice = select_child(sa, conn.children, payloads, ignore_ke=True)
        except RemoteError as exc:
            response.append(NotifyPayload(exc.notify))
            _child_failure(sa, ExchangeType.IKE_AUTH, exc, now)
        else:
            child, extra = _new_child(sa, choice, sa.nonce_i, sa.nonce_r, None, now, None)
            response += extra
            response += [ts_payload(True, choice.remote_ts), ts_payload(False, choice.local_ts)]
    sa.send_response(ExchangeType.IKE_AUTH, mid, response, now)
    sa.half_open_deadline = None
    sa.set_state(IkeState.ESTABLISHED)
    sa.established_at = now
    sa.schedule_lifetimes(now)
    if notify(payloads, NotifyType.INITIAL_CONTACT) is not None:
        ep.initial_contact_received(sa, now)
    ep.ike_established(sa, now)
    if child is not None:
        sa.install_child(child, now)


def _auth_failed(sa: IkeSa, mid: int, now: float, reason: str) -> None:
    sa.send_response(ExchangeType.IKE_AUTH, mid, [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)], now)
    sa.fail(ExchangeType.IKE_AUTH, "AUTHENTICATION_FAILED", reason, now)
    sa.destroy(now, "authentication failed")


# ====================================================================== CREATE_CHILD_SA
def create_child_sa(sa: IkeSa, mid: int, payloads: list, now: float) -> None:
    sa_p = find(payloads, SaPayload)
    nonce = find(payloads, NoncePayload)
    if sa_p is None or nonce is None or not sa_p.proposals:
        raise RemoteError(NotifyType.INVALID_SYNTAX, "CREATE_CHILD_SA without SA or Nonce")
    if sa.state in (IkeState.REKEYED, IkeState.DELETING):
        sa.send_response(ExchangeType.CREATE_CHILD_SA, mid, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)], now)
        return
    if sa_p.proposals[0].protocol == ProtocolId.IKE:
        _rekey_ike(sa, mid, payloads, sa_p, nonce, now)
        return
    rekey_n = notify(payloads, NotifyType.REKEY_SA)
    old = None
    if rekey_n is not None:
        old = sa.child_by_spi_out(rekey_n.spi)
        if old is None or old.state in (ChildState.DELETING, ChildState.DELETED):
            sa.send_response(ExchangeType.CREATE_CHILD_SA, mid, [NotifyPayload(
                NotifyType.CHILD_SA_NOT_FOUND, protocol=rekey_n.protocol, spi=rekey_n.spi)], now)
            return
        if old.state == ChildState.REKEYED:
            sa.send_response(ExchangeType.CREATE_CHILD_SA, mid, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)], now)
            return
        children = [old.config]
    else:
        children = list(sa.conn.children)
    try:
        choice = select_child(sa, children, payloads, ignore_ke=False)
    except RemoteError as exc:
        sa.send_response(ExchangeType.CREATE_CHILD_SA, mid, [NotifyPayload(exc.notify)], now)
        _child_failure(sa, ExchangeType.CREATE_CHILD_SA, exc, now, old.config.name if old else None)
        return
    nonce_r = sa.ep.rng(NONCE_SIZE)
    shared = None
    ke_reply: list = []
    if choice.chosen.ke:
        ke = find(payloads, KePayload)
        if ke is None or ke.group != choice.chosen.ke:
            sa.send_response(ExchangeType.CREATE_CHILD_SA, mid, [NotifyPayload(
                NotifyType.INVALID_KE_PAYLOAD, data=choice.chosen.ke.to_bytes(2, "big"))], now)
            return
        mine = KeyExchange(choice.chosen.ke)
        try:
            shared = mine.compute_shared(ke.data)
        except InvalidKeyExchange as exc:
            raise RemoteError(NotifyType.INVALID_SYNTAX, f"invalid PFS KE: {exc}") from None
        ke_reply = [KePayload(mine.group, mine.public_bytes())]
    child, response = _new_child(sa, choice, nonce.data, nonce_r, shared, now, old)
    response += [NoncePayload(nonce_r), *ke_reply,
                 ts_payload(True, choice.remote_ts), ts_payload(False, choice.local_ts)]
    sa.send_response(ExchangeType.CREATE_CHILD_SA, mid, response, now)
    sa.install_child(child, now)
    if old is not None:
        from engine.ike.collisions import responded_child_rekey

        responded_child_rekey(sa, old, child, now)


def _rekey_ike(sa: IkeSa, mid: int, payloads, sa_p: SaPayload, nonce: NoncePayload, now: float) -> None:
    chosen = props.select(sa_p.proposals, sa.conn.proposals)
    if chosen is None:
        sa.send_response(ExchangeType.CREATE_CHILD_SA, mid, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)], now)
        sa.fail(ExchangeType.CREATE_CHILD_SA, "NO_PROPOSAL_CHOSEN", "none of the peer's IKE rekey proposals "
                f"is acceptable: it offered {'; '.join(props.describe_offer(sa_p.proposals))}", now,
                remote_proposals=props.describe_offer(sa_p.proposals),
                local_proposals=props.describe_configured(sa.conn.proposals))
        return
    ke = find(payloads, KePayload)
    if ke is None or ke.group != chosen.ke:
        sa.send_response(ExchangeType.CREATE_CHILD_SA, mid, [NotifyPayload(
            NotifyType.INVALID_KE_PAYLOAD, data=(chosen.ke or 0).to_bytes(2, "big"))], now)
        return
    if len(chosen.spi) != 8:
        raise RemoteError(NotifyType.INVALID_SYNTAX, "IKE rekey proposal without an 8-byte SPI")
    mine = KeyExchange(chosen.ke)
    try:
        shared = mine.compute_shared(ke.data)
    except InvalidKeyExchange as exc:
        raise RemoteError(NotifyType.INVALID_SYNTAX, f"invalid KE in IKE rekey: {exc}") from None
    spi_r = sa.ep.new_ike_spi()
    nonce_r = sa.ep.rng(NONCE_SIZE)
    from engine.ike.collisions import responded_ike_rekey
    from engine.ike.rekey import make_rekeyed_sa

    new = make_rekeyed_sa(sa, initiator=False, spi_i=chosen.spi, spi_r=spi_r, chosen=chosen,
                          nonce_i=nonce.data, nonce_r=nonce_r, shared=shared, now=now)
    sa.send_response(ExchangeType.CREATE_CHILD_SA, mid, [
        SaPayload((chosen.with_spi(spi_r).to_wire(),)), NoncePayload(nonce_r),
        KePayload(mine.group, mine.public_bytes())], now)
    responded_ike_rekey(sa, new, now)


# ====================================================================== INFORMATIONAL
def informational(sa: IkeSa, mid: int, payloads: list, now: float) -> None:
    deletes = [p for p in payloads if isinstance(p, DeletePayload)]
    if any(d.protocol == ProtocolId.IKE for d in deletes):
        sa.send_response(ExchangeType.INFORMATIONAL, mid, [], now)
        reason = "deleted by peer"
        if sa.state == IkeState.REKEYED:
            reason = "rekeyed"
        sa.destroy(now, reason)
        return
    ours: dict[int, list[bytes]] = {}
    removed: list[tuple[ChildSa, str]] = []
    for d in deletes:
        for spi in d.spis:
            child = sa.child_by_spi_out(spi)
            if child is None:
                continue
            reason = "rekeyed" if child.state == ChildState.REKEYED else "deleted by peer"
            if child.spi_in not in sa.deleting_children:
                ours.setdefault(d.protocol, []).append(child.spi_in)
            removed.append((child, reason))
    response: list = [DeletePayload(proto, tuple(spis)) for proto, spis in ours.items()]
    for p in payloads:
        if isinstance(p, NotifyPayload) and p.type == NotifyType.AUTHENTICATION_FAILED:
            sa.send_response(ExchangeType.INFORMATIONAL, mid, [], now)
            sa.fail(ExchangeType.IKE_AUTH, "AUTHENTICATION_FAILED",
                    "the peer could not verify our authentication: check the pre-shared key and IDs "
                    "on both sides", now, sent_by_peer=True)
            sa.destroy(now, "peer rejected our AUTH")
            return
    sa.send_response(ExchangeType.INFORMATIONAL, mid, response, now)
    for child, reason in removed:
        sa.remove_child(child, now, reason)
