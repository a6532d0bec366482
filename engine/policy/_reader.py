"""Typed access to a parsed TOML document that collects every problem.

Each getter returns a usable default after recording an error, so one pass
reports all errors (with key paths) instead of stopping at the first.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from collections.abc import Iterable
from typing import Any

from engine.policy.findings import Finding
from engine.printable import clean

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

_MISSING = object()
MAX_FINDINGS = 200
"""Findings listed per file; past that one more says how many were left out."""
MAX_MESSAGE = 400
"""Characters of one finding's message (file content quoted in it included)."""
MAX_KEY_PATH = 200
"""Characters of one finding's key path (a key can be as long as the file)."""
# Values quoted in messages: short, and never a full walk of a deep or huge value.
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 4


def key_path(parent: str, key: str) -> str:
    """Append one TOML key to a dotted path, quoting keys that are not bare."""
    part = key if _BARE_KEY.match(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{parent}.{part}" if parent else part


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def parse_duration(value: Any) -> float:
    """``"30s"``, ``"5m"``, ``"4h"``, ``"1d"``, or seconds as a number; raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an integer of hundreds of digits: TOML allows it
            raise ValueError("not a duration (too long)") from None
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError("a duration cannot be negative")
        return seconds
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
    raise ValueError("not a duration")


def format_duration(seconds: float) -> str | float | int:
    """The shortest text ``parse_duration`` reads back to the same value."""
    if seconds == int(seconds):
        s = int(seconds)
        for unit, mult in (("d", 86400), ("h", 3600), ("m", 60)):
            if s and s % mult == 0:
                return f"{s // mult}{unit}"
        return f"{s}s"
    return seconds


def parse_size(value: Any) -> int:
    """Bytes or packets: an integer, or ``"64k"``, ``"500M"``, ``"1G"`` (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    raise ValueError("not a size")


def format_size(n: int) -> int | str:
    for unit, mult in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return n


class Reader:
    """Collects findings for one file while its tables are read."""

    def __init__(self, file: str, *, quote_values: bool = True) -> None:
        self.file = file
        self.findings: list[Finding] = []
        self.quote_values = quote_values
        """False for the secrets file: values never appear in messages."""
        self.left_out = 0
        """Findings not listed (past MAX_FINDINGS)."""

    # -- reporting -------------------------------------------------------
    def error(self, path: str, message: str) -> None:
        self._add(path, "error", message)

    def warning(self, path: str, message: str, rule: str | None = None) -> None:
        self._add(path, "warning", message, rule)

    def _add(self, path: str, severity, message: str, rule: str | None = None) -> None:
        # Paths and messages quote the file: escaped (no terminal sequence reaches the
        # screen) and cut, so a 20 MB value or key is never echoed whole.
        if len(self.findings) >= MAX_FINDINGS:
            self.left_out += 1
            if self.left_out == 1:
                self.findings.append(Finding(self.file, "", "error" if severity == "error" else "warning",
                                             f"more problems than the first {MAX_FINDINGS} listed here"))
            return
        self.findings.append(Finding(self.file, clean(path, MAX_KEY_PATH), severity, clean(message, MAX_MESSAGE),
                                     rule=rule))

    @property
    def full(self) -> bool:
        return len(self.findings) >= MAX_FINDINGS

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    def _show(self, value: Any) -> str:
        if not self.quote_values:
            return type_name(value)
        return f"{type_name(value)} ({_REPR.repr(value)})"

    # -- structure -----------------------------------------------------------
    def check_keys(self, table: dict, path: str, known: Iterable[str], what: str = "key") -> None:
        known = list(known)
        for key in table:
            if key not in known:
                if self.full:  # counted only: no hint worth its cost
                    self.error(key_path(path, key), f"unknown {what}")
                    continue
                hint = difflib.get_close_matches(key[:100], known, n=1, cutoff=0.6)
                more = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(known)})"
                self.error(key_path(path, key), f"unknown {what} '{key}'{more}")

    def table(self, parent: dict, key: str, path: str) -> dict | None:
        value = parent.get(key, _MISSING)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.error(key_path(path, key), f"expected a table, got {self._show(value)}")
            return None
        return value

    # -- scalars ---------------------------------------------------------------
    def str_(self, t: dict, key: str, path: str, default: Any = None, *, choices: Iterable[str] | None = None) -> Any:
        value = t.get(key, _MISSING)
        if value is _MISSING:
            return default
        p = key_path(path, key)
        if not isinstance(value, str):
            self.error(p, f"expected a string, got {self._show(value)}")
            return default
        if choices is not None:
            choices = list(choices)
            if value not in choices:
                self.error(p, f"must be one of {', '.join(repr(c) for c in choices)}, not {_REPR.repr(value)}")
                return default
        return value

    def int_(self, t: dict, key: str, path: str, default: int, *, lo: int | None = None, hi: int | None = None) -> int:
        value = t.get(key, _MISSING)
        if value is _MISSING:
            return default
        p = key_path(path, key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(p, f"expected an integer, got {self._show(value)}")
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            rng = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            self.error(p, f"must be {rng}, not {value}")
            return default
        return value

    def float_(self, t: dict, key: str, path: str, default: float, *, lo: float | None = None) -> float:
        value = t.get(key, _MISSING)
        if value is _MISSING:
            return default
        p = key_path(path, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.error(p, f"expected a number, got {self._show(value)}")
            return default
        if lo is not None and value < lo:
            self.error(p, f"must be at least {lo}, not {value}")
            return default
        return float(value)

    def bool_(self, t: dict, key: str, path: str, default: bool) -> bool:
        value = t.get(key, _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.error(key_path(path, key), f"expected true or false, got {self._show(value)}")
            return default
        return value

    def duration(self, t: dict, key: str, path: str, default: float) -> float:
        value = t.get(key, _MISSING)
        if value is _MISSING:
            return default
        try:
            return parse_duration(value)
        except ValueError:
            self.error(key_path(path, key), 'expected a duration like "30s", "5m", "4h", "1d" or a number '
                       f"of seconds, got {self._show(value)}")
            return default

    def size(self, t: dict, key: str, path: str, default: int) -> int:
        value = t.get(key, _MISSING)
        if value is _MISSING:
            return default
        try:
            return parse_size(value)
        except ValueError:
            self.error(key_path(path, key), 'expected a count like 1000, "64k", "500M" or "1G", '
                       f"got {self._show(value)}")
            return default

    def str_list(self, t: dict, key: str, path: str, default: Any = None) -> list[str] | None:
        """An array of strings; a single string is accepted (split on commas, like swanctl)."""
        value = t.get(key, _MISSING)
        if value is _MISSING:
            return default
        p = key_path(path, key)
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            self.error(p, f"expected an array of strings, got {self._show(value)}")
            return default
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            self.error(p, f"expected an array of strings, but it holds {self._show(bad[0])}")
            return default
        return list(value)
