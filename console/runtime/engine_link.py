"""The link between the console and its engine process (console.runtime.embedded,
console.runtime.engine_process): length-prefixed pickled frames over a socket
pair, message summaries sent unformatted (the console formats what it shows),
SA keys never sent."""

from __future__ import annotations

import array
import asyncio
import copyreg
import io
import math
import pickle
import struct

from engine.events import CountersSnapshot, SaCounters


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


class PackedCounters:
    """A CountersSnapshot as columns of machine numbers, filled a slice at a time (`pack`): it
    crosses as one pickle of a few arrays and arrives as the CountersSnapshot it was. Counters of
    every SA cross each second (20,000 with 10,000 CHILD SAs): as 20,000 pickled dataclass
    instances they held the engine's loop for 10-25 ms, and the console's for longer."""

    __slots__ = ("time", "drops", "spis", "inbound", "nbytes", "packets", "last_used", "sa_drops")

    def __init__(self, snap: CountersSnapshot) -> None:
        self.time = snap.time
        self.drops = snap.drops
        self.spis = array.array("Q")
        self.inbound = bytearray()
        self.nbytes = array.array("Q")
        self.packets = array.array("Q")
        self.last_used = array.array("d")
        self.sa_drops: dict[int, tuple] = {}

    def pack(self, sas) -> bool:
        """Append ``sas``; False (nothing appended) when one does not fit the columns."""
        if any(type(c) is not SaCounters or c.direction not in _DIRECTIONS or type(c.spi) is not int
               or type(c.bytes) is not int or type(c.packets) is not int for c in sas):
            return False
        try:
            spis = array.array("Q", [c.spi for c in sas])
            nbytes = array.array("Q", [c.bytes for c in sas])
            packets = array.array("Q", [c.packets for c in sas])
            last_used = array.array("d", [math.nan if c.last_used is None else c.last_used for c in sas])
        except (OverflowError, TypeError):
            return False
        base = len(self.spis)
        self.spis += spis
        self.nbytes += nbytes
        self.packets += packets
        self.last_used += last_used
        self.inbound += bytes(c.direction == "in" for c in sas)
        self.sa_drops.update((base + i, c.drops) for i, c in enumerate(sas) if c.drops)
        return True

    def __reduce__(self):
        return _unpickle_counters, (self.time, (self.spis, bytes(self.inbound), self.nbytes, self.packets,
                                                self.last_used, self.sa_drops), self.drops)


def _counters_snapshot(snap: CountersSnapshot):
    packed = PackedCounters(snap)
    if snap.sas and type(snap.sas) is tuple and packed.pack(snap.sas):
        return packed.__reduce__()
    return CountersSnapshot, (snap.time, snap.sas, snap.drops)


_DIRECTIONS = ("in", "out")


def _unpickle_counters(when: float, columns, drops) -> CountersSnapshot:
    spis, inbound, nbytes, packets, last_used, sa_drops = columns
    sas = tuple(SaCounters(spis[i], "in" if inbound[i] else "out", nbytes[i], packets[i], sa_drops.get(i, ()),
                           None if math.isnan(last_used[i]) else last_used[i])
                for i in range(len(spis)))
    return CountersSnapshot(when, sas, drops)


_DISPATCH[CountersSnapshot] = _counters_snapshot


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
