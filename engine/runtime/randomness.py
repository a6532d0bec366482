"""The runtime's random bytes: the OS CSPRNG read a block at a time.

The engine asks for a few bytes at a time (an IKE SPI, a nonce, an ESP SPI: three per
handshake), and each ``os.urandom`` call is a ``getrandom`` system call. A block of
4 KiB serves ~60 handshakes. Every byte is handed out once (the position only moves
forward); a child process made by fork() starts with an empty block, so parent and
child never share bytes. Large requests go straight to the OS.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

BLOCK = 4096
"""Bytes read from the OS at a time."""

_LIVE: weakref.WeakSet[RandomBytes] = weakref.WeakSet()


class RandomBytes:
    """``rng(n)`` for the engine: ``n`` bytes of the OS CSPRNG, never the same bytes twice."""

    __slots__ = ("_source", "_block", "_buf", "_pos", "__weakref__")

    def __init__(self, block: int = BLOCK, source: Callable[[int], bytes] = os.urandom) -> None:
        self._source = source
        self._block = block
        self._buf = b""
        self._pos = 0
        _LIVE.add(self)

    def __call__(self, n: int) -> bytes:
        if n > self._block // 4:
            return self._source(n)
        pos = self._pos
        end = pos + n
        if end > len(self._buf):
            self._buf = self._source(self._block)
            pos, end = 0, n
        self._pos = end
        return self._buf[pos:end]

    def forget(self) -> None:
        """Drop the unused bytes (the next call reads a new block)."""
        self._buf = b""
        self._pos = 0


def _after_fork_in_child() -> None:
    for r in list(_LIVE):
        r.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
