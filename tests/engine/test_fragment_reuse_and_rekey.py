"""Fragment steering (engine.datapath.fragsteer, outbound) and stateful fragment checking
(engine.esp.fragcheck, inbound) when an IPv4 ID comes back within the hold time, and when a
datagram's fragments straddle a CHILD SA rekey.

- A datagram whose pieces all came is done with, as Linux's fragment queue is once complete: a
  later fragment with the same (src, dst, protocol, ID) belongs to a new datagram and waits for its
  own first fragment instead of taking the old one's decision.
- The receive-side verdict depends only on the selectors and the first fragment, so it holds for
  the SA that replaced the first fragment's SA (a rekey keeps the child's selectors): the later
  fragments are taken on the new SA as on the old one.
"""

from __future__ import annotations

import os
from dataclasses import replace

from scapy.all import IP, UDP, IPv6, IPv6ExtHdrFragment, Raw, fragment6, raw
from scapy.layers.inet import fragment

from engine.esp import fragcheck
from tests.engine.test_inbound_fragment_check import GW_A, GW_B, A, A6, B, B6, Tunnel, _ev, _mismatch, _sealed
from tests.engine.test_userspace_fragment_steering import _frags, _opened, _path


def _whole(path):
    """Every datagram the outbound steering remembers is whole (forgotten at its next fragment)."""
    return all(entry[3].done is not None for entry in path.steer.firsts.values())


def _udp_frags(dport, ident, size=3000):
    pkt = IP(src=A, dst=B, id=ident) / UDP(sport=4000, dport=dport) / Raw(os.urandom(size))
    return [raw(f) for f in fragment(pkt, fragsize=1380)]


# ------------------------------------------------------------------ outbound: IPv4 ID reuse

def test_outbound_a_reused_id_does_not_take_the_previous_datagrams_decision():
    # main: the new datagram's second fragment came before its first and left by 0xB1, the SA of
    # the previous (complete) datagram with that ID, though its own first fragment has no SA.
    path, wire, sas = _path()  # 0xB1: udp/5000 to B; the policy's child takes nothing else
    old = _frags(dport=5000, ident=0x77)
    for f in old:
        assert path.output(f, 1.0)
    assert [_opened(sas, w)[0] for w in wire] == [0xB1] * 3
    wire.clear()
    first, second, third = _frags(dport=53, ident=0x77)  # the ID again, 1 s later
    assert not path.output(second, 2.0)  # waits for its own first fragment
    assert path.counters()[1] == {} and path.steer.held
    assert not path.output(first, 2.0) and not path.output(third, 2.0)
    assert wire == [] and path.counters()[1] == {"no_sa": 3} and not path.steer.held
    # A good datagram under the ID again, reordered: all of it by 0xB1.
    first, second, third = _frags(dport=5000, ident=0x77)
    for f in (third, second, first):
        path.output(f, 2.5)
    assert sorted(_opened(sas, w) for w in wire) == sorted((0xB1, f) for f in (first, second, third))
    assert _whole(path) and not path.steer.held


def test_outbound_a_complete_datagram_is_forgotten_whatever_the_order():
    path, wire, sas = _path()
    first, second, third = _frags()
    for f in (third, first, second):
        path.output(f, 1.0)
    assert _whole(path) and not path.steer.held and len(wire) == 3
    # An incomplete one (a lost fragment) is remembered until the timeout, as before.
    first, second, _third = _frags(ident=0x78)
    path.output(first, 1.0)
    path.output(second, 1.0)
    assert len(path.steer.firsts) == 2 and not _whole(path)


def test_outbound_ipv6_a_complete_datagram_is_forgotten():
    path, wire, sas = _path(v6=True)
    pkt = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=0x1234) / UDP(sport=4000, dport=5000) / Raw(os.urandom(3000))
    frags = [raw(f) for f in fragment6(pkt, 1400)]
    for f in frags:
        assert path.output(f, 1.0)
    assert _whole(path) and path.counters()[1] == {}


def test_outbound_a_duplicate_piece_does_not_complete_a_datagram_early():
    path, wire, sas = _path(other=False)
    first, second, third = _frags()
    for f in (first, second, second):
        assert path.output(f, 1.0)
    assert not _whole(path)
    assert path.output(third, 1.0) and _whole(path)


# ------------------------------------------------------------------ inbound: IPv4 ID reuse

def test_inbound_a_reused_id_does_not_take_the_previous_datagrams_verdict():
    # main: the stale verdict of the previous datagram with that ID decided: the refused one's
    # made the good datagram's early fragment drop; the good one's let the refused datagram's
    # early fragment through.
    t = Tunnel()
    for f in _udp_frags(53, 0x77):  # refused (outside [udp/5000]) and complete
        assert t.b.input(_sealed(t, [f])[0], 1.0) is None
    assert _mismatch(t.sa_b) == 3
    first, second, third = _udp_frags(5000, 0x77)
    assert t.b.input(_sealed(t, [second])[0], 2.0) is None  # waits for its first fragment
    assert t.b.input(_sealed(t, [first])[0], 2.0) == first and t.b.take_released() == [second]
    assert t.b.input(_sealed(t, [third])[0], 2.0) == third
    assert _mismatch(t.sa_b) == 3 and not t.b.rx_frags.firsts and not t.b.rx_frags.held
    # And the other way: after a good datagram, a refused one under its ID.
    first, second, third = _udp_frags(53, 0x77)
    assert t.b.input(_sealed(t, [second])[0], 3.0) is None
    assert _mismatch(t.sa_b) == 3 and t.b.rx_frags.held
    assert t.b.input(_sealed(t, [first])[0], 3.0) is None and t.b.take_released() == []
    assert _mismatch(t.sa_b) == 5


def test_inbound_fragments_passing_on_their_own_count_towards_the_whole():
    # Selectors naming a protocol but any port: each non-first fragment passes on its own; it still
    # counts, so the datagram is done with once whole.
    t = Tunnel(port="[udp]")
    frags = _udp_frags(5000, 0x10)
    assert t.cross(frags) == frags
    assert not t.b.rx_frags.firsts


# ------------------------------------------------------------------ CHILD SA rekey

def _rekey(t):
    """A rekey of the tunnel's CHILD SA, a the initiator: new pairs 0xA2/0xB2 with the same
    selectors; returns a's new outbound SA."""
    k1, k2 = os.urandom(36), os.urandom(36)
    send = lambda data, dest: t.wire.append(bytes(data))  # noqa: E731
    ev_b = _ev(0xB2, 0xA2, k2, k1, GW_B, GW_A, f"{B}/32[udp/5000]", f"{A}/32", False)
    ev_a = _ev(0xA2, 0xB2, k1, k2, GW_A, GW_B, f"{A}/32", f"{B}/32[udp/5000]", True)
    t.b.install(replace(ev_b, rekeyed_from=0xB1), send, (GW_A, 0))
    pair = t.a.install(replace(ev_a, rekeyed_from=0xA1), send, (GW_B, 0))
    return pair.outbound


def test_inbound_a_datagram_split_across_a_rekey_is_taken():
    # main: the first fragment passed on 0xB1, the others came on 0xB2 (the peer had switched) and
    # waited for a first fragment on 0xB2, then dropped as policy_mismatch after the timeout.
    t = Tunnel()
    first, second, third = _frags()
    assert t.b.input(_sealed(t, [first])[0], 1.0) == first  # old SA
    new = _rekey(t)
    assert t.b.input(new.protect(second, 1.0), 1.0) == second
    assert t.b.input(new.protect(third, 1.0), 1.0) == third
    assert not t.b.rx_frags.held and not t.b.rx_frags.firsts
    t.b.expire_fragments(1.0 + fragcheck.TIMEOUT)
    assert _mismatch(t.sa_b) == 0 and _mismatch(t.b.inbound[0xB2]) == 0
    assert t.b.inbound[0xB2].packets == 2


def test_inbound_fragments_before_their_first_across_a_rekey():
    # The later fragments on the new SA come first and wait; the first fragment, still on the old
    # SA, releases them (each counted on the SA that brought it).
    t = Tunnel()
    first, second, third = _frags()
    new = _rekey(t)
    assert t.b.input(new.protect(third, 1.0), 1.0) is None
    assert t.b.input(new.protect(second, 1.0), 1.0) is None
    assert t.b.input(_sealed(t, [first])[0], 1.0) == first
    assert t.b.take_released() == [third, second]
    assert t.b.inbound[0xB2].packets == 2 and t.sa_b.packets == 1 and _mismatch(t.sa_b) == 0


def test_outbound_a_datagram_split_across_a_rekey_leaves_by_the_new_sa():
    # Found right on main: the remembered decision is the flow, looked up again after the rekey.
    t = Tunnel()
    first, second, third = _frags()
    t.a.output(first, 1.0)
    _rekey(t)
    t.a.output(second, 1.0)
    t.a.output(third, 1.0)
    assert [int.from_bytes(w[:4], "big") for w in t.wire] == [0xB1, 0xB2, 0xB2]
    got = [t.b.input(w, 1.0) for w in t.wire]
    assert got == [first, second, third] and _mismatch(t.sa_b) == 0


def test_inbound_ipv6_a_complete_datagram_is_forgotten():
    t = Tunnel(v6=True)
    pkt = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=7) / UDP(sport=4000, dport=5000) / Raw(os.urandom(3000))
    frags = [raw(f) for f in fragment6(pkt, 1400)]
    got = t.cross(frags[1:]) + t.cross(frags[:1])
    assert sorted(got) == sorted(frags) and not t.b.rx_frags.firsts and not t.b.rx_frags.held


def test_the_span_of_a_fragment_reads_its_headers_not_the_packet_length():
    from scapy.all import IPv6ExtHdrDestOpt

    pkt = (IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(id=7, offset=10, m=1)
           / Raw(b"x" * 64))
    assert fragcheck.span(raw(pkt)) == (80, 144, False)
    assert fragcheck.span(raw(pkt) + b"tfc padding") == (80, 144, False)
    assert fragcheck.span(raw(pkt)[:-1]) is None  # truncated
    v4 = raw(IP(src=A, dst=B, id=1, frag=3, flags=0) / Raw(b"y" * 40))
    assert fragcheck.span(v4) == (24, 64, True) and fragcheck.span(v4 + b"\0" * 8) == (24, 64, True)
    head = raw(IP(src=A, dst=B, id=1, frag=0, flags=1) / Raw(b"z" * 24))
    p = fragcheck.Pieces()
    assert not p.add(v4) and p.add(head)  # 24..64 (the last), then 0..24: whole
    # Pieces that disagree (another end, data past the end) stop the tracking: never whole early.
    for other in (raw(IP(src=A, dst=B, id=1, frag=4, flags=0) / Raw(b"y" * 8)),
                  raw(IP(src=A, dst=B, id=1, frag=7, flags=1) / Raw(b"y" * 16))):
        p = fragcheck.Pieces()
        assert not p.add(v4) and not p.add(other) and p.spans is None and not p.add(head)


def test_span_of_truncated_or_garbled_headers_is_none_not_an_exception():
    # The callers hand it parsed fragments; on its own it still never raises.
    v6 = raw(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=7, offset=10, m=1) / Raw(b"x" * 64))
    v4 = _frags()[1]
    for pkt in (v4, v6):
        for n in range(len(pkt)):
            fragcheck.span(pkt[:n])
            fragcheck.Pieces().add(pkt[:n])
    assert fragcheck.span(b"") is None and fragcheck.span(b"\x60\0\0") is None
