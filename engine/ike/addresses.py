"""A connection's local_addrs / remote_addrs entries as charon's ike_cfg reads them: matching an
address against them (ike_cfg.c match: single hosts, then subnets and ranges) and the initiator's
choice of its own address (ike_sa.c resolve_hosts with ike_cfg resolve_me): a literal address of
the peer's family, else the kernel's source towards the peer when the entries allow it.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Callable

from engine.ike.errors import LocalError

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


def configured(entries: tuple[str, ...], listen: tuple[str, ...], version: int, resolved=None) -> str | None:
    """Our address of IP ``version`` as the policy names it, before any route lookup: the first
    literal local_addrs entry of that version, else the first [engine] listen address of it that
    local_addrs holds (None: neither names one)."""
    found = literal(entries, version)
    if found is not None:
        return found
    for a in listen:
        ip = ipaddress.ip_address(a)
        if ip.version == version and not ip.is_unspecified and allows(entries, a, resolved):
            return a
    return None


def local_for(conn_name: str, entries: tuple[str, ...], listen: tuple[str, ...], remote: str,
              source: Callable[[str], str | None] | None, resolved=None, *, derived: bool = False,
              unopened: str | None = None) -> str:
    """Our address towards ``remote`` (charon's resolve_hosts / ike_cfg resolve_me), the one rule
    the IKE initiation (IkeEndpoint.local_address) and the kernel's traps
    (engine.datapath.kernel_runtime) share, so that a trap goes in only from an address IKE will
    initiate from: ``configured``; else the host's source towards the peer (``source(remote)``,
    the route lookup) when local_addrs holds it and we listen there (on the wildcard, or nothing
    set: the runtime binds one); else the unspecified address (no route known: the kernel picks,
    the SA learns it from the answer). LocalError naming the connection when local_addrs has no
    address of the peer's family, none we listen on, or not the route's source. ``derived``:
    ``listen`` is what the runtime bound without [engine] listen (from local_addrs), not the
    admin's words; ``unopened``: why the runtime could not open a socket of the peer's family
    (engine.runtime.listening)."""
    version = ipaddress.ip_address(remote).version
    wildcard = "::" if version == 6 else "0.0.0.0"
    if derived and unopened:
        # no socket of this family at all, whatever local_addrs names (its literal too)
        raise LocalError(f"connection '{conn_name}': the daemon has no IPv{version} socket to reach {remote} "
                         f"from: {wildcard} could not be opened at start ({unopened}); this host has no "
                         f"usable IPv{version}: enable it, or give remote_addrs an IPv{10 - version} address")
    found = configured(entries, listen, version, resolved)
    if found is not None:
        return found
    if not serves(entries, version):
        raise LocalError(f"connection '{conn_name}': local_addrs ({', '.join(entries)}) holds no IPv{version} "
                         f"address to reach {remote} from: add one, or give remote_addrs an "
                         f"IPv{10 - version} address")
    family = [a for a in listen if ipaddress.ip_address(a).version == version]
    if listen and not family:
        # the runtime binds only these: an SA from the route's source would have no socket to
        # send from ("no socket for ..." at each retransmit, never a clear error)
        if derived:
            raise LocalError(f"connection '{conn_name}': the daemon listens on no IPv{version} address (it chose "
                             f"{', '.join(listen)} without [engine] listen) to reach {remote} from: set [engine] "
                             f"listen with {wildcard} or one of this host's IPv{version} addresses")
        raise LocalError(f"connection '{conn_name}': [engine] listen ({', '.join(listen)}) binds no IPv{version} "
                         f"address to reach {remote} from: add {wildcard} or one of "
                         f"this host's IPv{version} addresses to it")
    bound = [a for a in family if not ipaddress.ip_address(a).is_unspecified]
    if bound and len(bound) == len(family):
        where = (f"the daemon listens on ({', '.join(bound)}, chosen without [engine] listen from "
                 "local_addrs)" if derived else f"[engine] listen binds ({', '.join(bound)})")
        raise LocalError(f"connection '{conn_name}': local_addrs ({', '.join(entries)}) holds none of the "
                         f"IPv{version} addresses {where}: add one to "
                         f"either{_unresolved(entries, resolved)}")
    found = source(remote) if source is not None else None
    if found and not allows(entries, found, resolved):
        raise LocalError(f"connection '{conn_name}': the host reaches {remote} from {found}, which "
                         f"local_addrs ({', '.join(entries)}) does not hold: add it, or route the peer "
                         f"through an address local_addrs holds{_unresolved(entries, resolved)}")
    return found or ("0.0.0.0" if version == 4 else "::")


def _unresolved(entries: tuple[str, ...], resolved) -> str:
    """Why a host name in ``entries`` did not help: it has no address (yet)."""
    names = [e for e in entries if family_of(e) == 0 and e.strip() not in ANY_FAMILY
             and (resolved is None or not resolved(e))]
    return f" ({', '.join(names)} did not resolve to an address)" if names else ""
