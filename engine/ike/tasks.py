"""Exchanges we initiate: IKE_SA_INIT + IKE_AUTH, CREATE_CHILD_SA (new,
CHILD rekey, IKE rekey), INFORMATIONAL (delete, liveness)."""

from __future__ import annotations

import functools
import ipaddress
import logging

from engine.crypto.errors import InvalidKeyExchange
from engine.crypto.ke import KeyExchange
from engine.events import ChildState, IkeState
from engine.ike import proposals as props
from engine.ike.auth import octets
from engine.ike.certauth import cert_payloads, certreq_payloads, local_id_payload
from engine.ike.child import ChildSa, derive_child_keys
from engine.ike.errors import RemoteError
from engine.ike.identity import identity_from_wire, identity_to_wire, matches
from engine.ike.init import (
    NONCE_SIZE,
    capability_notifies,
    check_nat,
    install_ike_keys,
    nat_notifies,
    read_capabilities,
)
from engine.ike.sa import IkeSa, Task, error_notifies, find, notify
from engine.policy.model import ChildConfig
from engine.policy.ts import TrafficSelector
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
    WireTs,
)

log = logging.getLogger("engine.ike")
MAX_INIT_RETRIES = 5


def _notify_name(t: int) -> str:
    try:
        return NotifyType(t).name
    except ValueError:
        return str(t)


@functools.lru_cache(maxsize=1024)
def _ip(addr: str):
    return ipaddress.ip_address(addr)


def resolve_ts(selectors, addr: str) -> tuple[TrafficSelector, ...]:
    """Selectors with ``dynamic`` replaced by our (or the peer's) IKE address."""
    if not any(ts.dynamic for ts in selectors):
        return tuple(selectors)
    a = _ip(addr)
    return tuple(ts.resolve(a) for ts in selectors)


def ts_payload(initiator: bool, selectors) -> TsPayload:
    return TsPayload(initiator, tuple(WireTs.from_ts(t) for t in selectors))


def ts_from_payload(p: TsPayload | None) -> tuple[TrafficSelector, ...]:
    """The selectors of a TS payload; unknown TS types are skipped (§3.13.1),
    ranges that run backwards are a syntax error."""
    if p is None:
        return ()
    out = []
    for s in p.selectors:
        if not isinstance(s, WireTs):
            continue
        if s.start_addr > s.end_addr:
            raise RemoteError(NotifyType.INVALID_SYNTAX, "a traffic selector's address range runs backwards")
        out.append(s.to_ts())
    return tuple(out)


# ====================================================================== IKE_SA_INIT
class IkeInit(Task):
    """IKE_SA_INIT as initiator; retries on COOKIE and INVALID_KE_PAYLOAD (§1.2, §2.6)."""

    exchange = ExchangeType.IKE_SA_INIT
    name = "IKE_SA_INIT"

    def __init__(self, children: list[ChildConfig]) -> None:
        self.children = children
        self.cookie: bytes | None = None
        self.group: int | None = None
        self.ke: KeyExchange | None = None
        self.retries = 0

    def build(self, sa: IkeSa, now: float) -> list:
        conn = sa.conn
        if self.group is None:
            self.group = props.first_ke_group(conn.proposals)
        if self.ke is None or self.ke.group != self.group:
            self.ke = KeyExchange(self.group)
        if not sa.nonce_i:
            sa.nonce_i = sa.ep.rng(NONCE_SIZE)
        self.offered = props.to_wire(conn.proposals, b"", first_ke=self.group)
        payloads: list = []
        if self.cookie is not None:
            payloads.append(NotifyPayload(NotifyType.COOKIE, data=self.cookie))
        payloads += [SaPayload(self.offered), KePayload(self.group, self.ke.public_bytes()),
                     NoncePayload(sa.nonce_i)]
        fake = sa.ep.rng(20) if conn.encap else None
        payloads += nat_notifies(sa.spi_i, b"\0" * 8, sa.local, sa.remote, fake)
        payloads += capability_notifies(conn, want_hash_algorithms=_uses_certs(conn))
        if sa.state == IkeState.CREATED:
            sa.set_state(IkeState.CONNECTING)
        return payloads

    def on_response(self, sa: IkeSa, payloads: list, now: float) -> None:
        cookie = notify(payloads, NotifyType.COOKIE)
        if cookie is not None:
            self._retry(sa, now, "COOKIE")
            self.cookie = cookie.data
            sa.resend_init(self, self.build(sa, now), now)
            return
        bad_ke = notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if bad_ke is not None:
            group = int.from_bytes(bad_ke.data[:2], "big") if len(bad_ke.data) >= 2 else 0
            if not props.offers_ke_group(sa.conn.proposals, group) or group == self.group:
                raise RemoteError(None, f"peer asks for key exchange group {group}, which we do not offer "
                                        f"(ours: {', '.join(props.describe_configured(sa.conn.proposals))})")
            self._retry(sa, now, "INVALID_KE_PAYLOAD")
            log.info("%s[%d]: peer prefers group %d, retrying", sa.name, sa.unique_id, group)
            self.group = group
            sa.resend_init(self, self.build(sa, now), now)
            return
        errors = error_notifies(payloads)
        if errors:
            n = errors[0].type
            if n == NotifyType.NO_PROPOSAL_CHOSEN:
                reason = ("the peer accepted none of our IKE proposals. We offered: "
                          + "; ".join(props.describe_offer(self.offered))
                          + ". Add one the peer accepts to 'proposals' (its log names what it wants).")
            else:
                reason = f"the peer refused IKE_SA_INIT with {_notify_name(n)}"
            sa.fail(self.exchange, _notify_name(n), reason, now, sent_by_peer=True,
                    local_proposals=props.describe_offer(self.offered))
            sa.destroy(now, reason)
            sa.ep.connection_failed(sa, now)
            return
        sa_payload = find(payloads, SaPayload)
        ke = find(payloads, KePayload)
        nonce = find(payloads, NoncePayload)
        if sa_payload is None or ke is None or nonce is None or len(sa_payload.proposals) != 1:
            raise RemoteError(None, "IKE_SA_INIT response lacks SA, KE or Nonce")
        chosen = props.accept_response(sa_payload.proposals[0], self.offered)
        if chosen is None:
            raise RemoteError(None, "the peer chose a proposal we did not offer")
        if ke.group != self.group or chosen.ke != self.group:
            raise RemoteError(None, f"peer's KE group {ke.group} does not match the chosen proposal")
        if not 16 <= len(nonce.data) <= 256:
            raise RemoteError(None, f"peer nonce of {len(nonce.data)} bytes")
        sa.chosen = chosen
        sa.nonce_r = nonce.data
        read_capabilities(sa, payloads)
        nat = check_nat(payloads, sa.spi_i, sa.spi_r, sa.local, sa.remote)
        if nat is not None:
            sa.nat.local_behind, sa.nat.remote_behind = nat
        try:
            shared = self.ke.compute_shared(ke.data)
        except InvalidKeyExchange as exc:
            raise RemoteError(None, f"peer's key exchange data is invalid: {exc}") from None
        install_ike_keys(sa, shared)
        if sa.nat.any or sa.conn.encap:
            sa.ep.float_ports(sa)
        sa.queue(IkeAuth(self.children), now, front=True)

    def _retry(self, sa: IkeSa, now: float, why: str) -> None:
        self.retries += 1
        if self.retries > MAX_INIT_RETRIES:
            raise RemoteError(None, f"too many IKE_SA_INIT retries ({why})")


def _uses_certs(conn) -> bool:
    return conn.local.auth == "pubkey" or conn.remote.auth == "pubkey"


# ====================================================================== IKE_AUTH
class IkeAuth(Task):
    exchange = ExchangeType.IKE_AUTH
    name = "IKE_AUTH"

    def __init__(self, children: list[ChildConfig]) -> None:
        self.children = children
        self.child_cfg: ChildConfig | None = children[0] if children else None
        self.more = children[1:]

    def build(self, sa: IkeSa, now: float) -> list:
        conn = sa.conn
        self.idi = local_id_payload(sa.ep, conn, True, sa.local[0])
        if self.idi is None:
            id_type, id_data = identity_to_wire(conn.local.id, sa.local[0])
            self.idi = IdPayload(True, id_type, id_data)
        payloads: list = [self.idi, *cert_payloads(sa.ep, conn), *certreq_payloads(sa.ep, [conn])]
        if sa.ep.initial_contact(sa):
            payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))
        if conn.remote.id is not None and conn.remote.id.kind not in ("any",) and "*" not in conn.remote.id.value:
            t, d = identity_to_wire(conn.remote.id, sa.remote[0])
            payloads.append(IdPayload(False, t, d))
        signed = octets(sa.init_request, sa.nonce_r, sa.chosen.prf, sa.keys.sk_pi.reveal(), self.idi)
        payloads.append(sa.ep.auth_payload(sa, conn, signed, local=True))
        if self.child_cfg is not None:
            self.child_req = ChildRequest(sa, self.child_cfg, with_ke=False, nonce=False)
            payloads += self.child_req.payloads(nonce=False)
        return payloads

    def on_response(self, sa: IkeSa, payloads: list, now: float) -> None:
        conn = sa.conn
        auth_failed = notify(payloads, NotifyType.AUTHENTICATION_FAILED)
        idr = find(payloads, IdPayload, lambda p: not p.initiator)
        auth = find(payloads, AuthPayload)
        if auth_failed is not None or auth is None or idr is None:
            errors = error_notifies(payloads)
            n = _notify_name(errors[0].type) if errors else "AUTHENTICATION_FAILED"
            if n == "AUTHENTICATION_FAILED":
                reason = ("the peer rejected our authentication: check that both sides use the same "
                          "pre-shared key for these IDs, and that our ID "
                          f"({identity_from_wire(self.idi.id_type, self.idi.data).value}) is the one "
                          "the peer expects")
            else:
                reason = f"IKE_AUTH refused by the peer with {n}"
            sa.fail(self.exchange, n, reason, now, sent_by_peer=True)
            sa.destroy(now, reason)
            sa.ep.connection_failed(sa, now)
            return
        peer = identity_from_wire(idr.id_type, idr.data)
        if not matches(conn.remote.id, peer):
            self._auth_error(sa, now, f"the peer identified as '{peer.value}' but we expect "
                             f"'{conn.remote.id}': fix 'remote.id' or the peer's local ID")
            return
        sa.local_id = identity_from_wire(self.idi.id_type, self.idi.data)
        sa.remote_id = peer
        signed = octets(sa.init_response, sa.nonce_i, sa.chosen.prf, sa.keys.sk_pr.reveal(), idr)
        ok, why = sa.ep.verify_auth(sa, conn, auth, signed, payloads, peer)
        if not ok:
            self._auth_error(sa, now, why)
            return
        sa.set_state(IkeState.ESTABLISHED)
        sa.established_at = now
        sa.schedule_lifetimes(now)
        sa.ep.ike_established(sa, now)
        if self.child_cfg is not None:
            self.child_req.complete(payloads, sa.nonce_i, sa.nonce_r, shared=None, now=now,
                                    exchange=self.exchange)
        for cfg in self.more:
            sa.queue(CreateChild(cfg), now)

    def _auth_error(self, sa: IkeSa, now: float, reason: str) -> None:
        sa.fail(self.exchange, "AUTHENTICATION_FAILED", reason, now)
        # Tell the peer (§2.21.2) and drop the SA without waiting for an answer.
        sa.send_request(_Fire(), [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)], now)
        sa.destroy(now, reason)
        sa.ep.connection_failed(sa, now)


class _Fire(Task):
    """An INFORMATIONAL we send without caring for the answer."""

    exchange = ExchangeType.INFORMATIONAL

    def on_response(self, sa, payloads, now):
        pass


# ====================================================================== CHILD SAs
class ChildRequest:
    """The CHILD SA part of an IKE_AUTH or CREATE_CHILD_SA request, and its completion."""

    def __init__(self, sa: IkeSa, cfg: ChildConfig, *, with_ke: bool, rekey: ChildSa | None = None,
                 nonce: bool = True) -> None:
        self.sa = sa
        self.cfg = cfg
        self.rekey = rekey
        self.spi_in = sa.ep.allocate_spi()
        self.local_ts = resolve_ts(cfg.local_ts, sa.local[0])
        self.remote_ts = resolve_ts(cfg.remote_ts, sa.remote[0])
        self.offered = props.to_wire(cfg.proposals, self.spi_in, with_ke=with_ke)
        group = props.first_ke_group(cfg.proposals) if with_ke else None
        self.ke = KeyExchange(group) if group else None
        self.nonce = sa.ep.rng(NONCE_SIZE) if nonce else b""

    def payloads(self, *, nonce: bool) -> list:
        out: list = []
        if self.rekey is not None:
            proto = props.protocol_id(self.rekey.protocol)
            out.append(NotifyPayload(NotifyType.REKEY_SA, protocol=proto, spi=self.rekey.spi_in))
        if self.cfg.mode == "transport":
            out.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
        out.append(SaPayload(self.offered))
        if nonce:
            out.append(NoncePayload(self.nonce))
        if self.ke is not None:
            out.append(KePayload(self.ke.group, self.ke.public_bytes()))
        out += [ts_payload(True, self.local_ts), ts_payload(False, self.remote_ts)]
        return out

    def fail_child(self, payloads, now: float, exchange: int) -> None:
        sa = self.sa
        errors = error_notifies(payloads)
        n = _notify_name(errors[0].type) if errors else "NO_PROPOSAL_CHOSEN"
        if n == "NO_PROPOSAL_CHOSEN":
            reason = ("the peer accepted none of our proposals for CHILD SA '" + self.cfg.name + "'. We offered: "
                      + "; ".join(props.describe_offer(self.offered)) + ". Change 'esp_proposals' to one the peer accepts.")
        elif n == "TS_UNACCEPTABLE":
            reason = (f"the peer does not accept our traffic selectors for '{self.cfg.name}': we proposed "
                      f"{', '.join(map(str, self.local_ts))} === {', '.join(map(str, self.remote_ts))}. "
                      "Make 'local_ts'/'remote_ts' match the peer's 'remote_ts'/'local_ts'.")
        else:
            reason = f"the peer refused CHILD SA '{self.cfg.name}' with {n}"
        sa.fail(exchange, n, reason, now, sent_by_peer=True, child=self.cfg.name,
                local_proposals=props.describe_offer(self.offered),
                local_ts=tuple(map(str, self.local_ts)) + ("===",) + tuple(map(str, self.remote_ts)))
        sa.ep.release_spi(self.spi_in)

    def complete(self, payloads, nonce_i: bytes, nonce_r: bytes, *, shared: bytes | None, now: float,
                 exchange: int) -> ChildSa | None:
        sa = self.sa
        sa_p = find(payloads, SaPayload)
        tsi = find(payloads, TsPayload, lambda p: p.initiator)
        tsr = find(payloads, TsPayload, lambda p: not p.initiator)
        if sa_p is None or tsi is None or tsr is None or len(sa_p.proposals) != 1:
            self.fail_child(payloads, now, exchange)
            return None
        chosen = props.accept_response(sa_p.proposals[0], self.offered, ignore_ke=self.ke is None)
        if chosen is None or len(chosen.spi) != 4:
            sa.fail(exchange, "NO_PROPOSAL_CHOSEN", "the peer chose a CHILD proposal we did not offer", now,
                    child=self.cfg.name)
            sa.ep.release_spi(self.spi_in)
            return None
        local_ts = ts_from_payload(tsi)
        remote_ts = ts_from_payload(tsr)
        if not _within(local_ts, self.local_ts) or not _within(remote_ts, self.remote_ts):
            sa.fail(exchange, "TS_UNACCEPTABLE", "the peer answered with traffic selectors wider than "
                    "we proposed", now, child=self.cfg.name)
            sa.ep.release_spi(self.spi_in)
            return None
        transport = notify(payloads, NotifyType.USE_TRANSPORT_MODE) is not None
        mode = "transport" if (transport and self.cfg.mode == "transport") else "tunnel"
        keys = derive_child_keys(sa.chosen.prf, sa.keys.sk_d.reveal(), chosen, nonce_i, nonce_r,
                                 initiator=True, shared=shared)
        child = ChildSa(
            config=self.cfg, unique_id=sa.ep.next_child_id(), reqid=sa.ep.reqid_for(sa, self.cfg, self.rekey),
            chosen=chosen.with_spi(chosen.spi), spi_in=self.spi_in, spi_out=chosen.spi, mode=mode,
            local_ts=local_ts, remote_ts=remote_ts, keys=keys, initiator=True, installed_at=now,
            rekey_at=None, expire_at=None, nonces=(nonce_i, nonce_r), ke_group=chosen.ke,
            rekeyed_from=self.rekey.spi_in if self.rekey is not None else None)
        sa.install_child(child, now)
        return child


def _within(got, proposed) -> bool:
    return all(any(p.covers(g) for p in proposed) for g in got) and bool(got)


class CreateChild(Task):
    exchange = ExchangeType.CREATE_CHILD_SA
    name = "CREATE_CHILD_SA"

    def __init__(self, cfg: ChildConfig) -> None:
        self.cfg = cfg

    def build(self, sa: IkeSa, now: float) -> list | None:
        if not sa.established:
            return None
        self.req = ChildRequest(sa, self.cfg, with_ke=True)
        return self.req.payloads(nonce=True)

    def on_response(self, sa: IkeSa, payloads: list, now: float) -> None:
        if notify(payloads, NotifyType.TEMPORARY_FAILURE) is not None:
            sa.ep.release_spi(self.req.spi_in)
            sa.ep.retry_later(sa, CreateChild(self.cfg), now)
            return
        shared = _child_shared(sa, self.req, payloads, self.exchange, now)
        if shared is False:
            return
        nonce = find(payloads, NoncePayload)
        if nonce is None:
            self.req.fail_child(payloads, now, self.exchange)
            return
        self.req.complete(payloads, self.req.nonce, nonce.data, shared=shared or None, now=now,
                          exchange=self.exchange)


def _child_shared(sa: IkeSa, req: ChildRequest, payloads, exchange: int, now: float):
    """The PFS shared secret, None without PFS, or False after a failure was reported."""
    if req.ke is None:
        return None
    bad_ke = notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
    ke = find(payloads, KePayload)
    if bad_ke is not None or ke is None:
        if error_notifies(payloads):
            req.fail_child(payloads, now, exchange)
        else:
            sa.fail(exchange, "INVALID_KE_PAYLOAD", "the peer sent no KE for a PFS CHILD SA", now,
                    child=req.cfg.name)
            sa.ep.release_spi(req.spi_in)
        return False
    try:
        return req.ke.compute_shared(ke.data)
    except (InvalidKeyExchange, ValueError) as exc:
        sa.fail(exchange, "INVALID_KE_PAYLOAD", f"invalid PFS key exchange data: {exc}", now,
                child=req.cfg.name)
        sa.ep.release_spi(req.spi_in)
        return False


class RekeyChild(Task):
    """Replace a CHILD SA (§1.3.3); the old one is deleted once the new one is in."""

    exchange = ExchangeType.CREATE_CHILD_SA
    name = "CREATE_CHILD_SA (rekey)"

    def __init__(self, child: ChildSa) -> None:
        self.child = child

    def build(self, sa: IkeSa, now: float) -> list | None:
        if not sa.established or self.child.state != ChildState.INSTALLED or self.child.spi_in not in sa.children:
            return None
        self.child.set_state(ChildState.REKEYING)
        self.req = ChildRequest(sa, self.child.config, with_ke=True, rekey=self.child)
        return self.req.payloads(nonce=True)

    def on_response(self, sa: IkeSa, payloads: list, now: float) -> None:
        old = self.child
        if notify(payloads, NotifyType.TEMPORARY_FAILURE) is not None or \
                notify(payloads, NotifyType.CHILD_SA_NOT_FOUND) is not None:
            sa.ep.release_spi(self.req.spi_in)
            if old.state == ChildState.REKEYING:
                old.set_state(ChildState.INSTALLED)
                if notify(payloads, NotifyType.TEMPORARY_FAILURE) is not None:
                    sa.ep.retry_later(sa, RekeyChild(old), now)
            return
        shared = _child_shared(sa, self.req, payloads, self.exchange, now)
        nonce = find(payloads, NoncePayload)
        if shared is False or nonce is None:
            if nonce is None and shared is not False:
                self.req.fail_child(payloads, now, self.exchange)
            if old.state == ChildState.REKEYING:
                old.set_state(ChildState.INSTALLED)
                old.rekey_at = now + 30.0  # try again later; the hard lifetime still applies
            return
        new = self.req.complete(payloads, self.req.nonce, nonce.data, shared=shared or None, now=now,
                                exchange=self.exchange)
        if new is None:
            if old.state == ChildState.REKEYING:
                old.set_state(ChildState.INSTALLED)
            return
        from engine.ike.collisions import finish_child_rekey

        finish_child_rekey(sa, old, new, now)


class DeleteChild(Task):
    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL (delete CHILD)"

    def __init__(self, child: ChildSa, reason: str = "terminated") -> None:
        self.child = child
        self.reason = reason

    def build(self, sa: IkeSa, now: float) -> list | None:
        c = self.child
        if c.state == ChildState.DELETED or c.spi_in not in sa.children:
            return None
        if c.state != ChildState.DELETING:
            c.set_state(ChildState.DELETING)
        sa.deleting_children.add(c.spi_in)
        return [DeletePayload(props.protocol_id(c.protocol), (c.spi_in,))]

    def on_response(self, sa: IkeSa, payloads: list, now: float) -> None:
        sa.remove_child(self.child, now, self.reason)

    def on_timeout(self, sa: IkeSa, now: float) -> None:
        sa.remove_child(self.child, now, self.reason)


class DeleteIke(Task):
    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL (delete IKE)"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def build(self, sa: IkeSa, now: float) -> list:
        return [DeletePayload(ProtocolId.IKE, ())]

    def on_response(self, sa: IkeSa, payloads: list, now: float) -> None:
        sa.destroy(now, self.reason)


class Dpd(Task):
    """An empty INFORMATIONAL: is the peer still there? (§1.4, liveness)."""

    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL (DPD)"

    def build(self, sa: IkeSa, now: float) -> list | None:
        if not sa.established:
            return None
        return []

    def on_response(self, sa: IkeSa, payloads: list, now: float) -> None:
        pass


class RekeyIke(Task):
    """IKE SA rekey with a fresh KE (§1.3.2, §2.18)."""

    exchange = ExchangeType.CREATE_CHILD_SA
    name = "CREATE_CHILD_SA (IKE rekey)"

    def __init__(self, group: int | None = None) -> None:
        self.group = group

    def build(self, sa: IkeSa, now: float) -> list | None:
        if sa.state != IkeState.ESTABLISHED:
            return None
        sa.set_state(IkeState.REKEYING)
        self.spi = sa.ep.new_ike_spi()
        group = self.group or sa.chosen.ke
        self.ke = KeyExchange(group)
        self.nonce = sa.ep.rng(NONCE_SIZE)
        self.offered = props.to_wire(sa.conn.proposals, self.spi, first_ke=group)
        return [SaPayload(self.offered), NoncePayload(self.nonce), KePayload(group, self.ke.public_bytes())]

    def on_response(self, sa: IkeSa, payloads: list, now: float) -> None:
        bad_ke = notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if bad_ke is not None and self.group is None and len(bad_ke.data) >= 2:
            group = int.from_bytes(bad_ke.data[:2], "big")
            sa.ep.release_ike_spi(self.spi)
            sa.set_state(IkeState.ESTABLISHED)
            if props.offers_ke_group(sa.conn.proposals, group):
                sa.queue(RekeyIke(group), now, front=True)
            return
        if notify(payloads, NotifyType.TEMPORARY_FAILURE) is not None or error_notifies(payloads):
            sa.ep.release_ike_spi(self.spi)
            if sa.state == IkeState.REKEYING:
                sa.set_state(IkeState.ESTABLISHED)
            errors = error_notifies(payloads)
            if errors and errors[0].type != NotifyType.TEMPORARY_FAILURE:
                sa.fail(self.exchange, _notify_name(errors[0].type), "the peer refused to rekey the IKE SA",
                        now, sent_by_peer=True, local_proposals=props.describe_offer(self.offered))
            sa.ep.retry_later(sa, RekeyIke(), now)
            return
        sa_p = find(payloads, SaPayload)
        ke = find(payloads, KePayload)
        nonce = find(payloads, NoncePayload)
        if sa_p is None or ke is None or nonce is None or len(sa_p.proposals) != 1:
            raise RemoteError(None, "IKE rekey response lacks SA, KE or Nonce")
        chosen = props.accept_response(sa_p.proposals[0], self.offered)
        if chosen is None or len(chosen.spi) != 8 or ke.group != self.ke.group:
            raise RemoteError(None, "IKE rekey response does not match our offer")
        try:
            shared = self.ke.compute_shared(ke.data)
        except InvalidKeyExchange as exc:
            raise RemoteError(None, f"invalid KE in IKE rekey: {exc}") from None
        from engine.ike.collisions import finish_ike_rekey
        from engine.ike.rekey import make_rekeyed_sa

        new = make_rekeyed_sa(sa, initiator=True, spi_i=self.spi, spi_r=chosen.spi, chosen=chosen,
                              nonce_i=self.nonce, nonce_r=nonce.data, shared=shared, now=now)
        finish_ike_rekey(sa, new, now)
