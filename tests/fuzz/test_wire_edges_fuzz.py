"""Property tests with RFC 7296 §3 edge values for the Delete, Notify and SA payloads (the
ones charon reads more leniently than a strict reading: protocol 0 Deletes, SPI sizes that do
not fit the protocol, proposal numbers with gaps): the codec raises nothing but WireError,
what it accepts re-encodes to the same payloads, and an IKE SA receiving such payloads in an
authenticated INFORMATIONAL request answers without an exception and stays up."""

from __future__ import annotations

import logging
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import IkeState
from engine.wire import WireError, decode_payloads, encode_payloads
from engine.wire.constants import NotifyType, PayloadType
from engine.wire.payloads import NotifyPayload, UnknownPayload

EXAMPLES = int(os.environ.get("IPSEC_CONSOLE_FUZZ_EXAMPLES", "2000"))
CODEC = settings(max_examples=EXAMPLES, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ENGINE = settings(max_examples=max(30, EXAMPLES // 20), deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])

PROTOCOLS = st.sampled_from([0, 1, 2, 3, 4, 255])
SPI_SIZES = st.sampled_from([0, 1, 3, 4, 5, 8, 16, 255])
COUNTS = st.sampled_from([0, 1, 2, 3, 255, 65535])
NOTIFY_TYPES = st.sampled_from([0, 1, 7, 14, 17, 24, 43, 44, 16383, 16384, 16388, 16389, 16390, 16393, 16394,
                                16399, 16431, 65535]) | st.integers(0, 65535)


@st.composite
def delete_bodies(draw) -> bytes:
    size, count = draw(SPI_SIZES), draw(COUNTS)
    n = draw(st.sampled_from([0, size * min(count, 4), size * count if size * count < 300 else 0, 1, 3]))
    return struct.pack("!BBH", draw(PROTOCOLS), size, count) + draw(st.binary(min_size=n, max_size=n))


@st.composite
def notify_bodies(draw) -> bytes:
    size = draw(SPI_SIZES)
    spi = draw(st.binary(min_size=0, max_size=min(size, 20)))
    data = draw(st.sampled_from([b"", b"\x00", b"\x00\x13", b"\x00" * 4, b"\x01" * 20, b"\x00" * 65]))
    return struct.pack("!BBH", draw(PROTOCOLS), size, draw(NOTIFY_TYPES)) + spi + data


def _transform(last: bool, ttype: int, tid: int) -> bytes:
    return struct.pack("!BxHBxH", 0 if last else 3, 8, ttype, tid)


@st.composite
def sa_bodies(draw) -> bytes:
    out = b""
    k = draw(st.integers(1, 4))
    for i in range(k):
        number = draw(st.sampled_from([0, 1, 2, 3, 5, 255]))
        protocol = draw(PROTOCOLS)
        spi = draw(st.sampled_from([b"", b"\1\2\3\4", b"\1" * 8, b"\1\2\3"]))
        tcount = draw(st.integers(0, 3))
        transforms = b"".join(_transform(j == tcount - 1, draw(st.sampled_from([1, 2, 3, 4, 5, 6, 0, 241])),
                                         draw(st.sampled_from([0, 1, 12, 20, 31, 65535]))) for j in range(tcount))
        length = 8 + len(spi) + len(transforms) + draw(st.sampled_from([0, 0, 0, 1, -1]))
        last = 0 if i == k - 1 else 2
        out += struct.pack("!BxHBBBB", last, max(length, 0), number, protocol, len(spi), tcount) + spi + transforms
    return out


def chain(bodies: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    raw = b""
    for i, (ptype, body) in enumerate(bodies):
        nxt = bodies[i + 1][0] if i + 1 < len(bodies) else 0
        raw += struct.pack("!BBH", nxt, 0, 4 + len(body)) + body
    return bodies[0][0], raw


EDGE_PAYLOADS = st.one_of(delete_bodies().map(lambda b: (int(PayloadType.DELETE), b)),
                          notify_bodies().map(lambda b: (int(PayloadType.NOTIFY), b)),
                          sa_bodies().map(lambda b: (int(PayloadType.SA), b)))


@CODEC
@given(st.lists(EDGE_PAYLOADS, min_size=1, max_size=4))
def test_edge_payloads_raise_only_wire_errors_and_survive_a_round_trip(bodies):
    first, raw = chain(bodies)
    try:
        payloads = decode_payloads(first, raw)
    except WireError:
        return
    again_first, again = encode_payloads(payloads)
    assert decode_payloads(again_first, again) == payloads


@pytest.fixture(scope="module")
def quiet():
    logger = logging.getLogger("engine")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)


@ENGINE
@given(st.lists(st.one_of(delete_bodies().map(lambda b: (int(PayloadType.DELETE), b)),
                          notify_bodies().map(lambda b: (int(PayloadType.NOTIFY), b))), min_size=1, max_size=3))
def test_an_ike_sa_answers_edge_deletes_and_notifies(quiet, bodies):
    from tests.engine.test_ike_edges import live, make, request
    p = make()
    # As the peer would send them: raw bodies, so what our own encoder refuses gets through too.
    payloads = [UnknownPayload(ptype, body) for ptype, body in bodies]
    try:
        answers = request(p, "b", payloads)
    except WireError:
        pytest.fail("our answer does not decode")
    assert len(answers) == 1
    ended_by_notify = any(ptype == PayloadType.NOTIFY and len(body) >= 4 and
                          struct.unpack_from("!H", body, 2)[0] in (NotifyType.INVALID_SYNTAX,
                                                                   NotifyType.AUTHENTICATION_FAILED)
                          for ptype, body in bodies)
    deletes_ike = any(ptype == PayloadType.DELETE and body[:1] == b"\x01" for ptype, body in bodies)
    rejected = any(isinstance(x, NotifyPayload) and x.type == NotifyType.INVALID_SYNTAX for x in answers[0])
    if rejected:
        # Our INVALID_SYNTAX answer is fatal to the IKE SA on both ends (RFC 7296 §2.21.3).
        assert not live(p, "a")
    elif not ended_by_notify and not deletes_ike:
        assert [sa.state for sa in live(p, "a")] == [IkeState.ESTABLISHED]
