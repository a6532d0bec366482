"""The coalescer's run key for TCP over IPv4 (engine.datapath.coalesce): a segment joins the run of
the one before only when every header field the kernel's GRO compares is the same (TOS, DF, TTL,
addresses, ports, ACK, data offset and reserved bits, window, options), whatever its IP ID and
checksums; through `add` and `add_all`, for this host and forwarded."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP

from engine.datapath.coalesce import Coalescer

A4, B4 = "198.51.100.1", "198.51.100.129"
TS = [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]


def _seg(i: int, ip: dict | None = None, tcp: dict | None = None) -> bytes:
    ipf = {"src": A4, "dst": B4, "flags": "DF", "id": 300 + i, "ttl": 64, "tos": 0, **(ip or {})}
    tcpf = {"sport": 5201, "dport": 40000, "seq": 1 + i * 1000, "ack": 99, "window": 700, "flags": "A",
            "options": TS, **(tcp or {})}
    return bytes(IP(**ipf) / TCP(**tcpf) / (bytes([i]) * 1000))


APART = {
    "tos": ({"tos": 0x10}, None),
    "ttl": ({"ttl": 63}, None),
    "no DF": ({"flags": 0}, None),
    "source": ({"src": "198.51.100.2"}, None),
    "destination": ({"dst": "198.51.100.130"}, None),
    "source port": (None, {"sport": 5202}),
    "destination port": (None, {"dport": 40001}),
    "ack": (None, {"ack": 100}),
    "window": (None, {"window": 701}),
    "reserved bits": (None, {"reserved": 1}),
    "option value": (None, {"options": [("NOP", None), ("NOP", None), ("Timestamp", (1, 3))]}),
    "option length": (None, {"options": [("NOP", None), ("NOP", None), ("NOP", None), ("NOP", None),
                                         ("Timestamp", (1, 2))]}),
    "no options": (None, {"options": []}),
}
TOGETHER = {
    "ip id": ({"id": 9}, None),
    "same": (None, None),
}


def _writes(pkts: list, local: bool, batched: bool) -> int:
    co = Coalescer(local={bytes([198, 51, 100, 129])} if local else frozenset())
    if batched:
        co.add_all(pkts)
    else:
        for p in pkts:
            co.add(p)
    return len(co.flush())


@pytest.mark.parametrize("batched", [False, True], ids=["add", "add_all"])
@pytest.mark.parametrize("local", [False, True], ids=["forwarded", "this-host"])
@pytest.mark.parametrize("field", sorted(APART))
def test_a_segment_differing_in_a_gro_field_starts_its_own_run(field, local, batched):
    ipf, tcpf = APART[field]
    pkts = [_seg(0), _seg(1, ipf, tcpf), _seg(2)]
    assert _writes(pkts, local, batched) == 3
    # ... and the run the odd one started takes its own next segment.
    pkts = [_seg(0), _seg(1, ipf, tcpf), _seg(2, ipf, tcpf)]
    assert _writes(pkts, local, batched) == 2


@pytest.mark.parametrize("batched", [False, True], ids=["add", "add_all"])
@pytest.mark.parametrize("local", [False, True], ids=["forwarded", "this-host"])
@pytest.mark.parametrize("field", sorted(TOGETHER))
def test_segments_differing_only_in_id_and_checksums_join(field, local, batched):
    ipf, tcpf = TOGETHER[field]
    assert _writes([_seg(0), _seg(1, ipf, tcpf), _seg(2)], local, batched) == 1
