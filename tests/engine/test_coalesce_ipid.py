"""IP IDs of forwarded IPv4 runs (engine.datapath.coalesce): a forwarded super-packet is cut again by
the kernel (or the NIC) with IDs counting up from the first segment's, so a segment without DF joins
only when its ID is the run's next one, as the kernel's GRO demands (net/ipv4/af_inet.c
inet_gro_receive: ``flush_id = (iph2->id + count) ^ id`` unless both are DF). Otherwise the IDs of
non-atomic datagrams, the ones fragment reassembly keys on (RFC 6864 §4.1), would be rewritten on the
way. With DF (atomic datagrams) and for this host (not cut again) the IDs do not matter."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP

from engine.datapath.coalesce import Coalescer

A4, B4 = "198.51.100.1", "198.51.100.129"


def _tcp(i: int, ident: int, df: bool) -> bytes:
    return bytes(IP(src=A4, dst=B4, id=ident, flags="DF" if df else 0)
                 / TCP(sport=5201, dport=40000, seq=1 + i * 1000, ack=99, flags="A") / (bytes([i]) * 1000))


def _udp(i: int, ident: int, df: bool) -> bytes:
    return bytes(IP(src=A4, dst=B4, id=ident, flags="DF" if df else 0) / UDP(sport=443, dport=5000)
                 / (bytes([i]) * 1200))


def _writes(pkts: list, local: bool, batched: bool, udp: bool = False) -> int:
    co = Coalescer(udp=udp, local={bytes([198, 51, 100, 129])} if local else frozenset())
    if batched:
        co.add_all(pkts)
    else:
        for p in pkts:
            co.add(p)
    return len(co.flush())


@pytest.mark.parametrize("batched", [False, True], ids=["add", "add_all"])
@pytest.mark.parametrize("make", [_tcp, _udp], ids=["tcp", "udp"])
def test_forwarded_segments_without_df_join_only_with_consecutive_ids(make, batched):
    udp = make is _udp
    assert _writes([make(i, 300 + i, False) for i in range(3)], False, batched, udp) == 1
    assert _writes([make(i, 0xFFFF + i & 0xFFFF, False) for i in range(3)], False, batched, udp) == 1
    # A gap, the same ID twice, or counting down: each would be renumbered when cut again.
    for ids in ((300, 9, 302), (300, 300, 300), (302, 301, 300)):
        assert _writes([make(i, ids[i], False) for i in range(3)], False, batched, udp) == 3, ids
    # ... and the run a segment started continues from its ID.
    assert _writes([make(0, 300, False), make(1, 9, False), make(2, 10, False)], False, batched, udp) == 2


@pytest.mark.parametrize("batched", [False, True], ids=["add", "add_all"])
def test_ids_do_not_matter_with_df_or_for_this_host(batched):
    for ids in ((300, 9, 302), (0, 0, 0)):
        assert _writes([_tcp(i, ids[i], True) for i in range(3)], False, batched) == 1
        assert _writes([_udp(i, ids[i], True) for i in range(3)], False, batched, True) == 1
        assert _writes([_tcp(i, ids[i], False) for i in range(3)], True, batched) == 1
