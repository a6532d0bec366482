"""Printable, bounded text from untrusted strings (peer identities, proposals,
notify data, file contents quoted in errors).

Every character that ``str.isprintable()`` rejects is written as a
Python-style escape: ``\\n``, ``\\r``, ``\\t``, ``\\xHH`` (``\\x1b`` for ESC,
``\\x00`` for NUL), ``\\uHHHH`` / ``\\UHHHHHHHH`` above Latin-1 (line and
paragraph separators, bidi controls). Printable non-ASCII text (``é``,
``中``) stays as it is, and so does a backslash: an escape only ever *looks*
like a control character, so one log record stays one line and no terminal
sequence reaches a screen. (strongSwan prints ``?`` instead; escapes keep
what the peer sent recognisable.)

Pure functions, no I/O: the sans-IO core (engine/wire) uses them too.
"""

from __future__ import annotations

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """``text`` with every non-printable character written as an escape."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in _SHORT:
            out.append(_SHORT[ch])
        else:
            n = ord(ch)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return "".join(out)


def clean(text: str, limit: int) -> str:
    """``text`` escaped and cut to at most ``limit`` characters; a cut text ends
    with ``...[cut: N chars]`` (N: the length of the original). Only the part
    that can be shown is escaped, so a 100 KB string costs no more than a
    short one."""
    if len(text) <= limit and text.isprintable():
        return text
    shown = escape(text[:limit])
    if len(text) <= limit and len(shown) <= limit:
        return shown
    marker = f"...[cut: {len(text)} chars]"
    return shown[:max(0, limit - len(marker))] + marker


def cap(text: str, limit: int) -> str:
    """``text`` (multi-line allowed) cut to at most ``limit`` characters, marker included."""
    if len(text) <= limit:
        return text
    marker = f"\n...[cut: {len(text)} chars]"
    return text[:max(0, limit - len(marker))] + marker
