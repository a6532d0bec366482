"""An SkCodec keys no cipher to build itself: its sizes come from the transform (the messages
key their own, see protection.Direction); a key of the wrong size is still refused at once."""

from __future__ import annotations

import pytest

import engine.ike.protection as protection
from engine.crypto.transforms import EncrId, IntegId
from engine.ike.protection import SkCodec
from engine.wire.message import decode_message, decode_payloads
from engine.wire.payloads import NotifyPayload


@pytest.fixture
def keyings(monkeypatch) -> list[int]:
    made: list[int] = []
    real = protection.make_cipher

    def counting(encr_id, key_bits, keymat):
        made.append(encr_id)
        return real(encr_id, key_bits, keymat)
    monkeypatch.setattr(protection, "make_cipher", counting)
    return made


@pytest.mark.parametrize("encr_id, key_bits, integ_id, e, a", [
    (EncrId.AES_GCM_16, 256, None, 36, 0),
    (EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, 16, 32),
    (EncrId.CHACHA20_POLY1305, None, None, 36, 0),
])
def test_building_a_codec_keys_no_cipher(keyings, encr_id, key_bits, integ_id, e, a):
    SkCodec(encr_id, key_bits, integ_id, b"\1" * e, b"\2" * a, b"\3" * e, b"\4" * a)  # the transform's first
    keyings.clear()
    codec = SkCodec(encr_id, key_bits, integ_id, b"\5" * e, b"\6" * a, b"\7" * e, b"\10" * a)
    assert keyings == []
    # The sizes are the cipher's, and the codec still works: a sealed message opens on the other side.
    peer = SkCodec(encr_id, key_bits, integ_id, b"\7" * e, b"\10" * a, b"\5" * e, b"\6" * a)
    cipher = protection.make_cipher(encr_id, key_bits, b"\5" * e)
    assert (codec.aead, codec.iv_size) == (cipher.aead, cipher.iv_size)
    sealed = codec.seal(37, 2, b"i" * 8, b"r" * 8, 0x08, [NotifyPayload(16384)])
    assert len(sealed) == 1
    first, inner = peer.open(decode_message(sealed[0]))
    assert decode_payloads(first, inner) == [NotifyPayload(16384)]


def test_a_key_of_the_wrong_size_is_refused_after_the_first(keyings):
    SkCodec(EncrId.AES_GCM_16, 256, None, b"\1" * 36, b"", b"\2" * 36, b"")
    with pytest.raises(ValueError, match="keying material must be 36 bytes, got 35"):
        SkCodec(EncrId.AES_GCM_16, 256, None, b"\1" * 35, b"", b"\2" * 35, b"")
    with pytest.raises(ValueError, match="differ in size"):
        SkCodec(EncrId.AES_GCM_16, 256, None, b"\1" * 36, b"", b"\2" * 35, b"")
