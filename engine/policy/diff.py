"""What changed between two policies, so Apply touches only what it must.

Running SAs of unchanged connections stay up; a changed connection is one
whose configuration differs, or whose PSK (looked up in the secrets file)
differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.policy.identity import identity_for_address, is_wildcard
from engine.policy.model import ConnectionConfig, Policy
from engine.policy.parse import single_host
from engine.policy.secrets import lookup_psk, secrets_for


@dataclass(frozen=True)
class PolicyDiff:
    """Connection names added, removed and changed; whether the rules, engine or lab settings changed."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    rules_changed: bool
    engine_changed: bool
    lab_changed: bool = False

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.rules_changed or self.engine_changed
                    or self.lab_changed)


def _psks(policy: Policy, c: ConnectionConfig) -> tuple:
    if "psk" not in (c.local.auth, c.remote.auth):
        return ()
    local = c.local.id or (identity_for_address(h) if (h := single_host(c.local_addrs)) else None)
    remote = c.remote.id or (identity_for_address(h) if (h := single_host(c.remote_addrs)) else None)
    if local is not None and remote is not None and not is_wildcard(remote):
        # One peer: the entry the engine picks for it (lookup_psk, as charon does). Another entry that
        # also names our ID (every site's, on a gateway) is not this connection's key.
        entries = [e] if (e := lookup_psk(policy.secrets, local, remote)) is not None else []
    else:
        # A pattern (or no ID): which entry a peer gets depends on the peer, so any that could serve.
        entries = secrets_for(policy.secrets, local, remote)
    # Secret compares in constant time; the tuple never leaves this module.
    return tuple((e.name, e.ids, e.secret) for e in entries)


def diff_policies(old: Policy, new: Policy) -> PolicyDiff:
    old_conns = {c.name: c for c in old.connections}
    new_conns = {c.name: c for c in new.connections}
    added = tuple(n for n in new_conns if n not in old_conns)
    removed = tuple(n for n in old_conns if n not in new_conns)
    changed = tuple(n for n, c in new_conns.items() if n in old_conns
                    and (c != old_conns[n] or _psks(old, old_conns[n]) != _psks(new, c)))
    return PolicyDiff(added=added, removed=removed, changed=changed, rules_changed=old.rules != new.rules,
                      engine_changed=old.engine != new.engine, lab_changed=old.lab != new.lab)
