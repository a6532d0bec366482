"""Trap bookkeeping the kernel and userspace datapaths share.

- :class:`AskedTraps`: the children the engine asked a trap for (TrapRequested, from
  close_action/dpd_action = trap), beside the policy's own ``start_action = "trap"``.
- :class:`TrapNotes`: what was said about a trap that cannot go in (no concrete peer, a name not
  resolved yet, the kernel refused it), so that each policy apply, reload or trap request does
  not say it again. charon reports a failed trap install once per attempt (trap_manager.c,
  "installing trap failed, remote address unknown"), and it attempts on a (re)load that changes
  the config or on the event that asks for the trap; ours re-derive every trap on each apply,
  so the repetition is filtered here instead.
- :func:`local_address` and :func:`trap_child`: the addresses a trap of a child whose selectors
  are ``dynamic`` protects.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Iterator

from engine.ike import addresses, names
from engine.ike.errors import LocalError
from engine.policy.model import ChildConfig, ConnectionConfig, Policy
from engine.policy.ts import ANY_V4, ANY_V6, TrafficSelector

TrapKey = tuple[str, str]
"""(connection, child)."""


class AskedTraps:
    """(connection, child) the engine asked a trap for (close_action/dpd_action = trap). Kept
    until the policy no longer gives that child a trap option (:meth:`prune`) or the admin
    terminates the connection (:meth:`drop`)."""

    def __init__(self) -> None:
        self._keys: set[TrapKey] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[TrapKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def ask(self, connection: str, child: str) -> bool:
        """Record the engine's TrapRequested; True when it is new (the datapath then applies its traps)."""
        key = (connection, child)
        if key in self._keys:
            return False
        self._keys.add(key)
        return True

    def drop(self, connection: str) -> list[str]:
        """The admin's terminate: forget the connection's asked traps; the children whose trap
        went, sorted (``start_action = "trap"`` ones are the policy's and not here)."""
        gone = sorted(k for c, k in self._keys if c == connection)
        if gone:
            self._keys = {key for key in self._keys if key[0] != connection}
        return gone

    def prune(self, policy: Policy) -> None:
        """Only while the child still asks for one: a reload that drops its trap option (or the
        child) drops it, and a later reload that brings it back does not trap it again."""
        self._keys &= {(c.name, k.name) for c in policy.connections for k in c.children
                       if "trap" in (k.close_action, k.dpd_action)}

    def wants(self, conn: ConnectionConfig, child: ChildConfig) -> bool:
        """The child is to be trapped: by the policy's start_action or by the engine's ask."""
        return child.start_action == "trap" or (conn.name, child.name) in self._keys


class TrapNotes:
    """What each trap that could not go in said in the last policy apply. A note is logged only
    when it is news: the first time, a different text (the condition changed), or a change of
    that connection's config (a reload that touched it: charon attempts the trap again then). A
    trap that went in, or is no longer wanted, is forgotten: its next problem is news again.

    Use: :meth:`begin` at the start of an apply, :meth:`note` for each problem, :meth:`end`."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._said: dict[TrapKey, tuple[str, ConnectionConfig]] = {}
        self._now: dict[TrapKey, tuple[str, ConnectionConfig]] = {}

    def begin(self) -> None:
        self._now = {}

    def note(self, conn: ConnectionConfig, child: str, level: str, text: str) -> None:
        key = (conn.name, child)
        said = (text, conn)
        self._now[key] = said
        if self._said.get(key) != said:
            # the runtime turns engine.* log records into LogMessage events for the console
            getattr(self._log, level)("%s", text, extra={"connection": conn.name})

    def end(self) -> None:
        self._said, self._now = self._now, {}

    def forget(self) -> None:
        """The datapath stopped: a start again says everything anew."""
        self._said = {}
        self._now = {}


def is_host(addr: str) -> bool:
    """One concrete address (not %any, a subnet, a range, a name or the unspecified address)."""
    if addr in ("%any", "%any6") or "/" in addr or "-" in addr:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return not ip.is_unspecified


def local_address(conn: ConnectionConfig, policy: Policy, version: int, resolved=None) -> str | None:
    """Our end of a trap to a peer of IP ``version`` as the policy names it: the first literal
    local_addrs address of that version, else the first [engine] listen address of it that
    local_addrs holds (a subnet, a range, a name: IKE initiates from no other; None: the policy
    names none). ``resolved``: what local_addrs' host names resolved to."""
    return addresses.configured(conn.local_addrs, policy.engine.listen, version, resolved)


def trap_local(conn: ConnectionConfig, policy: Policy, remote: str, source, resolved=None,
               listening: tuple[str, ...] = (), unopened: dict[int, str] | None = None
               ) -> tuple[str | None, bool, str | None]:
    """Our end of a trap to ``remote`` by the rule the IKE initiation follows
    (engine.ike.addresses.local_for; ``source(remote)``: the route lookup; ``listening``: what the
    runtime bound, IkeEndpoint.listening; ``unopened``: IkeEndpoint.unopened): (address, taken
    from the route, why IKE would refuse
    to initiate: the trap must not go in). (None, False, None): no address known (no route)."""
    version = ipaddress.ip_address(remote).version
    listen = policy.engine.listen or listening
    gone = None if policy.engine.listen else (unopened or {}).get(version)
    found = addresses.configured(conn.local_addrs, listen, version, resolved)
    if found is not None and gone is None:
        return found, False, None
    try:
        found = addresses.local_for(conn.name, conn.local_addrs, listen, remote, source, resolved,
                                    derived=not policy.engine.listen, unopened=gone)
    except LocalError as exc:
        return None, False, str(exc)
    return (None, False, None) if ipaddress.ip_address(found).is_unspecified else (found, True, None)


def unresolved_local(conn: ConnectionConfig, resolved) -> str | None:
    """A host name in local_addrs with no address yet (a trap refused for want of it waits)."""
    if resolved is None:
        return None
    return next((e for e in conn.local_addrs if names.is_name(e) and not resolved(e)), None)


def trap_child(child: ChildConfig, local: str | None, remote: str | None, version: int) -> ChildConfig:
    """``child`` with its ``dynamic`` selectors made concrete for a trap to ``remote`` (None: its
    remote ones stay): our end is ``local``, or any address of IP ``version`` when the policy
    names none (charon's trap_manager installs a trap from %any when it knows no source). What
    the kernel's trap policy holds (kernel_spd.install_trap), for the userspace datapath's SPD."""
    peer = ipaddress.ip_address(remote) if remote is not None else None
    ours = ipaddress.ip_address(local) if local is not None else None
    lo, hi = ANY_V4 if version == 4 else ANY_V6

    def mine(ts: TrafficSelector) -> TrafficSelector:
        if not ts.dynamic or ours is not None:
            return ts.resolve(ours) if ours is not None else ts
        return TrafficSelector(lo, hi, ts.protocol, ts.start_port, ts.end_port)

    local_ts = tuple(mine(ts) for ts in child.local_ts)
    remote_ts = tuple(ts.resolve(peer) for ts in child.remote_ts) if peer is not None else child.remote_ts
    if local_ts == child.local_ts and remote_ts == child.remote_ts:
        return child
    return dataclasses.replace(child, local_ts=local_ts, remote_ts=remote_ts)
