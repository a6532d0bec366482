"""Outbound fragments through tunnel-mode SAs whose selectors look at ports (RFC 4301 §7.3,
engine.datapath.fragsteer): every fragment of a datagram leaves by the SA its first fragment
selects, even when a non-first fragment comes first (held until the first decides), and the
holding is bounded in datagrams, bytes and time. scapy cuts the fragments and decrypts."""

from __future__ import annotations

import os

from scapy.all import IP, UDP, IPv6, IPv6ExtHdrFragment, Raw, fragment6, raw
from scapy.layers.inet import fragment
from scapy.layers.ipsec import ESP, SecurityAssociation

from engine.crypto.transforms import EncrId
from engine.datapath import fragsteer
from engine.datapath.userspace_path import SaPath
from engine.esp import ip
from engine.events import ChildKeys, ChildSaInstalled
from engine.policy.parse import parse_policy
from engine.policy.ts import parse_ts
from engine.secret import Secret

GW_A, GW_B = "192.0.2.1", "192.0.2.2"
A, B = "198.51.100.1", "198.51.100.200"
A6, B6 = "2001:db8:1::1", "2001:db8:2::2"
POLICY = f"""
[engine]
datapath = "userspace"
listen = ["{GW_A}"]

[connections.h]
local_addrs = ["{GW_A}"]
remote_addrs = ["{GW_B}"]
local = {{ auth = "psk", id = "a.example" }}
remote = {{ auth = "psk", id = "b.example" }}

[connections.h.children.t]
local_ts = ["{A}/32"]
remote_ts = ["{B}/32"]
"""


def _install(path, wire, child, spi, local_ts, remote_ts):
    """A tunnel-mode pair whose outbound SPI is ``spi``; returns a scapy SA that opens its packets."""
    ekey = os.urandom(36)
    keys = ChildKeys(Secret(os.urandom(36)), Secret(b""), Secret(ekey), Secret(b""))
    ev = ChildSaInstalled(
        ike_sa=1, connection="h", child=child, unique_id=spi, reqid=spi, protocol="esp", mode="tunnel",
        spi_in=spi + 0x1000, spi_out=spi, local_addr=GW_A, remote_addr=GW_B,
        local_ts=tuple(parse_ts(t) for t in local_ts), remote_ts=tuple(parse_ts(t) for t in remote_ts),
        esn=False, keys=keys, rekeyed_from=None, initiator=True, encap=False, local_port=4500,
        remote_port=4500, encr_id=EncrId.AES_GCM_16, encr_key_length=256, integ_id=None)
    path.install(ev, lambda data, dest: wire.append(bytes(data)), (GW_B, 0))
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=ekey,
                               tunnel_header=IP(src=GW_A, dst=GW_B))


def _path(v6=False, other=True):
    """Pair 0xB1 protects udp/5000 to B; with ``other``, pair 0xB2 everything to B (addresses only,
    so a fragment without ports matches it, and only it)."""
    path = SaPath(parse_policy(POLICY, load_secrets=False))
    wire: list[bytes] = []
    lo, hi = (f"{A6}/128", f"{B6}/128") if v6 else (f"{A}/32", f"{B}/32")
    sas = {0xB1: _install(path, wire, "t", 0xB1, [lo], [hi + "[udp/5000]"])}
    if other:
        sas[0xB2] = _install(path, wire, "u", 0xB2, [lo], [hi])
    assert not path.addr_only
    return path, wire, sas


def _opened(sas, w):
    """(SPI, inner packet) of one tunnel-mode ESP payload as the path hands it to the socket."""
    spi = int.from_bytes(w[:4], "big")
    return spi, raw(sas[spi].decrypt(IP(raw(IP(src=GW_A, dst=GW_B, proto=50) / Raw(w)))))


def _frags(dport=5000, ident=0x77, size=3000):
    pkt = IP(src=A, dst=B, id=ident) / UDP(sport=4000, dport=dport) / Raw(os.urandom(size))
    return [raw(f) for f in fragment(pkt, fragsize=1380)]


def _with_id(pkt: bytes, ident: int) -> bytes:
    """``pkt`` (an IPv4 header without options) under another IP ID (scapy is slow for thousands)."""
    b = bytearray(pkt)
    b[4:6] = ident.to_bytes(2, "big")
    b[10:12] = b"\0\0"
    b[10:12] = ip.checksum(b[:20]).to_bytes(2, "big")
    return bytes(b)


def test_every_fragment_in_order_leaves_by_its_first_fragments_sa():
    # main: the first fragment took 0xB1 (udp/5000), the others (no ports) matched 0xB2 and left by it.
    path, wire, sas = _path()
    frags = _frags()
    assert len(frags) == 3
    assert all(path.output(f, 1.0) for f in frags)
    assert [_opened(sas, w) for w in wire] == [(0xB1, f) for f in frags]
    assert path.counters()[1] == {}


def test_fragments_before_their_first_wait_for_it_then_leave_by_its_sa():
    # main: with only the udp/5000 SA the two came first, matched nothing and were dropped as no_sa.
    for other in (False, True):
        path, wire, sas = _path(other=other)
        first, *rest = _frags()
        for f in reversed(rest):
            assert not path.output(f, 1.0)
        assert wire == [] and path.counters()[1] == {}
        assert path.output(first, 1.2)
        got = [_opened(sas, w) for w in wire]
        assert sorted(got) == sorted((0xB1, f) for f in [first, *rest])
        assert not path.steer.held and path.counters()[1] == {}
        # The datagram is whole: a later fragment under its key is a new datagram's (an IPv4 ID used
        # again) and waits for a first fragment of its own, as a complete Linux fragment queue is freed.
        wire.clear()
        assert not path.output(rest[0], 1.5) and wire == [] and path.steer.held


def test_a_first_fragment_with_no_sa_drops_what_waited_for_it():
    path, wire, sas = _path(other=False)
    first, *rest = _frags(dport=53)
    for f in rest:
        path.output(f, 1.0)
    assert not path.output(first, 1.0)
    assert wire == [] and path.counters()[1] == {"no_sa": 3} and not path.steer.held


def test_ipv6_fragments_follow_their_first_fragment_too():
    path, wire, sas = _path(v6=True)
    pkt = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=0x1234) / UDP(sport=4000, dport=5000) / Raw(os.urandom(3000))
    frags = [raw(f) for f in fragment6(pkt, 1400)]
    assert len(frags) == 3
    first, *rest = frags
    for f in rest:
        assert not path.output(f, 1.0)
    assert path.output(first, 1.0)
    assert sorted(int.from_bytes(w[:4], "big") for w in wire) == [0xB1] * 3
    assert path.counters()[1] == {}


def test_held_fragments_are_bounded_in_datagrams_bytes_and_time():
    path, wire, sas = _path(other=False)
    n = fragsteer.MAX_HELD + 50
    second = _frags()[1]
    for i in range(n):
        assert not path.output(_with_id(second, i), 1.0)  # a non-first fragment of datagram i
    steer = path.steer
    assert len(steer.held) == fragsteer.MAX_HELD and steer.bytes <= fragsteer.MAX_HELD_BYTES
    assert path.counters()[1] == {"frag_limit": 50}
    # Tiny fragments of one datagram: the byte cap holds (each is charged its bookkeeping).
    tiny = bytearray(_frags(ident=0xFFFF)[1][:28])
    tiny[2:4] = (28).to_bytes(2, "big")
    for off in range(1, 8000):  # 8000 * (28 + 128) bytes: past the cap
        tiny[6:8] = (0x2000 | off).to_bytes(2, "big")
        path.output(bytes(tiny), 2.0)
    assert steer.bytes <= fragsteer.MAX_HELD_BYTES and len(steer.held) <= fragsteer.MAX_HELD
    # Whose first fragment never comes: given up after the timeout (the datapath's tick).
    path.expire_fragments(2.0 + fragsteer.TIMEOUT)
    assert not steer.held and steer.bytes == 0
    drops = path.counters()[1]
    assert drops["frag_timeout"] + drops["frag_limit"] == n + 7999
    # A first fragment remembered past the timeout decides nothing any more: its late fragment waits.
    first, second, _ = _frags(ident=5)
    assert path.output(first, 10.0)
    assert not path.output(second, 10.0 + fragsteer.TIMEOUT) and steer.held


def test_the_first_fragments_remembered_are_bounded():
    path, wire, sas = _path(other=False)
    first = _frags()[0]
    for i in range(fragsteer.MAX_FIRSTS + 10):
        assert path.output(_with_id(first, i), 1.0)
    assert len(path.steer.firsts) == fragsteer.MAX_FIRSTS


class _Sender:
    def __init__(self, wire):
        self.add = wire.append
        self.mtu = self.pmtu = 0


class _Runtime:
    def now(self):
        return 1.0


class _Dp:
    def __init__(self, path):
        self.path = path
        self.runtime = _Runtime()
        self.loop = None

    def flush_events(self):
        self.path.drain()


def test_the_tun_read_loop_holds_and_releases_reordered_fragments():
    import socket

    from engine.datapath.userspace_io import TunIO

    path, wire, sas = _path()
    for pair in path.pairs.values():
        pair.sender = _Sender(wire)
    kernel, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        ours.setblocking(False)
        io = TunIO(_Dp(path), ours.fileno(), vnet=False, udp_gro=False)
        frags = _frags()
        for f in reversed(frags):
            kernel.send(f)
        io.readable()
        assert sorted(_opened(sas, w) for w in wire) == sorted((0xB1, f) for f in frags)
        assert path.counters()[1] == {}
    finally:
        kernel.close()
        ours.close()


def test_transport_mode_with_a_port_selector_takes_reordered_fragments_whole():
    # The transport-mode path (reassembled, protected whole) gets the held fragments too: main
    # dropped the two that came before the first as no_sa.
    from tests.engine.test_transport_fragments import big_udp, opened, transport_path, tun_fragments

    path, wire, sa = transport_path(remote_ts="192.0.2.2/32[udp/5000]")
    pkt = big_udp(dport=5000)
    first, *rest = tun_fragments(pkt)
    for f in rest:
        path.output(f, 1.0)
    path.output(first, 1.0)
    assert raw(IP(opened(sa, wire))[UDP]) == raw(pkt[UDP])
    assert path.counters()[1] == {}


def test_the_datapaths_tick_gives_up_fragments_whose_first_never_came():
    import asyncio

    from engine.datapath.userspace import UserspaceDatapath

    dp = UserspaceDatapath(parse_policy(POLICY, load_secrets=False))
    dp.loop = asyncio.new_event_loop()
    try:
        dp.runtime = _Runtime()
        dp.path.steer.hold(b"datagram", _frags()[1], 1.0 - fragsteer.TIMEOUT)
        dp._arm_samples()
        assert not dp.path.steer.held and dp.path.counters()[1] == {"frag_timeout": 1}
    finally:
        dp._sampler.cancel()
        dp.loop.close()
