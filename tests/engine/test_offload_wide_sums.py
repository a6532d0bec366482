"""The wide payload sums of segmentation (engine.datapath.offload.chunk_sums: 32-bit little-endian
words for chunks of 4n bytes, 16-bit big-endian ones otherwise) at the edges a sum congruent modulo
0xFFFF could get wrong, against scapy: a segment whose checksum comes out 0x0000 (its words sum to
all ones; TCP sends 0x0000 there, as scapy and the kernel do), an all-zero payload, all-0xFF bytes."""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from engine.datapath import offload
from engine.datapath.offload import GSO_TCPV4, GSO_TCPV6, segment
from tests.engine.test_offload import _fresh, _super_tcp


def _segments(v6: bool, payload: bytes, mss: int) -> list:
    big, ihl = _super_tcp(v6, payload)
    return segment(bytes(big), GSO_TCPV6 if v6 else GSO_TCPV4, mss, ihl), ihl


@pytest.mark.parametrize("mss", [1448, 1446, 1200], ids=["4n", "4n+2", "4n-bis"])
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("fill", ["random", "zeros", "ones"])
def test_a_segment_whose_checksum_is_zero_matches_scapy(fill, v6, mss, monkeypatch):
    calls = []
    real = offload.chunk_sums
    monkeypatch.setattr(offload, "chunk_sums", lambda *a: calls.append(a) or real(*a))
    n = mss * 6 + 7
    payload = bytearray({"random": os.urandom(n), "zeros": bytes(n), "ones": b"\xff" * n}[fill])
    k = 2  # a full segment, summed by chunk_sums
    payload[k * mss:k * mss + 2] = bytes(2)
    segs, ihl = _segments(v6, bytes(payload), mss)
    c0 = int.from_bytes(segs[k][ihl + 16:ihl + 18], "big")
    # Adding the checksum to a zeroed word makes the segment's words sum to all ones: checksum 0x0000.
    payload[k * mss:k * mss + 2] = c0.to_bytes(2, "big")
    segs, ihl = _segments(v6, bytes(payload), mss)
    assert calls and len(segs) == 7
    assert segs[k][ihl + 16:ihl + 18] == b"\x00\x00"
    layer = IPv6 if v6 else IP
    for raw in segs:
        assert _fresh(layer(bytes(raw))) == bytes(raw)
