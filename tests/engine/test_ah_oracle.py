"""AH against scapy's SecurityAssociation (which zeroes mutable fields its own way).

Tunnel and transport, IPv4 and IPv6 (with extension headers), HMAC-SHA2,
with and without ESN, both directions.
"""

from __future__ import annotations

import itertools
import os

import pytest
from scapy.all import ICMP, IP, TCP, UDP, IPv6, Raw, raw
from scapy.layers.inet import IPOption_NOP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import HBHOptUnknown, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.ipsec import AH, SecurityAssociation

from engine.crypto.integ import Integ, integ_key_size
from engine.crypto.transforms import IntegId
from engine.esp import AhInboundSa, AhOutboundSa, EspDrop

INTEGS = [
    pytest.param(IntegId.HMAC_SHA2_256_128, "SHA2-256-128", id="sha256"),
    pytest.param(IntegId.HMAC_SHA2_384_192, "SHA2-384-192", id="sha384"),
    pytest.param(IntegId.HMAC_SHA2_512_256, "SHA2-512-256", id="sha512"),
]
SPI = 0xA11CE
A4, B4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
MODES = list(itertools.product((4, 6), ("tunnel", "transport")))
MODE_IDS = [f"v{v}-{m}" for v, m in MODES]


def inner_packets(version: int, transport: bool) -> list[bytes]:
    if transport:
        src, dst = (A4, B4) if version == 4 else (A6, B6)
    else:
        src, dst = ("198.51.100.1", "198.51.100.129") if version == 4 else ("2001:db8:1::1", "2001:db8:2::1")
    if version == 4:
        pkts = [IP(src=src, dst=dst, tos=0x10, ttl=17) / UDP(sport=5000, dport=53) / Raw(b"q" * n) for n in (0, 1, 7)]
        pkts.append(IP(src=src, dst=dst, flags="DF") / TCP(dport=22) / Raw(b"t" * 1000))
        # Router alert is signed as is; record route is mutable and signed as zeros (RFC 4302 A.1).
        pkts.append(IP(src=src, dst=dst, options=[IPOption_Router_Alert(), IPOption_NOP()]) / ICMP())
        pkts.append(IP(src=src, dst=dst, options=[IPOption_RR(routers=["192.0.2.77"])]) / ICMP())
    else:
        pkts = [IPv6(src=src, dst=dst, tc=0x20, fl=0x12345, hlim=9) / UDP(dport=53) / Raw(b"q" * n) for n in (0, 3)]
        pkts.append(IPv6(src=src, dst=dst) / TCP(dport=22) / Raw(b"t" * 1000))
        # Hop-by-hop with an option flagged "may change en route" (type 0x3e: bit 0x20 set).
        pkts.append(IPv6(src=src, dst=dst) / IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0x3E, optdata=b"abcd")])
                    / IPv6ExtHdrDestOpt() / UDP(dport=7) / Raw(b"ext"))
    return [raw(p) for p in pkts]


class Pair:
    def __init__(self, integ, s_auth, *, version, mode, esn=False, esn_hi=0):
        self.version, self.mode = version, mode
        self.local, self.remote = (A4, B4) if version == 4 else (A6, B6)
        key = os.urandom(integ_key_size(integ))
        self.out = AhOutboundSa(SPI, integ=Integ(integ, key), local_addr=self.local, remote_addr=self.remote,
                                mode=mode, esn=esn)
        self.inb = AhInboundSa(SPI, integ=Integ(integ, key), local_addr=self.remote, remote_addr=self.local,
                               mode=mode, esn=esn)
        L3 = IP if version == 4 else IPv6
        self.scapy = SecurityAssociation(AH, spi=SPI, auth_algo=s_auth, auth_key=key,
                                         tunnel_header=L3(src=self.local, dst=self.remote) if mode == "tunnel" else None,
                                         esn_en=esn, esn=esn_hi)

    def L3(self, data: bytes):
        return IP(data) if self.version == 4 else IPv6(data)


@pytest.mark.parametrize("version,mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("integ,s_auth", INTEGS)
def test_scapy_verifies_what_we_sign(integ, s_auth, version, mode):
    pair = Pair(integ, s_auth, version=version, mode=mode)
    for inner in inner_packets(version, mode == "transport"):
        wire = pair.out.protect(inner, 0.0)
        parsed = pair.L3(wire)
        assert parsed.haslayer(AH) and parsed[AH].spi == SPI
        # scapy's verify() runs inside decrypt and raises on a bad ICV
        assert raw(pair.scapy.decrypt(parsed)) == inner


@pytest.mark.parametrize("version,mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("integ,s_auth", INTEGS)
def test_we_verify_what_scapy_signs(integ, s_auth, version, mode):
    pair = Pair(integ, s_auth, version=version, mode=mode)
    for seq, inner in enumerate(inner_packets(version, mode == "transport"), start=1):
        wire = raw(pair.scapy.encrypt(pair.L3(inner), seq_num=seq))
        assert pair.inb.unprotect(wire, 0.0) == inner


@pytest.mark.parametrize("version,mode", MODES, ids=MODE_IDS)
def test_esn_high_bits_are_signed(version, mode):
    hi = 3
    pair = Pair(IntegId.HMAC_SHA2_256_128, "SHA2-256-128", version=version, mode=mode, esn=True, esn_hi=hi)
    pair.out.start_at(hi << 32 | 41)
    inner = inner_packets(version, mode == "transport")[1]
    assert raw(pair.scapy.decrypt(pair.L3(pair.out.protect(inner, 0.0)))) == inner
    pair.inb.window.update(hi << 32 | 40)
    assert pair.inb.unprotect(raw(pair.scapy.encrypt(pair.L3(inner), seq_num=50)), 0.0) == inner
    # Same bytes but our receiver believes another 2**32 cycle: the ICV cannot match.
    other = Pair(IntegId.HMAC_SHA2_256_128, "SHA2-256-128", version=version, mode=mode, esn=True, esn_hi=hi + 1)
    other.scapy.auth_key = pair.scapy.auth_key
    other.inb = pair.inb
    with pytest.raises(EspDrop) as exc:
        pair.inb.unprotect(raw(other.scapy.encrypt(pair.L3(inner), seq_num=51)), 0.0)
    assert exc.value.reason == "icv"


def test_ipv6_transport_header_goes_after_routing_header():
    """Like scapy and Linux: AH after hop-by-hop/routing, before destination options that follow them."""
    pair = Pair(IntegId.HMAC_SHA2_256_128, "SHA2-256-128", version=6, mode="transport")
    p = raw(IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(segleft=0)
            / IPv6ExtHdrDestOpt() / TCP(dport=80) / Raw(b"data"))
    wire = pair.out.protect(p, 0.0)
    parsed = IPv6(wire)
    assert isinstance(parsed[AH].underlayer, IPv6ExtHdrRouting)
    assert parsed[AH].nh == 60  # destination options follow (scapy does not dissect past AH here)
    assert raw(pair.scapy.decrypt(parsed)) == p
    assert pair.inb.unprotect(wire, 0.0) == p
