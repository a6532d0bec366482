"""Receive-side stateful fragment checking (RFC 4301 §7.3) in the userspace datapath: a non-first
fragment on a tunnel SA whose selectors name ports is accepted when its datagram's first fragment
passed the selector check on the same SA; one that comes first waits (bounded: datagrams, bytes,
seconds, time passed in) and is delivered or dropped when the first fragment decides. Two of our
datapaths back to back over a ``[udp/5000]`` tunnel; scapy cuts the fragments."""

from __future__ import annotations

import os

from scapy.all import IP, UDP, IPv6, IPv6ExtHdrFragment, Raw, fragment6, raw
from scapy.layers.inet import fragment

from engine.crypto.transforms import EncrId
from engine.datapath.userspace_path import SaPath
from engine.esp import fragcheck, ip
from engine.events import ChildKeys, ChildSaInstalled
from engine.policy.parse import parse_policy
from engine.policy.ts import parse_ts
from engine.secret import Secret

GW_A, GW_B = "192.0.2.1", "192.0.2.2"
A, B = "198.51.100.1", "198.51.100.200"
A6, B6 = "2001:db8:1::1", "2001:db8:2::2"
POLICY = """
[engine]
datapath = "userspace"
listen = ["{me}"]

[connections.h]
local_addrs = ["{me}"]
remote_addrs = ["{peer}"]
local = {{ auth = "psk", id = "a.example" }}
remote = {{ auth = "psk", id = "b.example" }}

[connections.h.children.t]
local_ts = ["{lts}"]
remote_ts = ["{rts}"]
"""


def _ev(spi_in, spi_out, k_in, k_out, local, remote, lts, rts, initiator):
    keys = ChildKeys(Secret(k_in), Secret(b""), Secret(k_out), Secret(b""))
    return ChildSaInstalled(
        ike_sa=1, connection="h", child="t", unique_id=spi_in, reqid=1, protocol="esp", mode="tunnel",
        spi_in=spi_in, spi_out=spi_out, local_addr=local, remote_addr=remote,
        local_ts=(parse_ts(lts),), remote_ts=(parse_ts(rts),), esn=False, keys=keys, rekeyed_from=None,
        initiator=initiator, encap=False, local_port=4500, remote_port=4500, encr_id=EncrId.AES_GCM_16,
        encr_key_length=256, integ_id=None)


class Tunnel:
    """Gateway a (hosts A) and gateway b (hosts B), a ``[udp/5000]`` tunnel between them: a's
    traffic selectors A <-> B[udp/5000], b's the mirror image."""

    def __init__(self, v6=False, port="[udp/5000]"):
        a, b = (f"{A6}/128", f"{B6}/128") if v6 else (f"{A}/32", f"{B}/32")
        self.a = SaPath(parse_policy(POLICY.format(me=GW_A, peer=GW_B, lts=a, rts=b + port), load_secrets=False))
        self.b = SaPath(parse_policy(POLICY.format(me=GW_B, peer=GW_A, lts=b + port, rts=a), load_secrets=False))
        self.wire: list[bytes] = []
        k1, k2 = os.urandom(36), os.urandom(36)
        send = lambda data, dest: self.wire.append(bytes(data))  # noqa: E731
        self.a.install(_ev(0xA1, 0xB1, k1, k2, GW_A, GW_B, a, b + port, True), send, (GW_B, 0))
        self.b.install(_ev(0xB1, 0xA1, k2, k1, GW_B, GW_A, b + port, a, False), send, (GW_A, 0))
        self.sa_b = self.b.inbound[0xB1]

    def cross(self, frags, now=1.0):
        """a protects ``frags`` (in that order); b opens what went on the wire: what b delivers."""
        for f in frags:
            self.a.output(f, now)
        got = []
        for w in self.wire:
            inner = self.b.input(w, now)
            if inner is not None:
                got.append(inner)
            got.extend(self.b.take_released())
        self.wire.clear()
        return got


def _frags(dport=5000, ident=0x77, size=3000):
    pkt = IP(src=A, dst=B, id=ident) / UDP(sport=4000, dport=dport) / Raw(os.urandom(size))
    return [raw(f) for f in fragment(pkt, fragsize=1380)]


def _frags6(ident=0x1234):
    pkt = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=ident) / UDP(sport=4000, dport=5000) / Raw(os.urandom(3000))
    return [raw(f) for f in fragment6(pkt, 1400)]


def _mismatch(sa):
    return dict(sa.counters().drops).get("policy_mismatch", 0)


def test_a_fragmented_datagram_crosses_a_port_selector_tunnel_in_order():
    # main: b dropped the two non-first fragments as policy_mismatch (no ports, [udp/5000] selector).
    t = Tunnel()
    frags = _frags()
    assert t.cross(frags) == frags
    assert _mismatch(t.sa_b) == 0 and t.b.counters()[1] == {}
    assert t.sa_b.packets == 3


def test_a_fragmented_datagram_crosses_reordered():
    t = Tunnel()
    first, *rest = _frags()
    # The non-first fragments come first: a holds them until the first decides (fragsteer) and
    # sends them before it, so b gets them before the first too and holds them in turn.
    got = t.cross([*rest[::-1], first])
    assert sorted(got) == sorted([first, *rest]) and got[0] == first
    assert _mismatch(t.sa_b) == 0 and t.b.counters()[1] == {} and not t.b.rx_frags.held


def test_ipv6_fragments_cross_in_order_and_reordered():
    t = Tunnel(v6=True)
    frags = _frags6()
    assert len(frags) == 3 and t.cross(frags) == frags
    frags = _frags6(ident=0x99)
    got = t.cross(frags[1:], 2.0) + t.cross(frags[:1], 2.0)
    assert sorted(got) == sorted(frags)
    assert _mismatch(t.sa_b) == 0 and t.b.counters()[1] == {}


def _sealed(t, frags, now=1.0):
    """The ESP payloads a sends for ``frags`` (its outbound SA protects them as they are)."""
    sa = t.a.pairs[0xA1].outbound
    return [sa.protect(f, now) for f in frags]


def test_a_first_fragment_outside_the_selectors_drops_its_datagram():
    t = Tunnel()
    first, *rest = _frags(dport=53)  # a would not send it; a peer that does is refused
    wire = _sealed(t, [*rest, first])
    got = [t.b.input(w, 1.0) for w in wire]
    assert got == [None, None, None] and t.b.take_released() == []
    assert _mismatch(t.sa_b) == 3
    assert not t.b.rx_frags.held and not t.b.rx_frags.firsts  # whole: done with
    # A later fragment of a refused datagram not yet whole drops at once.
    first, second, third = _frags(dport=53, ident=0x78)
    wire = _sealed(t, [first, second, third])
    assert t.b.input(wire[0], 1.0) is None and t.b.input(wire[2], 1.0) is None
    assert _mismatch(t.sa_b) == 5 and not t.b.rx_frags.held


def test_a_lone_non_first_fragment_is_still_dropped():
    t = Tunnel()
    _first, second, _ = _frags()
    assert t.b.input(_sealed(t, [second])[0], 1.0) is None
    assert _mismatch(t.sa_b) == 0 and t.b.rx_frags.held  # waiting for its first fragment
    t.b.expire_fragments(1.0 + fragcheck.TIMEOUT)
    assert not t.b.rx_frags.held and _mismatch(t.sa_b) == 1 and t.b.take_released() == []
    # Its first fragment coming after that does not bring it back.
    assert t.b.input(_sealed(t, [_first])[0], 9.0) == _first and t.b.take_released() == []


def test_the_first_fragment_must_have_passed_the_same_selectors():
    # An SA with the same selectors shares the verdict (a rekey's new SA:
    # tests/engine/test_fragment_reuse_and_rekey.py); one with other selectors does not.
    t = Tunnel()
    k1, k2 = os.urandom(36), os.urandom(36)
    send = lambda data, dest: None  # noqa: E731
    other = t.b.install(_ev(0xB2, 0xA2, k2, k1, GW_B, GW_A, f"{B}/32[udp/5000-5001]", f"{A}/32", False), send,
                        (GW_A, 0))
    a2 = t.a.install(_ev(0xA2, 0xB2, k1, k2, GW_A, GW_B, f"{A}/32", f"{B}/32[udp/5000-5001]", True), send,
                     (GW_B, 0))
    first, second, _ = _frags()
    assert t.b.input(_sealed(t, [first])[0], 1.0) == first  # on 0xB1
    assert t.b.input(a2.outbound.protect(second, 1.0), 1.0) is None  # on 0xB2: waits, then drops
    t.b.expire_fragments(1.0 + fragcheck.TIMEOUT)
    assert _mismatch(other.inbound) == 1


def test_held_fragments_are_bounded_in_datagrams_bytes_and_time():
    t = Tunnel()
    second = _frags()[1]
    sa = t.a.pairs[0xA1].outbound
    n = fragcheck.MAX_HELD + 50
    for i in range(n):
        b = bytearray(second)
        b[4:6] = i.to_bytes(2, "big")
        b[10:12] = b"\0\0"
        b[10:12] = ip.checksum(b[:20]).to_bytes(2, "big")
        assert t.b.input(sa.protect(bytes(b), 1.0), 1.0) is None
    fc = t.b.rx_frags
    assert len(fc.held) == fragcheck.MAX_HELD and fc.bytes <= fragcheck.MAX_HELD_BYTES
    assert t.b.counters()[1] == {"frag_limit": 50}
    # Tiny fragments of one datagram: the byte cap holds (each is charged its bookkeeping).
    tiny = bytearray(second[:28])
    tiny[2:4] = (28).to_bytes(2, "big")
    tiny[4:6] = b"\xff\xff"
    for off in range(1, 8000):
        tiny[6:8] = (0x2000 | off).to_bytes(2, "big")
        t.b.input(sa.protect(bytes(tiny), 2.0), 2.0)
    assert fc.bytes <= fragcheck.MAX_HELD_BYTES and len(fc.held) <= fragcheck.MAX_HELD
    t.b.expire_fragments(2.0 + fragcheck.TIMEOUT)
    assert not fc.held and fc.bytes == 0
    assert t.b.counters()[1]["frag_limit"] + _mismatch(t.sa_b) == n + 7999
    # Remembered first fragments are bounded too.
    first = _frags()[0]
    for i in range(fragcheck.MAX_FIRSTS + 10):
        b = bytearray(first)
        b[4:6] = i.to_bytes(2, "big")
        b[10:12] = b"\0\0"
        b[10:12] = ip.checksum(b[:20]).to_bytes(2, "big")
        t.b.input(sa.protect(bytes(b), 20.0), 20.0)
    assert len(fc.firsts) == fragcheck.MAX_FIRSTS


def test_an_ipv6_atomic_fragment_is_checked_as_a_whole_packet():
    t = Tunnel(v6=True)
    sa = t.a.pairs[0xA1].outbound
    atomic = raw(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=5, offset=0, m=0) / UDP(sport=1, dport=5000))
    assert t.b.input(sa.protect(atomic, 1.0), 1.0) == atomic
    wrong = raw(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=6, offset=0, m=0) / UDP(sport=1, dport=53))
    assert t.b.input(sa.protect(wrong, 1.0), 1.0) is None and _mismatch(t.sa_b) == 1
    assert not t.b.rx_frags.held and not t.b.rx_frags.firsts


def test_the_receive_batch_delivers_fragments_that_waited():
    # The userspace datapath's receive batch (raw socket or NAT-T read): the held fragments come
    # out with the batch that brought their first fragment.
    from engine.datapath.userspace_io import open_esp

    t = Tunnel()
    first, *rest = _frags()
    wire = _sealed(t, [*rest, first])
    inners: list = []
    open_esp(t.b, wire[:2], 1.0, inners, False)
    assert inners == []
    open_esp(t.b, wire[2:], 1.0, inners, False)
    assert sorted(inners) == sorted([first, *rest]) and inners[0] == first
    assert _mismatch(t.sa_b) == 0 and t.sa_b.packets == 3


def test_the_lab_datapath_delivers_fragments_that_waited():
    from engine.datapath.lab import LabDatapath

    t = Tunnel()
    got = []

    class _Host:
        def receive(self, inner, now):
            got.append(inner)

    lab = LabDatapath.__new__(LabDatapath)
    lab.path, lab.host = t.b, _Host()
    first, *rest = _frags()
    for w in _sealed(t, [*rest, first]):
        lab.receive_esp(w, None, None, 1.0)
    assert sorted(got) == sorted([first, *rest])


def test_a_repeated_first_fragment_decides_anew_and_time_is_the_callers():
    t = Tunnel()
    first, second, third = _frags()
    assert t.b.input(_sealed(t, [first])[0], 1.0) == first
    assert t.b.input(_sealed(t, [second])[0], 1.0) == second
    # The same datagram's first fragment again, now naming another port: refused, and so are the
    # fragments after it (each first fragment is checked on its own ports).
    evil = bytearray(first)
    evil[22:24] = (22).to_bytes(2, "big")
    assert t.b.input(_sealed(t, [bytes(evil)])[0], 1.5) is None
    assert t.b.input(_sealed(t, [third])[0], 1.5) is None and _mismatch(t.sa_b) == 2
    # No tick needed: what waited past TIMEOUT goes when the next fragment is checked (its `now`).
    _f, late, _ = _frags(ident=9)
    assert t.b.input(_sealed(t, [late])[0], 2.0) is None and t.b.rx_frags.held
    _f2, other, _ = _frags(ident=10)
    t.b.input(_sealed(t, [other])[0], 2.0 + fragcheck.TIMEOUT)
    key = (t.sa_b.remote_ts, t.sa_b.local_ts, fragcheck.datagram(other)[0])
    assert list(t.b.rx_frags.held) == [key] and _mismatch(t.sa_b) == 3
