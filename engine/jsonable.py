"""Dataclass <-> JSON-compatible values, for events and status snapshots on
the control socket. Secrets never cross: a ``Secret`` (or a dataclass marked
``__secret__ = True``) becomes null."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import types
import typing

from engine.policy.ts import TrafficSelector, parse_ts
from engine.secret import Secret


def to_jsonable(value):
    if isinstance(value, Secret):
        return None  # never exported
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, TrafficSelector):
        return str(value)
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if getattr(value, "__secret__", False):
            return None
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def from_jsonable(tp, value):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if a is type(None):
                continue
            try:
                return from_jsonable(a, value)
            except (TypeError, ValueError, KeyError):
                continue
        return value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in value)
        return tuple(from_jsonable(a, v) for a, v in zip(args, value))
    if tp is TrafficSelector:
        return parse_ts(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is bytes:
        return bytes.fromhex(value)
    if dataclasses.is_dataclass(tp):
        return dataclass_from_dict(tp, value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def dataclass_from_dict(cls, value: dict):
    """Build ``cls`` from its JSON object; unknown keys are ignored so newer
    daemons can add fields without breaking older consoles."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = from_jsonable(hints[f.name], value[f.name])
    return cls(**kwargs)
