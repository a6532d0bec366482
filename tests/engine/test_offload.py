"""Segmentation (software TSO/USO), coalescing (GRO for the TUN write), IPv4
fragmentation and the ICMP "too big" answers of engine.datapath.offload,
with scapy as the independent oracle for every header and checksum."""

from __future__ import annotations

import os
import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, defragment
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6

from engine.datapath import offload
from engine.datapath.offload import (
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    NEEDS_CSUM,
    VNET,
    ZERO_HDR,
    Coalescer,
    OffloadError,
    complete_checksum,
    fragment_ipv4,
    segment,
    too_big,
)
from engine.esp import ip

A4, B4 = "198.51.100.1", "198.51.100.129"
A6, B6 = "2001:db8::1", "2001:db8::2"


def _fresh(pkt):
    """scapy's own rendering of a packet with every checksum and length recomputed."""
    clean = pkt.copy()
    for layer in (IP, TCP, UDP):
        if layer in clean:
            del clean[layer].chksum
            if layer in (IP, UDP):
                del clean[layer].len
    if IPv6 in clean:
        del clean[IPv6].plen
    return bytes(clean.__class__(bytes(clean)))


def _partial(pkt: bytearray, ihl: int, proto: int) -> None:
    """What the kernel hands over with CHECKSUM_PARTIAL: the folded pseudo-header sum only."""
    v4 = pkt[0] >> 4 == 4
    s = ip.pseudo_header_sum(bytes(pkt[12:16] if v4 else pkt[8:24]), bytes(pkt[16:20] if v4 else pkt[24:40]),
                             proto, len(pkt) - ihl)
    pos = ihl + (16 if proto == 6 else 6)
    pkt[pos:pos + 2] = offload.fold(s).to_bytes(2, "big")


def _super_tcp(v6: bool, payload: bytes, flags="PA", seq=1000, ident=77, tos=0, options=()):
    l3 = IPv6(src=A6, dst=B6, tc=tos) if v6 else IP(src=A4, dst=B4, id=ident, flags="DF", tos=tos)
    pkt = bytearray(bytes(l3 / TCP(sport=40000, dport=5201, seq=seq, ack=99, flags=flags, window=500,
                                   options=list(options)) / payload))
    ihl = 40 if v6 else 20
    _partial(pkt, ihl, 6)
    return pkt, ihl


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("flags", ["PA", "FPA", "A", "CA"])
def test_tcp_super_packet_becomes_valid_segments(v6, flags):
    payload = os.urandom(5000)
    big, ihl = _super_tcp(v6, payload, flags=flags, options=[("NOP", None), ("NOP", None), ("Timestamp", (5, 6))])
    segs = segment(bytes(big), GSO_TCPV6 if v6 else GSO_TCPV4, 1388, ihl)
    hlen = ihl + 32
    assert [len(s) - hlen for s in segs] == [1388, 1388, 1388, 836]
    layer = IPv6 if v6 else IP
    parsed = [layer(bytes(s)) for s in segs]
    assert b"".join(bytes(p[TCP].payload) for p in parsed) == payload
    assert [p[TCP].seq for p in parsed] == [1000, 2388, 3776, 5164]
    want = [flags.replace("F", "").replace("P", "")] * 3 + [flags]
    want[1:] = [w.replace("C", "") for w in want[1:]]  # CWR only on the first segment
    assert [str(p[TCP].flags) for p in parsed] == [str(TCP(flags=w).flags) for w in want]
    if not v6:
        assert [p[IP].id for p in parsed] == [77, 78, 79, 80]
        assert all(p[IP].flags == "DF" for p in parsed)
    for p, raw in zip(parsed, segs):
        assert _fresh(p) == bytes(raw)  # every length and checksum as scapy computes it


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_udp_super_packet_becomes_valid_datagrams(v6):
    payload = os.urandom(3000)
    l3 = IPv6(src=A6, dst=B6) if v6 else IP(src=A4, dst=B4, id=9)
    big = bytearray(bytes(l3 / UDP(sport=443, dport=50000) / payload))
    ihl = 40 if v6 else 20
    _partial(big, ihl, 17)
    segs = segment(bytes(big), GSO_UDP_L4, 1200, ihl)
    parsed = [(IPv6 if v6 else IP)(bytes(s)) for s in segs]
    assert [len(p[UDP].payload) for p in parsed] == [1200, 1200, 600]
    assert b"".join(bytes(p[UDP].payload) for p in parsed) == payload
    if not v6:
        assert [p[IP].id for p in parsed] == [9, 10, 11]
    for p, raw in zip(parsed, segs):
        assert _fresh(p) == bytes(raw)


def test_bad_offload_header_is_refused():
    big, ihl = _super_tcp(False, b"x" * 100)
    with pytest.raises(OffloadError):
        segment(bytes(big[:30]), GSO_TCPV4, 1000, 20)
    with pytest.raises(OffloadError):
        segment(bytes(big), 7, 1000, 20)
    with pytest.raises(OffloadError):
        segment(bytes(big), GSO_TCPV4, 0, 20)


def test_partial_checksum_completion():
    pkt = bytearray(bytes(IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / b"abcdefg"))
    good = bytes(pkt)
    _partial(pkt, 20, 17)
    complete_checksum(pkt, 20, 6)
    assert bytes(pkt) == good


def _segments(v6=False, n=5, size=1000, first_seq=1, flags_last="PA", ack=99):
    data = os.urandom(size * n)
    layer = (lambda i: IPv6(src=A6, dst=B6)) if v6 else (lambda i: IP(src=A4, dst=B4, flags="DF", id=300 + i))
    out = []
    for i in range(n):
        out.append(bytes(layer(i) / TCP(sport=5201, dport=40000, seq=first_seq + i * size, ack=ack, window=700,
                                       flags=flags_last if i == n - 1 else "A") / data[i * size:(i + 1) * size]))
    return out, data


def _written(co: Coalescer):
    """What would be written to the TUN device: (vnet header fields, packet bytes) per write."""
    return [(VNET.unpack(w[0]), b"".join(bytes(b) for b in w[1:])) for w in co.flush()]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_consecutive_segments_become_one_super_packet(v6):
    segs, data = _segments(v6)
    co = Coalescer()
    for s in segs:
        co.add(s)
    [(hdr, pkt)] = _written(co)
    flags, gso, hlen, size, cstart, coff = hdr
    ihl = 40 if v6 else 20
    assert (flags, gso, hlen, size, cstart, coff) == (NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, ihl + 20,
                                                       1000, ihl, 16)
    # Cut again as the kernel would, the super-packet gives back exactly the segments.
    assert [bytes(s) for s in segment(pkt, gso, size, ihl)] == segs
    full = bytearray(pkt)
    complete_checksum(full, ihl, 16)
    p = (IPv6 if v6 else IP)(bytes(full))
    assert bytes(p[TCP].payload) == data and str(p[TCP].flags) == "PA"
    assert _fresh(p) == bytes(full)


def test_what_may_not_be_joined_stays_apart_and_in_order():
    segs, _ = _segments(n=3)
    gap, _ = _segments(n=1, first_seq=10_000)
    other_ack, _ = _segments(n=1, first_seq=3001, ack=12345)
    syn = bytes(IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="S"))
    pure_ack = bytes(IP(src=A4, dst=B4) / TCP(sport=5201, dport=40000, flags="A", seq=1, ack=99))
    bad = bytearray(segs[1])
    bad[-1] ^= 1  # corrupted payload: its checksum fails
    co = Coalescer()
    for p in (segs[0], syn, bytes(bad), segs[2], gap[0], other_ack[0], pure_ack):
        co.add(p)
    out = _written(co)
    assert [hdr[1] for hdr, _ in out] == [0] * 7  # nothing joined (no two consecutive good segments)
    assert [pkt for _, pkt in out] == [segs[0], syn, bytes(bad), segs[2], gap[0], other_ack[0], pure_ack]


def test_psh_and_a_short_segment_end_a_run():
    a, _ = _segments(n=2, flags_last="PA")
    b, _ = _segments(n=2, first_seq=2001)
    co = Coalescer()
    for p in a + b:
        co.add(p)
    out = _written(co)
    assert [(hdr[1], len(pkt)) for hdr, pkt in out] == [(GSO_TCPV4, 40 + 2000), (GSO_TCPV4, 40 + 2000)]
    short, _ = _segments(n=1, size=500, first_seq=1001, flags_last="A")
    co.add(_segments(n=1, size=1000, flags_last="A")[0][0])
    co.add(short[0])  # 500 after 1000: allowed, but ends the run
    co.add(_segments(n=1, size=1000, first_seq=1501)[0][0])
    out = _written(co)
    assert [(hdr[1], len(pkt) - 40) for hdr, pkt in out] == [(GSO_TCPV4, 1500), (0, 1000)]


def test_udp_datagrams_are_joined_only_when_the_device_takes_them():
    dgrams = [bytes(IP(src=A4, dst=B4, flags="DF", id=50 + i) / UDP(sport=443, dport=5000) / os.urandom(1200))
              for i in range(3)]
    co = Coalescer()
    for d in dgrams:
        co.add(d)
    assert [hdr[1] for hdr, _ in _written(co)] == [0, 0, 0]
    co = Coalescer(udp=True)
    for d in dgrams:
        co.add(d)
    [(hdr, pkt)] = _written(co)
    assert hdr[1] == GSO_UDP_L4 and [bytes(s) for s in segment(pkt, GSO_UDP_L4, hdr[3], 20)] == dgrams


def test_ipv4_fragments_reassemble_to_the_packet():
    pkt = bytes(IP(src=A4, dst=B4, id=4242) / UDP(sport=1, dport=2) / os.urandom(3000))
    frags = fragment_ipv4(pkt, 1236)
    assert all(len(f) <= 1236 for f in frags) and len(frags) == 3
    for f in frags:
        header = IP(bytes(f))
        del header.chksum, header.len  # the IP header only: a fragment's UDP header is not its own
        assert bytes(IP(bytes(header)))[:20] == bytes(f)[:20]
    [whole] = defragment([IP(bytes(f)) for f in frags])
    assert bytes(whole) == pkt


def test_too_big_answers_like_a_router():
    pkt = bytes(IP(src=A4, dst=B4, flags="DF") / TCP(sport=40000, dport=5201, seq=7) / (b"x" * 1360))
    icmp = IP(too_big(pkt, 1236))
    assert (icmp.src, icmp.dst, icmp[ICMP].type, icmp[ICMP].code, icmp[ICMP].nexthopmtu) == (B4, A4, 3, 4, 1236)
    assert icmp[IPerror].src == A4 and icmp[TCPerror].seq == 7
    assert _fresh(icmp) == bytes(icmp)
    assert too_big(bytes(icmp), 1000) is None  # never an error about an error
    p6 = bytes(IPv6(src=A6, dst=B6) / TCP(sport=1, dport=2) / (b"y" * 1400))
    e6 = IPv6(too_big(p6, 1300))
    assert (e6.src, e6.dst, e6[ICMPv6PacketTooBig].mtu) == (B6, A6, 1300)
    raw = bytes(e6)
    del e6[ICMPv6PacketTooBig].cksum
    assert bytes(IPv6(bytes(e6))) == raw
    assert len(raw) <= 1280


def test_zero_header_is_ten_zero_bytes():
    assert ZERO_HDR == bytes(10) and VNET.size == 10


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("size", [1000, 999], ids=["even", "odd"])
def test_super_packet_for_this_host_carries_the_whole_checksum(v6, size):
    segs, data = _segments(v6, size=size)
    here = bytes.fromhex("20010db8000000000000000000000002" if v6 else "c6336481")  # the destination
    co = Coalescer(local={here})
    for s in segs:
        co.add(s)
    [(hdr, pkt)] = _written(co)
    flags, gso, hlen, gso_size, cstart, coff = hdr
    assert (flags, gso, gso_size) == (0, GSO_TCPV6 if v6 else GSO_TCPV4, size)  # no NEEDS_CSUM: the kernel checks
    p = (IPv6 if v6 else IP)(pkt)
    assert bytes(p[TCP].payload) == data and _fresh(p) == pkt  # one valid TCP packet as a whole
    bad = bytearray(segs[2])
    bad[-3] ^= 0x40  # damaged inside the tunnel's source network: its checksum no longer matches
    co.add(segs[0])
    co.add(segs[1])
    co.add(bytes(bad))
    [(hdr, pkt)] = _written(co)
    assert _fresh((IPv6 if v6 else IP)(pkt)) != pkt  # the whole is refused by the kernel's check


# ------------------------------------------------------------------ wide segment sums (numpy)

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _word_sum(data: bytes) -> int:
    """Reference: the 16-bit big-endian words, added one by one (RFC 1071)."""
    return sum((data[i] << 8) | (data[i + 1] if i + 1 < len(data) else 0) for i in range(0, len(data), 2))


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 800), count=st.integers(1, 50), start=st.integers(0, 60), extra=st.integers(0, 30),
       fill=st.sampled_from(["random", "ones", "zeros"]), seed=st.integers(0, 2**32))
def test_chunk_sums_are_the_word_sums_of_each_chunk(size, count, start, extra, fill, seed):
    # The packet is made from a seed, not drawn byte by byte: up to 80 KB would overrun
    # hypothesis's buffer. All-ones chunks are the worst case for the lanes' width.
    size *= 2
    n = start + size * count + extra
    pkt = {"random": random.Random(seed).randbytes(n), "ones": b"\xff" * n, "zeros": bytes(n)}[fill]
    got = offload.chunk_sums(pkt, start, size, count)
    # Congruent modulo 0xFFFF (all a one's-complement checksum keeps); chunks of 4n bytes are summed
    # as little-endian 32-bit words, the others as big-endian 16-bit ones.
    assert [g % 0xFFFF for g in got] == [_word_sum(pkt[start + k * size:start + (k + 1) * size]) % 0xFFFF
                                         for k in range(count)]


@settings(max_examples=80, deadline=None)
@given(v6=st.booleans(), length=st.integers(1, 30000), mss=st.integers(88, 1460),
       timestamps=st.booleans(), seed=st.binary(min_size=8, max_size=8))
def test_every_segment_checksum_verifies_whatever_the_sizes(v6, length, mss, timestamps, seed):
    # Sizes that take the wide (numpy) sums and the per-segment big-int path alike, odd MSS and odd
    # last segments included: each segment's TCP checksum must verify as RFC 1071 computes it.
    payload = (seed * (length // 8 + 1))[:length]
    opts = [("NOP", None), ("NOP", None), ("Timestamp", (5, 6))] if timestamps else []
    big, ihl = _super_tcp(v6, payload, options=opts)
    segs = segment(bytes(big), GSO_TCPV6 if v6 else GSO_TCPV4, mss, ihl)
    thl = 32 if timestamps else 20
    assert b"".join(bytes(s[ihl + thl:]) for s in segs) == payload
    for s in segs:
        src, dst = (bytes(s[8:24]), bytes(s[24:40])) if v6 else (bytes(s[12:16]), bytes(s[16:20]))
        assert ip.checksum(memoryview(s)[ihl:], ip.pseudo_header_sum(src, dst, 6, len(s) - ihl)) == 0
        if not v6:
            assert ip.checksum(memoryview(s)[:20]) == 0


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_long_super_packet_takes_the_wide_sums_and_matches_scapy(v6, monkeypatch):
    calls = []
    real = offload.chunk_sums
    monkeypatch.setattr(offload, "chunk_sums", lambda *a: calls.append(a) or real(*a))
    payload = os.urandom(60001)
    big, ihl = _super_tcp(v6, payload)
    segs = segment(bytes(big), GSO_TCPV6 if v6 else GSO_TCPV4, 1448, ihl)
    assert calls and len(segs) == 42
    layer = IPv6 if v6 else IP
    for raw in segs:
        assert _fresh(layer(bytes(raw))) == bytes(raw)


def test_chunk_sums_hold_the_largest_chunk_without_overflow():
    size = 65534  # the largest even chunk of an IP packet, every word 0xFFFF
    assert offload.chunk_sums(b"\xff" * (size * 2), 0, size, 2) == [size // 2 * 0xFFFF] * 2
    size = 65532  # the largest in 32-bit words; 0xFF bytes, and a 0x01 byte after each 0xFF for a nonzero sum
    for data in (b"\xff" * (size * 2), b"\xff\x01" * size):
        got = offload.chunk_sums(data, 0, size, 2)
        assert [g % 0xFFFF for g in got] == [_word_sum(data[:size]) % 0xFFFF] * 2


# ------------------------------------------------------------------ add_all (a receive batch)


def _mixed_inner_batch(rng):
    """Decrypted packets as a receive batch brings them: runs of two flows, odd and short segments,
    PSH, gaps, another ACK, control segments, a damaged one, UDP, IPv6, runts, TCP options, IP options."""
    a, _ = _segments(n=6, size=1001, flags_last="A")
    b = [bytes(IP(src="198.51.100.7", dst=B4, flags="DF", id=i)
               / TCP(sport=5201, dport=40000, seq=50_000 + 1000 * i, ack=99, window=700, flags="PA" if i == 3 else "A")
               / os.urandom(1000)) for i in range(4)]
    v6, _ = _segments(v6=True, n=3)
    bad = bytearray(a[3])
    bad[-2] ^= 0x10
    short, _ = _segments(n=1, size=300, first_seq=1 + 6 * 1001, flags_last="A")
    opts = bytes(IP(src=A4, dst=B4) / TCP(sport=5201, dport=40000, seq=9, flags="A",
                                          options=[("Timestamp", (1, 2))]) / (b"z" * 500))
    ipopt = bytes(IP(src=A4, dst=B4, options=[b"\x01\x01\x01\x00"]) / TCP(sport=5201, dport=40000) / (b"q" * 99))
    runt = bytearray(30)
    runt[0], runt[3], runt[9] = 0x45, 30, 6
    runt6 = bytearray(50)
    runt6[0], runt6[5], runt6[6] = 0x60, 10, 6
    syn = bytes(IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="S"))
    udp = bytes(IP(src=A4, dst=B4) / UDP(sport=443, dport=5000) / (b"u" * 700))
    pieces = [a[0], a[1], b[0], a[2], b[1], bytes(bad), a[4], v6[0], v6[1], syn, a[5], short[0], b[2], b[3],
              opts, ipopt, bytes(runt), bytes(runt6), udp, v6[2], b"\x45\x00"]
    out = [bytes(p) for p in pieces]
    k = rng.randrange(len(out))
    return out[k:] + out[:k] if rng.random() < 0.5 else out


@pytest.mark.parametrize("local", [False, True], ids=["forwarded", "this-host"])
@pytest.mark.parametrize("seed", range(6))
def test_add_all_writes_what_add_one_by_one_writes(local, seed):
    rng = random.Random(seed)
    here = {bytes([198, 51, 100, 129]), bytes.fromhex("20010db8000000000000000000000002")} if local else frozenset()
    batch = _mixed_inner_batch(rng)
    one, many = Coalescer(local=here, udp=bool(seed & 1)), Coalescer(local=here, udp=bool(seed & 1))
    for p in batch:
        one.add(p)
    cut = rng.randrange(len(batch))
    many.add_all(batch[:cut])
    many.add_all(batch[cut:])  # two receive batches before one flush
    assert _written(many) == _written(one)
    assert many.merged == one.merged and one.merged > 0
    # More segments than one super-packet takes, and more than 64 KB: the same splits.
    long, _ = _segments(n=70, size=1300, flags_last="A")
    for p in long:
        one.add(p)
    many.add_all(long)
    assert _written(many) == _written(one)


def test_a_tcp_packet_shorter_than_its_header_is_written_as_it_is():
    # An inner IPv4/IPv6 packet whose protocol says TCP but that ends inside the TCP header (an
    # authentic peer can send it): out as it is, for the kernel to drop; no exception.
    runt = bytearray(30)
    runt[0], runt[3], runt[9] = 0x45, 30, 6
    runt6 = bytearray(50)
    runt6[0], runt6[5], runt6[6] = 0x60, 10, 6
    co = Coalescer()
    co.add(bytes(runt))
    co.add(bytes(runt6))
    assert [pkt for _, pkt in _written(co)] == [bytes(runt), bytes(runt6)]
