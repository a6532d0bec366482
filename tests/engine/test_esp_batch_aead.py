"""The ESP batch loops (EspOutboundSa.protect_all, EspInboundSa.unprotect_all) call the AEAD
underneath the cipher wrapper themselves (engine.crypto.encr `_AeadCipher.parts`): the same ESP
bytes as `protect` and the same openings, drops and state as `unprotect`, for every AEAD (AES-GCM
with 16-, 12- and 8-byte tags, ChaCha20-Poly1305; the truncated tags keep the wrapper), and an SA
keyed by its first packet declines or drops before any cipher exists."""

from __future__ import annotations

import os

import pytest

from engine.crypto.encr import encr_keymat_size, make_cipher
from engine.crypto.transforms import EncrId
from engine.esp import EspInboundSa, EspOutboundSa
from engine.esp.esp import DeferredKeys
from engine.esp.sa import SaCommon
from engine.secret import Secret
from tests.engine.test_esp_unprotect_all import ADDRS, SPI, _same, _seg, _state

AEADS = {
    "gcm16": (EncrId.AES_GCM_16, 256),
    "gcm12": (EncrId.AES_GCM_12, 128),
    "gcm8": (EncrId.AES_GCM_8, 192),
    "chacha": (EncrId.CHACHA20_POLY1305, None),
}


@pytest.mark.parametrize("esn", [False, True])
@pytest.mark.parametrize("suite", sorted(AEADS))
def test_batches_seal_and_open_as_one_packet_at_a_time(suite, esn):
    encr, bits = AEADS[suite]
    key = os.urandom(encr_keymat_size(encr, bits))
    outs = [EspOutboundSa(SPI, cipher=make_cipher(encr, bits, key), esn=esn, **ADDRS) for _ in range(2)]
    if esn:
        for sa in outs:
            sa.start_at(2**32 - 3)  # across the 32-bit boundary
    segs = [_seg(i) for i in range(8)]
    one = [outs[0].protect(s, 1.0) for s in segs]
    batch = outs[1].protect_all(segs, 1.0)
    assert batch == one and outs[1].seq == outs[0].seq
    ins = [EspInboundSa(SPI, cipher=make_cipher(encr, bits, key), esn=esn, replay_window=64, **ADDRS)
           for _ in range(2)]
    if esn:
        for sa in ins:
            sa.window.update(2**32 - 3)
    forged = bytearray(one[4])
    forged[-1] ^= 1
    got = _same(ins, [[one[0], one[2], bytes(forged), one[1], one[3]], [one[4], one[4], *one[5:]]])
    assert got == [segs[0], segs[2], segs[1], segs[3], *segs[4:]]
    assert {k: v for k, v in ins[1].drops.items() if v} == {"icv": 1, "replay": 1}


def test_an_sa_keyed_by_its_first_packet_declines_or_drops_until_then():
    common = SaCommon(**ADDRS)
    key = os.urandom(36)
    keys = DeferredKeys(EncrId.AES_GCM_16, 256, Secret(key))
    out = EspOutboundSa.deferred(SPI, common, keys)
    assert out.protect_all([_seg(0), _seg(1)], 1.0) is None  # the first packet keys it, one by one
    sealer = EspOutboundSa(SPI, cipher=make_cipher(EncrId.AES_GCM_16, 256, key), **ADDRS)
    segs = [_seg(i) for i in range(3)]
    sealed = [sealer.protect(s, 1.0) for s in segs]
    # Keyed by its first packet, it seals batches as the SA keyed from the start.
    assert [out.protect(segs[0], 1.0)] + out.protect_all(segs[1:], 1.0) == sealed
    # Expired before its first packet: never keyed, every packet dropped as unprotect drops it.
    ins = [EspInboundSa.deferred(SPI, common, keys) for _ in range(2)]
    for sa in ins:
        sa._expire("test")
    assert _same(ins, [sealed]) == []
    assert {k: v for k, v in ins[1].drops.items() if v} == {"no_sa": 3}
