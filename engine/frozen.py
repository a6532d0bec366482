"""A cheaper ``__init__`` for frozen dataclasses that are built on every message.

``@dataclass(frozen=True)`` generates an ``__init__`` that sets each field with
``object.__setattr__(self, name, value)``, a global lookup, an attribute lookup and
a call per field: about three times the cost of storing into the instance's
``__dict__``. A handshake builds some 80 payloads, headers, proposals and events
this way. :func:`fast_init` gives such a class an ``__init__`` with the same
signature (names, order, defaults, default factories) and the same effect (the
fields in ``__dict__``, then ``__post_init__`` if any) that stores into
``__dict__`` directly. The instances stay frozen: assignment still raises.

A class it cannot reproduce exactly (slots, ``InitVar``, keyword-only or
``init=False`` fields, a hand-written ``__init__``) keeps its own.
"""

from __future__ import annotations

import dataclasses
import inspect

_FACTORY = object()
"""Default of a parameter whose field has a default_factory (as dataclasses itself does)."""
_RESERVED = frozenset({"self", "_fields_", "_FACTORY"})
"""Names the generated code uses itself: a class with such a field keeps its own ``__init__``."""


def fast_init(*classes: type) -> None:
    """Replace the generated ``__init__`` of each frozen dataclass in ``classes`` (see the module
    docstring); the others are left as they are."""
    for cls in classes:
        init = _build(cls)
        if init is not None:
            cls.__init__ = init


def fast_init_module(namespace: dict) -> None:
    """:func:`fast_init` for every frozen dataclass defined in the module whose ``globals()`` this is."""
    name = namespace.get("__name__")
    fast_init(*(v for v in list(namespace.values())
                if isinstance(v, type) and v.__module__ == name and dataclasses.is_dataclass(v)))


def _build(cls: type):
    params = cls.__dict__.get("__dataclass_params__")
    if params is None or not params.frozen or not params.init or "__slots__" in cls.__dict__:
        return None
    if any("__slots__" in k.__dict__ for k in cls.__mro__[1:-1]):
        return None
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    if code is None or not code.co_filename.startswith("<") or code.co_name != "__init__":
        return None  # written by hand (or already replaced): the generated one is exec'd from a string
    fields = dataclasses.fields(cls)  # InitVars are not among them: the signature check below sees them
    if any(not f.init or f.kw_only or f.name in _RESERVED or f.name.startswith(("_d", "_f")) for f in fields):
        return None
    namespace: dict = {"_FACTORY": _FACTORY}
    args, body = [], []
    for i, f in enumerate(fields):
        if f.default is not dataclasses.MISSING:
            namespace[f"_d{i}"] = f.default
            args.append(f"{f.name}=_d{i}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_f{i}"] = f.default_factory
            args.append(f"{f.name}=_FACTORY")
            body.append(f"    if {f.name} is _FACTORY:\n        {f.name} = _f{i}()")
        else:
            args.append(f.name)
        body.append(f"    _fields_[{f.name!r}] = {f.name}")
    post = "    self.__post_init__()\n" if hasattr(cls, "__post_init__") else ""
    src = (f"def __init__(self, {', '.join(args)}):\n"
           "    _fields_ = self.__dict__\n" + "\n".join(body) + "\n" + post)
    exec(compile(src, f"<fast_init {cls.__qualname__}>", "exec"), namespace)  # noqa: S102  (from the field names)
    fn = namespace["__init__"]
    fn.__qualname__ = f"{cls.__qualname__}.__init__"
    fn.__module__ = cls.__module__
    fn.__doc__ = init.__doc__
    fn.__annotations__ = dict(init.__annotations__)
    if inspect.signature(fn).parameters.keys() != inspect.signature(init).parameters.keys():
        return None
    return fn
