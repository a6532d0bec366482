"""Reading a policy or secrets file and its TOML, with bounds on everything an
input can make large.

- **Regular files only.** The file is opened without blocking (a FIFO with
  no writer does not hang the open), then ``fstat``-ed: a FIFO, a device
  (``/dev/zero``), a socket or a folder is refused before one byte is read.
- **Size.** At most :data:`MAX_FILE_BYTES` are read; a larger file is
  refused with its size.
- **Encoding.** UTF-8; a UTF-8 byte-order mark (as some Windows editors
  write) is accepted and ignored. Bytes that are not UTF-8 are reported
  with their line and column.
- **Bounded parsing.** ``tomllib`` takes time quadratic in the depth of a
  dotted key (a 20,000-part key in 40 KB: 3.6 s), and recursion for nested
  arrays and inline tables (a RecursionError). Before parsing, a key or
  table name of more than :data:`MAX_KEY_DEPTH` dotted names is refused (a
  policy needs 5); a RecursionError becomes a finding ("nested too deeply").

Errors are findings that quote at most a short excerpt of the file.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tomllib

from engine.policy.findings import Finding, PolicyError, syntax_finding
from engine.printable import clean

MAX_FILE_BYTES = 1 << 20
"""Bytes a policy or secrets file may have: about 2,500 connections (the samples have under 4 KB).
tomllib parses 1 MiB in under 1.5 s whatever the content, once keys are bounded."""
MAX_KEY_DEPTH = 16
"""Names in one dotted key or table header at most (``connections.a.children.b.local_ts`` has 5)."""
_EXCERPT = 60  # characters of the file quoted in an error

# A key with more than MAX_KEY_DEPTH names where TOML puts keys: at a line's start (a key or a
# [table] header) and after '{' or ',' (inline tables). That may be inside a string too: telling
# would need the parser this protects, and a string would need a run of names joined by dots
# followed by '='. Attempts start only there and parts are possessive: linear on any input.
_PART = r"""(?:[A-Za-z0-9_-]++|"[^"\n]*+"|'[^'\n]*+')"""
_DEEP_KEY = re.compile(r"(?:^|[{,])[ \t]*+\[{0,2}[ \t]*+(?>(%s(?:[ \t]*+\.[ \t]*+%s){%d,}))[ \t]*+[=\]]"
                       % (_PART, _PART, MAX_KEY_DEPTH), re.MULTILINE)


class FileProblem(Exception):
    """A file that cannot be read as a policy or secrets file; the message says why."""


def read_text(path: str | os.PathLike, *, limit: int = MAX_FILE_BYTES, follow: bool = True,
              check=None, decoder=None) -> str:
    """The text of a regular file of at most ``limit`` bytes. Raises FileProblem.

    ``follow=False`` refuses a symbolic link; ``check(stat_result)`` may
    return a problem (a string) about the file opened, which is then not read;
    ``decoder(bytes)`` turns the content into text (default: `decode`, strict UTF-8).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise FileProblem("it is a symbolic link; name the file itself") from None
        raise FileProblem(exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        problem = check(st) if check is not None else None
        if problem:
            raise FileProblem(problem)
        if stat.S_ISDIR(st.st_mode):
            raise FileProblem(os.strerror(errno.EISDIR))
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(f"not a regular file ({_kind(st.st_mode)}); give the path of a policy file")
        if st.st_size > limit:
            raise FileProblem(f"too large: {st.st_size} bytes, the limit is {limit} bytes")
        chunks = []
        size = 0
        while True:  # st_size can lie (a file still growing, /proc): count what is read
            try:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise FileProblem("not readable without waiting") from None
                raise FileProblem(exc.strerror or str(exc)) from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise FileProblem(f"too large: more than {limit} bytes")
    finally:
        os.close(fd)
    return (decoder or decode)(b"".join(chunks))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def decode(data: bytes) -> str:
    """UTF-8 text without a leading byte-order mark. Raises FileProblem naming the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise FileProblem(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, column {column}") from None
    return text[1:] if text.startswith("\ufeff") else text


def loads(text: str, file: str) -> dict:
    """Parse TOML text in bounded time and stack. Raises PolicyError with one finding."""
    if len(text) > MAX_FILE_BYTES:
        raise PolicyError([Finding(file, "", "error", f"too large: {len(text)} characters, the limit is "
                                   f"{MAX_FILE_BYTES}")])
    if text.startswith("\ufeff"):
        text = text[1:]
    deep = _DEEP_KEY.search(text)
    if deep is not None:
        start = deep.start(1)
        line = text.count("\n", 0, start) + 1
        column = start - (text.rfind("\n", 0, start) + 1) + 1
        raise PolicyError([Finding(file, "", "error", f"a key of more than {MAX_KEY_DEPTH} dotted names "
                                   f"({clean(deep.group(1), _EXCERPT)}): TOML parsing of such keys is slow, "
                                   "and no policy needs one", line=line, column=column)])
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([syntax_finding(file, exc, text)]) from None
    except RecursionError:
        raise PolicyError([Finding(file, "", "error", "arrays or inline tables nested too deeply "
                                   "(a policy needs three levels at most)")]) from None
