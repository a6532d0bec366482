"""engine.esp.ip: checksums, headers, the transport split point and selector fields."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, IPv6, Raw, raw
from scapy.layers.inet6 import (ICMPv6EchoRequest, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                                IPv6ExtHdrRouting)

from engine.esp import ip

PROFILE = settings(max_examples=300, deadline=None)


def naive_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@PROFILE
@given(st.binary(max_size=300))
def test_checksum_matches_rfc1071_loop(data):
    assert ip.checksum(data) == naive_checksum(data)


def test_checksum_edge_values():
    assert ip.checksum(b"") == 0xFFFF
    assert ip.checksum(b"\xff\xff") == 0  # sum 0xffff, complement 0
    assert ip.checksum(b"\x00\x00") == 0xFFFF


def test_headers_agree_with_scapy():
    src, dst = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 1])
    h = ip.ipv4_header(src, dst, 50, 100, ttl=33, tos=0x20, ident=77)
    p = IP(h + bytes(100))
    assert (p.src, p.dst, p.proto, p.ttl, p.tos, p.id, p.len) == ("192.0.2.1", "198.51.100.1", 50, 33, 0x20, 77, 120)
    assert ip.checksum(h) == 0
    s6, d6 = ip.address_bytes("2001:db8::1"), ip.address_bytes("2001:db8::2")
    h6 = ip.ip_header(s6, d6, 17, 8, ttl=5, tos=0x40)
    p6 = IPv6(h6 + bytes(8))
    assert (p6.src, p6.dst, p6.nh, p6.hlim, p6.tc, p6.plen) == ("2001:db8::1", "2001:db8::2", 17, 5, 0x40, 8)
    with pytest.raises(ip.IpError):
        ip.ipv4_header(src, dst, 50, 70000)
    with pytest.raises(ip.IpError):
        ip.address_bytes(b"\x01\x02\x03")


def test_packet_length_and_version_errors():
    p = raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP() / Raw(b"x" * 10))
    assert ip.packet_length(p + b"pad") == len(p)
    for bad in (b"", p[:19], p[:-1], b"\x60" + bytes(10), b"\x30" + bytes(40), b"\x44" + p[1:]):
        with pytest.raises(ip.IpError):
            ip.packet_length(bad)


def test_flow_fields():
    tcp = raw(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1000, dport=22))
    assert ip.flow(tcp) == (bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), 6, 1000, 22)
    icmp = raw(IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(type=8, code=0))
    assert ip.flow(icmp)[2:] == (1, 8 << 8, 8 << 8)
    frag = raw(IP(src="192.0.2.1", dst="192.0.2.2", frag=10, proto=6) / Raw(b"x" * 8))
    assert ip.flow(frag)[2:] == (6, None, None)
    v6 = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
             / UDP(sport=5, dport=53))
    assert ip.flow(v6)[2:] == (17, 5, 53)
    v6frag = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(offset=3, nh=17) / Raw(b"x" * 8))
    assert ip.flow(v6frag)[2:] == (17, None, None)
    echo6 = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest())
    assert ip.flow(echo6)[2:] == (58, 128 << 8, 128 << 8)
    with pytest.raises(ip.IpError):
        ip.flow(v6[:42])


def test_ipv6_transport_split_points():
    base = IPv6(src="2001:db8::1", dst="2001:db8::2")
    plain = raw(base / UDP())
    assert ip.ipv6_transport_split(plain) == (40, 6, 17)
    hbh_dst = raw(base / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP())
    assert ip.ipv6_transport_split(hbh_dst) == (56, 48, 17)  # destination options without routing: skipped
    full = raw(base / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / UDP())
    off, nh_off, nh = ip.ipv6_transport_split(full)
    assert nh == 60 and full[nh_off] == 60 and off == 40 + 8 + 8 + 8  # stops before the trailing dest opts
    frag = raw(base / IPv6ExtHdrFragment() / UDP())
    assert ip.ipv6_transport_split(frag) == (40, 6, 44)
    with pytest.raises(ip.IpError):
        ip.ipv6_transport_split(hbh_dst[:44])


def test_fix_transport_checksum():
    pkt = bytearray(raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2) / Raw(b"data")))
    good = bytes(pkt)
    pkt[26:28] = b"\x12\x34"
    ip.fix_transport_checksum(pkt, 20, 17)
    assert bytes(pkt) == good
    zero = bytearray(good)
    zero[26:28] = b"\0\0"
    ip.fix_transport_checksum(zero, 20, 17)
    assert zero[26:28] == b"\0\0"  # IPv4 UDP without checksum stays so
    v6 = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(dport=80) / Raw(b"x"))
    broken = bytearray(v6)
    broken[56:58] = b"\0\0"
    ip.fix_transport_checksum(broken, 40, 6)
    assert bytes(broken) == v6
