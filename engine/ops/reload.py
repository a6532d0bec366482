"""Reload: apply the policy file anew to a running engine (SIGHUP, ``ipsec-console
reload``, the control socket's ``reload``).

The file is read and validated first; a policy that does not validate, or
that the engine refuses (a changed listen address, port or datapath, a
credential that does not load), changes nothing. Otherwise it goes through
the runtime's transactional ``apply_policy``: unchanged connections keep their
SAs. Every applied change is recorded in the change journal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import weakref

from engine.events import PolicyApplied
from engine.ops import journal
from engine.policy import tomlfile
from engine.policy.findings import Finding, PolicyError
from engine.policy.locate import key_positions, locate
from engine.policy.model import Policy
from engine.policy.parse import parse_policy


class ReloadError(Exception):
    """The reload changed nothing; ``findings`` are the validation errors, if that was why."""

    def __init__(self, message: str, findings: list[Finding] | None = None) -> None:
        super().__init__(message)
        self.findings = findings or []

    def lines(self) -> list[str]:
        """The findings as ``check`` prints them: FILE:LINE:COL: KEY.PATH: severity: message."""
        return [finding_line(f) for f in self.findings]


def finding_line(f: Finding) -> str:
    where = f"{f.file}:{f.line}:{f.column or 1}" if f.line is not None else f.file
    return f"{where}: {f.key_path}: {f.severity}: {f.message}" if f.key_path else \
        f"{where}: {f.severity}: {f.message}"


def located(findings: list[Finding], texts: dict[str, str] | None = None) -> list[Finding]:
    """Findings with the line and column of their key path (a validation error names a key path,
    only a TOML syntax error has a position): ``texts`` gives files' text by name (the policy
    text being applied), others (the secrets file) are read again, safely (tomlfile)."""
    texts = dict(texts or {})
    positions: dict[str, dict] = {}
    out = []
    for f in findings:
        if f.line is None and f.key_path:
            if f.file not in positions:
                text = texts.get(f.file)
                if text is None:
                    try:
                        text = tomlfile.read_text(f.file)
                    except tomlfile.FileProblem:
                        text = ""
                positions[f.file] = key_positions(text)
            line, column = locate(positions[f.file], f.key_path)
            f = dataclasses.replace(f, line=line, column=column)
        out.append(f)
    return out


def parse_text(text: str, path: str | None) -> Policy:
    """Validate ``text`` as the policy file ``path``. Raises ReloadError (findings located)."""
    try:
        return parse_policy(text, path)
    except PolicyError as exc:
        findings = located(exc.findings, {path: text} if path else None)
        raise ReloadError("the policy does not validate; nothing was changed", findings) from None


def apply_parsed(runtime, policy: Policy, text: str, *, via: str, who: journal.Who | None = None) -> PolicyApplied:
    """Apply a validated policy (journaled). Raises ReloadError."""
    from engine.pki.errors import PkiError

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


def apply_text(runtime, text: str, *, via: str, who: journal.Who | None = None) -> PolicyApplied:
    """Validate ``text`` as the running policy's file and apply it (journaled). Raises ReloadError."""
    return apply_parsed(runtime, parse_text(text, runtime.policy.path), text, via=via, who=who)


def read_policy_file(path: str | None) -> str:
    """The running policy's file, read as ``load_policy`` reads it (a regular file of at most
    1 MiB: a FIFO or a device at the path is refused, not read for ever). Raises ReloadError."""
    if not path:
        raise ReloadError("the running policy has no file to reload from")
    try:
        return tomlfile.read_text(path)
    except tomlfile.FileProblem as exc:
        raise ReloadError(f"{path}: cannot read the policy: {exc}") from None


def reload_from_file(runtime, *, via: str, who: journal.Who | None = None) -> PolicyApplied:
    """Read the running policy's file again and apply it. Raises ReloadError."""
    return apply_text(runtime, _reread(runtime.policy.path), via=via, who=who)


def _reread(path: str | None) -> str:
    try:
        return read_policy_file(path)
    except ReloadError as exc:
        raise ReloadError(f"{exc}; nothing was changed") from None


async def reload_from_file_async(runtime, *, via: str, who: journal.Who | None = None) -> PolicyApplied:
    """reload_from_file with the reading and validating (files, a large policy: up to a second)
    in a thread, as apply-policy parses: IKE and ESP go on meanwhile. The apply itself runs on
    the loop, in one step."""
    def read_and_parse(path: str | None) -> tuple[Policy, str]:
        text = _reread(path)
        return parse_text(text, path), text

    async with policy_lock(runtime):
        policy, text = await asyncio.to_thread(read_and_parse, runtime.policy.path)
        return apply_parsed(runtime, policy, text, via=via, who=who)


def policy_lock(runtime) -> asyncio.Lock:
    """Held from reading to applying by whatever applies a policy to ``runtime`` off the loop
    (reload, SIGHUP, the control socket's apply-policy): each validates in a thread, and two that
    overlapped could apply the text read first last, undoing the later one. FIFO: in the order
    they came."""
    return _locks.setdefault(runtime, asyncio.Lock())


_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
