"""Where a key path is written in a TOML file: line and column for findings.

Findings name a key path (``connections.branch.children.lan.local_ts``);
editors and CI annotations want a line and a column. :func:`key_positions`
scans the text once (tables, dotted keys, inline tables, arrays, all four
string kinds, comments) and maps every key path, and every table header, to
the 1-based line and column where it is written. :func:`locate` answers for
one path, falling back to the nearest written ancestor (a missing key is
reported at its table), then to the top of the file.

The scanner is tolerant: it never raises, and it stops at the first thing
that is not TOML (such a file's findings are syntax errors that carry their
own position).
"""

from __future__ import annotations

from engine.policy._reader import key_path

_BARE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class _Stop(Exception):
    """Not TOML from here on."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.found: dict[str, tuple[int, int]] = {}
        self._line_starts = [0]
        for n, ch in enumerate(text):
            if ch == "\n":
                self._line_starts.append(n + 1)

    # -- positions -----------------------------------------------------------------------------
    def position(self, offset: int) -> tuple[int, int]:
        lo, hi = 0, len(self._line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._line_starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, offset - self._line_starts[lo] + 1

    def record(self, path: list[str], offset: int) -> None:
        text = ""
        for part in path:
            text = key_path(text, part)
        self.found.setdefault(text, self.position(offset))

    # -- characters ------------------------------------------------------------------------------
    def peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def skip_blank(self, newlines: bool) -> None:
        """Spaces, tabs, comments, and (when asked) newlines."""
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self.i += 1
            elif ch == "#":
                end = self.s.find("\n", self.i)
                self.i = len(self.s) if end < 0 else end
            else:
                return

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise _Stop
        self.i += 1

    # -- pieces ------------------------------------------------------------------------------------
    def string(self) -> str:
        """A basic or literal string, single- or multi-line; returns its value (keys need it)."""
        quote = self.peek()
        multi = self.peek(3) == quote * 3
        self.i += 3 if multi else 1
        out: list[str] = []
        while self.i < len(self.s):
            if multi and self.peek(3) == quote * 3:
                self.i += 3
                while self.peek() == quote:  # up to two quotes may end the content
                    out.append(quote)
                    self.i += 1
                return "".join(out)
            ch = self.s[self.i]
            if not multi and ch == quote:
                self.i += 1
                return "".join(out)
            if not multi and ch == "\n":
                raise _Stop
            if ch == "\\" and quote == '"':
                nxt = self.s[self.i + 1:self.i + 2]
                if nxt in _ESCAPES:
                    out.append(_ESCAPES[nxt])
                    self.i += 2
                    continue
                if nxt in ("u", "U"):
                    width = 4 if nxt == "u" else 8
                    try:
                        out.append(chr(int(self.s[self.i + 2:self.i + 2 + width], 16)))
                    except ValueError:
                        raise _Stop from None
                    self.i += 2 + width
                    continue
                self.i += 2  # a line-ending backslash in a multi-line string, or junk
                continue
            out.append(ch)
            self.i += 1
        raise _Stop

    def key(self) -> list[tuple[str, int]]:
        """A dotted key: its parts with the offset where each starts."""
        parts = []
        while True:
            self.skip_blank(False)
            start = self.i
            if self.peek() in ('"', "'"):
                parts.append((self.string(), start))
            else:
                while self.i < len(self.s) and self.s[self.i] in _BARE:
                    self.i += 1
                if self.i == start:
                    raise _Stop
                parts.append((self.s[start:self.i], start))
            self.skip_blank(False)
            if self.peek() != ".":
                return parts
            self.i += 1

    def value(self, path: list[str]) -> None:
        self.skip_blank(False)
        ch = self.peek()
        if ch == "{":
            self.i += 1
            self.skip_blank(False)
            if self.peek() == "}":
                self.i += 1
                return
            while True:
                self.keyval(path, inline=True)
                self.skip_blank(False)
                if self.peek() == ",":
                    self.i += 1
                    continue
                self.expect("}")
                return
        if ch == "[":
            self.i += 1
            while True:
                self.skip_blank(True)
                if self.peek() == "]":
                    self.i += 1
                    return
                self.value(path)
                self.skip_blank(True)
                if self.peek() == ",":
                    self.i += 1
                    continue
                self.skip_blank(True)
                self.expect("]")
                return
        if ch in ('"', "'"):
            self.string()
            return
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in " \t\r\n,]}#":
            self.i += 1
        if self.i == start:
            raise _Stop

    def keyval(self, table: list[str], inline: bool = False) -> None:
        parts = self.key()
        path = list(table)
        for name, offset in parts:
            path.append(name)
            self.record(path, offset)
        self.skip_blank(False)
        self.expect("=")
        self.value(path)

    def document(self) -> None:
        table: list[str] = []
        while True:
            self.skip_blank(True)
            if self.i >= len(self.s):
                return
            if self.peek() == "[":
                array = self.peek(2) == "[["
                self.i += 2 if array else 1
                parts = self.key()
                table = [name for name, _ in parts]
                path: list[str] = []
                for name, offset in parts:
                    path.append(name)
                    self.record(path, offset)
                self.expect("]")
                if array:
                    self.expect("]")
            else:
                self.keyval(table)


def key_positions(text: str) -> dict[str, tuple[int, int]]:
    """Every key path (and table header) written in ``text`` -> (line, column), 1-based."""
    scanner = _Scanner(text)
    try:
        scanner.document()
    except (_Stop, IndexError):
        pass
    return scanner.found


def _parent(path: str) -> str:
    """The key path one level up (respecting quoted parts)."""
    depth_quote = False
    cut = -1
    for n, ch in enumerate(path):
        if ch == '"' and (n == 0 or path[n - 1] != "\\"):
            depth_quote = not depth_quote
        elif ch == "." and not depth_quote:
            cut = n
    return path[:cut] if cut >= 0 else ""


def locate(positions: dict[str, tuple[int, int]], path: str) -> tuple[int, int]:
    """Line and column of ``path``, else of its nearest written ancestor, else (1, 1)."""
    while path:
        if path in positions:
            return positions[path]
        path = _parent(path)
    return 1, 1
