"""A wrapper that keeps secrets (PSKs, private keys, SA keys) out of reprs,
logs, JSON and the screen. Code that really needs the bytes calls reveal()."""

from __future__ import annotations

import hmac


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: bytes | str) -> None:
        if isinstance(value, str):
            value = value.encode()
        object.__setattr__(self, "_value", bytes(value))

    def __setattr__(self, name, value):  # immutable, like the frozen dataclasses holding it
        raise AttributeError("Secret is immutable")

    def reveal(self) -> bytes:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash((Secret, len(self._value)))

    def __repr__(self) -> str:
        return f"<secret, {len(self._value)} bytes>"

    __str__ = __repr__

    def __reduce__(self):  # never pickled by accident into a log or cache
        raise TypeError("Secret cannot be pickled")

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


_new = object.__new__
_set_value = Secret._value.__set__  # type: ignore[attr-defined]  (the slot's descriptor)


def secret_of(value: bytes) -> Secret:
    """``Secret(value)`` for key material that is already ``bytes`` (prf+ output sliced into keys, eleven
    per handshake), without the str check, the copy and ``object.__setattr__``: about half the cost."""
    if type(value) is not bytes:
        return Secret(value)
    s = _new(Secret)
    _set_value(s, value)
    return s
