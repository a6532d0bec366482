"""Offload headers as a real Linux TUN device writes them (include/linux/virtio_net.h,
virtio_net_hdr_from_skb) must be segmented, never refused: a refused super-packet is a whole
window of a TCP stream dropped. The kernel sets csum_start/csum_offset (and NEEDS_CSUM) only for a
CHECKSUM_PARTIAL skb; a GSO skb that is CHECKSUM_UNNECESSARY (LRO, or received with DATA_VALID from
a virtio/tap device and forwarded into the TUN: netif_needs_gso lets it through unsegmented) comes
with flags DATA_VALID and csum_start 0. hdr_len is only a hint (skb_headlen, or the header length
on newer kernels)."""

from __future__ import annotations

import os
import socket

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt

from engine.datapath.offload import (DATA_VALID, GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, NEEDS_CSUM, VNET,
                                     segment, transport_offset)
from engine.datapath.userspace_io import TunIO
from tests.engine.test_lab_packet_path import Link
from tests.engine.test_offload import _partial
from tests.engine.test_userspace_io import _Dp, _Sender

A4, B4 = "198.51.100.1", "198.51.100.65"
A6, B6 = "2001:db8::1", "2001:db8::2"


def _super(v6: bool, tcp: bool, ext: bool, payload: bytes) -> tuple[bytes, int]:
    l3 = IPv6(src=A6, dst=B6) if v6 else IP(src=A4, dst=B4, id=7)  # no DF: a smaller path cuts it
    if ext:
        l3 = l3 / IPv6ExtHdrDestOpt()
    l4 = TCP(sport=4000, dport=80, flags="A", seq=10, ack=3) if tcp else UDP(sport=4000, dport=80)
    return bytes(l3 / l4 / payload), (40 if v6 else 20) + (8 if ext else 0)


@pytest.fixture
def tunio():
    kernel, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    link = Link()
    pa, _pb = link.install(0xA1, 0xB1)
    pa.sender = _Sender()
    io = TunIO(_Dp(link.a), ours.fileno(), vnet=True, udp_gro=False)
    yield io, kernel, link, pa
    kernel.close()
    ours.close()


@pytest.mark.parametrize("limit", [0, 1000], ids=["device-mtu", "smaller-path"])
@pytest.mark.parametrize("tcp", [True, False], ids=["tso", "uso"])
def test_a_super_packet_without_needs_csum_is_segmented_not_dropped(tunio, tcp, limit):
    # flags DATA_VALID, csum_start 0, csum_offset 0: what virtio_net_hdr_from_skb writes for a
    # CHECKSUM_UNNECESSARY GSO skb (the kernel's own virtio_net_hdr_to_skb accepts such a header
    # and finds the transport header by dissecting the packet).
    io, kernel, link, pa = tunio
    pa.max_inner = limit
    payload = os.urandom(5000)
    pkt, hlen = _super(False, tcp, False, payload)
    kernel.send(VNET.pack(DATA_VALID, GSO_TCPV4 if tcp else GSO_UDP_L4, len(pkt), 1300, 0, 0) + pkt)
    io.readable()
    assert link.a.counters()[1] == {}
    inner = [IP(link.b.input(w, 1.0)) for w in pa.sender.sent]
    assert len(inner) > 1 and max(len(p) for p in inner) == min(hlen + (20 if tcp else 8) + 1300, limit or 9000)
    got = b""
    for p in inner:
        clean = p.copy()
        del clean[IP].chksum, clean[IP].len
        if tcp:
            del clean[TCP].chksum
        else:
            del clean[UDP].chksum, clean[UDP].len
        assert bytes(IP(bytes(clean))) == bytes(p)  # lengths and checksums as scapy computes them
        got += bytes((p[TCP] if tcp else p[UDP]).payload)
    assert got == payload
    assert io.segmented == 1


@pytest.mark.parametrize("tcp", [True, False], ids=["tso", "uso"])
@pytest.mark.parametrize("ext", [False, True], ids=["plain", "dstopts"])
def test_an_ipv6_super_packet_without_needs_csum_is_segmented_past_its_extension_headers(tcp, ext):
    payload = os.urandom(3000)
    pkt, hlen = _super(True, tcp, ext, payload)
    assert transport_offset(pkt) == hlen
    segs = segment(pkt, GSO_TCPV6 if tcp else GSO_UDP_L4, 1200, transport_offset(pkt))
    assert b"".join(bytes((IPv6(bytes(s))[TCP] if tcp else IPv6(bytes(s))[UDP]).payload) for s in segs) == payload


@pytest.mark.parametrize("options", [False, True], ids=["ihl5", "ip-options"])
@pytest.mark.parametrize("tcp", [True, False], ids=["tso", "uso"])
@pytest.mark.parametrize("hdr_len", [0, 40, 1500, 0xFFFF], ids=["hl0", "hl-headers", "hl-headlen", "hl-max"])
def test_what_the_kernel_hands_over_with_needs_csum_is_segmented_whatever_hdr_len(tunio, tcp, hdr_len, options):
    # csum_start at the transport header (past any IPv4 options), csum_offset 16 (TCP) or 6 (UDP),
    # the ECN flag on TSO when the stream negotiated ECN; hdr_len is a hint nobody must check.
    io, kernel, link, pa = tunio
    l3 = IP(src=A4, dst=B4, id=7, options=[b"\x01\x01\x01\x00"] if options else [])
    l4 = TCP(sport=4000, dport=80, flags="A", seq=10, ack=3) if tcp else UDP(sport=4000, dport=80)
    pkt = bytearray(bytes(l3 / l4 / os.urandom(4000)))
    hlen = 24 if options else 20
    _partial(pkt, hlen, 6 if tcp else 17)
    gso = GSO_TCPV4 | GSO_ECN if tcp else GSO_UDP_L4
    kernel.send(VNET.pack(NEEDS_CSUM, gso, hdr_len, 1000, hlen, 16 if tcp else 6) + bytes(pkt))
    io.readable()
    assert link.a.counters()[1] == {}
    assert len(pa.sender.sent) == 4


def test_a_small_udp_gso_packet_is_segmented():
    # udp_send_skb makes a GSO skb of any datagram longer than its gso_size: 10 bytes cut by 4 is a
    # legitimate 38-byte super-packet (dp14 refused anything under 40 bytes).
    pkt = bytearray(bytes(IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / b"0123456789"))
    _partial(pkt, 20, 17)
    segs = segment(bytes(pkt), GSO_UDP_L4, 4, 20)
    assert [bytes(IP(bytes(s))[UDP].payload) for s in segs] == [b"0123", b"4567", b"89"]
