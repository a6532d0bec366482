"""Host names in remote_addrs (swanctl accepts them: ``remote_addrs = vpn.example.org``).

The engine is sans-IO and resolves nothing: it asks the runtime (the ``resolve`` callback it
injects, like ``source_address``) and is told the addresses (``IkeEndpoint.resolved``).
An initiation to a name not resolved, or resolved more than NAME_TTL seconds ago, waits for
the answer; the responder matches a peer against the addresses last resolved for a name, as
charon does when it resolves remote_addrs on a configuration lookup.
"""

from __future__ import annotations

import ipaddress
from typing import Callable

from engine.ike.addresses import family_of
from engine.policy.model import ConnectionConfig
from engine.policy.parse import address_kind

NAME_TTL = 60.0
"""Seconds an answer is used to initiate before the name is asked again (DynDNS peers move)."""
MAX_NAMES = 1024
"""Names whose answers are kept (the policy's, and gateways a REDIRECT named): the oldest goes."""
MAX_WAITING = 16
"""Redirects one name may hold while it is resolved (the rest are refused). Our own initiations are
not counted: one key per CHILD config of the policy bounds them (``wait(bounded=False)``)."""


def initiate_target(conn: ConnectionConfig) -> str | None:
    """The entry of remote_addrs we initiate to: the first address or host name (swanctl: the
    first that is not a subnet or range; %any names nobody)."""
    for entry in conn.remote_addrs:
        if address_kind(entry) in ("ip", "dns"):
            return entry.strip()
    return None


def is_name(entry: str) -> bool:
    return address_kind(entry) == "dns"


class HostNames:
    """What the runtime resolved for each host name, and the initiations waiting for one."""

    def __init__(self) -> None:
        self._addrs: dict[str, tuple[tuple[str, ...], float]] = {}
        self._waiting: dict[str, dict[object, tuple[Callable[[float], None], bool]]] = {}
        """Name -> what waits for its answer (an initiation, a redirect), by a key that makes a
        second ask for the same thing one: (action, counted against MAX_WAITING)."""
        self.resolve: Callable[[str], None] | None = None
        """The runtime's resolver: called with a name, answers later with IkeEndpoint.resolved."""

    def addresses(self, name: str) -> tuple[str, ...]:
        """The addresses last resolved for ``name`` (empty: none known)."""
        got = self._addrs.get(name.lower())
        return got[0] if got is not None else ()

    def fresh(self, name: str, now: float) -> tuple[str, ...]:
        """The addresses of ``name`` if resolved within NAME_TTL seconds, else ()."""
        got = self._addrs.get(name.lower())
        return got[0] if got is not None and now - got[1] < NAME_TTL else ()

    def wait(self, name: str, key, action: Callable[[float], None], *, bounded: bool = True) -> bool:
        """Run ``action(now)`` once ``name`` is answered, and ask for it; False when too many wait.
        ``bounded=False``: not counted against MAX_WAITING (our own initiations, one key per
        CHILD config of the policy: twenty connections to one gateway name all start)."""
        lower = name.lower()
        queue = self._waiting.get(lower)
        first = queue is None
        if first:
            queue = self._waiting[lower] = {}
        if key not in queue:
            if bounded and sum(1 for _, b in queue.values() if b) >= MAX_WAITING:
                return False
            queue[key] = (action, bounded)
        if first and self.resolve is not None:
            self.resolve(name)
        return True

    def waiting(self, match: Callable[[object], bool]) -> list[str]:
        """The names something whose key ``match`` accepts waits for."""
        return [name for name, queue in self._waiting.items() if any(match(k) for k in queue)]

    def cancel(self, match: Callable[[object], bool]) -> list[str]:
        """Drop what waits under a key ``match`` accepts (a terminated connection's initiation: it
        must not start when the answer comes); returns the names they waited for. The query runs
        on: its answer still serves the others."""
        hit: list[str] = []
        for name, queue in self._waiting.items():
            for key in [k for k in queue if match(k)]:
                del queue[key]
                if name not in hit:
                    hit.append(name)
        return hit

    def answer(self, name: str, addrs, now: float) -> list[Callable[[float], None]]:
        """Record an answer (addresses kept in order, invalid ones dropped) and return what
        waited for it. An empty answer (the resolver failed) keeps the addresses an
        earlier one gave, as fresh: a DNS outage does not stop us reaching a peer we knew."""
        key = name.lower()
        good: list[str] = []
        for a in addrs:
            try:
                text = str(ipaddress.ip_address(a))
            except ValueError:
                continue
            if text not in good:
                good.append(text)
        if good:
            self._addrs.pop(key, None)
            if len(self._addrs) >= MAX_NAMES:
                self._addrs.pop(next(iter(self._addrs)))
            self._addrs[key] = (tuple(good), now)
        elif key in self._addrs:
            self._addrs[key] = (self._addrs[key][0], now)
        return [action for action, _ in self._waiting.pop(key, {}).values()]

    def refresh(self, names) -> None:
        """Ask the runtime for ``names`` (those of a policy just applied: the responder matches on them)."""
        if self.resolve is not None:
            for name in dict.fromkeys(n.lower() for n in names):
                self.resolve(name)


def pick(addrs: tuple[str, ...], conn: ConnectionConfig) -> str:
    """The address to initiate to: of a family our local_addrs name (an address, subnet or range
    of it, %any4 / %any6) when they name one."""
    versions = {family_of(a) for a in conn.local_addrs} - {0, None}
    for a in addrs:
        if not versions or ipaddress.ip_address(a).version in versions:
            return a
    return addrs[0]


def target_address(conn: ConnectionConfig, table: HostNames) -> str | None:
    """The address we would initiate ``conn`` to now: its literal target, or what its host name
    last resolved to (None: no target, or the name has not resolved yet). For what must name the
    peer before any initiation (a trap policy's tunnel endpoint)."""
    target = initiate_target(conn)
    if target is None or not is_name(target):
        return target
    addrs = table.addresses(target)
    return pick(addrs, conn) if addrs else None


def policy_names(connections) -> list[str]:
    """Every host name in the connections' remote_addrs and local_addrs (charon resolves those
    too: ike_cfg resolve_me and match_me)."""
    return [a.strip() for c in connections for a in (*c.remote_addrs, *c.local_addrs) if is_name(a)]
