"""Corner cases of engine.datapath.offload found in review, with scapy as the oracle: IPv6
super-packets with extension headers, the GRO rules of the coalescer, and what it writes."""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop

from engine.datapath.offload import GSO_TCPV6, GSO_UDP_L4, Coalescer, segment
from tests.engine.test_offload import _fresh, _partial, _written

A4, B4 = "198.51.100.1", "198.51.100.129"
A6, B6 = "2001:db8::1", "2001:db8::2"


@pytest.mark.parametrize("ext", [IPv6ExtHdrDestOpt(), IPv6ExtHdrHopByHop(options=[])], ids=["dstopts", "hopbyhop"])
@pytest.mark.parametrize("tcp", [True, False], ids=["tso", "uso"])
def test_ipv6_super_packet_with_an_extension_header_keeps_it_in_each_payload_length(ext, tcp):
    # csum_start (what the kernel gives) is past the extension header: each segment's IPv6 payload
    # length counts the extension header too (main left it out: every segment lost its last 8
    # bytes at the peer, which cuts the inner packet to its header's length).
    payload = os.urandom(3000)
    l4 = TCP(sport=40000, dport=5201, seq=7, ack=1, flags="PA") if tcp else UDP(sport=40000, dport=5201)
    pkt = bytearray(bytes(IPv6(src=A6, dst=B6) / ext / l4 / payload))
    ihl = 48
    _partial(pkt, ihl, 6 if tcp else 17)
    segs = segment(bytes(pkt), GSO_TCPV6 if tcp else GSO_UDP_L4, 1200, ihl)
    assert len(segs) == 3
    got = b""
    for s in segs:
        p = IPv6(bytes(s))
        assert p.plen == len(s) - 40
        assert _fresh(p) == bytes(s)  # lengths and checksums as scapy computes them
        got += bytes((p[TCP] if tcp else p[UDP]).payload)
    assert got == payload


def _seg(i: int, v6: bool = False, size: int = 1000, **tcp) -> bytes:
    l3 = IPv6(src=A6, dst=B6) if v6 else IP(src=A4, dst=B4, flags="DF", id=i)
    fields = dict(sport=5201, dport=40000, seq=1 + i * size, ack=99, window=700, flags="A")
    fields.update(tcp)
    return bytes(l3 / TCP(**fields) / os.urandom(size))


@pytest.mark.parametrize("local", [False, True], ids=["forwarded", "this-host"])
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_segments_whose_reserved_or_ae_bits_differ_are_not_joined(v6, local):
    # Linux's tcp_gro_receive flushes on any difference in the flag word but CWR/FIN/PSH: the 4
    # bits after the data offset (reserved, AccECN's AE) included; a joined run would carry only
    # the first segment's.
    here = {bytes.fromhex("20010db8000000000000000000000002"), bytes([198, 51, 100, 129])} if local else frozenset()
    segs = [_seg(0, v6), _seg(1, v6, reserved=1), _seg(2, v6, reserved=1), _seg(3, v6)]
    for add_all in (False, True):
        co = Coalescer(local=here)
        if add_all:
            co.add_all(segs)
        else:
            for s in segs:
                co.add(s)
        out = _written(co)
        assert [len(pkt) for _hdr, pkt in out] == [len(segs[0]), 2 * len(segs[0]) - (60 if v6 else 40), len(segs[0])]
        assert [(IPv6 if v6 else IP)(pkt)[TCP].reserved for _hdr, pkt in out] == [0, 1, 0]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_udp_datagrams_whose_udp_length_is_not_the_ip_payload_are_not_joined(v6):
    # Linux's udp_gro_receive_segment: "Do not deal with padded or malicious packets" (UDP length
    # must be the IP payload). Joined, the bytes after a datagram's UDP length (which the kernel
    # trims off a lone one) would reach the application as data. An IPv4 checksum of 0 (none)
    # is what lets such a datagram pass the checksum check here.
    def dgram(i, ulen=None):
        l3 = IPv6(src=A6, dst=B6) if v6 else IP(src=A4, dst=B4, flags="DF", id=i)
        u = UDP(sport=443, dport=5000, len=ulen)
        if not v6:
            u.chksum = 0
        return bytes(l3 / u / os.urandom(1200))

    good = [dgram(i) for i in range(3)]
    co = Coalescer(udp=True)
    for d in good:
        co.add(d)
    assert len(_written(co)) == 1  # well-formed ones still join
    padded = [dgram(0), dgram(1, ulen=8 + 100), dgram(2)]
    for d in padded:
        co.add(d)
    out = _written(co)
    assert [pkt for _hdr, pkt in out] == padded  # each written as it came, for the kernel to trim


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("change", ["ecn", "ttl"])
def test_a_udp_datagram_that_cannot_join_its_flows_run_ends_it(v6, change):
    # ECN-capable UDP (QUIC) with one datagram marked CE by a router, or a TTL change: it cannot
    # join, and no later datagram of the flow may join the run before it (UDP has no sequence
    # number; main wrote d0+d2 then d1).
    def dgram(i, tos=2, ttl=64):
        l3 = IPv6(src=A6, dst=B6, tc=tos, hlim=ttl) if v6 else IP(src=A4, dst=B4, flags="DF", id=i, tos=tos, ttl=ttl)
        return bytes(l3 / UDP(sport=443, dport=5000) / (bytes([i]) * 1200))

    odd = dgram(1, tos=3) if change == "ecn" else dgram(1, ttl=63)
    batch = [dgram(0), odd, dgram(2), dgram(3)]
    co = Coalescer(udp=True)
    for d in batch:
        co.add(d)
    out = _written(co)
    ihl = 40 if v6 else 20
    payloads = []
    for hdr, pkt in out:
        segs = segment(pkt, GSO_UDP_L4, hdr[3], ihl) if hdr[1] else [pkt]
        payloads += [bytes(s[ihl + 8:ihl + 9]) for s in segs]
    assert payloads == [b"\x00", b"\x01", b"\x02", b"\x03"]  # arrival order
    assert len(out) == 3  # d2 and d3 still join each other


def test_an_offload_header_that_does_not_describe_the_packet_is_refused():
    # Only a kernel bug could hand these over, but cut as described they would leave as garbage
    # segments (a UDP payload rewritten as TCP headers): refused, and the datapath counts a drop.
    from engine.datapath.offload import GSO_TCPV4, GSO_UDP, OffloadError

    tcp4, _ = _super(False, True)
    udp4, _ = _super(False, False)
    tcp6, _ = _super(True, True)
    for pkt, gso, cstart in ((udp4, GSO_TCPV4, 20), (tcp4, GSO_UDP_L4, 20), (tcp6, GSO_TCPV4, 40),
                             (tcp4, GSO_TCPV6, 20), (tcp4, GSO_TCPV4, 24), (tcp6, GSO_UDP_L4, 40),
                             (udp4, GSO_UDP, 20), (b"\x00" + tcp4[1:], GSO_TCPV4, 20),
                             (b"\x44" + tcp4[1:], GSO_TCPV4, 16)):
        with pytest.raises(OffloadError):
            segment(pkt, gso, 500, cstart)
    for pkt, gso, cstart in ((tcp4, GSO_TCPV4, 20), (udp4, GSO_UDP_L4, 20), (tcp6, GSO_TCPV6, 40)):
        assert len(segment(pkt, gso, 500, cstart)) == 4  # what the kernel hands over still passes


def _super(v6: bool, tcp: bool):
    l3 = IPv6(src=A6, dst=B6) if v6 else IP(src=A4, dst=B4, flags="DF")
    l4 = TCP(sport=1, dport=2, flags="A") if tcp else UDP(sport=1, dport=2)
    pkt = bytearray(bytes(l3 / l4 / os.urandom(1800)))
    ihl = 40 if v6 else 20
    _partial(pkt, ihl, 6 if tcp else 17)
    return bytes(pkt), ihl


@pytest.mark.parametrize("kind", [0, 2, 4], ids=["rh0", "rh2-mobile", "srh"])
@pytest.mark.parametrize("tcp", [True, False], ids=["tso", "uso"])
def test_segments_behind_a_routing_header_sum_the_final_destination(kind, tcp):
    # RFC 8200 §8.1: with segments left, the pseudo-header's destination is the routing header's
    # final one (the last address; Segment List[0] of an SRH), not the packet's current destination.
    # main summed the current destination: every segment failed its checksum at the final host.
    from scapy.layers.inet6 import IPv6ExtHdrRouting, IPv6ExtHdrSegmentRouting
    final = "2001:db8::99"
    if kind == 4:
        rh = IPv6ExtHdrSegmentRouting(addresses=[final, "2001:db8::50"], segleft=1)
    else:
        rh = IPv6ExtHdrRouting(type=kind, addresses=[final], segleft=1)
    payload = os.urandom(3000)
    l4 = TCP(sport=40000, dport=5201, seq=7, ack=1, flags="PA") if tcp else UDP(sport=40000, dport=5201)
    pkt = bytearray(bytes(IPv6(src=A6, dst=B6) / rh / l4 / payload))
    ihl = 40 + len(bytes(rh))
    segs = segment(bytes(pkt), GSO_TCPV6 if tcp else GSO_UDP_L4, 1200, ihl)
    assert len(segs) == 3
    for s in segs:
        assert _fresh(IPv6(bytes(s))) == bytes(s)  # scapy sums the final destination
