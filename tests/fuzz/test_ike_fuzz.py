"""Fuzzing the IKE SA: whatever a peer sends, nothing escapes the engine and
its state stays consistent.

Three kinds of input reach a pair of endpoints:
- raw mutations of real messages (bit flips, truncations, splices): they die
  at the header, the parser or the integrity check;
- random payload chains in an IKE_SA_INIT request to a fresh responder;
- "authenticated garbage": random payloads, correctly encrypted with the
  peer's own keys, as requests and as responses, so the exchange handlers
  behind the integrity check are reached too.

Example counts: ``IPSEC_CONSOLE_FUZZ_EXAMPLES`` per test (shared with the
wire fuzzers; default 2,500).
"""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import ChildState, IkeState
from engine.ike.exchanges.create_child import CreateChild
from engine.ike.exchanges.informational import DeleteChild, Dpd
from engine.ike.state import CHILD_TRANSITIONS, IKE_TRANSITIONS
from engine.wire.constants import NON_ESP_MARKER, ExchangeType
from engine.wire.message import encode_message
from tests import strategies_wire as sw
from tests.engine.ike_pair import LEFT, RIGHT, Pair, connection, mirror, policy

EXAMPLES = int(os.environ.get("IPSEC_CONSOLE_FUZZ_EXAMPLES", "2500"))
# The pair costs a real handshake per example; a third of the count keeps CI fast.
FUZZ = settings(max_examples=max(50, EXAMPLES // 3), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

_template: dict = {}


@pytest.fixture(autouse=True, scope="module")
def quiet_engine_log():
    """Every rejected message is logged at WARNING; thousands of them are noise here."""
    logger = logging.getLogger("engine")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)


def established_pair() -> Pair:
    a = connection()
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT), seed=3)
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def captured() -> list[tuple[str, bytes]]:
    if "log" not in _template:
        p = established_pair()
        p.a.rekey("tun", p.now)
        p.b.rekey("tun", p.now, ike=True)
        p.advance(2)
        p.a.terminate("tun", p.now)
        p.advance(1)
        _template["log"] = [(side, d.data[4:] if d.data.startswith(NON_ESP_MARKER) else d.data)
                            for side, d in p.log]
    return _template["log"]


def check_consistent(p: Pair) -> None:
    for ep in (p.a, p.b):
        for sa in ep.sas:
            assert sa.state in IKE_TRANSITIONS and sa.state != IkeState.DESTROYED
            assert sa.our_spi and ep.registry.get(sa.our_spi) is sa
            for spi, c in sa.children.items():
                assert c.state in CHILD_TRANSITIONS and c.state != ChildState.DELETED
                assert spi == c.spi_in and len(c.spi_in) == 4 and len(c.spi_out) == 4
        t = ep.get_timer()
        assert t is None or t > 0


def deliver(p: Pair, to: str, data: bytes) -> None:
    ep = p.ep(to)
    src = (RIGHT if to == "a" else LEFT, 4500)
    dst = (LEFT if to == "a" else RIGHT, 4500)
    ep.receive_datagram(data, src, dst, p.now)
    p.advance(0.5)
    p.advance(200)  # let every retransmission and timeout play out


@FUZZ
@given(st.data())
def test_mutated_real_messages(data):
    log = captured()
    p = established_pair()
    side, raw = data.draw(st.sampled_from(log))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "splice", "garbage_tail", "header_only"]))
    b = bytearray(raw)
    if mutation == "flip" and b:
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif mutation == "truncate":
        b = b[: data.draw(st.integers(0, len(b)))]
    elif mutation == "splice":
        other = data.draw(st.sampled_from(log))[1]
        cut = data.draw(st.integers(0, min(len(b), len(other))))
        b = b[:cut] + bytearray(other[cut:])
    elif mutation == "garbage_tail":
        b += data.draw(st.binary(max_size=64))
    else:
        b = b[:28]
    deliver(p, "b" if side == "a" else "a", bytes(b))
    check_consistent(p)


@FUZZ
@given(sw.payload_lists(max_size=10), st.sampled_from([0, 8]))
def test_random_ike_sa_init_requests(payloads, flags):
    a = connection()
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT), seed=5)
    try:
        raw = encode_message(ExchangeType.IKE_SA_INIT, 0, b"\x11" * 8, b"\0" * 8, flags, payloads)
    except ValueError:
        return  # not encodable (oversized); nothing to send
    deliver(p, "b", raw)
    check_consistent(p)


@FUZZ
@given(sw.payload_lists(max_size=8),
       st.sampled_from([ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL, ExchangeType.IKE_AUTH, 99]),
       st.booleans(), st.integers(-1, 2))
def test_authenticated_garbage(payloads, exchange, as_response, mid_shift):
    """Well-encrypted nonsense from a peer that holds the keys."""
    p = established_pair()
    a_sa = p.a.sas[0]
    b_sa = p.b.sas[0]
    if as_response:
        # b asks something, a answers with garbage under the right MID
        p.b.rekey("tun", p.now)
        p.collect()
        p.wire.clear()
        mid = b_sa.outstanding.mid if b_sa.outstanding else 0
        exchange = b_sa.outstanding.exchange if b_sa.outstanding and mid_shift == 0 else exchange
    else:
        mid = b_sa.mid_in + mid_shift
    try:
        datagrams = a_sa.encode(int(exchange), max(0, mid), payloads, response=as_response)
    except (ValueError, OverflowError):
        return
    for d in datagrams:
        deliver(p, "b", d)
    check_consistent(p)
    # The link still works for whatever survived: a fresh exchange runs cleanly.
    for sa in p.b.sas:
        if sa.state == IkeState.ESTABLISHED and sa.outstanding is None:
            p.b.rekey("tun", p.now)
            p.advance(5)
            break
    check_consistent(p)


REQUESTS = ["child_rekey", "ike_rekey", "new_child", "delete_child", "delete_ike", "dpd"]


def _valid_request(p: Pair, kind: str):
    """Let a build a real request, take it off the wire, return (exchange, mid, payloads)."""
    sa = p.a.sas[0]
    if kind == "child_rekey":
        p.a.rekey("tun", p.now)
    elif kind == "ike_rekey":
        p.a.rekey("tun", p.now, ike=True)
    elif kind == "new_child":
        sa.start(CreateChild(sa, sa.conn.children[0]), p.now)
    elif kind == "delete_child":
        sa.start(DeleteChild(sa, next(iter(sa.children.values()))), p.now)
    elif kind == "delete_ike":
        p.a.terminate("tun", p.now)
    else:
        sa.start(Dpd(sa), p.now)
    p.collect()
    p.wire.clear()
    out = sa.outstanding
    return out.exchange, out.mid, list(out.payloads)


@FUZZ
@given(st.sampled_from(REQUESTS), st.data())
def test_mutated_valid_requests(kind, data):
    """Real requests with payloads dropped, duplicated, swapped or replaced,
    encrypted with the right keys: the handlers behind the integrity check."""
    p = established_pair()
    exchange, mid, payloads = _valid_request(p, kind)
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["drop", "dup", "swap", "replace", "insert"]))
        if op == "drop" and payloads:
            payloads.pop(data.draw(st.integers(0, len(payloads) - 1)))
        elif op == "dup" and payloads:
            i = data.draw(st.integers(0, len(payloads) - 1))
            payloads.insert(i, payloads[i])
        elif op == "swap" and len(payloads) > 1:
            i, j = data.draw(st.integers(0, len(payloads) - 1)), data.draw(st.integers(0, len(payloads) - 1))
            payloads[i], payloads[j] = payloads[j], payloads[i]
        elif op == "replace" and payloads:
            payloads[data.draw(st.integers(0, len(payloads) - 1))] = data.draw(sw.plain_payloads)
        else:
            payloads.insert(data.draw(st.integers(0, len(payloads))), data.draw(sw.plain_payloads))
    try:
        datagrams = p.a.sas[0].encode(exchange, mid, payloads, response=False)
    except (ValueError, OverflowError):
        return
    for d in datagrams:
        deliver(p, "b", d)
    check_consistent(p)


HYBRID = "aes256gcm16-prfsha256-x25519-ke1_mlkem768-ke2_mlkem1024"


@FUZZ
@given(sw.payload_lists(max_size=6),
       st.sampled_from([ExchangeType.IKE_INTERMEDIATE, ExchangeType.IKE_FOLLOWUP_KE, ExchangeType.IKE_AUTH]),
       st.sampled_from(["after_init", "after_round", "established"]), st.booleans())
def test_authenticated_garbage_in_the_post_quantum_exchanges(payloads, exchange, phase, as_response):
    """Well-encrypted nonsense while IKE_INTERMEDIATE rounds run (RFC 9242/9370), or an
    IKE_FOLLOWUP_KE nobody started: a notify or a drop, never an exception or a half state."""
    a = connection(ike=(HYBRID,))
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT), seed=7)
    p.a.initiate("tun", p.now)
    steps = {"after_init": 2, "after_round": 4, "established": 200}[phase]
    for _ in range(steps):
        p.collect()
        if not p.wire:
            break
        side, d = p.wire.pop(0)
        dst = p.b if side == "a" else p.a
        data = d.data[4:] if d.data.startswith(NON_ESP_MARKER) else d.data
        dst.receive_datagram(data, d.remote, d.local, p.now)
    p.collect()
    p.wire.clear()
    if not p.a.sas or not p.b.sas or p.a.sas[0].sk is None or p.b.sas[0].sk is None:
        return
    a_sa, b_sa = p.a.sas[0], p.b.sas[0]
    if as_response and a_sa.outstanding is not None:
        # b answers a's request in flight with garbage, under the right Message ID and type
        datagrams = b_sa.encode(a_sa.outstanding.exchange, a_sa.outstanding.mid, payloads, response=True)
        target = "a"
    else:
        try:
            datagrams = a_sa.encode(int(exchange), b_sa.mid_in, payloads, response=False)
        except (ValueError, OverflowError):
            return
        target = "b"
    for d in datagrams:
        deliver(p, target, d)
    check_consistent(p)
