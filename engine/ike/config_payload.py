"""Configuration payloads in IKE_AUTH (RFC 7296 §3.15, §2.19), both roles.

Responder (a road-warrior gateway): a CP(CFG_REQUEST) in the client's
IKE_AUTH gets an address leased from the connection's pools (the same one
again for the same identity while it is free, engine.pools), with the pool's
DNS servers and split-include networks, in a CP(CFG_REPLY). A client that asks
when no pool can serve it gets INTERNAL_ADDRESS_FAILURE and no CHILD SA, the
IKE SA still comes up (§3.15.4), with a reason in plain words; a client that
asks for none on a connection with pools gets FAILED_CP_REQUIRED (§3.10.1,
as charon), also without a CHILD SA. The client's
``dynamic`` selectors then stand for its virtual IP (its TSi is narrowed to
it). Leases are held by (IKE SA unique id, pool) and released when the IKE SA
ends (``VirtualIps.release``), or move to the IKE SA that rekeyed it.

Initiator (a road-warrior client): ``vips = ["0.0.0.0"]`` (or ``::``, or a
specific address asked back) sends a CFG_REQUEST; until an address is
assigned our ``dynamic`` selectors offer the whole family, so the gateway can
narrow them to the address it gives. The reply's addresses become
``sa.local_vips``: the runtime puts them on the tunnel device
(``ChildSaInstalled.local_ts`` carries them).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.events import VirtualIpsChanged
from engine.policy.model import ConnectionConfig, PoolConfig
from engine.policy.ts import TrafficSelector
from engine.pools import Leases, PoolExhausted, pool_range
from engine.wire.constants import CfgType, NotifyType
from engine.wire.cp import Config, config_reply, config_request, decode_config
from engine.wire.errors import MalformedMessage
from engine.wire.payloads import CpPayload, NotifyPayload

if TYPE_CHECKING:
    from engine.ike.sa import IkeSa


class VirtualIps:
    """The gateway's pools and leases (one per endpoint)."""

    def __init__(self, pools: tuple[PoolConfig, ...] = ()) -> None:
        self.configs: dict[str, PoolConfig] = {p.name: p for p in pools}
        self.leases = Leases(pools)

    def reload(self, pools: tuple[PoolConfig, ...]) -> None:
        self.configs = {p.name: p for p in pools}
        self.leases.reload(pools)

    def end_stale(self, sas, now: float) -> int:
        """After a reload: the IKE SAs holding an address their pool no longer has (it shrank,
        changed or went) are deleted, so their clients come back for an address of the new pool;
        leases still inside move with the pool. (charon refuses to replace a pool that has online
        leases; we apply the new pool and end only the clients it no longer covers.) Returns how many."""
        stale = {holder[0]: lease for lease in self.leases.stale() for holder in lease.holders}
        if not stale:
            return 0
        n = 0
        for sa in sas:
            lease = stale.get(sa.unique_id)
            if lease is None or not sa.alive:
                continue
            sa.delete(now, f"its virtual IP {lease.address} is no longer in pool '{lease.pool}' (policy "
                      "reloaded): the client must reconnect for an address of the new pool")
            n += 1
        return n

    def release(self, sa: IkeSa, now: float) -> None:
        for holder in sa.vip_holders:
            self.leases.release(holder, now)
        sa.vip_holders = ()
        if sa.local_vips:
            sa.host.emit(VirtualIpsChanged(sa.unique_id, sa.name, sa.local_vips, False))
            sa.local_vips = ()

    def move(self, old: IkeSa, new: IkeSa, now: float) -> None:
        """An IKE rekey: ``new`` takes over ``old``'s addresses (the same identity keeps them)."""
        new.remote_vips, new.local_vips, new.vip_pool = old.remote_vips, old.local_vips, old.vip_pool
        holders = []
        for holder in old.vip_holders:
            if self.leases.transfer(holder, (new.unique_id, holder[1])) is not None:
                holders.append((new.unique_id, holder[1]))
        old.vip_holders = ()
        old.local_vips = ()  # they stay on the device: the new SA holds them now
        self.release(old, now)
        new.vip_holders = tuple(holders)


@dataclass(frozen=True)
class CpAnswer:
    """What the responder puts in its IKE_AUTH answer for the client's CP."""

    payloads: tuple = ()
    refusal: int | None = None
    """A notify type (INTERNAL_ADDRESS_FAILURE, FAILED_CP_REQUIRED) refusing the address: then no CHILD SA."""
    reason: str = ""


def _request(payloads) -> CpPayload | None:
    for p in payloads:
        if isinstance(p, CpPayload) and p.cfg_type == CfgType.CFG_REQUEST:
            return p
    return None


def _cp_required(conn: ConnectionConfig, what: str) -> CpAnswer:
    # RFC 7296 §3.10.1, as charon's ike_config: a pool connection expects an address request. Its
    # ``dynamic`` selectors would otherwise stand for the client's public (often NAT) address.
    return CpAnswer(refusal=NotifyType.FAILED_CP_REQUIRED, reason=(
        f"connection '{conn.name}' leases virtual IPs (pools) but the peer asked for none ({what}): "
        "configure the client with vips = [\"0.0.0.0\"] (or \"::\"); answered FAILED_CP_REQUIRED (no CHILD SA)"))


def respond(sa: IkeSa, conn: ConnectionConfig, payloads, identity: str, now: float) -> CpAnswer:
    """The answer to a CFG_REQUEST in the client's IKE_AUTH (nothing when it sent none). Leases
    go on ``sa`` (``remote_vips``, ``vip_holders``)."""
    cp = _request(payloads)
    if cp is None:
        return _cp_required(conn, "no CP CFG_REQUEST") if conn.pools else CpAnswer()
    try:
        config = decode_config(cp)
    except MalformedMessage as exc:
        return CpAnswer(refusal=NotifyType.INTERNAL_ADDRESS_FAILURE,
                        reason=f"the peer's configuration request is malformed ({exc}); no virtual IP assigned")
    families = [v for v, wanted in ((4, config.wants_ip4), (6, config.wants_ip6)) if wanted]
    if not families:
        # charon's ike_config counts the addresses asked for, not the CP (a CFG_REQUEST of DNS only).
        return _cp_required(conn, "its CFG_REQUEST has no INTERNAL_IP4/6_ADDRESS") if conn.pools \
            else CpAnswer((config_reply(),))
    if not conn.pools:
        return CpAnswer(refusal=NotifyType.INTERNAL_ADDRESS_FAILURE, reason=(
            f"the peer asks for a virtual IP address (CP CFG_REQUEST, RFC 7296 §3.15) but connection "
            f"'{conn.name}' has no pools to lease one from: add pools = [\"NAME\"] with a [pools.NAME] "
            "section, or configure the client without vips; answered INTERNAL_ADDRESS_FAILURE (no CHILD SA)"))
    vips: VirtualIps = sa.host.vips
    # The identity's address online elsewhere is shared only when every IKE SA holding it goes for
    # this one (as endpoint.established decides: INITIAL_CONTACT or unique = replace, same connection,
    # IKE and EAP identity); from the same peer address and port it is a reauthentication. Another device
    # (the same EAP user with another IKE identity, say) gets its own address.
    replaces = conn.unique != "never" and (
        conn.unique == "replace" or any(isinstance(p, NotifyPayload) and p.type == NotifyType.INITIAL_CONTACT
                                        for p in payloads))

    def take_over(lease) -> bool:
        if not replaces:
            return False
        registry = sa.host.registry
        going = {(o.unique_id, lease.pool) for o in registry.with_identity(registry.identity_of(sa))
                 if o is not sa and o.established}
        return bool(lease.holders) and all(h in going for h in lease.holders)

    got: dict[int, tuple[str, object]] = {}
    problems = []
    for version in families:
        hints = config.ip4 if version == 4 else tuple(i.ip for i in config.ip6)
        for name in conn.pools:
            cfg = vips.configs.get(name)
            if cfg is None or pool_range(cfg.addrs)[0].version != version:
                continue
            holder = (sa.unique_id, name)
            try:
                lease = vips.leases.acquire(name, identity, holder, now, requested=hints[0] if hints else None,
                                            peer=tuple(sa.remote), take_over=take_over)
            except PoolExhausted as exc:
                problems.append(str(exc))
                continue
            sa.vip_holders += (holder,)
            got[version] = (name, lease.address)
            break
        else:
            if not problems:
                problems.append(f"none of its pools ({', '.join(conn.pools)}) has IPv{version} addresses")
    if not got:
        return CpAnswer(refusal=NotifyType.INTERNAL_ADDRESS_FAILURE, reason=(
            f"the peer asks for a virtual IP address but connection '{conn.name}' cannot give one: "
            + "; ".join(problems) + "; answered INTERNAL_ADDRESS_FAILURE (no CHILD SA)"))
    pools = [vips.configs[name] for name, _ in got.values()]
    dns = [d for p in pools for d in p.dns]
    subnets = [s for p in pools for s in p.split_include]
    ip4 = got[4][1] if 4 in got else None
    ip6 = ipaddress.IPv6Interface((got[6][1], 128)) if 6 in got else None
    sa.remote_vips = tuple(str(addr) for _, addr in got.values())
    sa.vip_pool = ", ".join(name for name, _ in got.values())
    return CpAnswer((config_reply(ip4=ip4, ip6=ip6, dns=dns, subnets=subnets),))


# ---------------------------------------------------------------- initiator
def request(conn: ConnectionConfig) -> CpPayload | None:
    """Our CFG_REQUEST for ``vips`` (None without)."""
    if not conn.vips:
        return None
    addrs = [ipaddress.ip_address(v) for v in conn.vips]
    ip4 = [a for a in addrs if a.version == 4]
    ip6 = [a for a in addrs if a.version == 6]
    hint = next((a for a in ip4 if not a.is_unspecified), None)
    return config_request(ip4=bool(ip4), ip6=bool(ip6), dns=True, ip4_hint=hint)


def reply(payloads) -> Config | None:
    for p in payloads:
        if isinstance(p, CpPayload) and p.cfg_type == CfgType.CFG_REPLY:
            try:
                return decode_config(p)
            except MalformedMessage:
                return None
    return None


def accept_reply(sa: IkeSa, conn: ConnectionConfig, payloads) -> str | None:
    """Take the addresses of the gateway's CFG_REPLY onto ``sa``; a reason when we asked for
    one and got none (the tunnel would carry an address we do not own)."""
    if not conn.vips:
        return None
    config = reply(payloads)
    addrs = [] if config is None else [*map(str, config.ip4), *(str(i.ip) for i in config.ip6)]
    if not addrs:
        return ("we asked the gateway for a virtual IP (vips) and it assigned none: give the gateway's "
                "connection a pool, or remove vips")
    sa.local_vips = tuple(addrs)
    sa.vip_dns = tuple(map(str, config.dns)) if config is not None else ()
    sa.vip_subnets = tuple(map(str, config.subnets)) if config is not None else ()
    sa.host.emit(VirtualIpsChanged(sa.unique_id, sa.name, sa.local_vips, True, sa.vip_dns, sa.vip_subnets))
    return None


# ---------------------------------------------------------------- dynamic selectors
def _expand(selectors, addrs) -> tuple[TrafficSelector, ...]:
    out = []
    for ts in selectors:
        if not ts.dynamic:
            out.append(ts)
            continue
        for a in addrs:
            out.append(ts.resolve(ipaddress.ip_address(a)))
    return tuple(out)


def local_selectors(sa: IkeSa, selectors) -> tuple[TrafficSelector, ...] | None:
    """Our ``dynamic`` selectors when virtual IPs decide them (None: use our IKE address)."""
    if not any(ts.dynamic for ts in selectors):
        return None
    if sa.local_vips:
        return _expand(selectors, sa.local_vips)
    if sa.conn is not None and sa.conn.vips:
        versions = sorted({ipaddress.ip_address(v).version for v in sa.conn.vips})
        # Not assigned yet: offer the whole family, the gateway narrows it to our address.
        out = []
        for ts in selectors:
            if not ts.dynamic:
                out.append(ts)
                continue
            for v in versions:
                whole = TrafficSelector.any(v)
                out.append(TrafficSelector(whole.start, whole.end, ts.protocol, ts.start_port, ts.end_port))
        return tuple(out)
    return None


def remote_selectors(sa: IkeSa, selectors) -> tuple[TrafficSelector, ...] | None:
    """The peer's ``dynamic`` selectors: its virtual IPs once leased (None: its IKE address)."""
    if sa.remote_vips and any(ts.dynamic for ts in selectors):
        return _expand(selectors, sa.remote_vips)
    return None
