"""The link between the console and its engine process (console.runtime.embedded,
console.runtime.engine_process): length-prefixed pickled frames over a socket
pair, message summaries sent unformatted (the console formats what it shows),
SA keys never sent."""

from __future__ import annotations

import asyncio
import copyreg
import io
import pickle
import struct


INBOX = 50_000
"""Events waiting on either side at most; past it the oldest go (counted)."""
_LEN = struct.Struct("!I")
_DISPATCH = dict(copyreg.dispatch_table)


def error_text(exc: Exception) -> str:
    """A readable error: KeyError's str() is the repr of its key."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def _lazy_summary(summary):
    # Its decoded payloads cross as they are, and the console formats them only if it reads them
    # (LazySummary's own pickling would format every field here, on the engine's time).
    return _unpickle_summary, summary.parts()


def _unpickle_summary(src, retained):
    from engine.wire.summary import LazySummary

    return LazySummary.from_parts(src, retained)


def frame(obj) -> bytes:
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(obj)
    data = buf.getbuffer()
    return _LEN.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader):
    """The next object from the other process, or None at the end of the stream."""
    try:
        head = await reader.readexactly(4)
        return pickle.loads(await reader.readexactly(_LEN.unpack(head)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def register_lazy_summary() -> None:
    from engine.wire.summary import LazySummary

    _DISPATCH[LazySummary] = _lazy_summary


def policy_problem(exc) -> str:
    first = exc.findings[0].format() if exc.findings else str(exc)
    more = f" (and {len(exc.findings) - 1} more: run ipsec-console check)" if len(exc.findings) > 1 else ""
    return f"the policy does not validate: {first}{more}"
