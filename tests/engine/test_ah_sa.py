"""AH SA behaviour: what routers may change en route still verifies, anything
else is dropped; replay, ESN, selectors, lifetimes."""

from __future__ import annotations

import os

import pytest
from scapy.all import ICMP, IP, TCP, UDP, IPv6, Raw, raw
from scapy.layers.inet import IPOption_RR
from scapy.layers.inet6 import HBHOptUnknown, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting

from engine.crypto.integ import Integ, integ_key_size
from engine.crypto.transforms import IntegId
from engine.esp import AhInboundSa, AhOutboundSa, EspDrop, Lifetime, SaExpired
from engine.esp import ip as ipmod
from engine.policy.ts import parse_ts

SPI = 0xAB0001
A4, B4, A6, B6 = "192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"


def pair(version=4, mode="transport", integ=IntegId.HMAC_SHA2_256_128, **kw):
    key = os.urandom(integ_key_size(integ))
    a, b = (A4, B4) if version == 4 else (A6, B6)
    in_kw = {k: kw.pop(k) for k in ("replay_window",) if k in kw}
    lts, rts = kw.pop("local_ts", ()), kw.pop("remote_ts", ())
    out = AhOutboundSa(SPI, integ=Integ(integ, key), local_addr=a, remote_addr=b, mode=mode,
                       local_ts=lts, remote_ts=rts, **kw)
    inb = AhInboundSa(SPI, integ=Integ(integ, key), local_addr=b, remote_addr=a, mode=mode,
                      local_ts=rts, remote_ts=lts, **kw, **in_kw)
    return out, inb


def reason(inb, data) -> str:
    with pytest.raises(EspDrop) as exc:
        inb.unprotect(data, 0.0)
    return exc.value.reason


def v4_transport_packet() -> bytes:
    return raw(IP(src=A4, dst=B4, tos=0x28, ttl=30, options=[IPOption_RR(routers=["0.0.0.0"] * 2)])
               / TCP(sport=1000, dport=22) / Raw(b"payload"))


def test_ipv4_mutable_fields_may_change_en_route():
    out, inb = pair()
    pkt = v4_transport_packet()
    wire = bytearray(out.protect(pkt, 0.0))
    ihl = (wire[0] & 15) * 4
    assert ihl == 32 and wire[9] == 51 and ipmod.checksum(wire[:ihl]) == 0
    # A router: TTL down, DSCP/ECN rewritten, DF set, a record-route slot filled, checksum redone.
    wire[8] -= 3
    wire[1] = 0xB8 | 0x01
    wire[6] |= 0x40
    wire[20 + 3:20 + 7] = bytes([192, 0, 2, 99])
    wire[10:12] = b"\0\0"
    wire[10:12] = ipmod.checksum(wire[:ihl]).to_bytes(2, "big")
    inner = inb.unprotect(bytes(wire), 0.0)
    assert IP(inner)[TCP].dport == 22 and IP(inner).proto == 6 and IP(inner).ttl == 27
    assert ipmod.checksum(inner[:ihl]) == 0 and ipmod.packet_length(inner) == len(pkt)


def test_ipv4_immutable_bits_are_all_covered():
    out, inb = pair()
    out.start_at(0x1233)
    wire = out.protect(v4_transport_packet(), 0.0)
    ihl = 32
    mutable = {1, 6, 7, 8, 10, 11} | set(range(20, 20 + 11))  # TOS, flags/frag, TTL, checksum, RR option
    for byte in range(len(wire)):
        if byte in mutable:
            continue
        for bit in range(8):
            data = bytearray(wire)
            data[byte] ^= 1 << bit
            r = reason(inb, bytes(data))
            if ihl <= byte < ihl + 4 or byte >= ihl + 12 or byte in (12, 13, 14, 15, 16, 17, 18, 19, 4, 5):
                # AH next header/length, ICV, payload, addresses, IP id: signed -> ICV failure
                # (or an AH length that no longer fits).
                assert r in ("icv", "malformed"), (byte, bit, r)
            else:
                assert r != "replay", (byte, bit)
    assert inb.packets == 0 and inb.window.top == 0
    assert inb.unprotect(wire, 0.0) is not None


def test_ipv6_mutable_fields_and_options():
    out, inb = pair(version=6)
    pkt = raw(IPv6(src=A6, dst=B6, tc=0x10, fl=0xABCDE, hlim=40)
              / IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0x3E, optdata=b"abcd"),
                                            HBHOptUnknown(otype=0x1E, optdata=b"fixd")])
              / UDP(dport=53) / Raw(b"query"))
    wire = bytearray(out.protect(pkt, 0.0))
    assert wire[40] == 51  # AH after the hop-by-hop header
    changed = bytearray(wire)
    changed[1:4] = b"\xff\xff\xff"  # traffic class and flow label
    changed[7] = 1                 # hop limit
    changed[44:48] = b"WXYZ"        # data of option 0x3e (may change en route)
    assert inb.unprotect(bytes(changed), 0.0)[48:] == pkt[48:]
    fixed = bytearray(out.protect(pkt, 0.0))
    fixed[50:54] = b"ZZZZ"          # data of option 0x1e (must not change)
    assert reason(inb, bytes(fixed)) == "icv"


def test_routing_header_in_transit_is_refused_on_send():
    out, _ = pair(version=6)
    pkt = raw(IPv6(src=A6, dst=B6) / IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=1) / UDP() / Raw(b"x"))
    with pytest.raises(ValueError, match="routing header"):
        out.protect(pkt, 0.0)
    assert out.seq == 0


@pytest.mark.parametrize("version", [4, 6])
def test_tunnel_replay_esn_and_selectors(version):
    if version == 4:
        lts, rts = (parse_ts("198.51.100.0/25"),), (parse_ts("198.51.100.128/25"),)
        inner = raw(IP(src="198.51.100.1", dst="198.51.100.129") / ICMP())
        outside = raw(IP(src="198.51.100.1", dst="192.0.2.200") / ICMP())
    else:
        lts, rts = (parse_ts("2001:db8:1::/48"),), (parse_ts("2001:db8:2::/48"),)
        inner = raw(IPv6(src="2001:db8:1::1", dst="2001:db8:2::1") / UDP() / Raw(b"x"))
        outside = raw(IPv6(src="2001:db8:1::1", dst="2001:db8:3::1") / UDP())
    out, inb = pair(version, "tunnel", IntegId.HMAC_SHA2_512_256, esn=True, local_ts=lts, remote_ts=rts)
    out.start_at((1 << 32) - 2)
    wires = [out.protect(inner, 0.0) for _ in range(4)]
    assert [int.from_bytes(w[(20 if version == 4 else 40) + 8:][:4], "big") for w in wires] == [
        0xFFFFFFFF, 0, 1, 2]
    inb.window.update((1 << 32) - 8)
    for w in wires:
        assert inb.unprotect(w, 0.0) == inner
    assert inb.window.top == (1 << 32) + 2
    assert reason(inb, wires[0]) == "replay"
    assert reason(inb, out.protect(outside, 0.0)) == "policy_mismatch"


def test_ah_lifetimes_and_wrong_protocol():
    out, inb = pair(lifetime=Lifetime(hard_packets=2))
    pkt = raw(IP(src=A4, dst=B4) / UDP(dport=9) / Raw(b"x"))
    w = [out.protect(pkt, 0.0), out.protect(pkt, 0.0)]
    with pytest.raises(SaExpired):
        out.protect(pkt, 0.0)
    assert [e.hard for e in out.events] == [True]
    assert reason(inb, pkt) == "malformed"  # no AH header at all
    assert reason(inb, w[0][:30]) == "malformed"
    assert inb.unprotect(w[0], 0.0) == pkt


def test_ah_cannot_be_udp_encapsulated():
    with pytest.raises(ValueError):
        pair(encap=True)
