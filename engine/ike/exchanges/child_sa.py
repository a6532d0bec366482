"""The CHILD SA part shared by IKE_AUTH, CREATE_CHILD_SA and CHILD rekeys:
what the initiator offers and accepts (``ChildOffer``), what the responder
picks (``choose``) and builds (``build``), and traffic selectors on the wire."""

from __future__ import annotations

import functools
import ipaddress
from typing import TYPE_CHECKING

from engine.crypto.errors import InvalidKeyExchange
from engine.crypto.ke import new_key_exchange, respond
from engine.ike import config_payload
from engine.ike import proposals as props
from engine.ike.child import ChildSa, derive_child_keys
from engine.ike.errors import ChildRefused, RemoteError
from engine.ike.exchange import error_notifies, find, notify
from engine.ike.exchanges.informational import DeleteRefused
from engine.ike.init import NONCE_SIZE
from engine.ike.text import capped, notify_name, short
from engine.policy.model import ChildConfig
from engine.policy.ts import TrafficSelector, narrow
from engine.wire.constants import NotifyType
from engine.wire.payloads import KePayload, NoncePayload, NotifyPayload, SaPayload, TsPayload, WireTs

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_USE_TRANSPORT_MODE = NotifyType.USE_TRANSPORT_MODE

if TYPE_CHECKING:
    from engine.ike.sa import IkeSa


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


def child_parts(payloads) -> tuple[SaPayload | None, TsPayload | None, TsPayload | None, bool]:
    """SA, TSi, TSr and whether USE_TRANSPORT_MODE is there, in one pass."""
    sa_p = tsi = tsr = None
    transport = False
    for p in payloads:
        if isinstance(p, SaPayload):
            sa_p = sa_p or p
        elif isinstance(p, TsPayload):
            if p.initiator:
                tsi = tsi or p
            else:
                tsr = tsr or p
        elif isinstance(p, NotifyPayload) and p.type == _USE_TRANSPORT_MODE:
            transport = True
    return sa_p, tsi, tsr, transport


def _ts_text(selectors) -> str:
    return short(", ".join(map(str, selectors)))


def _within(got, proposed) -> bool:
    return bool(got) and all(any(p.covers(g) for p in proposed) for g in got)


# ====================================================================== initiator
class ChildOffer:
    """The CHILD SA we ask for: SPI, proposals, selectors, PFS KE, nonce."""

    def __init__(self, sa: IkeSa, cfg: ChildConfig, *, with_ke: bool, rekey: ChildSa | None = None,
                 nonce: bool = True, group: int | None = None, with_additional: bool = False) -> None:
        """``group``: the PFS group to send first (the peer asked for it with INVALID_KE_PAYLOAD).
        ``with_additional``: offer the RFC 9370 additional key exchanges (the exchange runs
        IKE_FOLLOWUP_KE rounds)."""
        ids = sa.host.ids
        self.cfg = cfg
        self.rekey = rekey
        self.spi_in = ids.allocate_spi()
        self.local_ts = config_payload.local_selectors(sa, cfg.local_ts) or resolve_ts(cfg.local_ts, sa.local[0])
        # A gateway's offer to a road warrior (rekey, close_action): its dynamic selector is the
        # virtual IP we leased it, not its IKE address (charon's child_create: the other's VIPs)
        self.remote_ts = config_payload.remote_selectors(sa, cfg.remote_ts) or resolve_ts(cfg.remote_ts, sa.remote[0])
        if with_ke and group is None:
            group = props.first_ke_group(cfg.proposals)
        self.offered = props.to_wire(cfg.proposals, self.spi_in, with_ke=with_ke, first_ke=group,
                                     with_additional=with_additional)
        self.ke = new_key_exchange(group) if with_ke and group else None
        self.nonce = sa.host.rng(NONCE_SIZE) if nonce else b""

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

    def wanted_group(self, payloads) -> int | None:
        """The PFS group the peer asks for with INVALID_KE_PAYLOAD, if we offer it and did not send it."""
        bad_ke = notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if bad_ke is None or len(bad_ke.data) < 2 or self.ke is None:
            return None
        group = int.from_bytes(bad_ke.data[:2], "big")
        if group == self.ke.group or not props.offers_ke_group(self.cfg.proposals, group):
            return None
        return group

    def release(self, sa: IkeSa) -> None:
        """Give the SPI back (the CHILD SA will not exist)."""
        sa.host.ids.release_spi(self.spi_in)

    def _details(self) -> dict:
        return dict(child=self.cfg.name, local_proposals=props.describe_offer_short(self.offered),
                    local_ts=tuple(map(str, self.local_ts)) + ("===",) + tuple(map(str, self.remote_ts)))

    def refused(self, payloads) -> ChildRefused:
        """The peer answered without a CHILD SA: why, in plain words."""
        errors = error_notifies(payloads)
        n = notify_name(errors[0].type) if errors else "NO_PROPOSAL_CHOSEN"
        if n == "NO_PROPOSAL_CHOSEN":
            reason = (f"the peer accepted none of our proposals for CHILD SA '{self.cfg.name}'. We offered: "
                      + "; ".join(props.describe_offer_short(self.offered))
                      + ". Change 'esp_proposals' to one the peer accepts.")
        elif n == "TS_UNACCEPTABLE":
            reason = (f"the peer does not accept our traffic selectors for '{self.cfg.name}': we proposed "
                      f"{_ts_text(self.local_ts)} === {_ts_text(self.remote_ts)}. "
                      "Make 'local_ts'/'remote_ts' match the peer's 'remote_ts'/'local_ts'.")
        elif n == "FAILED_CP_REQUIRED":
            reason = (f"the peer refused CHILD SA '{self.cfg.name}' with FAILED_CP_REQUIRED: it leases virtual "
                      "IPs and we asked for none; set vips = [\"0.0.0.0\"] (or \"::\")")
        else:
            reason = f"the peer refused CHILD SA '{self.cfg.name}' with {n}"
        return ChildRefused(n, reason, self._details(), by_peer=True)

    def shared_secret(self, payloads) -> bytes | None:
        """The PFS shared secret (None without PFS); raises ChildRefused."""
        if self.ke is None:
            return None
        ke = find(payloads, KePayload)
        if notify(payloads, NotifyType.INVALID_KE_PAYLOAD) is not None or ke is None:
            if error_notifies(payloads):
                raise self.refused(payloads)
            if self._chose_no_pfs(payloads):
                return None  # we offered NONE too (optional PFS) and the peer took it
            raise ChildRefused("INVALID_KE_PAYLOAD", "the peer sent no KE for a PFS CHILD SA", self._details(),
                               peer_made=self.peer_made(payloads))
        made = self.peer_made(payloads)
        if ke.group != self.ke.group:
            raise ChildRefused("INVALID_KE_PAYLOAD", f"the peer answered with KE group {ke.group}, we sent "
                               f"{self.ke.group}", self._details(), peer_made=made)
        try:
            return self.ke.compute_shared(ke.data)
        except (InvalidKeyExchange, ValueError) as exc:
            raise ChildRefused("INVALID_KE_PAYLOAD", f"invalid PFS key exchange data: {exc}",
                               self._details(), peer_made=made) from None

    def _chose_no_pfs(self, payloads) -> bool:
        sa_p = find(payloads, SaPayload)
        return (sa_p is not None and len(sa_p.proposals) == 1
                and props.pfs_declined(sa_p.proposals[0], self.offered))

    @staticmethod
    def peer_made(payloads) -> bool:
        """The answer gives us the peer's CHILD SA (one proposal with an SPI, no error
        notify): the peer installed its half when it sent it."""
        sa_p = find(payloads, SaPayload)
        return (sa_p is not None and len(sa_p.proposals) == 1 and len(sa_p.proposals[0].spi) == 4
                and not error_notifies(payloads))

    def drop(self, sa: IkeSa, now: float, refusal: ChildRefused | None = None) -> None:
        """The CHILD SA will not exist: our SPI goes back, after an INFORMATIONAL Delete
        of the peer's half when it made one (charon's delete_failed_sa)."""
        if refusal is not None and refusal.peer_made:
            sa.start(DeleteRefused(sa, props.protocol_id(self.cfg.protocol), self.spi_in), now, front=True)
        else:
            self.release(sa)

    def chosen(self, payloads) -> props.Chosen | None:
        """The proposal the peer's answer chose, if it is one we offered."""
        sa_p = find(payloads, SaPayload)
        if sa_p is None or len(sa_p.proposals) != 1 or error_notifies(payloads):
            return None
        return props.accept_response(sa_p.proposals[0], self.offered, ignore_ke=self.ke is None)

    def accept(self, sa: IkeSa, payloads, nonce_i: bytes, nonce_r: bytes, shared: bytes | list[bytes] | None,
               now: float) -> ChildSa:
        """The CHILD SA the peer's answer gives us (not installed yet); raises ChildRefused."""
        sa_p, tsi, tsr, transport = child_parts(payloads)
        if sa_p is None or tsi is None or tsr is None or len(sa_p.proposals) != 1 or error_notifies(payloads):
            # RFC 7296 §3.10.1: an error notify in an answer fails the request, SA payload or not.
            raise self.refused(payloads)
        made = self.peer_made(payloads)
        chosen = props.accept_response(sa_p.proposals[0], self.offered, ignore_ke=self.ke is None)
        if chosen is None or len(chosen.spi) != 4:
            raise ChildRefused("NO_PROPOSAL_CHOSEN", "the peer chose a CHILD proposal we did not offer",
                               self._details(), peer_made=made)
        try:
            local_ts = ts_from_payload(tsi)
            remote_ts = ts_from_payload(tsr)
        except RemoteError as exc:
            raise ChildRefused("INVALID_SYNTAX", exc.reason, self._details(), peer_made=made) from None
        if not _within(local_ts, self.local_ts) or not _within(remote_ts, self.remote_ts):
            raise ChildRefused("TS_UNACCEPTABLE", "the peer answered with traffic selectors wider than "
                               "we proposed", self._details(), peer_made=made)
        if transport and self.cfg.mode != "transport":
            # As charon's check_mode: the peer would run transport mode, we tunnel mode.
            raise ChildRefused("NO_PROPOSAL_CHOSEN", f"the peer answered our tunnel mode request for "
                               f"'{self.cfg.name}' with USE_TRANSPORT_MODE: set the same mode on both ends",
                               self._details(), peer_made=made)
        mode = "transport" if transport else "tunnel"
        keys = derive_child_keys(sa.chosen.prf, sa.keys.sk_d.reveal(), chosen, nonce_i, nonce_r,
                                 initiator=True, shared=shared)
        ids = sa.host.ids
        reqid = self.rekey.reqid if self.rekey is not None else ids.reqid(sa.name, self.cfg.name)
        return ChildSa(
            config=self.cfg, unique_id=ids.next_child_id(), reqid=reqid, chosen=chosen, spi_in=self.spi_in,
            spi_out=chosen.spi, mode=mode, local_ts=local_ts, remote_ts=remote_ts, keys=keys, initiator=True,
            installed_at=now, rekey_at=None, expire_at=None, nonces=(nonce_i, nonce_r), ke_group=chosen.ke,
            rekeyed_from=self.rekey.spi_in if self.rekey is not None else None)


# ====================================================================== responder
class ChildChoice:
    def __init__(self, cfg: ChildConfig, chosen: props.Chosen, local_ts, remote_ts, mode: str) -> None:
        self.cfg = cfg
        self.chosen = chosen
        self.local_ts = tuple(local_ts)
        self.remote_ts = tuple(remote_ts)
        self.mode = mode


def choose(sa: IkeSa, children, payloads, *, ignore_ke: bool, with_additional: bool = False) -> ChildChoice:
    """The child config whose selectors overlap the peer's and whose proposals match: the
    first whose selectors are exactly the peer's, else the first that covers them (as charon
    ranks an exact match above a narrowed one: a request for a narrow second CHILD SA is not
    taken by a wide first one). Raises RemoteError(NO_PROPOSAL_CHOSEN | TS_UNACCEPTABLE)."""
    sa_p, tsi, tsr, transport = child_parts(payloads)
    if sa_p is None or tsi is None or tsr is None:
        raise RemoteError(NotifyType.INVALID_SYNTAX, "CHILD SA request without SA, TSi or TSr")
    peer_ts = ts_from_payload(tsi)  # the initiator's side: our remote
    our_ts = ts_from_payload(tsr)
    ts_ok: list[ChildConfig] = []
    covering: ChildChoice | None = None
    for cfg in children:
        cfg_remote = config_payload.remote_selectors(sa, cfg.remote_ts) or resolve_ts(cfg.remote_ts, sa.remote[0])
        cfg_local = config_payload.local_selectors(sa, cfg.local_ts) or resolve_ts(cfg.local_ts, sa.local[0])
        remote = narrow(peer_ts, cfg_remote)
        local = narrow(our_ts, cfg_local)
        if not remote or not local:
            continue
        ts_ok.append(cfg)
        chosen = props.select(sa_p.proposals, cfg.proposals, ignore_ke=ignore_ke, with_additional=with_additional)
        if chosen is None:
            continue
        mode = "transport" if transport and cfg.mode == "transport" else "tunnel"
        choice = ChildChoice(cfg, chosen, local, remote, mode)
        if set(cfg_remote) == set(peer_ts) and set(cfg_local) == set(our_ts):
            return choice
        covering = covering or choice
    if covering is not None:
        return covering
    offered = props.describe_offer_short(sa_p.proposals)
    if not ts_ok:
        mine = [f"{', '.join(map(str, c.local_ts))} === {', '.join(map(str, c.remote_ts))}" for c in children]
        reason = (f"no CHILD config matches the peer's traffic selectors {_ts_text(peer_ts)} === "
                  f"{_ts_text(our_ts)}; ours are: {'; '.join(mine) or 'none'}. "
                  "Make our remote_ts cover the peer's local_ts and our local_ts cover its remote_ts.")
        details = dict(remote_ts=capped(tuple(map(str, peer_ts)) + ("===",) + tuple(map(str, our_ts)), 32),
                       local_ts=tuple(s for c in children
                                      for s in (*map(str, c.local_ts), "===", *map(str, c.remote_ts))))
        raise RemoteError(NotifyType.TS_UNACCEPTABLE, reason, details=details)
    ours = tuple(x for c in ts_ok for x in props.describe_configured(c.proposals))
    reason = (f"none of the peer's CHILD proposals is acceptable. The peer offered: {'; '.join(offered)}. "
              f"We accept: {'; '.join(ours)}.")
    if not ignore_ke:
        hint = props.pfs_mismatch(sa_p.proposals, [p for c in ts_ok for p in c.proposals])
        if hint is not None:
            reason += " " + hint
    raise RemoteError(NotifyType.NO_PROPOSAL_CHOSEN, reason,
                      details=dict(remote_proposals=offered, local_proposals=ours))


def responder_ke(choice: ChildChoice, payloads) -> tuple[bytes | None, list]:
    """PFS as responder: (shared secret, our KE payload). Raises RemoteError
    (INVALID_KE_PAYLOAD naming our group, or INVALID_SYNTAX)."""
    if not choice.chosen.ke:
        return None, []
    ke = find(payloads, KePayload)
    if ke is None or ke.group != choice.chosen.ke:
        raise RemoteError(NotifyType.INVALID_KE_PAYLOAD, "the peer's KE is not for the chosen group",
                          data=choice.chosen.ke.to_bytes(2, "big"))
    try:
        reply, shared = respond(choice.chosen.ke, ke.data)
    except InvalidKeyExchange as exc:
        # charon's child_create.c (ke_failed): NO_PROPOSAL_CHOSEN, which keeps the IKE SA;
        # INVALID_SYNTAX would end it on both ends (RFC 7296 §2.21.3).
        raise RemoteError(NotifyType.NO_PROPOSAL_CHOSEN, f"invalid PFS KE: {exc}") from None
    return shared, [KePayload(choice.chosen.ke, reply)]


def build(sa: IkeSa, choice: ChildChoice, nonce_i: bytes, nonce_r: bytes, shared, now: float,
          rekey: ChildSa | None, spi_in: bytes | None = None) -> tuple[ChildSa, list]:
    """Our CHILD SA for the peer's request, and the SA/TS payloads of our answer. ``spi_in``:
    allocated already (an answer sent before IKE_FOLLOWUP_KE rounds named it)."""
    ids = sa.host.ids
    spi_in = spi_in or ids.allocate_spi()
    keys = derive_child_keys(sa.chosen.prf, sa.keys.sk_d.reveal(), choice.chosen, nonce_i, nonce_r,
                             initiator=False, shared=shared)
    reqid = rekey.reqid if rekey is not None else ids.reqid(sa.name, choice.cfg.name)
    child = ChildSa(
        config=choice.cfg, unique_id=ids.next_child_id(), reqid=reqid, chosen=choice.chosen, spi_in=spi_in,
        spi_out=choice.chosen.spi, mode=choice.mode, local_ts=choice.local_ts, remote_ts=choice.remote_ts,
        keys=keys, initiator=False, installed_at=now, rekey_at=None, expire_at=None, nonces=(nonce_i, nonce_r),
        ke_group=choice.chosen.ke, rekeyed_from=rekey.spi_in if rekey is not None else None,
        unconfirmed_mid=sa.peer_mid, unconfirmed_until=now + sa.retransmit_budget())
    response: list = []
    if choice.mode == "transport":
        response.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
    response.append(SaPayload((choice.chosen.with_spi(spi_in).to_wire(),)))
    return child, response


def ts_reply(choice: ChildChoice) -> list:
    return [ts_payload(True, choice.remote_ts), ts_payload(False, choice.local_ts)]
