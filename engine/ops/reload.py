"""Reload: apply the policy file anew to a running engine (SIGHUP, ``ipsec-console
reload``, the control socket's ``reload``).

The file is read and validated first; a policy that does not validate, or
that the engine refuses (a changed listen address, port or datapath, a
credential that does not load), changes nothing. Otherwise it goes through
the runtime's transactional ``apply_policy``: unchanged connections keep their
SAs. Every applied change is recorded in the change journal.
"""

from __future__ import annotations

from pathlib import Path

from engine.events import PolicyApplied
from engine.ops import journal
from engine.policy.findings import Finding, PolicyError
from engine.policy.parse import parse_policy


class ReloadError(Exception):
    """The reload changed nothing; ``findings`` are the validation errors, if that was why."""

    def __init__(self, message: str, findings: list[Finding] | None = None) -> None:
        super().__init__(message)
        self.findings = findings or []


def apply_text(runtime, text: str, *, via: str, who: journal.Who | None = None) -> PolicyApplied:
    """Validate ``text`` as the running policy's file and apply it (journaled). Raises ReloadError."""
    from engine.pki.errors import PkiError

    path = runtime.policy.path
    try:
        policy = parse_policy(text, path)
    except PolicyError as exc:
        raise ReloadError("the policy does not validate; nothing was changed", exc.findings) from None
    old_text = runtime.policy_text
    try:
        applied = runtime.apply_policy(policy, text)
    except PkiError as exc:
        raise ReloadError(f"credentials could not be loaded; nothing was changed: {exc}") from None
    except ValueError as exc:
        raise ReloadError(f"{exc}; nothing was changed") from None
    journal.record(policy, action="apply", via=via, old_text=old_text, new_text=text, who=who,
                   result={"added": list(applied.added), "removed": list(applied.removed),
                           "changed": list(applied.changed)})
    return applied


def reload_from_file(runtime, *, via: str, who: journal.Who | None = None) -> PolicyApplied:
    """Read the running policy's file again and apply it. Raises ReloadError."""
    path = runtime.policy.path
    if not path:
        raise ReloadError("the running policy has no file to reload from")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ReloadError(f"{path}: cannot read the policy: {reason}; nothing was changed") from None
    return apply_text(runtime, text, via=via, who=who)
