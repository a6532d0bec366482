"""Trap bookkeeping the kernel and userspace datapaths share.

- :class:`AskedTraps`: the children the engine asked a trap for (TrapRequested, from
  close_action/dpd_action = trap), beside the policy's own ``start_action = "trap"``.
"""

from __future__ import annotations

from collections.abc import Iterator

from engine.policy.model import ChildConfig, ConnectionConfig, Policy

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
