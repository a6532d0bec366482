"""Review of the outbound fragment steering (engine.datapath.fragsteer): fragments that waited for
their first fragment get the same per-SA inner-size check (path MTU) as every packet of the TUN
read loop."""

from __future__ import annotations

import socket

from tests.engine.test_userspace_fragment_steering import _Dp, _frags, _opened, _path, _Sender


def test_fragments_released_by_their_first_are_sized_to_the_path_mtu():
    # main: the two that came before their first left whole (1400 bytes) past the 800-byte limit:
    # the kernel refuses such an ESP packet (DF) and they were lost.
    from engine.datapath.userspace_io import TunIO

    path, wire, sas = _path()
    for pair in path.pairs.values():
        pair.sender = _Sender(wire)
        pair.max_inner = 800
    kernel, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        ours.setblocking(False)
        io = TunIO(_Dp(path), ours.fileno(), vnet=False, udp_gro=False)
        frags = _frags()
        for f in reversed(frags):
            kernel.send(f)
        io.readable()
        got = [_opened(sas, w) for w in wire]
        assert {spi for spi, _ in got} == {0xB1}
        assert max(len(inner) for _, inner in got) <= 800
        # The pieces still make the datagram: offsets follow on, the last alone without MF.
        pieces = sorted(((p[6] & 0x1F) << 8 | p[7], p) for _, p in got)
        at = 0
        for off, p in pieces:
            assert off * 8 == at
            at += len(p) - 20
        assert at == 8 + 3000 and [p[6] & 0x20 for _, p in pieces].count(0) == 1
    finally:
        kernel.close()
        ours.close()


def test_packets_of_a_portless_protocol_share_one_flow_cache_entry():
    # main: the flow key held the first 4 payload bytes of every protocol; for IP-in-IP (the inner
    # header's version, TOS and length) or OSPF they differ per packet, so one flow took a cache
    # entry (and a full SPD decision) per packet size.
    from scapy.all import IP, IPv6, Raw, raw

    from tests.engine.test_userspace_fragment_steering import A, A6, B, B6

    for v6 in (False, True):
        path, wire, _sas = _path(v6=v6)
        for n in range(50):
            inner = raw(IP(src="203.0.113.1", dst="203.0.113.2") / Raw(b"x" * n))
            outer = IPv6(src=A6, dst=B6, nh=4) if v6 else IP(src=A, dst=B, proto=4)
            path.output(raw(outer / Raw(inner)), 1.0)
        # One decision for all (no_sa for IPv4: the policy's child, whose SA takes udp/5000 only).
        assert len(path.flows) == 1 and len(wire) + path.counters()[1].get("no_sa", 0) == 50


def test_a_short_packet_claiming_to_be_a_fragment_is_malformed_not_an_exception():
    # main: IndexError out of SaPath.output (the fragment path read the protocol byte of an 8-byte
    # packet whose flags say MF). The TUN loop skips packets under 20 bytes; the lab and direct
    # callers do not.
    for v6 in (False, True):
        path, wire, _sas = _path(v6=v6)
        for n in range(1, 20):
            pkt = bytes([0x45, 0, 0, n, 0, 1, 0x20, 0] + [0] * 12)[:n]
            assert not path.output(pkt, 1.0)
        assert wire == [] and path.counters()[1] == {"malformed": 19}
