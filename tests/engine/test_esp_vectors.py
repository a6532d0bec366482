"""Known-answer ESP packets.

The kernel-generated packets come from scapy's regression tests
(secdev/scapy, test/scapy/layers/ipsec.uts, GPL-2.0), where they are
documented as "Generated with Linux 4.4.0-62-generic #83-Ubuntu" with
``ip xfrm state add ... proto esp spi 546 ... mode tunnel`` and the keys
repeated below. Each is the ESP payload after SPI 0x222 and sequence 1,
carrying a tunnel-mode ICMP echo request. They are used here as data only.

RFC 4106 has no ESP test vectors; RFC 7634 appendix A has an ESP
ChaCha20-Poly1305 example, which the research tools could not retrieve
(ChaCha20 is cross-checked against scapy in test_esp_oracle.py instead).
"""

from __future__ import annotations

import struct

import pytest
from scapy.all import ICMP, IP, TCP, Raw, raw

from engine.crypto.encr import make_cipher
from engine.crypto.integ import Integ
from engine.crypto.transforms import EncrId, IntegId
from engine.esp import EspDrop, EspInboundSa, EspOutboundSa
from engine.esp import ip as ipmod

# ip xfrm ... aead 'rfc4106(gcm(aes))' '0x3136627974656b65792b34627974656e6f6e6365' 128
KERNEL_GCM = bytes.fromhex(
    "66002886e9dfc524b0bdfd62617ed3767b48288e76aaea48b840308ace5071bbc0b24771d7a4a0cb0368d3165a7c3784"
    "87c71959b47c76e348c0904bd23695c1b7a4b67b89e64f10aedb84474600b444e66d16555f8236a549f7528165904d28"
    "92b2e3f1a402d237ac0b7a10cf6446b9")
# The same packet in scapy's ESN case (esn=1): identical ciphertext, the tag
# computed with the ESN AAD (SPI | seq-high | seq-low).
KERNEL_GCM_ESN1 = KERNEL_GCM[:-16] + bytes.fromhex("fe4d22836a810d6094db45220392f694")
GCM_KEYMAT = b"16bytekey+4bytenonce"  # AES-128 key "16bytekey+4byten", salt "once"

# ip xfrm ... enc 'cbc(aes)' '0x7369787465656e6279746573206b6579' auth digest_null ''
KERNEL_CBC = bytes.fromhex(
    "082f94e653d88e1370e8ff615290273cf2b41f75d2a0acae1ca85e1c78214c7fc330176a8df3b1a7d1a84201d68d2d7e"
    "5d06dfaa052742b10012cfff64025a40cdca1b91baf8c859e7bd4d19b48d39256c73f12daaeee10b71cdfc111d56ce60"
    "edd23287d490c3f53147976983826d38")
CBC_KEY = b"sixteenbytes key"

# ip xfrm ... enc 'rfc3686(ctr(aes))' '0x3136627974656b65792b34627974656e6f6e6365' auth digest_null ''
KERNEL_CTR = bytes.fromhex(
    "c4ca090f8bd3053dac5a2f87ca711001a795c907ccd405586523224b639b1fef55b91a91527600f7947b1de18e032e85"
    "addd83228ac3886e85f59beda96eb1c378002fcd77e83eec0e7794b29b0f645e0983037d832239bb9466ae9fbf01dafb")

SPI = 0x222
HDR = struct.pack("!II", SPI, 1)


def _inbound(cipher, **kw) -> EspInboundSa:
    return EspInboundSa(SPI, cipher=cipher, local_addr="10.125.0.1", remote_addr="10.125.0.2", **kw)


def _check_ping(inner: bytes) -> None:
    """The kernel's inner packet: a valid IPv4 ICMP echo request 10.200.0.1 -> 10.100.0.1."""
    assert ipmod.packet_length(inner) == len(inner)
    assert ipmod.checksum(inner[:20]) == 0, "inner IPv4 header checksum"
    p = IP(inner)
    assert (p.src, p.dst) == ("10.200.0.1", "10.100.0.1")
    assert p.haslayer(ICMP) and p[ICMP].type == 8
    assert ipmod.checksum(inner[20:]) == 0, "inner ICMP checksum"


def test_kernel_aes_gcm_packet():
    sa = _inbound(make_cipher(EncrId.AES_GCM_16, 128, GCM_KEYMAT))
    _check_ping(sa.unprotect(HDR + KERNEL_GCM, 0.0))


def test_kernel_aes_gcm_packet_with_esn_aad():
    sa = _inbound(make_cipher(EncrId.AES_GCM_16, 128, GCM_KEYMAT), esn=True)
    sa.window.update(1 << 32)  # high half 1: the receiver has seen 1:0
    _check_ping(sa.unprotect(HDR + KERNEL_GCM_ESN1, 0.0))
    assert sa.window.top == (1 << 32) | 1
    # The non-ESN tag does not verify under the ESN AAD.
    sa2 = _inbound(make_cipher(EncrId.AES_GCM_16, 128, GCM_KEYMAT), esn=True)
    sa2.window.update(1 << 32)
    with pytest.raises(EspDrop) as exc:
        sa2.unprotect(HDR + KERNEL_GCM, 0.0)
    assert exc.value.reason == "icv"


def test_kernel_aes_cbc_packet_framing():
    """Encryption-only ESP is refused for SAs; allow_unauthenticated exists to read this vector."""
    with pytest.raises(ValueError):
        _inbound(make_cipher(EncrId.AES_CBC, 128, CBC_KEY))
    sa = _inbound(make_cipher(EncrId.AES_CBC, 128, CBC_KEY), allow_unauthenticated=True)
    _check_ping(sa.unprotect(HDR + KERNEL_CBC, 0.0))


def test_kernel_aes_ctr_packet_framing():
    sa = _inbound(make_cipher(EncrId.AES_CTR, 128, GCM_KEYMAT), allow_unauthenticated=True)
    _check_ping(sa.unprotect(HDR + KERNEL_CTR, 0.0))


def test_scapy_cbc_sha256_esn_transport_known_answer():
    """Fixed-IV AES-CBC + HMAC-SHA2-256-128, ESN high half 68, transport mode: the exact
    bytes of scapy's regression test "AES-CBC - HMAC-SHA2-256-128 -- ESN"."""
    enc_key = bytes.fromhex("85ee354b4675a9c5d16e3d6f4118043b")
    auth_key = bytes.fromhex("6f79bf94da7dde3c86009934d9258f1b3fc2f5382aca9c9cb8e216eed235f34c")
    expected = bytes.fromhex(
        "4500006c000100004032745a0101010102020202cf54ccdf0000000111223344112233441122334411223344f5bda5"
        "19c9ae64f283f0fc18a8d253eca8b34c2120c8958a97ec9d8e67756da2523fce9b5541c57fddf090afc2bfd97e8703"
        "203953f853eb61482e4c1384d4c8")
    plain = raw(IP(src="1.1.1.1", dst="2.2.2.2") / TCP(sport=45012, dport=80) / Raw(b"hello world"))
    iv = bytes.fromhex("11223344112233441122334411223344")
    kw = dict(mode="transport", esn=True)
    out = EspOutboundSa(0xCF54CCDF, cipher=make_cipher(EncrId.AES_CBC, 128, enc_key),
                        integ=Integ(IntegId.HMAC_SHA2_256_128, auth_key), rng=lambda n: iv,
                        local_addr="1.1.1.1", remote_addr="2.2.2.2", **kw)
    out.start_at(68 << 32)
    assert out.protect(plain, 0.0) == expected
    inb = EspInboundSa(0xCF54CCDF, cipher=make_cipher(EncrId.AES_CBC, 128, enc_key),
                       integ=Integ(IntegId.HMAC_SHA2_256_128, auth_key),
                       local_addr="2.2.2.2", remote_addr="1.1.1.1", **kw)
    inb.window.update(68 << 32)
    assert inb.unprotect(expected, 0.0) == plain
