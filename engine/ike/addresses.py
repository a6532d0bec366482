"""A connection's local_addrs / remote_addrs entries as charon's ike_cfg reads them: matching an
address against them (ike_cfg.c match: single hosts, then subnets and ranges) and the initiator's
choice of its own address (ike_sa.c resolve_hosts with ike_cfg resolve_me): a literal address of
the peer's family, else the kernel's source towards the peer when the entries allow it.
"""

from __future__ import annotations

import functools
import ipaddress

ANY_FAMILY = {"%any": 0, "%any4": 4, "%any6": 6}
"""%any matches every address, %any4 / %any6 those of one family (charon resolves them per family)."""


@functools.lru_cache(maxsize=4096)
def addr_match(pattern: str, addr: str) -> bool:
    """Whether ``addr`` is one of a connection's local_addrs/remote_addrs entries. A host name
    matches only its own text here (the caller matches what it resolved to)."""
    try:
        a = ipaddress.ip_address(addr)
    except ValueError:
        return pattern == addr
    family = ANY_FAMILY.get(pattern)
    if family is not None:
        return family in (0, a.version)
    try:
        if "/" in pattern:
            return a in ipaddress.ip_network(pattern.strip(), strict=False)
        if "-" in pattern:
            lo, hi = (ipaddress.ip_address(p.strip()) for p in pattern.split("-", 1))
            # a range of the other family: no match (comparing across families raises TypeError)
            return lo.version == a.version and lo <= a <= hi
        p = ipaddress.ip_address(pattern.strip())
    except ValueError:
        return pattern == addr  # a host name
    # 0.0.0.0 / :: stand for any address of their family, as %any4 / %any6
    return p.version == a.version if p.is_unspecified else a == p


def allows(entries: tuple[str, ...], addr: str, resolved=None) -> bool:
    """Whether local_addrs ``entries`` let us use ``addr`` (none: any address). ``resolved``: a
    host name's addresses as last resolved (engine.ike.names.HostNames.addresses)."""
    if not entries:
        return True
    return any(addr_match(e, addr) or (resolved is not None and addr in resolved(e)) for e in entries)


def family_of(entry: str) -> int | None:
    """The IP version an entry holds addresses of: 0 for either (%any, a host name), None for an
    entry that is not an address at all."""
    entry = entry.strip()
    if entry in ANY_FAMILY:
        return ANY_FAMILY[entry]
    try:
        if "/" in entry:
            return ipaddress.ip_network(entry, strict=False).version
        if "-" in entry:
            return ipaddress.ip_address(entry.split("-", 1)[0].strip()).version
        return ipaddress.ip_address(entry).version
    except ValueError:
        return 0  # a host name: it may resolve to either


def literal(entries: tuple[str, ...], version: int) -> str | None:
    """The first entry that is one concrete address of IP ``version`` (charon's resolve_me takes
    the first single host of the family; subnets and ranges are never a source by themselves)."""
    for e in entries:
        try:
            ip = ipaddress.ip_address(e.strip())
        except ValueError:
            continue
        if ip.version == version and not ip.is_unspecified:
            return str(ip)
    return None


def serves(entries: tuple[str, ...], version: int) -> bool:
    """Whether ``entries`` hold any address of IP ``version`` (none: all)."""
    return not entries or any(family_of(e) in (0, version) for e in entries)
