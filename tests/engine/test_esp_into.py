"""EspOutboundSa.protect_into: the ESP packet written straight into a caller's buffer (a send slot)
is byte for byte what protect returns for the same packet and sequence number; where it cannot
(not an AEAD with a 16-byte tag, a buffer too small) it writes nothing and uses up no sequence
number, so the caller's fallback to protect sends the next number."""

from __future__ import annotations

import pytest
from scapy.all import ICMP, IP, IPv6, Raw, raw

from engine.crypto.encr import make_cipher
from engine.esp import EspOutboundSa, SaExpired
from engine.events import PacketSample
from tests.engine.test_esp_sa import SPI, make_pair, ping

AEAD = ["aes256gcm16", "chacha20poly1305"]


def _twin(keys, **kw) -> EspOutboundSa:
    encr, bits, ekey = keys
    return EspOutboundSa(SPI, cipher=make_cipher(encr, bits, ekey), local_addr="192.0.2.1",
                         remote_addr="192.0.2.2", **kw)


@pytest.mark.parametrize("esn", [False, True], ids=["32-bit", "esn"])
@pytest.mark.parametrize("suite", AEAD)
def test_the_packet_written_into_the_buffer_is_what_protect_returns(suite, esn):
    out, inb, keys = make_pair(suite, esn=esn)
    twin = _twin(keys, esn=esn)
    if esn:
        out.start_at((1 << 32) + 5)  # the high half goes into the AAD only
        twin.start_at((1 << 32) + 5)
        inb.window.top = (1 << 32) + 5
    buf = memoryview(bytearray(2048))
    six = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMP() / Raw(bytes(33)))
    for pkt in (ping(size=1400), ping(size=1), six, bytearray(ping(size=7))):
        n = out.protect_into(pkt, 2.0, buf)
        assert bytes(buf[:n]) == twin.protect(pkt, 2.0)
        assert inb.unprotect(bytes(buf[:n]), 3.0) == bytes(pkt)
    assert (out.seq, out.packets, out.bytes) == (twin.seq, twin.packets, twin.bytes)


def test_nothing_is_used_up_when_it_cannot():
    out, _inb, keys = make_pair("aes256gcm16")
    small = memoryview(bytearray(100))
    assert out.protect_into(ping(size=100), 1.0, small) == 0
    assert (out.seq, out.packets) == (0, 0)
    cbc, _, _ = make_pair("aes128-sha256")
    assert cbc.protect_into(ping(), 1.0, memoryview(bytearray(2048))) == 0 and cbc.seq == 0
    transport, _, _ = make_pair("aes256gcm16", mode="transport")
    assert transport.protect_into(ping(), 1.0, memoryview(bytearray(2048))) == 0 and transport.seq == 0
    with pytest.raises(ValueError):
        out.protect_into(b"\x00" * 30, 1.0, memoryview(bytearray(2048)))
    assert out.seq == 0


def test_limits_and_samples_still_apply():
    out, _inb, _keys = make_pair("aes256gcm16")
    out.set_sampling(2)
    buf = memoryview(bytearray(2048))
    sizes = [out.protect_into(ping(), 1.0, buf) for _ in range(2)]
    [sample] = [e for e in out.events if isinstance(e, PacketSample)]
    assert sample.outer == bytes(buf[:sizes[1]]) and sample.seq == 2 and sample.inner == ping()
    out.start_at((1 << 32) - 2)  # the last 32-bit number goes out, then the SA is done
    assert out.protect_into(ping(), 1.0, buf)
    with pytest.raises(SaExpired):
        out.protect_into(ping(), 1.0, buf)


def test_a_slot_sized_buffer_holds_a_full_size_packet():
    out, inb, _keys = make_pair("aes256gcm16")
    buf = memoryview(bytearray(4096))[2048:4096]  # a send slot: a view into the middle of the slots
    pkt = raw(IP(src="198.51.100.1", dst="198.51.100.129") / Raw(bytes(1480)))
    n = out.protect_into(pkt, 1.0, buf)
    assert n == 8 + 8 + 1500 + 2 + 2 + 16 and inb.unprotect(bytes(buf[:n]), 1.0) == pkt
