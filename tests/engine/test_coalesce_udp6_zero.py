"""A UDP/IPv6 datagram with a checksum field of 0 (engine.datapath.coalesce): IPv6 has no "no
checksum" (RFC 8200 §8.1: such a datagram MUST be discarded; Linux udp6_csum_init refuses it), yet
when its other words sum to all ones it verifies like a field of 0xFFFF. Joined, the kernel would give
it a fresh checksum when cutting the super-packet and deliver what it must drop: it is written as it
came. Over IPv4 a field of 0 means no checksum (RFC 768) and the datagram still joins."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6

from engine.datapath.coalesce import Coalescer


def _dgram(v6: bool, i: int, zero: bool = False) -> bytes:
    l3 = IPv6(src="2001:db8::1", dst="2001:db8::2") if v6 else IP(src="198.51.100.1", dst="198.51.100.129",
                                                                    flags="DF", id=300 + i)
    payload = bytearray(bytes([i]) * 1200)
    if zero:
        # The word that makes the datagram's computed checksum 0, sent as 0xFFFF: then the field set to 0.
        payload[:2] = bytes(2)
        c0 = UDP(bytes(l3 / UDP(sport=443, dport=5000) / bytes(payload))[40 if v6 else 20:]).chksum
        payload[:2] = c0.to_bytes(2, "big")
    pkt = bytearray(bytes(l3 / UDP(sport=443, dport=5000) / bytes(payload)))
    ihl = 40 if v6 else 20
    if zero:
        assert pkt[ihl + 6:ihl + 8] == b"\xff\xff"
        pkt[ihl + 6:ihl + 8] = bytes(2)
    return bytes(pkt)


@pytest.mark.parametrize("batched", [False, True], ids=["add", "add_all"])
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_zero_udp_checksum_joins_over_ipv4_only(v6, batched):
    pkts = [_dgram(v6, 0), _dgram(v6, 1, zero=True), _dgram(v6, 2)]
    co = Coalescer(udp=True)
    if batched:
        co.add_all(pkts)
    else:
        for p in pkts:
            co.add(p)
    writes = co.flush()
    if v6:
        assert len(writes) == 3 and bytes(writes[1][1]) == pkts[1]
    else:
        assert len(writes) == 1
