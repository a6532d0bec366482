"""Log hygiene for the ``engine`` logger tree: escaped, capped, rate-limited.

Peers choose much of what the engine logs (identities, proposals, notify
data). Three rules keep a hostile peer from forging or flooding the log:

- **Escaping** (engine.printable): every non-printable character becomes
  an escape (``\\n``, ``\\x1b``, ``\\x00``, ``\\u2028``...), so one record
  is always one line and no terminal sequence reaches a screen.
- **Capping.** A message is at most :data:`MAX_MESSAGE` characters; a
  longer one is cut and ends with ``...[cut: N chars]``. A traceback is kept
  (an engine bug must be reported) but capped at :data:`MAX_TRACEBACK`
  characters, escaped line by line, every line indented so none can pass
  for a record of its own.
- **Rate limiting.** Records at WARNING and above are counted per (logger,
  level, message template): the first :data:`BURST` of a key in a
  :data:`WINDOW`-second window pass, the rest are dropped and counted; once
  the window is over, one summary line says ``suppressed N similar
  messages in the last Ts: TEMPLATE``. Summaries come with the next record
  of any kind, or from :func:`flush` (the runtime calls it every second).

The same text reaches every handler (stderr, ``events``, the console's log
screen): the filter rewrites the record once, the first handler that sees
it, and the others reuse that.
"""

from __future__ import annotations

import logging
import threading
import time

from engine.printable import cap, clean, escape

MAX_MESSAGE = 1024
"""Characters of one log message (after escaping) before it is cut."""
MAX_TRACEBACK = 8192
"""Characters of a traceback attached to a record before it is cut."""
BURST = 20
"""Records of one (logger, level, template) that pass per window."""
WINDOW = 10.0
"""Seconds of one rate-limit window."""
RATE_LIMITED_LEVEL = logging.WARNING
"""Records at or above this level are rate-limited; below it (INFO, DEBUG) they are not."""
MAX_KEYS = 4096
"""Distinct templates tracked at once (an attacker cannot grow this table)."""

_DONE = "_ipsec_safe"  # record attribute: already rewritten (True) or suppressed (False)
_SUMMARY = "_ipsec_summary"  # record attribute: a summary line (never rate-limited itself)


def _traceback(text: str) -> str:
    """A traceback, capped, escaped line by line, every line indented."""
    text = cap(text, MAX_TRACEBACK)
    return "\n".join("  " + escape(line) for line in text.split("\n"))


class RateLimiter:
    """Counts records per (logger, level, template) in fixed windows; see the module docstring."""

    def __init__(self, burst: int = BURST, window: float = WINDOW, clock=time.monotonic,
                 max_keys: int = MAX_KEYS) -> None:
        self.burst = burst
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._keys: dict[tuple, list] = {}  # key -> [window start, records seen, records suppressed]
        self._next_sweep = 0.0

    def admit(self, key: tuple) -> tuple[bool, list[tuple]]:
        """(pass this record?, summaries now due as (key, suppressed, seconds))."""
        now = self.clock()
        due: list[tuple] = []
        with self._lock:
            if now >= self._next_sweep:
                due = self._sweep(now)
            entry = self._keys.get(key)
            if entry is None:
                if len(self._keys) >= self.max_keys:
                    # Templates built from peer data would each be a key: past the
                    # limit they share one, so they are still limited together.
                    key = (key[0], key[1], "(other messages)")
                    entry = self._keys.get(key)
                if entry is None:
                    entry = self._keys[key] = [now, 0, 0]
            if now - entry[0] >= self.window:
                if entry[2]:
                    due.append((key, entry[2], now - entry[0]))
                entry[:] = [now, 0, 0]
            entry[1] += 1
            if entry[1] <= self.burst:
                return True, due
            entry[2] += 1
            return False, due

    def flush(self) -> list[tuple]:
        """Summaries of every window that is over (called periodically)."""
        with self._lock:
            return self._sweep(self.clock())

    def _sweep(self, now: float) -> list[tuple]:
        self._next_sweep = now + 1.0
        due = []
        for key, (start, _seen, suppressed) in list(self._keys.items()):
            if now - start >= self.window:
                if suppressed:
                    due.append((key, suppressed, now - start))
                del self._keys[key]
        return due


LIMITER = RateLimiter()
"""The limiter every protected handler shares, so they all agree on what was dropped."""


class SafeFilter(logging.Filter):
    """Escapes, caps and rate-limits records (see the module docstring). Put it on
    handlers (a filter on a logger would not see its children's records)."""

    def __init__(self, limiter: RateLimiter | None = None) -> None:
        super().__init__()
        self.limiter = limiter or LIMITER

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, _DONE, None)
        if decided is not None:
            return decided
        ok = True
        if record.levelno >= RATE_LIMITED_LEVEL and not getattr(record, _SUMMARY, False):
            template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
            ok, due = self.limiter.admit((record.name, record.levelno, template))
            for key, n, seconds in due:
                _summary(key, n, seconds)
        if ok:
            _rewrite(record)
        setattr(record, _DONE, ok)
        return ok


def _rewrite(record: logging.LogRecord) -> None:
    try:
        text = record.getMessage()
    except Exception:  # a broken format string must not break the engine
        text = f"{record.msg!s} (bad log arguments: {record.args!r})"
    record.msg = clean(text, MAX_MESSAGE)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = _traceback(record.exc_text)
    if record.stack_info:
        record.stack_info = _traceback(record.stack_info)


def _summary(key: tuple, n: int, seconds: float) -> None:
    name, level, template = key
    logger = logging.getLogger(name)
    record = logger.makeRecord(name, level, __name__, 0, "suppressed %d similar messages in the last %.0fs: %s",
                               (n, seconds, clean(str(template), 200)), None)
    setattr(record, _SUMMARY, True)
    logger.handle(record)


def flush(limiter: RateLimiter | None = None) -> None:
    """Log the summary of every rate-limit window that is over."""
    for key, n, seconds in (limiter or LIMITER).flush():
        _summary(key, n, seconds)


def protect(handler: logging.Handler, limiter: RateLimiter | None = None) -> logging.Handler:
    """Add the safe filter to ``handler`` (once) and return it."""
    if not any(isinstance(f, SafeFilter) for f in handler.filters):
        handler.addFilter(SafeFilter(limiter))
    return handler
