"""Anti-replay window and ESN: the implementation against a plain model."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.crypto.encr import make_cipher
from engine.crypto.transforms import EncrId
from engine.esp import EspDrop, EspInboundSa, EspOutboundSa
from engine.esp.replay import MAX_WINDOW, DisabledWindow, ReplayWindow, infer_esn, make_window

PROFILE = settings(max_examples=200, deadline=None)
SA_PROFILE = settings(max_examples=60, deadline=None)


class ModelWindow:
    """RFC 4303 §3.4.3 in words: accept a number > 0 not seen before and not
    older than the window's lowest edge; the edge moves with the highest accepted."""

    def __init__(self, size: int) -> None:
        self.size, self.top, self.seen = size, 0, set()

    def check(self, seq: int) -> bool:
        return seq > 0 and seq not in self.seen and seq > self.top - self.size

    def update(self, seq: int) -> None:
        self.seen.add(seq)
        self.top = max(self.top, seq)


@PROFILE
@given(size=st.sampled_from([1, 2, 32, 64, 100, 4096]),
       ops=st.lists(st.tuples(st.integers(0, 300), st.booleans()), max_size=300))
def test_window_matches_model(size, ops):
    """Each op: a sequence number arriving, and whether its ICV verifies (only then the window moves)."""
    real, model = ReplayWindow(size), ModelWindow(size)
    for seq, icv_ok in ops:
        assert real.check(seq) == model.check(seq), (seq, real, model.top)
        if model.check(seq) and icv_ok:
            real.update(seq)
            model.update(seq)
        assert real.top == model.top


@PROFILE
@given(size=st.sampled_from([1, 64, 4096]), start=st.integers(1, 1 << 40), jumps=st.lists(st.integers(1, 10_000), max_size=50))
def test_window_big_jumps(size, start, jumps):
    real, model = ReplayWindow(size), ModelWindow(size)
    seq = start
    for j in jumps:
        for s in (seq, seq - size, seq - size + 1, seq - 1):
            assert real.check(s) == model.check(s)
        if model.check(seq):
            real.update(seq)
            model.update(seq)
        seq += j


def test_window_bounds():
    for bad in (-1, MAX_WINDOW + 1):
        with pytest.raises(ValueError):
            ReplayWindow(bad)
    assert isinstance(make_window(0), DisabledWindow)
    w = make_window(0)
    w.update(10)
    assert w.check(10) and w.check(3) and not w.check(0) and w.top == 10


@PROFILE
@given(size=st.sampled_from([1, 32, 64, 4096]), top=st.integers(1, (1 << 64) - (1 << 33)), data=st.data())
def test_esn_inference_recovers_the_sender_number(size, top, data):
    """RFC 4303 A2: any number inside the window or less than 2**32 - W ahead is recovered from its low half."""
    seq = data.draw(st.integers(max(1, top - size + 1), top + (1 << 32) - size))
    assert infer_esn(seq & 0xFFFFFFFF, top, size) == seq


def _pair(esn: bool, window: int = 64):
    key = os.urandom(36)
    kw = dict(esn=esn)
    out = EspOutboundSa(0x1001, cipher=make_cipher(EncrId.AES_GCM_16, 256, key),
                        local_addr="192.0.2.1", remote_addr="192.0.2.2", **kw)
    inb = EspInboundSa(0x1001, cipher=make_cipher(EncrId.AES_GCM_16, 256, key), replay_window=window,
                       local_addr="192.0.2.2", remote_addr="192.0.2.1", **kw)
    return out, inb


PING = bytes.fromhex("45000054000040004001b4d6c6336401c6336481") + bytes(64)  # 198.51.100.1 -> .129


@SA_PROFILE
@given(window=st.sampled_from([1, 8, 64]),
       order=st.lists(st.tuples(st.integers(0, 39), st.booleans()), min_size=1, max_size=120))
def test_sa_delivers_exactly_what_the_model_allows(window, order):
    """Packets 1..40 delivered in any order, duplicated, some tampered: the SA
    delivers fresh authentic ones once, drops replays as 'replay' and forgeries as 'icv'."""
    out, inb = _pair(esn=False, window=window)
    wire = [out.protect(PING, 0.0) for _ in range(40)]
    model = ModelWindow(window)
    delivered = drops = 0
    for index, tamper in order:
        seq = index + 1
        data = bytearray(wire[index])
        if tamper:
            data[-1] ^= 0x01
        expect = "replay" if not model.check(seq) else "icv" if tamper else None
        try:
            assert inb.unprotect(bytes(data), 1.0) == PING
            result = None
            delivered += 1
        except EspDrop as exc:
            result = exc.reason
            drops += 1
        assert result == expect
        if expect is None:
            model.update(seq)
    assert inb.packets == delivered
    assert sum(inb.drops.values()) == drops


def test_esn_rollover_end_to_end():
    """Sender crosses 2**32: the low half on the wire wraps to 0, the receiver infers the high half."""
    out, inb = _pair(esn=True)
    out.start_at((1 << 32) - 3)
    wires = [out.protect(PING, 0.0) for _ in range(6)]
    lows = [int.from_bytes(w[4:8], "big") for w in wires]
    assert lows == [0xFFFFFFFE, 0xFFFFFFFF, 0, 1, 2, 3]
    inb.window.update((1 << 32) - 10)
    for w in wires[:2] + wires[3:] + wires[2:3]:  # one packet late, after the wrap
        assert inb.unprotect(w, 0.0) == PING
    assert inb.window.top == (1 << 32) + 3
    with pytest.raises(EspDrop) as exc:
        inb.unprotect(wires[1], 0.0)
    assert exc.value.reason == "replay"


def test_without_esn_sequence_is_32_bits_on_the_wire_and_never_wraps():
    out, inb = _pair(esn=False)
    out.start_at((1 << 32) - 2)
    last = out.protect(PING, 0.0)
    assert last[4:8] == b"\xff\xff\xff\xff"
    inb.window.update((1 << 32) - 5)
    assert inb.unprotect(last, 0.0) == PING
