"""The daemon's log stream: the lines of one turn of the asyncio loop written at once.

A StreamHandler writes and flushes each record: under a handshake load that was
a ``write`` system call per handshake (its INFO line) on the daemon's one core.
:class:`TurnBufferedHandler` keeps the formatted lines of one turn of the
running loop and writes them together at the start of the next turn (a
``call_soon``), so what is logged still reaches the stream within one turn.
Lines are never held longer than that, and never lost:

- a record at WARNING or above is written at once, with the lines before it;
- so is any record logged outside a running loop (start-up, another thread),
  and any record once :data:`MAX_BUFFERED` characters are waiting;
- ``flush()`` and ``close()`` write what waits (``logging.shutdown`` calls them
  at exit, the daemon's ``main`` when ``asyncio.run`` ends, even by an exception).
"""

from __future__ import annotations

import asyncio
import logging

MAX_BUFFERED = 64 * 1024
"""Characters of formatted lines waiting at most before they are written."""


class TurnBufferedHandler(logging.StreamHandler):
    """A StreamHandler whose lines wait at most until the loop's next turn (see the module docstring)."""

    def __init__(self, stream=None, max_buffered: int = MAX_BUFFERED) -> None:
        super().__init__(stream)
        self.max_buffered = max_buffered
        self._lines: list[str] = []
        self._buffered = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop a write of the waiting lines is scheduled on (None: none is)."""

    def emit(self, record: logging.LogRecord) -> None:
        # Called by Handler.handle with the handler's lock held.
        try:
            text = self.format(record) + self.terminator
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        self._lines.append(text)
        self._buffered += len(text)
        if record.levelno >= logging.WARNING or self._buffered >= self.max_buffered:
            self._write()
            return
        loop = asyncio._get_running_loop()  # the C call; get_running_loop() would raise outside a loop
        if loop is None:
            self._write()  # no turn to wait for (start-up, exit, a thread without a loop)
        elif self._loop is None:
            self._loop = loop
            loop.call_soon(self._turn_over, loop)
        elif self._loop is not loop:
            self._write()  # another loop (a thread's): its turn is not ours to wait for
            if self._loop.is_closed():  # the scheduled turn never came: wait for this loop's
                self._loop = loop
                loop.call_soon(self._turn_over, loop)

    def _turn_over(self, loop: asyncio.AbstractEventLoop) -> None:
        self.acquire()
        try:
            if self._loop is loop:
                self._loop = None
            self._write()
        finally:
            self.release()

    def _write(self) -> None:
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines.clear()
        self._buffered = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            # As StreamHandler.emit: report the failure (logging.raiseExceptions), go on.
            self.handleError(logging.makeLogRecord({"msg": text.rstrip("\n")}))

    def flush(self) -> None:
        self.acquire()
        try:
            self._write()
            super().flush()
        finally:
            self.release()

    def close(self) -> None:
        self.flush()
        super().close()

    @property
    def waiting(self) -> int:
        """Characters of formatted lines not yet written."""
        return self._buffered
