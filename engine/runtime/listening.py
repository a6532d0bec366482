"""What the daemon listens on without [engine] listen (EngineRuntime.start): the addresses it
derives from the connections, and which IP families of them this host can open at all.

charon opens one socket per family and, when a family cannot be opened (a kernel booted with
ipv6.disable=1, no usable IPv6), logs "could not open socket" and goes on with the other
(socket_default_socket.c). A family the daemon chose itself is the same here: a warning naming
the connections that need it, which then refuse to initiate with a LocalError saying why; a
family the admin named in [engine] listen stays a start error (UdpSockets.open).
"""

from __future__ import annotations

import errno
import logging
import socket

from engine.ike.addresses import family_of
from engine.policy.model import Policy
from engine.policy.parse import address_kind

log = logging.getLogger("engine.runtime")

UNUSABLE = frozenset({errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.EPFNOSUPPORT, errno.EADDRNOTAVAIL})
"""Errors that mean the family is not there (not a busy port, not a missing privilege: those
stay start errors, as they would be for the other family too)."""


def derived(policy: Policy) -> dict[str, list[str]]:
    """Address -> the connections it is for, in order: each literal local_addrs address, and the
    wildcard of a family a subnet, a range or %any4 / %any6 stands for (an address in it may be
    ours: charon listens on the wildcards). %any and host names add nothing. A family no entry
    names that a connection with local_addrs unset (or %any, a host name) reaches its peer over
    (remote_addrs; IPv4 for %any or a peer's host name when no local_addrs names an address)
    gets its wildcard: the IKE SA goes from the route's source, which needs a
    socket of its family (charon listens on both); a family local_addrs names keeps its own
    sockets (no wider listening)."""
    out: dict[str, list[str]] = {}
    for c in policy.connections:
        for a in c.local_addrs:
            kind = address_kind(a)
            if kind == "ip":
                text = a.strip()
            elif kind in ("network", "range") or a.strip() in ("%any4", "%any6"):
                text = "::" if family_of(a) == 6 else "0.0.0.0"
            else:
                continue
            _need(out, text, c.name)
    named = {family_of(a) for a in out}
    by_local = bool(named)
    for c in policy.connections:
        if any(family_of(a) in (4, 6) for a in c.local_addrs):
            continue  # its own family is named (or it never starts: lint address-family)
        for a in c.remote_addrs:
            version = family_of(a)
            if version == 0 and not by_local:
                # %any or a host name as the peer: 0.0.0.0, where the daemon listened before it
                # derived families (a road warrior responder must not lose IPv4 to another
                # connection's IPv6 peer); no wider where local_addrs named addresses (as before)
                version = 4
            if version in (4, 6) and (version not in named or out.get(_wildcard(version)) is not None):
                named.add(version)
                _need(out, _wildcard(version), c.name)
    return out


def openable(needs: dict[str, list[str]]) -> tuple[list[str], dict[int, str]]:
    """The addresses of ``needs`` whose family this host can open, and for each family it cannot,
    why (said once as a warning naming the connections that need it)."""
    missing: dict[int, str] = {}
    for version in sorted({family_of(a) for a in needs}):
        why = _family_error(version)
        if why is None:
            continue
        missing[version] = why
        conns = list(dict.fromkeys(c for a, names in needs.items() if family_of(a) == version for c in names))
        log.warning("no IPv%d socket: %s (%s): connections %s will not initiate over IPv%d; the daemon goes on "
                    "without it (set [engine] listen to make this a start error)", version, _wildcard(version),
                    why, ", ".join(conns), version)
    usable = [a for a in needs if family_of(a) not in missing]
    if needs and not usable:
        # charon: "could not create any sockets", no start; not the IPv4 wildcard no connection asked for
        raise OSError(errno.EAFNOSUPPORT, "no socket the connections need can be opened: " + "; ".join(
            f"IPv{v} ({why})" for v, why in sorted(missing.items())) + ": set [engine] listen")
    return usable, missing


def _family_error(version: int) -> str | None:
    """Why a socket of IP ``version`` cannot be opened here (None: it can): create one and bind
    the wildcard on a free port, which sends nothing."""
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            if version == 6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind((_wildcard(version), 0))
    except OSError as exc:
        if exc.errno in UNUSABLE:
            return exc.strerror or str(exc)
    return None  # (another error: the real open says it, as a start error)


def _wildcard(version: int) -> str:
    return "::" if version == 6 else "0.0.0.0"


def _need(out: dict[str, list[str]], addr: str, conn: str) -> None:
    names = out.setdefault(addr, [])
    if conn not in names:
        names.append(conn)


def unbound(needs: dict[str, list[str]], listening: tuple[str, ...]) -> dict[str, list[str]]:
    """The addresses of ``needs`` no socket bound at start covers (itself, or its family's
    wildcard): a reload cannot open sockets (chosen at start, maybe before privileges went), so
    a connection it adds there neither hears its peer nor initiates (EngineRuntime.apply_policy
    says so)."""
    return {a: conns for a, conns in needs.items()
            if a not in listening and _wildcard(family_of(a)) not in listening}
