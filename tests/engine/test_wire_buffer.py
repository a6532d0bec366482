"""engine.wire.buffer: network-order pull/push, and truncation as a WireError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.wire import Buffer, BufferReadError, MalformedMessage, WireError


def test_push_then_pull():
    out = Buffer(capacity=32)
    out.push_uint8(0x21)
    out.push_uint16(0x2022)
    out.push_uint32(0xDEADBEEF)
    out.push_uint64(0x0102030405060708)
    out.push_bytes(b"tail")
    assert out.tell() == 19
    assert out.data == bytes.fromhex("21" "2022" "deadbeef" "0102030405060708") + b"tail"
    inp = Buffer(out.data)
    assert (inp.pull_uint8(), inp.pull_uint16(), inp.pull_uint32(), inp.pull_uint64()) == (
        0x21, 0x2022, 0xDEADBEEF, 0x0102030405060708)
    assert inp.remaining() == 4 and not inp.eof()
    assert inp.pull_bytes(4) == b"tail" and inp.eof()


def test_seek_back_patches_a_length_in_place():
    out = Buffer()
    out.push_uint16(0)  # placeholder
    out.push_bytes(b"payload")
    end = out.tell()
    out.seek(0)
    out.push_uint16(end)
    out.seek(end)
    assert out.data == b"\x00\x09payload"


def test_reads_past_the_end_are_wire_errors():
    inp = Buffer(b"\x01\x02\x03")
    inp.seek(2)
    for pull in (inp.pull_uint16, inp.pull_uint32, inp.pull_uint64, lambda: inp.pull_bytes(2)):
        with pytest.raises(BufferReadError) as info:
            pull()
        assert isinstance(info.value, MalformedMessage) and isinstance(info.value, WireError)
        assert info.value.offset == 2
    assert inp.tell() == 2  # a failed read consumes nothing
    with pytest.raises(BufferReadError):
        inp.pull_bytes(-1)
    with pytest.raises(BufferReadError):
        inp.seek(4)
    with pytest.raises(BufferReadError):
        inp.data_slice(1, 5)
    assert inp.data_slice(1, 3) == b"\x02\x03"


def test_values_that_do_not_fit_are_refused():
    out = Buffer()
    with pytest.raises(ValueError):
        out.push_uint8(256)
    with pytest.raises(TypeError):
        Buffer(b"read only").push_uint8(1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([8, 16, 32, 64]), st.integers(min_value=0)), max_size=20))
def test_round_trip(values):
    values = [(bits, v % (1 << bits)) for bits, v in values]
    out = Buffer()
    for bits, v in values:
        getattr(out, f"push_uint{bits}")(v)
    inp = Buffer(out.data)
    assert [getattr(inp, f"pull_uint{bits}")() for bits, _ in values] == [v for _, v in values]
    assert inp.eof()
