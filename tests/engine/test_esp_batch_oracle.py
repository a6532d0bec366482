"""The batch AEAD loops (EspOutboundSa.protect_all, EspInboundSa.unprotect_all) against an independent
implementation: scapy's ESP (its own nonce = salt || IV and AAD, with the ESN high bits per RFC 4106 §5
and RFC 7634 §2.1) opens what protect_all sealed, and seals what unprotect_all opens. Distinct IVs are
checked across the batch boundary and the 32-bit ESN boundary (a nonce must never repeat)."""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw

from engine.crypto.encr import encr_keymat_size, make_cipher
from engine.crypto.transforms import EncrId
from engine.esp import EspInboundSa, EspOutboundSa

SPI = 0x01020304
ADDRS = dict(local_addr="192.0.2.1", remote_addr="192.0.2.2", mode="tunnel")
SUITES = {"gcm16": (EncrId.AES_GCM_16, 256, "AES-GCM", 16), "chacha": (EncrId.CHACHA20_POLY1305, None,
                                                                        "CHACHA20-POLY1305", 16)}
START = 2**32 - 3  # the batches cross the 32-bit boundary of the sequence number


def _seg(i: int) -> bytes:
    return bytes(IP(src="198.51.100.1", dst="198.51.100.129") / TCP(sport=4000, dport=80, seq=1000 * i, flags="A")
                 / Raw(os.urandom(40 + i)))


def _scapy_sa(name: str, key: bytes, icv: int, seq_hi: int) -> SecurityAssociation:
    return SecurityAssociation(ESP, spi=SPI, crypt_algo=name, crypt_key=key, crypt_icv_size=icv,
                               tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"), esn_en=True, esn=seq_hi)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_protect_all_opens_with_scapy_across_the_esn_boundary(suite):
    encr, bits, name, icv = SUITES[suite]
    key = os.urandom(encr_keymat_size(encr, bits))
    out = EspOutboundSa(SPI, cipher=make_cipher(encr, bits, key), esn=True, **ADDRS)
    out.start_at(START)
    segs = [_seg(i) for i in range(8)]
    sealed = out.protect_all(segs[:4], 1.0) + out.protect_all(segs[4:], 1.0)
    ivs = [s[8:16] for s in sealed]
    assert len(set(ivs)) == 8 and [int.from_bytes(v, "big") for v in ivs] == list(range(START + 1, START + 9))
    for i, s in enumerate(sealed):
        seq = START + 1 + i
        outer = IP(bytes(IP(src="192.0.2.1", dst="192.0.2.2", proto=50) / Raw(s)))
        got = _scapy_sa(name, key, icv, seq >> 32).decrypt(outer)
        assert bytes(got) == segs[i]


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_unprotect_all_opens_what_scapy_seals_across_the_esn_boundary(suite):
    encr, bits, name, icv = SUITES[suite]
    key = os.urandom(encr_keymat_size(encr, bits))
    segs = [_seg(i) for i in range(6)]
    wire = []
    for i, s in enumerate(segs):
        seq = START + 1 + i
        sa = _scapy_sa(name, key, icv, seq >> 32)
        # The IV is the 64-bit number, as ours; scapy takes a seq_num of 0 as "its own counter".
        sa.seq_num = seq & 0xFFFFFFFF
        pkt = sa.encrypt(IP(bytes(s)), iv=seq.to_bytes(8, "big"))
        wire.append(bytes(pkt[ESP]))
    ins = EspInboundSa(SPI, cipher=make_cipher(encr, bits, key), esn=True, replay_window=64, **ADDRS)
    ins.window.update(START)
    got = []
    ins.unprotect_all(wire, 1.0, got)
    assert got == segs and ins.window.top == START + 6
    # Sealed with the wrong high bits in the AAD (no ESN bits): the tag fails, the window stays.
    bad = _scapy_sa(name, key, icv, 0).encrypt(IP(_seg(9)), seq_num=(START + 7) & 0xFFFFFFFF,
                                               iv=(START + 7).to_bytes(8, "big"))
    ins.unprotect_all([bytes(bad[ESP])], 1.0, got)
    assert len(got) == 6 and ins.window.top == START + 6 and ins.drops["icv"] == 1
