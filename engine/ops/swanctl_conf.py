"""strongSwan's settings syntax (swanctl.conf, strongswan.conf): read and write.

The grammar follows strongSwan's settings lexer and parser
(src/libstrongswan/settings/settings_lexer.l, settings_parser.y):

- a section is ``NAME {`` ... ``}``, or ``NAME : REF[, REF] {`` ... ``}`` to
  inherit the settings and subsections of the referenced sections (dotted
  paths from the top, e.g. ``connections.base``);
- a setting is ``NAME = VALUE`` to the end of the line, ``#`` or ``}``; the
  value's parts are joined by one space, a ``"quoted string"`` keeps its
  spaces and knows ``\\n``, ``\\t``, ``\\"`` and line continuation;
- ``include PATTERN`` reads the files the glob names (relative to the
  including file), ``#`` starts a comment; a NAME is any run of characters
  but ``# { } : . , = "`` and blanks;
- a setting or section given twice: the later setting wins, sections merge.

:func:`parse` returns a :class:`Section` tree that remembers each item's
file and line for messages; :func:`quote` and :func:`render` write the syntax.
Input is bounded (MAX_SIZE per file, MAX_INCLUDES files, MAX_DEPTH nesting).
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from engine.policy import tomlfile

MAX_SIZE = 4 * 1024 * 1024
MAX_INCLUDES = 256
MAX_DEPTH = 64
_SPECIAL = set('#{}:.,="\r\n\t ')
_VALUE_END = set("#}\n")


class SettingsError(ValueError):
    """The text is not in strongSwan's settings syntax: ``file:line: what``."""


@dataclass
class Setting:
    value: str
    file: str
    line: int


@dataclass
class Section:
    name: str
    file: str = ""
    line: int = 0
    settings: dict[str, Setting] = field(default_factory=dict)
    sections: dict[str, "Section"] = field(default_factory=dict)
    refs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """The root's: ``file:line: what`` the parser noticed and strongSwan only logs (an include matching
    no file)."""

    def section(self, name: str) -> "Section | None":
        return self.sections.get(name)

    def value(self, key: str) -> str | None:
        s = self.settings.get(key)
        return None if s is None else s.value

    def where(self, key: str | None = None) -> str:
        item = self.settings.get(key) if key else None
        if item is not None:
            return f"{item.file}:{item.line}"
        return f"{self.file}:{self.line}" if self.file else "<string>"


class _Parser:
    def __init__(self, root: Section) -> None:
        self.root = root
        self.files = 0

    def parse_file(self, path: Path, stack: list[Section]) -> None:
        self.files += 1
        if self.files > MAX_INCLUDES:
            raise SettingsError(f"{path}: more than {MAX_INCLUDES} files included")
        try:
            # A regular file, at most MAX_SIZE bytes read (st_size is 0 for /dev/zero; a FIFO blocks).
            text = tomlfile.read_text(path, limit=MAX_SIZE, check=_regular, decoder=_decode)
        except tomlfile.FileProblem as exc:
            raise SettingsError(f"{path}: {exc}") from None
        self.parse_text(text, str(path), stack, path.parent)

    def parse_text(self, text: str, file: str, stack: list[Section], folder: Path | None) -> None:
        s, i, n, line = text, 0, len(text), 1
        depth0 = len(stack)

        def error(msg: str) -> SettingsError:
            return SettingsError(f"{file}:{line}: {msg}")

        def skip_blanks(newlines: bool = True) -> None:
            nonlocal i, line
            while i < n:
                ch = s[i]
                if ch == "\n":
                    if not newlines:
                        return
                    line += 1
                    i += 1
                elif ch in " \t\r":
                    i += 1
                elif ch == "#":
                    while i < n and s[i] != "\n":
                        i += 1
                else:
                    return

        def name() -> str:
            nonlocal i
            start = i
            while i < n and s[i] not in _SPECIAL:
                i += 1
            if i == start:
                raise error(f"unexpected {s[i]!r}" if i < n else "unexpected end of file")
            return s[start:i]

        def quoted() -> str:
            nonlocal i, line
            i += 1  # the opening quote
            out: list[str] = []
            while i < n:
                ch = s[i]
                if ch == '"':
                    i += 1
                    return "".join(out)
                if ch == "\\" and i + 1 < n:
                    nxt = s[i + 1]
                    if nxt == "\n" or (nxt == "\r" and s[i + 2:i + 3] == "\n"):
                        i += 2 if nxt == "\n" else 3
                        line += 1
                        continue
                    out.append({"n": "\n", "r": "\r", "t": "\t"}.get(nxt, nxt))
                    i += 2
                    continue
                if ch == "\n":
                    line += 1
                if ch != "\r":
                    out.append(ch)
                i += 1
            raise error("unterminated string")

        def include_name() -> str:
            nonlocal i
            out: list[str] = []
            while i < n and s[i] not in "#}\n\t ":
                if s[i] == "\\" and i + 1 < n:  # blanks, # and } can be escaped
                    out.append(s[i + 1])
                    i += 2
                    continue
                if s[i] != "\r":
                    out.append(s[i])
                i += 1
            return "".join(out)

        def value() -> str:
            nonlocal i
            parts: list[str] = []
            while i < n:
                ch = s[i]
                if ch in " \t\r":
                    i += 1
                elif ch in _VALUE_END:
                    break
                elif ch == '"':
                    parts.append(quoted())
                else:
                    start = i
                    while i < n and s[i] not in '#}"\r\n\t ':
                        i += 1
                    parts.append(s[start:i])
            return " ".join(parts)

        while True:
            skip_blanks()
            if i >= n:
                break
            ch = s[i]
            if ch == "}":
                if len(stack) <= depth0:
                    raise error("'}' without a section to close")
                stack.pop()
                i += 1
                continue
            at = line
            if s.startswith("include", i) and i + 7 < n and s[i + 7] in " \t":
                # "include" followed by blanks and no "=": an include statement
                j = i + 7
                while j < n and s[j] in " \t":
                    j += 1
                if j < n and s[j] != "=":
                    i = j
                    pattern = quoted() if s[i] == '"' else include_name()
                    self.include(pattern, folder, stack, file, at)
                    continue
            key = name()
            skip_blanks(newlines=False)
            if i < n and s[i] == "=":
                i += 1
                stack[-1].settings[key] = Setting(value(), file, at)
                continue
            refs: list[str] = []
            if i < n and s[i] == ":":
                i += 1
                while True:
                    skip_blanks()
                    start = i
                    while i < n and (s[i] not in _SPECIAL or s[i] == "."):
                        i += 1
                    if i == start:
                        raise error("a reference names a section")
                    refs.append(s[start:i])
                    skip_blanks()
                    if i < n and s[i] == ",":
                        i += 1
                        continue
                    break
            skip_blanks()
            if i >= n or s[i] != "{":
                raise error(f"expected '=' or '{{' after {key!r}")
            i += 1
            if len(stack) >= MAX_DEPTH:
                raise error(f"sections nested deeper than {MAX_DEPTH}")
            parent = stack[-1]
            sec = parent.sections.get(key)
            if sec is None:
                sec = parent.sections[key] = Section(key, file, at)
            sec.refs.extend(refs)
            stack.append(sec)

        if len(stack) != depth0:
            raise error(f"section {stack[-1].name!r} is not closed")

    def include(self, pattern: str, folder: Path | None, stack: list[Section], file: str, line: int) -> None:
        pattern = os.path.expanduser(pattern)
        if not os.path.isabs(pattern):
            if folder is None:
                raise SettingsError(f"{file}:{line}: a relative include needs a file to be relative to")
            pattern = str(folder / pattern)
        matches = sorted(glob.glob(pattern))
        if not matches:
            # strongSwan logs "no files found matching" and goes on: said, since what those files held
            # (connections, secrets) is missing from the result.
            self.root.notes.append(f"{file}:{line}: include {pattern}: no file matches (a missing folder or "
                                   "file): what it holds is not read")
        for match in matches:
            self.parse_file(Path(match), stack)


def parse(text: str, file: str = "<string>", folder: Path | None = None) -> Section:
    """The settings tree of ``text`` (includes resolved against ``folder``). Raises SettingsError."""
    root = Section("", file, 1)
    p = _Parser(root)
    p.parse_text(text, file, [root], folder)
    resolve_references(root)
    return root


def _decode(data: bytes) -> str:
    """UTF-8, except in comments: a swanctl.conf is bytes to strongSwan, and a comment written in
    Latin-1 (an umlaut in an admin's note) must not stop an import. Anywhere else a byte that is not
    UTF-8 is refused, naming its line: a value (an EAP password) is never changed silently."""
    try:
        return tomlfile.decode(data)
    except tomlfile.FileProblem:
        pass
    lines = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            lines.append(raw.decode("utf-8"))
            continue
        except UnicodeDecodeError as exc:
            comment = raw.find(b"#")
            if comment < 0 or exc.start < comment:
                raise tomlfile.FileProblem(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {n}, column "
                                           f"{exc.start + 1} (only comments may be in another encoding: "
                                           f"convert the file, e.g. with iconv -f latin1 -t utf-8)") from None
        lines.append(raw[:comment].decode("utf-8") + raw[comment:].decode("utf-8", "replace"))
    text = "\n".join(lines)
    return text[1:] if text.startswith("\ufeff") else text


def _regular(st: os.stat_result) -> str | None:
    if stat.S_ISDIR(st.st_mode):
        return os.strerror(errno.EISDIR)
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({tomlfile._kind(st.st_mode)})"
    return None


def parse_file(path: str | os.PathLike) -> Section:
    path = Path(path)
    root = Section("", str(path), 1)
    p = _Parser(root)
    p.parse_file(path, [root])
    resolve_references(root)
    return root


def _find(root: Section, dotted: str) -> Section | None:
    sec: Section | None = root
    for part in dotted.split("."):
        sec = sec.sections.get(part) if sec is not None else None
    return sec


MAX_COPIED = 100_000
"""Settings and sections that references may copy in all: each copies its source whole, so a few
hundred bytes of references naming references twice would otherwise expand without end."""


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_COPIED

    def take(self, source: Section, n: int, depth: int) -> None:
        self.left -= n
        if self.left < 0:
            raise SettingsError(f"{source.file}:{source.line}: references copy more than {MAX_COPIED} settings "
                                "and sections (references of references, each copied whole)")
        if depth > MAX_DEPTH:
            raise SettingsError(f"{source.file}:{source.line}: references nest sections more than {MAX_DEPTH} deep")


def _inherit(target: Section, source: Section, budget: _Budget, depth: int,
             active: frozenset[int] = frozenset()) -> None:
    """Copy into ``target`` (``depth`` sections deep) what ``source`` has and it lacks. A section that
    references one of its own ancestors (``c { children { k : connections.c } }``) would copy itself
    into itself forever: the sections being copied from or into are skipped, as strongSwan ignores a
    reference already followed."""
    budget.take(source, len(source.settings) + len(source.sections), depth)
    active = active | {id(target), id(source)}
    for k, v in source.settings.items():
        target.settings.setdefault(k, v)
    for k, sub in list(source.sections.items()):
        if id(sub) in active:
            continue
        mine = target.sections.get(k)
        if mine is None:
            mine = target.sections[k] = Section(k, sub.file, sub.line)
        _inherit(mine, sub, budget, depth + 1, active)


def resolve_references(root: Section) -> None:
    """Copy into every section what its ``: REF`` sections define and it does not (the section's own
    settings win, as in strongSwan). SettingsError when the copies grow past MAX_COPIED or MAX_DEPTH."""
    budget = _Budget()

    def walk(sec: Section, depth: int) -> None:
        for sub in list(sec.sections.values()):
            walk(sub, depth + 1)
        for ref in sec.refs:
            source = _find(root, ref)
            if source is not None and source is not sec:
                _inherit(sec, source, budget, depth)

    walk(root, 0)


# -- writing --------------------------------------------------------------------------------------
def quote(value: str) -> str:
    """``value`` as a settings value: bare when the lexer would read it back unchanged, else quoted."""
    if value and not any(ch in value for ch in '#}"\\\n\r\t') and value == " ".join(value.split()):
        return value
    # \r too: strongSwan's lexer drops a bare CR inside quotes (settings_lexer.l), "\\r" is one
    return _quoted(value)


def quote_include(path: str) -> str:
    """An include's file name: bare ends at a blank, ``#`` or ``}`` (settings_lexer.l), so quoted then."""
    if path and not any(ch in path for ch in ' \t#}"\\\n\r'):
        return path
    return _quoted(path)


def _quoted(value: str) -> str:
    return ('"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
            .replace("\t", "\\t") + '"')


def render(tree: dict, indent: int = 0) -> str:
    """Nested dicts (sections) and str/list values (settings) as settings text; lists are comma-joined."""
    pad = "  " * indent
    out: list[str] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out.append(f"{pad}{key} {{")
            out.append(render(value, indent + 1).rstrip("\n"))
            out.append(f"{pad}}}")
        elif value is not None:
            text = ", ".join(value) if isinstance(value, (list, tuple)) else str(value)
            out.append(f"{pad}{key} = {quote(text)}")
    return "\n".join(x for x in out if x != "") + "\n"
