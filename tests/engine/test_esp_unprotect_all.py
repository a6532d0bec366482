"""EspInboundSa.unprotect_all (a receive batch in one call) against unprotect one packet at a time:
twin inbound SAs with the same keys take the same packets, one each way, and must end with the same
inner packets, counters, drops by reason, replay window, samples and lifetime events. The batches mix
what a peer or an attacker can send: in order, reordered within the window, replayed, too old,
forged (bad ICV), too short, another SPI, dummies, IPv6 inside, padding errors, outside the selectors."""

from __future__ import annotations

import os

import pytest
from scapy.all import ICMP, IP, TCP, IPv6, Raw, raw

from engine.crypto.encr import encr_keymat_size, make_cipher
from engine.crypto.integ import Integ, integ_key_size
from engine.esp import EspDrop, EspInboundSa, EspOutboundSa, Lifetime
from engine.esp.esp import DeferredKeys
from engine.esp.sa import SaCommon
from engine.policy.ts import parse_ts
from engine.secret import Secret
from tests.engine.test_esp_sa import SPI, SUITES, aead_esp

ADDRS = dict(local_addr="192.0.2.1", remote_addr="192.0.2.2", mode="tunnel")


def _seg(i: int, src="198.51.100.1", dst="198.51.100.129") -> bytes:
    return raw(IP(src=src, dst=dst) / TCP(sport=4000, dport=80, seq=1000 * i, flags="A") / Raw(os.urandom(60 + i)))


def _twins(suite="aes256gcm16", *, replay_window=64, sampling=0, **kw):
    """An outbound SA and two inbound SAs with the same keys and settings, and the key material."""
    encr, bits, integ = SUITES[suite]
    ekey = os.urandom(encr_keymat_size(encr, bits))
    ikey = os.urandom(integ_key_size(integ)) if integ else b""

    def build(cls, a, b, extra):
        lts, rts = kw.get("local_ts", ()), kw.get("remote_ts", ())
        if cls is EspInboundSa:
            lts, rts = rts, lts
        rest = {k: v for k, v in kw.items() if k not in ("local_ts", "remote_ts")}
        return cls(SPI, cipher=make_cipher(encr, bits, ekey), integ=Integ(integ, ikey) if integ else None,
                   local_addr=a, remote_addr=b, mode="tunnel", local_ts=lts, remote_ts=rts, **rest, **extra)

    out = build(EspOutboundSa, "192.0.2.1", "192.0.2.2", {})
    ins = [build(EspInboundSa, "192.0.2.2", "192.0.2.1", {"replay_window": replay_window}) for _ in range(2)]
    for sa in ins:
        if sampling:
            sa.set_sampling(sampling)
    return out, ins, (encr, bits, ekey)


def _state(sa):
    w = sa.window
    return (sa.packets, sa.bytes, dict(sa.drops), sa.dropped, w.top, w.bitmap, sa.last_used, sa.expired,
            list(sa.events))


def _one_by_one(sa, datas, now):
    got = []
    for d in datas:
        try:
            inner = sa.unprotect(bytes(d), now)
        except EspDrop:
            continue
        if inner is not None:
            got.append(inner)
    return got


def _same(ins, batches, now=7.0):
    """Each batch: per packet into ins[0], unprotect_all (from memoryviews, as the raw reader's slots)
    into ins[1]; the same results after every batch."""
    total = []
    for datas in batches:
        want = _one_by_one(ins[0], datas, now)
        got: list = []
        ins[1].unprotect_all([memoryview(bytearray(d)) for d in datas], now, got)
        assert got == want
        assert _state(ins[1]) == _state(ins[0])
        total += got
    return total


def _mixed_batch(out):
    """Sealed packets 1..12 in a batch that also replays, reorders, forges and truncates."""
    segs = [_seg(i) for i in range(12)]
    sealed = [out.protect(s, 1.0) for s in segs]
    forged = bytearray(sealed[7])
    forged[-1] ^= 1
    other_spi = (SPI + 1).to_bytes(4, "big") + sealed[9][4:]
    return [sealed[0], sealed[2], sealed[1], sealed[1], sealed[3], bytes(forged), sealed[4], sealed[0],
            sealed[3][:20], other_spi, sealed[6], sealed[5], bytes(forged), sealed[7], sealed[8], sealed[7],
            sealed[9], sealed[10], sealed[11]], sealed


@pytest.mark.parametrize("esn", [False, True])
def test_a_mixed_batch_gives_what_unprotect_gives_one_by_one(esn):
    out, ins, _ = _twins(esn=esn)
    if esn:
        out.start_at(2**32 - 6)  # across the 32-bit boundary: the high bits are inferred
        for sa in ins:
            sa.window.update(2**32 - 6)
    batch, sealed = _mixed_batch(out)
    got = _same(ins, [batch[:7], batch[7:]])
    assert len(got) == 12
    sa = ins[1]
    assert sa.drops["replay"] == 3 and sa.drops["icv"] == 2 and sa.drops["malformed"] == 1 \
        and sa.drops["no_sa"] == 1
    # Forged packets never moved the window: the authentic one with that number still passes.
    assert sa.packets == 12


def test_out_of_window_and_far_ahead():
    out, ins, _ = _twins(replay_window=4)
    sealed = [out.protect(_seg(i), 1.0) for i in range(20)]
    batch = [sealed[10], sealed[2], sealed[8], sealed[6], sealed[7], sealed[19], sealed[15], sealed[16], sealed[0]]
    _same(ins, [batch])
    assert ins[1].drops["replay"] == 4


def test_the_padding_next_header_and_inner_checks_of_authentic_packets():
    out, ins, (encr, bits, ekey) = _twins()
    inner = _seg(1)
    v6 = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMP())
    cases = [
        aead_esp(encr, bits, ekey, 1, inner + b"\x01\x02\x02\x04"),  # good padding
        aead_esp(encr, bits, ekey, 2, inner + b"\x01\x03\x02\x04"),  # bad padding bytes
        aead_esp(encr, bits, ekey, 3, inner + b"\x00\x09\x04"),  # pad length beyond the payload
        aead_esp(encr, bits, ekey, 4, b"\x00\x00" + b"\x00\x3b"),  # a dummy packet (next header 59)
        aead_esp(encr, bits, ekey, 5, v6 + b"\x00\x29"),  # IPv6 inside an IPv4 SA
        aead_esp(encr, bits, ekey, 6, inner + b"\x00\x11"),  # next header 17 in a tunnel
        aead_esp(encr, bits, ekey, 7, inner[:30] + b"\x00\x04"),  # inner IPv4 longer than carried
        aead_esp(encr, bits, ekey, 8, b"\x04"),  # no trailer
        aead_esp(encr, bits, ekey, 9, inner + os.urandom(30) + b"\x00\x04"),  # TFC padding after the packet
        aead_esp(encr, bits, ekey, 10, b"\x60" + bytes(19) + b"\x00\x04"),  # next header 4, not IPv4
    ]
    got = _same(ins, [cases])
    assert got == [inner, v6, inner]
    assert ins[1].packets == 4  # the dummy counts, delivers nothing
    assert ins[1].drops["malformed"] == 6


def test_selectors_drop_what_is_outside_and_remember_what_passed():
    sel = dict(local_ts=(parse_ts("198.51.100.0/26"),), remote_ts=(parse_ts("198.51.100.128/26"),))
    out, ins, _ = _twins(**sel)
    pkts = [_seg(0), _seg(1), _seg(2, dst="198.51.100.200"), _seg(3), _seg(4, src="198.51.100.70"), _seg(5)]
    sealed = [out.protect(p, 1.0) for p in pkts]
    _same(ins, [sealed[:3], sealed[3:]])
    assert ins[1].drops["policy_mismatch"] == 2 and ins[1].packets == 4


@pytest.mark.parametrize("lifetime", [Lifetime(soft_packets=3, hard_packets=5),
                                      Lifetime(soft_bytes=250, hard_bytes=500)])
def test_lifetimes_and_samples_fall_on_the_same_packet(lifetime):
    # The soft event, the hard expiry (every packet after it dropped as no_sa) and every sample on
    # the packet where unprotect puts them, in the middle of a batch.
    out, ins, _ = _twins(lifetime=Lifetime(soft_packets=100, hard_packets=200), sampling=0)
    ins = [EspInboundSa(SPI, cipher=sa._cipher, lifetime=lifetime, **ADDRS) for sa in ins]
    for sa in ins:
        sa.set_sampling(2)
    sealed = [out.protect(_seg(i), 1.0) for i in range(9)]
    forged = bytearray(sealed[3])
    forged[20] ^= 1
    _same(ins, [sealed[:2] + [bytes(forged)] + sealed[2:]])
    assert ins[1].expired
    assert ins[1].drops["no_sa"] > 0
    kinds = [type(e).__name__ for e in ins[1].events]
    assert "RekeyRequested" in kinds and "PacketSample" in kinds


@pytest.mark.parametrize("suite,window", [("aes128-sha256", 64), ("aes256gcm16", 0), ("chacha20poly1305", 32)])
def test_other_suites_and_a_disabled_window_take_the_per_packet_path(suite, window):
    out, ins, _ = _twins(suite, replay_window=window)
    sealed = [out.protect(_seg(i), 1.0) for i in range(6)]
    forged = bytearray(sealed[2])
    forged[-3] ^= 4
    _same(ins, [[sealed[0], sealed[1], bytes(forged), sealed[2], sealed[1], sealed[5], sealed[3], sealed[4]]])
    assert ins[1].packets == (7 if window == 0 else 6)  # no window: the replay passes too


def test_an_sa_keyed_by_its_first_packet():
    common = SaCommon(**ADDRS)
    key = os.urandom(36)
    keys = DeferredKeys(SUITES["aes256gcm16"][0], 256, Secret(key))
    ins = [EspInboundSa.deferred(SPI, common, keys) for _ in range(2)]
    out = EspOutboundSa(SPI, cipher=make_cipher(SUITES["aes256gcm16"][0], 256, key), **ADDRS)
    sealed = [out.protect(_seg(i), 1.0) for i in range(4)]
    got = _same(ins, [[sealed[1], sealed[0], sealed[1], sealed[3], sealed[2]]])
    assert len(got) == 4 and type(ins[1]) is EspInboundSa
