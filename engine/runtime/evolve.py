"""A copy of a frozen dataclass instance with some fields changed, at the cost of a dict copy.

``dataclasses.replace`` rebuilds the instance through ``__init__`` (a keyword call, one
``object.__setattr__`` per field): on the runtime's per-event path (wall-clock times, keyless
copies) that was a visible share of each handshake. The fields of an event were checked when it
was built; a copy with a time moved or the keys dropped needs no second check.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

T = TypeVar("T")

_PLAIN: dict[type, bool] = {}


def evolve(obj: T, **changes) -> T:
    """``dataclasses.replace(obj, **changes)`` for a dataclass whose instances keep their fields in
    ``__dict__`` and that has no ``__post_init__`` (every engine event); anything else goes through
    ``dataclasses.replace`` itself."""
    cls = type(obj)
    plain = _PLAIN.get(cls)
    if plain is None:
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        plain = _PLAIN[cls] = (not hasattr(cls, "__post_init__") and "__slots__" not in cls.__dict__
                               and names == {f.name for f in dataclasses.fields(cls)})
    if not plain or not changes.keys() <= obj.__dict__.keys():
        return dataclasses.replace(obj, **changes)
    new = object.__new__(cls)
    d = new.__dict__
    d.update(obj.__dict__)
    d.update(changes)
    return new
