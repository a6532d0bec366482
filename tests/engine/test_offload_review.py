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
