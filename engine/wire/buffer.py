"""A byte buffer with pull_*/push_* in network byte order (aioquic's Buffer shape).

Reading never raises anything but ``BufferReadError`` (a ``MalformedMessage``),
so truncated input cannot leak IndexError or struct.error out of the codec.
"""

from __future__ import annotations

import struct

from engine.wire.errors import BufferReadError

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class Buffer:
    """A read buffer over ``data``, or a growing write buffer.

    ``Buffer(data)`` reads from ``data`` without copying it. ``Buffer(capacity=n)``
    starts empty for writing (``capacity`` only pre-sizes nothing: pushes grow the
    buffer; seek back and push to patch a length in place).
    """

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes = b"", capacity: int = 0) -> None:
        if data:
            self._data: bytes | bytearray | memoryview = data
        else:
            self._data = bytearray()
        self._pos = 0
        self._end = len(self._data)

    # -- position ---------------------------------------------------------
    @property
    def data(self) -> bytes:
        """All bytes held (read buffer: the input; write buffer: everything pushed)."""
        return bytes(self._data)

    @property
    def capacity(self) -> int:
        return len(self._data)

    def data_slice(self, start: int, end: int) -> bytes:
        if start < 0 or end > self._end or end < start:
            raise BufferReadError(f"slice {start}:{end} outside 0:{self._end}", offset=start)
        return bytes(self._data[start:end])

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int) -> None:
        if pos < 0 or pos > len(self._data):
            raise BufferReadError(f"seek to {pos} outside 0:{len(self._data)}", offset=pos)
        self._pos = pos

    def eof(self) -> bool:
        return self._pos >= self._end

    def remaining(self) -> int:
        return self._end - self._pos

    # -- reading ------------------------------------------------------------
    def _need(self, n: int) -> int:
        pos = self._pos
        if n < 0 or pos + n > self._end:
            raise BufferReadError(f"truncated: need {n} bytes at offset {pos}, have {self._end - pos}", offset=pos)
        self._pos = pos + n
        return pos

    def pull_bytes(self, length: int) -> bytes:
        pos = self._need(length)
        return bytes(self._data[pos:pos + length])

    def pull_uint8(self) -> int:
        pos = self._need(1)
        return self._data[pos]

    def pull_uint16(self) -> int:
        pos = self._need(2)
        return _U16.unpack_from(self._data, pos)[0]

    def pull_uint32(self) -> int:
        pos = self._need(4)
        return _U32.unpack_from(self._data, pos)[0]

    def pull_uint64(self) -> int:
        pos = self._need(8)
        return _U64.unpack_from(self._data, pos)[0]

    # -- writing --------------------------------------------------------------
    def push_bytes(self, value: bytes) -> None:
        pos = self._pos
        n = len(value)
        data = self._data
        if not isinstance(data, bytearray):
            raise TypeError("this Buffer was created for reading")
        if pos == len(data):
            data += value
        else:
            data[pos:pos + n] = value
        self._pos = pos + n
        if self._pos > self._end:
            self._end = self._pos

    def push_uint8(self, value: int) -> None:
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{value} does not fit in 8 bits")
        self.push_bytes(bytes((value,)))

    def push_uint16(self, value: int) -> None:
        self.push_bytes(_U16.pack(value))

    def push_uint32(self, value: int) -> None:
        self.push_bytes(_U32.pack(value))

    def push_uint64(self, value: int) -> None:
        self.push_bytes(_U64.pack(value))
