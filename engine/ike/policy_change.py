"""Applying a new policy to a running endpoint: first the whole change is
planned and checked, then committed. A plan that cannot be carried out raises
PlanRefused (a LocalError) naming the connection, before anything changed (no
SA terminated, no policy swapped, no event)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.ike.authenticator import Authenticator
from engine.ike.errors import PlanRefused
from engine.ike.names import initiate_target
from engine.policy.model import ConnectionConfig, EngineConfig, Policy

RESTART_KEYS = ("listen", "ike_port", "natt_port", "datapath")
"""[engine] keys a running engine cannot change (sockets and datapath are set up at start)."""


@dataclass(frozen=True)
class PolicyPlan:
    policy: Policy
    credentials: object
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    terminate: tuple[str, ...]
    """Connections whose SAs go (removed or changed)."""
    start: tuple[str, ...]
    """Connections brought up after the switch (added or changed, start_action = start)."""


def restart_needed(old: EngineConfig, new: EngineConfig) -> list[str]:
    return [k for k in RESTART_KEYS if getattr(old, k) != getattr(new, k)]


def initiable(conn: ConnectionConfig) -> bool:
    """Whether remote_addrs names a peer to initiate to (an address or a host name)."""
    return initiate_target(conn) is not None


def plan(current: Policy, policy: Policy, credentials) -> PolicyPlan:
    """Everything ``policy`` changes, checked. Raises PlanRefused (naming the
    connection or the [engine] key) when the change cannot be applied whole."""
    keys = restart_needed(current.engine, policy.engine)
    if keys:
        raise PlanRefused(f"changing [engine] {', '.join(keys)} needs a restart")
    old = {c.name: c for c in current.connections}
    new = {c.name: c for c in policy.connections}
    added = tuple(n for n in new if n not in old)
    removed = tuple(n for n in old if n not in new)
    changed = tuple(n for n in new if n in old and new[n] != old[n])
    auth = Authenticator(policy, credentials)
    start = []
    for name in added + changed:
        conn = new[name]
        why = auth.check(conn)
        if why is not None:
            raise PlanRefused(why)
        wants_start = [c.name for c in conn.children if c.start_action == "start"]
        if wants_start:
            if not initiable(conn):
                raise PlanRefused(f"connection '{name}': child '{wants_start[0]}' has start_action = \"start\" but "
                                 "remote_addrs names no address or host name to initiate to (%any, subnets and "
                                 "ranges name none); set remote_addrs "
                                 "or use start_action = \"none\" or \"trap\"")
            start.append(name)
    return PolicyPlan(policy, credentials, added, removed, changed, removed + changed, tuple(start))
