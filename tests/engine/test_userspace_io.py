"""The userspace datapath's packet loops without a TUN device: a SOCK_SEQPACKET
socket pair stands in for it (one read or write = one packet, with its
virtio_net_hdr), real SAs on both ends (engine.datapath.userspace_path), scapy
as the oracle. Super-packets become standard ESP packets; packets too big
for the path get fragmented (no DF) or an ICMP "too big" (DF); a refused
send teaches the path MTU; decrypted segments are written back joined."""

from __future__ import annotations

import errno
import os
import select
import socket

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, defragment

from engine.datapath import pmtu
from engine.datapath.offload import GSO_TCPV4, NEEDS_CSUM, VNET, ZERO_HDR, fold
from engine.datapath.userspace import UserspaceDatapath
from engine.datapath.userspace_io import RawReader, TunIO, UdpSender
from engine.esp import ip
from tests.engine.test_lab_packet_path import Link

A, B = "198.51.100.1", "198.51.100.65"


class _Sender:
    def __init__(self):
        self.sent = []
        self.pairs = set()
        self.dest = ("127.0.0.2", 4500)

    def add(self, data):
        self.sent.append(bytes(data))

    def add_all(self, datas):
        self.sent.extend(bytes(d) for d in datas)

    def flush(self):
        pass


class _Runtime:
    def now(self):
        return 1.0

    def datapath_event(self, ev):
        pass


class _Dp:
    """What TunIO needs of a UserspaceDatapath."""

    def __init__(self, path):
        self.path = path
        self.runtime = _Runtime()
        self.loop = None
        self.learned = []

    def flush_events(self):
        self.path.drain()

    def learn_pmtu(self, sender):
        self.learned.append(sender)
        return True


@pytest.fixture
def tun():
    """(TunIO on one end of the pair, the other end: the kernel's side of the device, the link, a's pair)."""
    kernel, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    kernel.settimeout(2)
    link = Link()
    pa, _pb = link.install(0xA1, 0xB1)
    pa.sender = _Sender()
    io = TunIO(_Dp(link.a), ours.fileno(), vnet=True, udp_gro=False, local={bytes([198, 51, 100, 1])})
    yield io, kernel, link, pa
    kernel.close()
    ours.close()


def _hand_over(kernel, pkt: bytes, hdr: bytes = ZERO_HDR) -> None:
    kernel.send(hdr + pkt)


def _partial(pkt: bytearray) -> bytearray:
    s = ip.pseudo_header_sum(bytes(pkt[12:16]), bytes(pkt[16:20]), 6, len(pkt) - 20)
    pkt[36:38] = fold(s).to_bytes(2, "big")
    return pkt


def _opened(link, pa):
    """The inner packets of what a sent, as b decrypts them."""
    return [link.b.input(w, 1.0) for w in pa.sender.sent]


def test_tcp_super_packet_leaves_as_standard_esp_packets(tun):
    io, kernel, link, pa = tun
    payload = os.urandom(9000)
    big = _partial(bytearray(bytes(IP(src=A, dst=B, flags="DF", id=5) / TCP(sport=4000, dport=80, flags="PA", seq=10)
                                   / payload)))
    _hand_over(kernel, bytes(big), VNET.pack(NEEDS_CSUM, GSO_TCPV4, 40, 1360, 20, 16))
    io.readable()
    inner = [IP(p) for p in _opened(link, pa)]
    assert [len(p) for p in inner] == [1400] * 6 + [40 + 9000 - 6 * 1360]
    assert all(len(w) <= 1400 + 8 + 8 + 2 + 16 + 3 for w in pa.sender.sent)  # one standard packet per ESP packet
    assert b"".join(bytes(p[TCP].payload) for p in inner) == payload
    for p in inner:
        clean = p.copy()
        del clean[TCP].chksum, clean[IP].chksum
        assert bytes(IP(bytes(clean))) == bytes(p)  # checksums as scapy computes them
    assert io.segmented == 1


def test_super_packet_crossing_a_sample_mark_takes_the_per_packet_path(tun):
    # The segments of one super-packet are sealed in one call (EspOutboundSa.protect_all) unless a
    # threshold falls inside the batch: then each goes through protect(), which samples (or rekeys)
    # at the exact packet. Both ways, every segment leaves in order with consecutive numbers.
    io, kernel, link, pa = tun
    pa.outbound.set_sampling(10)
    events = []
    io.dp.flush_events = lambda: events.extend(link.a.drain())
    sent = []
    for seq0 in (10, 10 + 9000):
        payload = os.urandom(9000)
        big = _partial(bytearray(bytes(IP(src=A, dst=B, flags="DF") / TCP(sport=4000, dport=80, flags="A", seq=seq0)
                                       / payload)))
        _hand_over(kernel, bytes(big), VNET.pack(NEEDS_CSUM, GSO_TCPV4, 40, 1360, 20, 16))
        io.readable()
        sent.append(payload)
    samples = [e.seq for e in events if getattr(e, "direction", "") == "out"]
    assert samples == [10]  # the 10th of 14 packets: the second batch took the per-packet path
    assert [int.from_bytes(w[4:8], "big") for w in pa.sender.sent] == list(range(1, 15))
    inner = [IP(p) for p in _opened(link, pa)]
    assert b"".join(bytes(p[TCP].payload) for p in inner) == b"".join(sent)


def test_partial_checksum_of_a_small_packet_is_completed(tun):
    io, kernel, link, pa = tun
    good = bytes(IP(src=A, dst=B) / TCP(sport=1, dport=2, flags="A") / b"hello")
    _hand_over(kernel, bytes(_partial(bytearray(good))), VNET.pack(NEEDS_CSUM, 0, 0, 0, 20, 16))
    io.readable()
    assert _opened(link, pa) == [good]


def test_too_big_with_df_gets_icmp_without_df_gets_fragmented(tun):
    io, kernel, link, pa = tun
    pa.max_inner = 800
    df = bytes(IP(src=A, dst=B, flags="DF") / UDP(sport=5, dport=6) / os.urandom(1372))
    _hand_over(kernel, df)
    io.readable()
    assert pa.sender.sent == []
    answer = kernel.recv(70000)
    assert answer[:10] == ZERO_HDR
    icmp = IP(answer[10:])
    assert (icmp.src, icmp.dst, icmp[ICMP].type, icmp[ICMP].code, icmp[ICMP].nexthopmtu) == (B, A, 3, 4, 800)
    assert bytes(icmp[IPerror])[:20] == df[:20]
    free = bytes(IP(src=A, dst=B, id=77) / UDP(sport=5, dport=6) / os.urandom(1372))
    _hand_over(kernel, free)
    io.readable()
    frags = _opened(link, pa)
    assert len(frags) == 2 and all(len(f) <= 800 for f in frags)
    [whole] = defragment([IP(f) for f in frags])
    assert bytes(whole) == free


def test_super_packet_above_the_path_mtu(tun):
    io, kernel, link, pa = tun
    pa.max_inner = 1000
    payload = os.urandom(4000)
    big = _partial(bytearray(bytes(IP(src=A, dst=B, flags="DF") / TCP(sport=4000, dport=80, flags="A") / payload)))
    _hand_over(kernel, bytes(big), VNET.pack(NEEDS_CSUM, GSO_TCPV4, 40, 1360, 20, 16))
    io.readable()
    assert pa.sender.sent == []  # DF: the sender is told to send smaller
    assert IP(kernel.recv(70000)[10:])[ICMP].nexthopmtu == 1000
    big[6] = 0  # no DF: cut to what fits instead
    big[10:12] = ip.checksum(bytes(big[:10]) + b"\0\0" + bytes(big[12:20])).to_bytes(2, "big")
    _hand_over(kernel, bytes(big), VNET.pack(NEEDS_CSUM, GSO_TCPV4, 40, 1360, 20, 16))
    io.readable()
    inner = [IP(p) for p in _opened(link, pa)]
    assert max(len(p) for p in inner) == 1000
    assert b"".join(bytes(p[TCP].payload) for p in inner) == payload


def test_icmp_answers_are_rate_limited(tun):
    io, kernel, link, pa = tun
    pa.max_inner = 600
    answers = 0
    for _ in range(120):
        _hand_over(kernel, bytes(IP(src=A, dst=B, flags="DF") / UDP(sport=5, dport=6) / bytes(700)))
        io.readable()
        while select.select([kernel], [], [], 0)[0]:
            kernel.recv(70000)
            answers += 1
    assert io.too_big == answers == 50  # the burst; then at most ICMP_RATE a second (the clock stands still here)
    assert link.a.counters()[1]["too_big"] == 120


def test_decrypted_segments_are_written_joined(tun):
    io, kernel, link, pa = tun
    for i in range(4):
        seg = bytes(IP(src=B, dst=A, flags="DF", id=i) / TCP(sport=80, dport=4000, seq=1 + 1000 * i, ack=5, flags="A")
                    / os.urandom(1000))
        io.co.add(seg)
    io.flush_inbound()
    got = kernel.recv(70000)
    flags, gso, hlen, size, _cs, _co = VNET.unpack(got[:10])
    assert (gso, size, len(got) - 10) == (GSO_TCPV4, 1000, 40 + 4000)
    assert flags == 0  # for this host: the kernel verifies the whole super-packet's checksum


class _Refusing(socket.socket):
    """A UDP socket whose sends fail as the kernel's do when the path is smaller."""

    def __init__(self, errno_):
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.errno_ = errno_
        self.calls = 0

    def sendto(self, *a):
        self.calls += 1
        raise OSError(self.errno_, os.strerror(self.errno_))

    def sendmsg(self, *a):
        self.calls += 1
        raise OSError(self.errno_, os.strerror(self.errno_))


@pytest.mark.parametrize("code", [errno.EMSGSIZE, errno.EINVAL])
def test_a_refused_send_teaches_the_path_mtu(tun, code):
    io, _kernel, link, _pa = tun
    with _Refusing(code) as sock:
        sender = UdpSender(io, sock, ("127.0.0.2", 4500))
        for _ in range(3):
            sender.add(bytes(1400))
        sender.flush()
        assert io.dp.learned == [sender]
        assert link.a.send_failed == 3


def test_inner_limit_fits_the_path():
    link = Link()
    pa, _ = link.install(0xA1, 0xB1)
    for mtu in (1500, 1300, 1280):
        n = pmtu.inner_limit(mtu, pa.outbound, True)
        wire = pa.outbound.protect(bytes(IP(src=A, dst=B) / UDP() / bytes(n - 28)), 1.0)
        assert 20 + 8 + len(wire) <= mtu  # outer IP + UDP + ESP
        wire = pa.outbound.protect(bytes(IP(src=A, dst=B) / UDP() / bytes(n + 4 - 28)), 1.0)
        assert 20 + 8 + len(wire) > mtu  # and it is the largest that fits (to the alignment)


class _Delivered:
    def __init__(self):
        self.batches = []

    def deliver_all(self, inners):
        self.batches.append(list(inners))


def _mixed_esp():
    """A link with two SA pairs, the inner segments, and a's ESP packets to b as one receive batch:
    two SAs' packets interleaved, an unknown SPI, a replay, a forgery (None: where a non-ESP datagram
    goes) and the rest; and what b must deliver, in order."""
    link = Link()
    p1, _ = link.install(0xA1, 0xB1)
    p2, _ = link.install(0xA2, 0xB2)
    segs = [bytes(IP(src=A, dst=B) / TCP(sport=4000 + i, dport=80, flags="A") / os.urandom(100)) for i in range(8)]
    w = [p1.outbound.protect(s, 1.0) if i % 2 == 0 else p2.outbound.protect(s, 1.0) for i, s in enumerate(segs)]
    forged = bytearray(w[3])
    forged[-1] ^= 1
    unknown = b"\x00\x00\x0b\x0b" + w[4][4:]
    order = [w[0], w[2], w[1], w[4], unknown, w[2], bytes(forged), w[3], None, w[5], w[6], w[7]]
    return link, order, [segs[0], segs[2], segs[1], segs[4], segs[3], segs[5], segs[6], segs[7]], w[6]


def _views(grams):
    """The datagrams as memoryviews into one buffer, as a batch read's slots."""
    buf = bytearray(b"".join(grams))
    views, at = [], 0
    for g in grams:
        views.append(memoryview(buf)[at:at + len(g)])
        at += len(g)
    return views


def _check_counters(path, path_drops):
    by_spi = {(c.spi, c.direction): c for c in path.counters()[0]}
    assert by_spi[(0xB1, "in")].packets == 4 and dict(by_spi[(0xB1, "in")].drops) == {"replay": 1}
    assert by_spi[(0xB2, "in")].packets == 4 and dict(by_spi[(0xB2, "in")].drops) == {"icv": 1}
    assert path.counters()[1] == path_drops


def test_raw_reader_opens_mixed_spis_in_arrival_order_with_every_drop_counted():
    # One recvmmsg batch with an AH datagram and a runt too: runs of one SPI are opened together,
    # everything comes out in arrival order, each drop under its reason.
    link, order, want, some = _mixed_esp()
    ah = bytes(IP(src="127.0.0.1", dst="127.0.0.2", proto=51) / some)
    grams = [ah if x is None else bytes(IP(src="127.0.0.1", dst="127.0.0.2", proto=50) / x) for x in order]
    grams.append(b"\x45\x00\x00")
    dp = _Dp(link.b)
    dp.io = _Delivered()
    reader = RawReader.__new__(RawReader)
    reader.dp, reader.sock, reader.v4, reader.batch = dp, None, True, None
    reader._handle(_views(grams), 1.0)
    assert dp.io.batches == [want]
    _check_counters(link.b, {"no_sa": 2, "malformed": 1})


def test_udp_batch_opens_mixed_spis_in_arrival_order_with_every_drop_counted():
    # The same through UserspaceDatapath.receive_esp_batch (ESP-in-UDP payloads, one GRO read), with
    # a runt in place of the AH datagram.
    link, order, want, _ = _mixed_esp()
    grams = [b"\x00\x00\x00" if x is None else x for x in order]
    dp = _Dp(link.b)
    dp.io = _Delivered()
    UserspaceDatapath.receive_esp_batch(dp, _views(grams), None, None)
    assert dp.io.batches == [want]
    _check_counters(link.b, {"no_sa": 1, "malformed": 1})
