"""ControlServer.stop with a connection accepted a moment before (review item): its handler task had
not started, so nothing closed its transport; Python 3.13 then printed "Exception ignored" at garbage
collection (the transport's ResourceWarning, an error under -W error). stop() now closes every accepted
transport itself, on every Python version."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import warnings

from engine.runtime.control import ControlServer
from tests.engine.test_control_limits import _runtime


async def _accept_then_stop(path: str, turns: int) -> None:
    rt = _runtime()
    srv = ControlServer(rt, path)
    await srv.start()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)  # in the backlog: the server accepts it within the next turns of the loop
    try:
        for _ in range(turns):
            await asyncio.sleep(0)
        await srv.stop()
    finally:
        s.close()


def test_stop_leaves_no_unclosed_transport(tmp_path):
    gc.collect()  # what earlier tests left for the collector (an unclosed loop of theirs) is not ours
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for turns in range(8):  # one of these stops between the accept and the handler's first step
                asyncio.run(_accept_then_stop(str(tmp_path / f"c{turns}.sock"), turns))
                gc.collect()
    finally:
        sys.unraisablehook = old_hook
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)
                and "event loop" not in str(w.message)]  # asyncio.run closes its own loops
    assert not unclosed, unclosed
    assert not unraisable, [str(u.exc_value) for u in unraisable]
