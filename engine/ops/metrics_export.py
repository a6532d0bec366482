"""Publishing the metrics (engine.ops.metrics): a textfile and/or a loopback HTTP endpoint.

- ``[engine] metrics_textfile = "PATH"``: rewritten atomically every
  ``metrics_interval`` (and once at shutdown) for node_exporter's textfile
  collector (``--collector.textfile.directory``; the file must end in ``.prom``).
- ``[engine] metrics_listen = "127.0.0.1:9814"``: ``GET /metrics`` over HTTP/1.0
  on a loopback address (the parser refuses any other). Requests are
  unauthenticated, so each is bounded: one request line and headers of at most
  MAX_REQUEST bytes read within REQUEST_TIMEOUT, at most MAX_CLIENTS at once,
  and the connection is closed after the answer.

Both are off unless configured.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

from engine.ops.metrics import OBSERVED, Metrics
from engine.policy.parse import split_host_port

log = logging.getLogger("engine.metrics")

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0
MAX_CLIENTS = 16
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def write_textfile(path: Path, text: str) -> None:
    """Atomic replace (node_exporter must never read half a file); readable by the exporter's user."""
    # A fresh name, created exclusively: the folder may be writable by node_exporter's user, who could
    # otherwise put a symbolic link where a predictable temporary name would be opened by root.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o644)  # node_exporter's user reads it
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class MetricsExporter:
    """Runs the configured publishers for one runtime (see the module docstring)."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.metrics = Metrics()
        self._tasks: list[asyncio.Task] = []
        self._server: asyncio.AbstractServer | None = None
        self._sinking = False
        self._clients = 0
        self.address: tuple[str, int] | None = None
        """Where the HTTP endpoint listens (the port is the real one when 0 was asked for)."""

    @property
    def engine(self):
        return self.runtime.policy.engine

    def textfile(self) -> Path | None:
        name = self.engine.metrics_textfile
        if not name:
            return None
        base = Path(self.runtime.policy.path).parent if self.runtime.policy.path else Path.cwd()
        return base / name

    async def start(self) -> None:
        # Counting is a dict update: done as the events are published (no queue, no task woken per event).
        self.runtime.add_sink(OBSERVED, self.metrics.observe)
        self._sinking = True
        self._tasks.append(asyncio.create_task(self._textfile_loop(), name="metrics-textfile"))
        if self.engine.metrics_listen:
            host, port = split_host_port(self.engine.metrics_listen)
            self._server = await asyncio.start_server(self._client, host, port, limit=MAX_REQUEST)
            self.address = self._server.sockets[0].getsockname()[:2]
            host = self.address[0] if ":" not in self.address[0] else f"[{self.address[0]}]"
            log.info("metrics on http://%s:%d/metrics", host, self.address[1])

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._tasks.clear()
        if self._sinking:
            self.runtime.remove_sink(self.metrics.observe)
            self._sinking = False
        if self._server is not None:
            self._server.close()
            self._server = None
        self.write_once()

    def render(self) -> str:
        return self.metrics.render(self.runtime)

    def write_once(self) -> None:
        path = self.textfile()
        if path is None:
            return
        try:
            write_textfile(path, self.render())
        except OSError as exc:
            log.warning("metrics textfile %s: %s", path, exc.strerror or exc)

    async def _textfile_loop(self) -> None:
        while True:
            self.write_once()
            await asyncio.sleep(self.engine.metrics_interval)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError):
                return
            method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
            target = rest.split(b" ", 1)[0]
            if method not in (b"GET", b"HEAD"):
                await self._answer(writer, 405, b"only GET and HEAD\n", head_only=False)
            elif target.split(b"?", 1)[0] != b"/metrics":
                await self._answer(writer, 404, b"metrics are at /metrics\n", head_only=method == b"HEAD")
            else:
                await self._answer(writer, 200, self.render().encode(), head_only=method == b"HEAD")
        except ConnectionError:
            pass
        finally:
            self._clients -= 1
            writer.close()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, code: int, body: bytes, *, head_only: bool) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[code]
        ctype = CONTENT_TYPE if code == 200 else "text/plain; charset=utf-8"
        writer.write(f"HTTP/1.0 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + (b"" if head_only else body))
        await writer.drain()
