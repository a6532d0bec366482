"""Adversarial checks of the inbound fragment verdict shared by selectors (engine.esp.fragcheck): an
SA whose selectors differ (another road warrior, another peer) never takes a verdict a first
fragment earned on another SA, and garbled fragments from an authentic peer raise nothing out of
the check."""

from __future__ import annotations

import os
import random

from engine.datapath.userspace_path import SaPath
from engine.esp import fragcheck
from engine.esp.errors import EspDrop
from engine.policy.parse import parse_policy
from tests.engine.test_inbound_fragment_check import GW_B, POLICY, B, Tunnel, _ev, _frags, _mismatch

GW_C = "192.0.2.3"
C = "198.51.100.3"


def _second_peer(t):
    """b gets a second peer (gateway C, host C): its own SA pair with selectors B[udp/5000] <-> C;
    returns (c's outbound SA towards b, b's inbound SA from c)."""
    k1, k2 = os.urandom(36), os.urandom(36)
    send = lambda data, dest: None  # noqa: E731
    t.b.install(_ev(0xB3, 0xC3, k2, k1, GW_B, GW_C, f"{B}/32[udp/5000]", f"{C}/32", False), send, (GW_C, 0))
    c = SaPath(parse_policy(POLICY.format(me=GW_C, peer=GW_B, lts=f"{C}/32", rts=f"{B}/32[udp/5000]"),
                            load_secrets=False))
    pair = c.install(_ev(0xC3, 0xB3, k1, k2, GW_C, GW_B, f"{C}/32", f"{B}/32[udp/5000]", True), send, (GW_B, 0))
    return pair.outbound, t.b.inbound[0xB3]


def test_another_peers_sa_does_not_take_a_verdict_earned_on_this_one():
    # Peer C (authentic, its own selectors) sends the tail of a datagram of host A whose first
    # fragment passed on A's SA: it is outside C's selectors and never rides on A's verdict.
    t = Tunnel()
    first, second, third = _frags()
    assert t.b.input(t.a.pairs[0xA1].outbound.protect(first, 1.0), 1.0) == first
    c_out, c_in = _second_peer(t)
    assert t.b.input(c_out.protect(second, 1.0), 1.0) is None
    assert t.b.take_released() == []
    # A's own tail still follows its first fragment.
    assert t.b.input(t.a.pairs[0xA1].outbound.protect(third, 1.0), 1.0) == third
    t.b.expire_fragments(1.0 + fragcheck.TIMEOUT)
    assert _mismatch(c_in) == 1 and c_in.packets == 0 and _mismatch(t.sa_b) == 0


def test_garbled_fragments_from_an_authentic_peer_raise_nothing():
    t = Tunnel()
    out = t.a.pairs[0xA1].outbound
    rng = random.Random(7)
    frags = _frags() + _frags(ident=0x78)
    for i in range(600):
        f = bytearray(rng.choice(frags))
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(1, 28)
            f[pos] = rng.randrange(256)
        f = bytes(f[:rng.randrange(20, len(f) + 1)])
        try:
            t.b.input(out.protect(f, 1.0 + i / 100), 1.0 + i / 100)
        except EspDrop:
            pass  # the datapath's input counts drops; an EspDrop is how an SA says so
        t.b.take_released()
    t.b.expire_fragments(100.0)
    assert not t.b.rx_frags.held and not t.b.rx_frags.firsts
