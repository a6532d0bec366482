"""The JSON lines of the control protocol (engine.runtime.control), bounded.

- Requests: at most MAX_REQUEST bytes on one line (the server's stream
  limit); JSON nested too deeply, NaN/Infinity (or a number too large for a
  float) and ids that are not a number or a short string are refused with a
  reply, never an exception, and never echoed as invalid JSON.
- Long answers and large events (``status`` with 32,000 SAs, a counters
  snapshot of 64,000 SAs) are encoded in slices of at most SLICE seconds
  with the event loop run in between, so no command stalls IKE or ESP for
  longer than that.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable

from engine.events import CountersSnapshot, Event, to_dict as event_to_dict
from engine.jsonable import to_jsonable
from engine.slicing import STEP_SECONDS, Steps

MAX_REQUEST = 2 << 20
"""Bytes of one request line (an apply-policy carries a policy of up to 1 MiB, JSON-escaped)."""
MAX_ID = 200
"""Characters of a string request id."""
MAX_DEPTH = 32
"""Nesting of a request's JSON (requests are flat objects). Explicit: the json module's own limit is the
interpreter's recursion limit, about 1,000 levels on Python 3.11 but several thousand on 3.13."""
SLICE = STEP_SECONDS
"""Seconds of encoding work between two turns of the event loop, about."""
SLICE_ITEMS = 200
"""...and items encoded between two turns at most (a loaded machine stretches every second)."""
IDLE_EVICTED = "closed as idle to make room for another client (all control connections were taken)"
"""The ``disconnected`` reason of a connection the daemon ended to make room (control.IDLE_EVICT): the
client reconnects on its next call, the connection carried no state."""
_BIG = 256  # list items from which an answer or event is encoded in slices


class BadRequest(ValueError):
    """A line that is not a usable request; the message says why."""


def _refuse_constant(name: str):
    raise BadRequest(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"the number {text[:20]} is too large")
    return value


def _too_deep(value) -> bool:
    """Whether lists and objects nest deeper than MAX_DEPTH (without recursion)."""
    containers = (list, dict)
    level = [value] if isinstance(value, containers) else []
    for _ in range(MAX_DEPTH):
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, containers)]
        if not level:
            return False
    return True


def parse_request(line: bytes) -> dict:
    """The request object of one line. Raises BadRequest."""
    try:
        req = json.loads(line, parse_constant=_refuse_constant, parse_float=_finite_float)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        raise BadRequest(f"not JSON: {str(exc)[:120]}") from None
    if _too_deep(req):
        raise BadRequest("JSON nested too deeply")
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        raise BadRequest("a request is a JSON object with a string 'cmd'")
    rid = req.get("id")
    if not (rid is None or (isinstance(rid, (int, float)) and not isinstance(rid, bool))
            or (isinstance(rid, str) and len(rid) <= MAX_ID)):
        raise BadRequest(f"'id' must be a number or a string of at most {MAX_ID} characters")
    return req


def dumps(obj) -> bytes:
    # allow_nan=False: a NaN in a result is a bug, and must not become invalid JSON on the wire.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def line(obj) -> bytes:
    return dumps(obj) + b"\n"


async def encode_sliced(items: Iterable, convert: Callable) -> list[bytes]:
    """``dumps(convert(item))`` of each item (None results left out), running
    the event loop every SLICE seconds or SLICE_ITEMS items."""
    out: list[bytes] = []
    steps = Steps(SLICE_ITEMS, SLICE)
    for item in items:
        obj = convert(item)
        if obj is not None:
            out.append(dumps(obj))
        if steps.done():
            await steps.next()
    return out


def join_list(parts: list[bytes]) -> list[bytes]:
    """Pieces of a JSON array from encoded items (no big join: written piece by piece; the commas
    are pieces of their own, so 64,000 items are not copied once more in one step)."""
    if not parts:
        return [b"[]"]
    pieces = list(itertools.chain.from_iterable(zip(itertools.repeat(b","), parts)))
    pieces[0] = b"["
    pieces.append(b"]")
    return pieces


def object_pieces(fields: list[tuple[str, list[bytes]]]) -> list[bytes]:
    """Pieces of a JSON object from (key, pieces of its value)."""
    pieces: list[bytes] = []
    for i, (key, value) in enumerate(fields):
        pieces.append((b"{" if i == 0 else b",") + dumps(key) + b":")
        pieces.extend(value)
    pieces.append(b"}" if fields else b"{}")
    return pieces


async def event_line(event: Event) -> list[bytes]:
    """The pieces of an ``{"event": ...}`` line; a large counters snapshot in slices."""
    if isinstance(event, CountersSnapshot) and len(event.sas) > _BIG:
        sas = await encode_sliced(event.sas, to_jsonable)
        body = object_pieces([("type", [dumps("CountersSnapshot")]), ("time", [dumps(event.time)]),
                              ("sas", join_list(sas)), ("drops", [dumps(to_jsonable(event.drops))])])
        return [b'{"event":', *body, b"}\n"]
    return [line({"event": event_to_dict(event)})]
