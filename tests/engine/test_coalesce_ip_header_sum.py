"""A damaged IPv4 header checksum (engine.datapath.coalesce): the kernel's GRO never joins such a
segment (net/ipv4/af_inet.c inet_gro_receive: ``ip_fast_csum`` fails, no GRO) and ip_rcv drops it
(RFC 1122 §3.2.1.2: a datagram whose header checksum fails MUST be silently discarded). A super-packet
gets a fresh header checksum, so a joined segment would lose that check: it is written as it came,
for the kernel to drop, and starts no run."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP

from engine.datapath.coalesce import Coalescer

A4, B4 = "198.51.100.1", "198.51.100.129"


def _tcp(i: int) -> bytes:
    return bytes(IP(src=A4, dst=B4, id=300 + i, flags="DF")
                 / TCP(sport=5201, dport=40000, seq=1 + i * 1000, ack=99, flags="A") / (bytes([i]) * 1000))


def _udp(i: int) -> bytes:
    return bytes(IP(src=A4, dst=B4, id=300 + i, flags="DF") / UDP(sport=443, dport=5000) / (bytes([i]) * 1200))


def _damaged(pkt: bytes) -> bytes:
    b = bytearray(pkt)
    b[11] ^= 0x10  # the header checksum: nothing else changes
    return bytes(b)


def _writes(pkts: list, local: bool, batched: bool, udp: bool) -> list:
    co = Coalescer(udp=udp, local={bytes([198, 51, 100, 129])} if local else frozenset())
    if batched:
        co.add_all(pkts)
    else:
        for p in pkts:
            co.add(p)
    return co.flush()


@pytest.mark.parametrize("batched", [False, True], ids=["add", "add_all"])
@pytest.mark.parametrize("local", [False, True], ids=["forwarded", "this-host"])
@pytest.mark.parametrize("make", [_tcp, _udp], ids=["tcp", "udp"])
@pytest.mark.parametrize("bad", [0, 1, 2])
def test_a_segment_with_a_bad_ip_header_checksum_is_written_as_it_came(bad, make, local, batched):
    pkts = [make(i) for i in range(4)]
    pkts[bad] = _damaged(pkts[bad])
    writes = _writes(pkts, local, batched, make is _udp)
    # Its own write, byte for byte (the kernel drops it); the others join around it.
    assert [w for w in writes if len(w) == 2 and bytes(w[1]) == pkts[bad]], writes
    assert len(writes) == (2 if bad == 0 else 3)
