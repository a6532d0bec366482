"""ESP against an independent implementation: scapy's SecurityAssociation.

For every transform, both modes, IPv4 and IPv6, with and without ESN and
UDP encapsulation: what we protect scapy decrypts to the same inner packet,
and what scapy encrypts we decrypt to the packet scapy was given.
"""

from __future__ import annotations

import itertools
import os

import pytest
from scapy.all import ICMP, IP, TCP, UDP, IPv6, Raw, raw
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.ipsec import ESP, SecurityAssociation

from engine.crypto.encr import encr_keymat_size, make_cipher
from engine.crypto.integ import Integ, integ_key_size
from engine.crypto.transforms import EncrId, IntegId
from engine.esp import EspInboundSa, EspOutboundSa

# (our encr id, key bits, our integ id, scapy crypt algo, scapy auth algo)
TRANSFORMS = [
    pytest.param(EncrId.AES_GCM_16, 128, None, "AES-GCM", None, id="aes128gcm16"),
    pytest.param(EncrId.AES_GCM_16, 256, None, "AES-GCM", None, id="aes256gcm16"),
    pytest.param(EncrId.CHACHA20_POLY1305, None, None, "CHACHA20-POLY1305", None, id="chacha20poly1305"),
    pytest.param(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, "AES-CBC", "SHA2-256-128", id="aes128-sha256"),
    pytest.param(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_256_128, "AES-CBC", "SHA2-256-128", id="aes256-sha256"),
    pytest.param(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_384_192, "AES-CBC", "SHA2-384-192", id="aes128-sha384"),
    pytest.param(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256, "AES-CBC", "SHA2-512-256", id="aes256-sha512"),
    pytest.param(EncrId.NULL, None, IntegId.HMAC_SHA2_256_128, "NULL", "SHA2-256-128", id="null-sha256"),
]

SPI = 0xC0FFEE01
A4, B4 = "192.0.2.1", "192.0.2.2"            # outer (gateway) addresses
A6, B6 = "2001:db8::1", "2001:db8::2"


def inner_packets(version: int, transport: bool):
    """A spread of inner packets: TCP/UDP/ICMP, lengths covering every padding residue."""
    if transport:  # transport mode protects packets between the SA's own addresses
        src, dst = (A4, B4) if version == 4 else (A6, B6)
    else:
        src, dst = ("198.51.100.1", "198.51.100.129") if version == 4 else ("2001:db8:1::1", "2001:db8:2::1")
    L3 = IP if version == 4 else IPv6
    pkts = [L3(src=src, dst=dst) / UDP(sport=4000 + n, dport=53) / Raw(os.urandom(n)) for n in range(0, 17)]
    pkts.append(L3(src=src, dst=dst) / TCP(sport=40000, dport=22, flags="PA") / Raw(b"x" * 1400))
    pkts.append(L3(src=src, dst=dst) / (ICMP() if version == 4 else ICMPv6EchoRequest()) / Raw(b"ping"))
    if version == 6:
        pkts.append(IPv6(src=src, dst=dst) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(dport=7) / Raw(b"ext"))
    return [raw(p) for p in pkts]


class Pair:
    """Our outbound and inbound SA and scapy's SA, all with the same keys."""

    def __init__(self, encr, bits, integ, s_crypt, s_auth, *, version, mode, esn=False, encap=False, esn_hi=0):
        self.version, self.mode, self.encap = version, mode, encap
        self.local, self.remote = (A4, B4) if version == 4 else (A6, B6)
        ekey = os.urandom(encr_keymat_size(encr, bits))
        ikey = os.urandom(integ_key_size(integ)) if integ else b""

        def ours(cls, local, remote, **kw):
            return cls(SPI, cipher=make_cipher(encr, bits, ekey), integ=Integ(integ, ikey) if integ else None,
                       local_addr=local, remote_addr=remote, mode=mode, esn=esn, encap=encap,
                       local_port=4500, remote_port=4500, **kw)

        self.out = ours(EspOutboundSa, self.local, self.remote)
        self.inb = ours(EspInboundSa, self.remote, self.local)
        L3 = IP if version == 4 else IPv6
        self.scapy = SecurityAssociation(
            ESP, spi=SPI, crypt_algo=s_crypt, crypt_key=ekey or None, auth_algo=s_auth,
            auth_key=ikey or None,
            tunnel_header=L3(src=self.local, dst=self.remote) if mode == "tunnel" else None,
            nat_t_header=UDP(sport=4500, dport=4500) if encap else None,
            esn_en=esn, esn=esn_hi)
        if esn_hi:
            self.out.start_at(esn_hi << 32 | 0xFFFFFF00)

    def L3(self, data: bytes):
        return IP(data) if self.version == 4 else IPv6(data)

    def ours_to_wire(self, inner: bytes) -> bytes:
        body = self.out.protect(inner, 1.0)
        return self.out.build_outer_ip(body) if self.mode == "tunnel" else body

    def wire_to_ours(self, wire: bytes) -> bytes | None:
        if self.mode == "tunnel":
            skip = (20 if self.version == 4 else 40) + (8 if self.encap else 0)
            return self.inb.unprotect(wire[skip:], 1.0)
        return self.inb.unprotect(wire, 1.0)


MODES = list(itertools.product((4, 6), ("tunnel", "transport")))


@pytest.mark.parametrize("version,mode", MODES, ids=[f"v{v}-{m}" for v, m in MODES])
@pytest.mark.parametrize("encr,bits,integ,s_crypt,s_auth", TRANSFORMS)
def test_scapy_decrypts_what_we_protect(encr, bits, integ, s_crypt, s_auth, version, mode):
    pair = Pair(encr, bits, integ, s_crypt, s_auth, version=version, mode=mode)
    for inner in inner_packets(version, mode == "transport"):
        wire = pair.ours_to_wire(inner)
        assert wire[0] >> 4 == version
        decrypted = pair.scapy.decrypt(pair.L3(wire))
        assert raw(decrypted) == inner


@pytest.mark.parametrize("version,mode", MODES, ids=[f"v{v}-{m}" for v, m in MODES])
@pytest.mark.parametrize("encr,bits,integ,s_crypt,s_auth", TRANSFORMS)
def test_we_decrypt_what_scapy_encrypts(encr, bits, integ, s_crypt, s_auth, version, mode):
    pair = Pair(encr, bits, integ, s_crypt, s_auth, version=version, mode=mode)
    packets = inner_packets(version, mode == "transport")
    for seq, inner in enumerate(packets, start=1):
        wire = raw(pair.scapy.encrypt(pair.L3(inner), seq_num=seq))
        assert pair.wire_to_ours(wire) == inner
    assert pair.inb.packets == len(packets)
    assert pair.inb.bytes == sum(map(len, packets))


@pytest.mark.parametrize("version,mode", MODES, ids=[f"v{v}-{m}" for v, m in MODES])
@pytest.mark.parametrize("encr,bits,integ,s_crypt,s_auth", [TRANSFORMS[1], TRANSFORMS[2], TRANSFORMS[4]])
def test_esn_both_ways_with_scapy(encr, bits, integ, s_crypt, s_auth, version, mode):
    """ESN: scapy takes the high 32 bits as a parameter; both sides must put
    them in the ICV (CBC+HMAC) or the AAD (AEAD) the same way."""
    hi = 7
    pair = Pair(encr, bits, integ, s_crypt, s_auth, version=version, mode=mode, esn=True, esn_hi=hi)
    inner = inner_packets(version, mode == "transport")[5]
    wire = pair.ours_to_wire(inner)
    assert pair.out.seq == hi << 32 | 0xFFFFFF01
    assert raw(pair.scapy.decrypt(pair.L3(wire))) == inner
    # Our receiver has seen up to hi:0xFFFFFF00; scapy sends hi:0xFFFFFF10.
    pair.inb.window.update(hi << 32 | 0xFFFFFF00)
    wire = raw(pair.scapy.encrypt(pair.L3(inner), seq_num=0xFFFFFF10))
    assert pair.wire_to_ours(wire) == inner
    assert pair.inb.window.top == hi << 32 | 0xFFFFFF10
    # With the wrong high bits scapy's ICV check fails: the high bits are really signed.
    wrong = SecurityAssociation(ESP, spi=SPI, crypt_algo=s_crypt, crypt_key=pair.scapy.crypt_key
                                + (pair.scapy.crypt_salt or b""), auth_algo=s_auth, auth_key=pair.scapy.auth_key,
                                tunnel_header=pair.scapy.tunnel_header, esn_en=True, esn=hi + 1)
    with pytest.raises(Exception):
        wrong.decrypt(pair.L3(pair.ours_to_wire(inner)))


@pytest.mark.parametrize("version,mode", MODES, ids=[f"v{v}-{m}" for v, m in MODES])
@pytest.mark.parametrize("encr,bits,integ,s_crypt,s_auth", [TRANSFORMS[1], TRANSFORMS[3]])
def test_udp_encapsulation_with_scapy(encr, bits, integ, s_crypt, s_auth, version, mode):
    """RFC 3948 framing: IP | UDP 4500 (checksum 0) | ESP, both directions."""
    pair = Pair(encr, bits, integ, s_crypt, s_auth, version=version, mode=mode, encap=True)
    inner = inner_packets(version, mode == "transport")[3]
    wire = pair.ours_to_wire(inner)
    parsed = pair.L3(wire)
    assert parsed[UDP].sport == 4500 and parsed[UDP].dport == 4500
    if version == 4:
        assert parsed[UDP].chksum == 0  # RFC 3948 §2.1
    else:  # IPv6 forbids a zero UDP checksum: scapy recomputes it to compare
        again = pair.L3(wire)
        del again[UDP].chksum
        assert parsed[UDP].chksum == IPv6(raw(again))[UDP].chksum != 0
    assert raw(pair.scapy.decrypt(parsed)) == inner
    wire = raw(pair.scapy.encrypt(pair.L3(inner), seq_num=9))
    assert pair.wire_to_ours(wire) == inner
