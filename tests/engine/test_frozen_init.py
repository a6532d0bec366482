"""engine.frozen: the cheaper __init__ of frozen dataclasses behaves as the generated one."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

import engine.crypto.keys
import engine.events
import engine.ike.proposals
import engine.wire.message
import engine.wire.payloads
from engine.frozen import fast_init

MODULES = (engine.events, engine.wire.payloads, engine.wire.message, engine.ike.proposals, engine.crypto.keys)


def _frozen_classes():
    for m in MODULES:
        for v in vars(m).values():
            if isinstance(v, type) and v.__module__ == m.__name__ and dataclasses.is_dataclass(v) \
                    and v.__dataclass_params__.frozen:
                yield v


def _is_fast(cls) -> bool:
    return cls.__init__.__code__.co_filename.startswith("<fast_init")


def test_the_hot_classes_have_the_fast_init():
    fast = {c.__name__ for c in _frozen_classes() if _is_fast(c)}
    assert {"NotifyPayload", "Transform", "Proposal", "SaPayload", "TsPayload", "WireTs", "IkeHeader", "Message",
            "ExchangeSent", "ExchangeReceived", "IkeSaStateChanged", "ChildSaInstalled", "ChildSaDeleted",
            "Chosen", "IkeKeys"} <= fast


@pytest.mark.parametrize("cls", list(_frozen_classes()), ids=lambda c: c.__name__)
def test_same_signature_as_the_generated_init(cls):
    # What dataclasses would generate: every field in order, with its default (or a factory's sentinel).
    params = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields):
        if f.default is not dataclasses.MISSING:
            assert p.default is f.default
        elif f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty


@dataclasses.dataclass(frozen=True)
class _Sample:
    a: int
    b: list = dataclasses.field(default_factory=list)
    c: str = "z"

    def __post_init__(self) -> None:
        object.__setattr__(self, "c", self.c.upper())


@dataclasses.dataclass(frozen=True)
class _Reference:
    a: int
    b: list = dataclasses.field(default_factory=list)
    c: str = "z"

    def __post_init__(self) -> None:
        object.__setattr__(self, "c", self.c.upper())


fast_init(_Sample)


def test_defaults_factories_post_init_and_frozenness():
    assert _is_fast(_Sample)
    for args, kwargs in (((1,), {}), ((1, [2]), {}), ((1,), {"c": "q"}), ((), {"a": 3, "b": [4], "c": "w"})):
        got, want = _Sample(*args, **kwargs), _Reference(*args, **kwargs)
        assert (got.a, got.b, got.c) == (want.a, want.b, want.c)
    assert _Sample(1).b is not _Sample(1).b  # a fresh list per instance, as default_factory gives
    with pytest.raises(dataclasses.FrozenInstanceError):
        _Sample(1).a = 2
    with pytest.raises(TypeError):
        _Sample()
    with pytest.raises(TypeError):
        _Sample(1, [], "x", 4)
    s = _Sample(5, [6], "y")
    assert pickle.loads(pickle.dumps(s)) == s and hash(dataclasses.replace(s, a=7).a) == 7


def test_what_it_cannot_reproduce_keeps_its_own_init():
    @dataclasses.dataclass(frozen=True)
    class WithInitVar:
        a: int
        v: dataclasses.InitVar[int] = 0

    @dataclasses.dataclass(frozen=True, slots=True)
    class WithSlots:
        a: int

    @dataclasses.dataclass(frozen=True)
    class KwOnly:
        a: int = dataclasses.field(kw_only=True)

    @dataclasses.dataclass(frozen=True)
    class NotInit:
        a: int
        b: int = dataclasses.field(init=False, default=0)

    @dataclasses.dataclass
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True)
    class Reserved:
        _fields_: int

    for cls in (WithInitVar, WithSlots, KwOnly, NotInit, NotFrozen, Reserved):
        before = cls.__init__
        fast_init(cls)
        assert cls.__init__ is before, cls.__name__
