"""What the Policies screen validates and remembers, without any widget:
the validation of one exact text, and where the edited text stands against
the file on disk and the policy the engine runs (for Save, Apply and the quit
guard)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.policy.findings import Finding, PolicyError
from engine.policy.lint import lint
from engine.policy.model import Policy
from engine.policy.parse import parse_policy
from engine.policy.samples import sample_dir


class Validation:
    """The outcome of validating one exact text."""

    def __init__(self, text: str, policy: Policy | None, findings: list[Finding]) -> None:
        self.text = text
        self.policy = policy
        self.findings = findings

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def infos(self) -> list[Finding]:
        """Advice (severity info, e.g. not-quantum-safe): shown, never blocking."""
        return [f for f in self.findings if f.severity == "info"]

    @property
    def ok(self) -> bool:
        return self.policy is not None and not self.errors


def validate_text(text: str, path: str | None, *, load_secrets: bool = True) -> Validation:
    """Parse and lint ``text`` as the policy at ``path`` (safe to call from a thread).
    ``load_secrets=False`` when the secrets file belongs to a daemon (root, 0600): the daemon
    checks the PSKs when the policy is applied."""
    try:
        policy = parse_policy(text, path, load_secrets=load_secrets, strict_secrets_mode=False)
    except PolicyError as exc:
        return Validation(text, None, list(exc.findings))
    return Validation(text, policy, list(lint(policy)))


def pools_supported() -> bool:
    """Whether the policy layer reads [pools] (road warriors, issue 10): the editor offers pools then."""
    try:
        parse_policy('[pools.probe]\naddrs = "198.51.100.128/25"\n', None, load_secrets=False)
    except PolicyError as exc:
        return not any(f.key_path.startswith("pools") for f in exc.findings)
    return True


def is_shipped_sample(path: str | None) -> bool:
    """A policy shipped with ipsec-console (the lab): saved elsewhere, never over itself."""
    if not path:
        return False
    try:
        return Path(path).resolve().parent == sample_dir().resolve()
    except OSError:
        return False


def read_file(path: str | None) -> str | None:
    """The file's text, or None when it does not exist (a new file) or cannot be read."""
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class Standing:
    """Where the edited text stands (the quit guard and the findings line read this)."""

    path: str | None
    unsaved: bool
    """The editor differs from the file (or the file does not exist yet)."""
    unapplied: bool
    """The editor differs from what the engine runs (and the runtime can apply)."""
    applied_unsaved: bool
    """The engine runs a policy the file does not hold: lost at the next start."""
    secrets_unapplied: tuple[str, ...] = ()
    """Connections whose PSK changed in the secrets file (k) since the engine took the policy: the
    text is the same, the engine still uses the old key."""

    def quit_title(self) -> str:
        """The quit guard's question: only unsaved text (or an applied policy no file holds) is lost;
        a saved policy not applied yet is in its file, the engine just does not run it."""
        if self.unsaved or self.applied_unsaved:
            return "Quit and lose this?"
        return "Quit with edits not applied?"

    def problems(self) -> list[str]:
        name = os.path.basename(self.path) if self.path else "the policy"
        out = []
        if self.unsaved:
            out.append(f"{name}: edits not saved (ctrl+s)")
        if self.applied_unsaved:
            out.append(f"the engine runs a policy not saved in {name}: it is lost at the next start")
        if self.unapplied:
            out.append(f"{name}: edits not applied to the engine (ctrl+g)")
        elif self.secrets_unapplied:
            out.append(f"{name}: the new PSK of {', '.join(self.secrets_unapplied)} is not applied to the engine "
                       "(ctrl+g)")
        return out
