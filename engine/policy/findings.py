"""Findings: what validation and lint report, one per problem.

``ipsec-console check`` prints one line per finding::

    FILE: KEY.PATH: error|warning|info: message
    FILE:LINE:COL: error: message          (TOML syntax errors)

Messages never contain secret values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]

# tomllib reports positions as "... (at line 3, column 7)" or "... (at end of document)".
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


_RANK = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    """One problem in a policy or secrets file."""

    file: str
    """The file the problem is in, as the user named it."""
    key_path: str
    """Dotted TOML key path, e.g. ``connections.branch.children.lan.local_ts``; empty for file-level problems."""
    severity: Severity
    """``error`` stops the policy from loading; ``warning`` does not (``check --strict`` fails on it);
    ``info`` is advice a demanding admin wants to see, never a failure (e.g. not-quantum-safe: a
    classic connection may have to talk to peers that cannot do better)."""
    message: str
    """What is wrong and, for warnings, what to do instead."""
    line: int | None = None
    """1-based line, for TOML syntax errors."""
    column: int | None = None
    """1-based column, for TOML syntax errors."""
    rule: str | None = None
    """Lint rule id (e.g. ``weak-encryption``); None for validation errors."""

    def format(self) -> str:
        """The one-line form ``check`` prints."""
        if self.line is not None:
            where = f"{self.file}:{self.line}:{self.column or 1}"
        elif self.key_path:
            where = f"{self.file}: {self.key_path}"
        else:
            where = self.file
        return f"{where}: {self.severity}: {self.message}"

    def sort_key(self) -> tuple:
        return (self.file, self.line or 0, self.key_path, _RANK.get(self.severity, 1), self.message)

    def __str__(self) -> str:
        return self.format()


class PolicyError(ValueError):
    """A policy (or its secrets file) that cannot be used. ``findings`` holds every error."""

    def __init__(self, findings: Iterable[Finding]) -> None:
        self.findings: list[Finding] = sorted(findings, key=Finding.sort_key)
        errors = [f for f in self.findings if f.severity == "error"]
        super().__init__("\n".join(f.format() for f in errors) or "invalid policy")

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


def syntax_finding(file: str, exc: Exception, text: str | None = None) -> Finding:
    """Turn a ``tomllib.TOMLDecodeError`` into a finding with line and column."""
    msg = str(exc)
    m = _TOML_POSITION.search(msg)
    if m:
        return Finding(file, "", "error", f"TOML syntax: {msg[:m.start()]}", line=int(m.group(1)),
                       column=int(m.group(2)))
    m = _TOML_AT_END.search(msg)
    if m and text is not None:
        lines = text.splitlines() or [""]
        return Finding(file, "", "error", f"TOML syntax: {msg[:m.start()]} (at the end of the file)",
                       line=len(lines), column=len(lines[-1]) + 1)
    return Finding(file, "", "error", f"TOML syntax: {msg}")


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=Finding.sort_key)
