"""The console's view of the policy layer (``engine.policy``).

The policy layer is built beside the console; this module finds its public
names wherever they live (the package or its submodules) so screens import
one place, and so the console still opens, with validation marked
unavailable, on a tree where a piece is missing. Nothing here re-implements
the policy layer except a plain connection-level diff used when
``diff_policies`` is absent.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from engine.policy.model import Policy

_MODULES = (
    "engine.policy",
    "engine.policy.parse",
    "engine.policy.parser",
    "engine.policy.load",
    "engine.policy.lint",
    "engine.policy.spd",
    "engine.policy.save",
    "engine.policy.serialize",
    "engine.policy.diff",
    "engine.policy.errors",
    "engine.policy.findings",
    "engine.policy.check",
)

NAMES = (
    "load_policy",
    "parse_policy",
    "PolicyError",
    "lint",
    "Spd",
    "policy_to_toml",
    "save_policy",
    "save_text",
    "diff_policies",
    "Finding",
)

_cache: dict[str, Any] = {}


def get(name: str) -> Any | None:
    """The policy layer's ``name``, or None when it is not there (yet)."""
    if name in _cache:
        return _cache[name]
    found = None
    for mod_name in _MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        except Exception:  # a half-written sibling module must not take the console down
            continue
        found = getattr(mod, name, None)
        if found is not None:
            break
    if found is not None:
        _cache[name] = found
    return found


def missing() -> list[str]:
    return [n for n in NAMES if get(n) is None]


class PolicyLayerMissing(RuntimeError):
    """A policy-layer function the console needs is not installed."""


def require(name: str) -> Any:
    obj = get(name)
    if obj is None:
        raise PolicyLayerMissing(f"engine.policy has no {name} in this build")
    return obj


class _StandInPolicyError(Exception):
    """Used only when engine.policy has no PolicyError: never raised by the engine."""

    findings: tuple = ()


def policy_error_type() -> type[Exception]:
    return get("PolicyError") or _StandInPolicyError


def findings_of(exc: BaseException) -> list[Any]:
    """The findings carried by a PolicyError (or a one-item list with its message)."""
    found = getattr(exc, "findings", None)
    if found:
        return list(found)
    return [str(exc)]


def format_finding(f: Any) -> str:
    fmt = getattr(f, "format", None)
    if callable(fmt):
        try:
            return fmt()
        except Exception:
            pass
    return str(f)


def severity_of(f: Any) -> str:
    return getattr(f, "severity", "error")


@dataclass(frozen=True)
class ConnectionDiff:
    """What a policy change does, per connection (the screen's preview)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    rules_changed: bool = False
    engine_changed: bool = False
    details: tuple[str, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.rules_changed or self.engine_changed)


def diff(old: Policy, new: Policy) -> ConnectionDiff:
    """Connections added, removed and changed from ``old`` to ``new``."""
    engine_diff = get("diff_policies")
    if engine_diff is not None:
        d = engine_diff(old, new)
        return ConnectionDiff(
            added=tuple(getattr(d, "added", ())),
            removed=tuple(getattr(d, "removed", ())),
            changed=tuple(getattr(d, "changed", ())),
            rules_changed=bool(getattr(d, "rules_changed", False)),
            engine_changed=bool(getattr(d, "engine_changed", False)),
        )
    old_c = {c.name: c for c in old.connections}
    new_c = {c.name: c for c in new.connections}
    return ConnectionDiff(
        added=tuple(n for n in new_c if n not in old_c),
        removed=tuple(n for n in old_c if n not in new_c),
        changed=tuple(n for n in new_c if n in old_c and new_c[n] != old_c[n]),
        rules_changed=old.rules != new.rules,
        engine_changed=old.engine != new.engine,
    )
