"""Fuzzing the IKEv2 wire codec: whatever a peer sends, only WireError escapes.

Random bytes, random payload chains behind a valid header, and mutations of
valid messages (bit flips, overwritten length and next-payload fields,
insertions, deletions, truncations). Anything that decodes must also
summarize and re-encode to the same payloads.

Example counts come from one hypothesis profile: ``IPSEC_CONSOLE_FUZZ_EXAMPLES``
examples per fuzz test (default 2,000; five tests, so 10,000 in all), e.g.
``IPSEC_CONSOLE_FUZZ_EXAMPLES=100000 pytest tests/fuzz/test_wire_fuzz.py``.
"""

from __future__ import annotations

import os
import struct

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.wire import WireError, decode_message, decode_payloads, encode_message
from engine.wire.constants import IKE_HEADER_SIZE, PayloadType
from engine.wire.message import decode_header
from engine.wire.natt import classify_natt, strip_marker
from engine.wire.summary import summarize
from tests import strategies_wire as sw

EXAMPLES = int(os.environ.get("IPSEC_CONSOLE_FUZZ_EXAMPLES", "2000"))

settings.register_profile(
    "wire-fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FUZZ = settings.get_profile("wire-fuzz")

KNOWN_TYPES = [int(t) for t in PayloadType if t] + [0, 1, 2, 3, 55, 128, 200, 255]


def check_accepted(data: bytes) -> None:
    """Decode; if accepted, the result must summarize and survive a re-encode."""
    try:
        msg = decode_message(data)
    except WireError as exc:
        event(f"rejected: {type(exc).__name__}")
        return
    event("accepted")
    h = msg.header
    assert h.length == len(data) == len(msg.raw)
    if msg.sk_aad_end is not None:
        assert IKE_HEADER_SIZE + 4 <= msg.sk_aad_end <= len(data)
        assert data[msg.sk_aad_end:] == msg.encrypted.data
    summarize(msg)
    again = decode_message(encode_message(h.exchange, h.mid, h.spi_i, h.spi_r, h.flags, msg.payloads))
    assert again.payloads == msg.payloads


def header(first: int, body_len: int, major: int = 2) -> bytes:
    return bytes(8) + b"\x01" * 8 + struct.pack("!BBBBII", first, major << 4, 35, 8, 1, IKE_HEADER_SIZE + body_len)


def chain_header_offsets(raw: bytes) -> list[int]:
    """Offsets of the generic payload headers of a valid message (targets for mutation)."""
    offsets = []
    pos, nxt = IKE_HEADER_SIZE, raw[16]
    while nxt and pos + 4 <= len(raw):
        offsets.append(pos)
        if nxt in (PayloadType.SK, PayloadType.SKF):
            break
        nxt = raw[pos]
        pos += struct.unpack_from("!H", raw, pos + 2)[0]
    return offsets


@st.composite
def mutated_messages(draw) -> bytes:
    raw = bytearray(draw(sw.encoded_messages(max_payloads=4)))
    heads = chain_header_offsets(bytes(raw))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "byte", "length", "next", "insert", "delete", "truncate"]))
        if not raw:
            break
        if op == "flip":
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            raw[draw(st.integers(0, len(raw) - 1))] = draw(sw.u8)
        elif op == "length" and heads:
            at = draw(st.sampled_from(heads)) + 2
            if at + 2 <= len(raw):
                delta = draw(st.sampled_from([-1, 1, -4, 4, 0x10000]))
                old = struct.unpack_from("!H", raw, at)[0]
                new = draw(sw.u16) if delta == 0x10000 else (old + delta) & 0xFFFF
                struct.pack_into("!H", raw, at, new)
        elif op == "next" and heads:
            at = draw(st.sampled_from(heads))
            if at < len(raw):
                raw[at] = draw(st.sampled_from(KNOWN_TYPES))
                if draw(st.booleans()) and at + 1 < len(raw):
                    raw[at + 1] ^= 0x80  # critical bit
        elif op == "insert":
            i = draw(st.integers(0, len(raw)))
            raw[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and len(raw) > IKE_HEADER_SIZE:
            i = draw(st.integers(0, len(raw) - 1))
            del raw[i:i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del raw[draw(st.integers(0, len(raw))):]
    if len(raw) >= IKE_HEADER_SIZE and draw(st.booleans()):
        struct.pack_into("!I", raw, 24, len(raw))  # keep the header length honest half the time
    return bytes(raw)


@FUZZ
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes(data, fix_length):
    if fix_length and len(data) >= IKE_HEADER_SIZE:
        data = data[:17] + b"\x20" + data[18:24] + struct.pack("!I", len(data)) + data[28:]  # v2, honest length
    check_accepted(data)
    try:
        decode_header(data)
    except WireError:
        pass


@st.composite
def framed_random_bodies(draw) -> bytes:
    """A well-framed chain (honest next types and lengths) of random payload bodies:
    every payload decoder gets garbage of its own type."""
    items = draw(st.lists(st.tuples(st.sampled_from(KNOWN_TYPES[:-8] + [200]), st.booleans(),
                                    st.binary(max_size=60)), min_size=1, max_size=6))
    parts = []
    for i, (ptype, critical, body) in enumerate(items):
        nxt = items[i + 1][0] if i + 1 < len(items) else 0
        if ptype in (PayloadType.SK, PayloadType.SKF):
            nxt = draw(sw.u8)  # the first inner payload type; the chain ends here
        parts.append(struct.pack("!BBH", nxt, 0x80 if critical else 0, 4 + len(body)) + body)
        if ptype in (PayloadType.SK, PayloadType.SKF):
            break
    chain = b"".join(parts)
    return header(items[0][0], len(chain)) + chain


@FUZZ
@given(st.one_of(framed_random_bodies(),
                 st.tuples(st.sampled_from(KNOWN_TYPES), st.binary(max_size=300)).map(
                     lambda fb: header(fb[0], len(fb[1])) + fb[1])))
def test_random_chain_behind_a_valid_header(data):
    check_accepted(data)


@FUZZ
@given(mutated_messages())
def test_mutated_valid_messages(data):
    check_accepted(data)


@FUZZ
@given(st.sampled_from(KNOWN_TYPES), st.binary(max_size=300), st.booleans())
def test_random_decrypted_sk_bodies(first, plain, keep_unknown):
    # The path an SK plaintext takes after the IKE layer decrypted it.
    try:
        payloads = decode_payloads(first, plain, offset_base=32, keep_unknown=keep_unknown)
    except WireError:
        return
    summarize(decode_message(encode_message(35, 1, bytes(8), bytes(8), 8, [])), payloads)


@FUZZ
@given(st.one_of(st.binary(max_size=80), sw.encoded_messages(max_payloads=3).map(lambda m: b"\0\0\0\0" + m)))
def test_port_4500_demultiplexing(datagram):
    kind = classify_natt(datagram)
    assert kind in ("keepalive", "ike", "esp", "invalid")
    if kind == "ike":
        check_accepted(strip_marker(datagram))
