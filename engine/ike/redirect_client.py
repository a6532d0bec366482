"""RFC 5685 as a client, at the endpoint: the IKE SA that follows a gateway's REDIRECT
(engine.ike.exchanges.redirect decides when one is followed; this starts it), to an address
or to a host name once the runtime resolved it (engine.ike.names), and the end of the SA that
was redirected once its successor is up."""

from __future__ import annotations

import ipaddress

from engine.ike import names
from engine.ike.errors import LocalError
from engine.ike.exchanges import CATALOG
from engine.ike.exchanges.redirect import MAX_REDIRECTS, REDIRECT_PERIOD
from engine.ike.sa import IkeSa


def follow(ep, sa: IkeSa, gateway: str, children, now: float, exchange: int) -> str | None:
    """A new IKE SA of ``sa``'s connection to ``gateway`` (an address, or a host name once the
    runtime resolved it), bringing up ``children`` (CHILD configs; those ``sa`` has when empty),
    whose IKE_SA_INIT names where we come from. An established ``sa`` is deleted once the new one
    is up. Returns why not."""
    conn = sa.conn
    if conn is None or not sa.connection_initiator:
        return "only the original initiator follows a redirect"
    if names.is_name(gateway):
        addrs = ep.names.fresh(gateway, now)
        if not addrs:
            if not ep.names.wait(gateway, ("redirect", sa.unique_id, sa.name),
                                 lambda t: _resolved(ep, sa, gateway, children, exchange, t)):
                return f"too many wait for {gateway} to resolve"
            return None  # followed once the runtime resolved it
        family = [a for a in addrs if ":" in a] if ":" in sa.remote[0] else [a for a in addrs if ":" not in a]
        gateway = (family or addrs)[0]
    try:
        version = ipaddress.ip_address(gateway).version
    except ValueError:
        return "it is neither an address nor a host name"
    if version != ipaddress.ip_address(sa.remote[0]).version:
        return "it is of the other address family"
    recent = tuple(t for t in sa.redirected_at if now - t < REDIRECT_PERIOD)
    if len(recent) >= MAX_REDIRECTS:
        return (f"only {MAX_REDIRECTS} redirects are allowed within {REDIRECT_PERIOD:.0f} s "
                "(a redirect loop?)")
    if not children:
        kept = {c.config.name for c in sa.children.values()}
        children = [c for c in conn.children if c.name in kept] or list(conn.children)
    try:
        local = ep.local_address(conn, gateway)
    except LocalError as exc:  # (the gateway's address is peer input: never raised out of the engine)
        return str(exc)
    new = IkeSa(ep, conn, initiator=True, unique_id=ep.registry.next_ike_id(),
                local=(local, conn.local_port or ep.ike_port),
                remote=(gateway, conn.remote_port), spi_i=ep.registry.new_ike_spi(), now=now)
    new.redirected_from = sa.remote[0]
    new.redirected_at = sa.redirected_at = (*recent, now)  # an established SA redirected again counts too
    if sa.established:
        new.replaces = sa
    ep.registry.add(new)
    new.start(CATALOG.ike_init(new, list(children)), now)
    ep.scheduler.touch(new)
    return None


def _resolved(ep, sa: IkeSa, gateway: str, children, exchange: int, now: float) -> None:
    why = follow(ep, sa, gateway, children, now, exchange) if ep.names.addresses(gateway) else \
        "it did not resolve to an address"
    if why is None:
        return
    reason = f"the gateway redirects us to {gateway} (RFC 5685), but {why}"
    ep.count("name_unresolved")
    sa.fail(exchange, "REDIRECT", reason, now, sent_by_peer=True)
    if sa.alive and sa.established:
        sa.delete(now, reason)
        ep.scheduler.touch(sa)


def done(new: IkeSa, now: float) -> None:
    """The IKE SA that followed an established one's redirect is up: the old one goes; virtual
    IPs the new one got again stay on the device."""
    old, new.replaces = new.replaces, None
    if old is None or not old.alive:
        return
    old.local_vips = tuple(a for a in old.local_vips if a not in new.local_vips)
    old.delete(now, f"redirected to {new.remote[0]}")
    new.host.scheduler.touch(old)
