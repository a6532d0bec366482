"""Encryption transforms: RFC 3602 (AES-CBC), McGrew-Viega/NIST GCM, RFC 7634
(ChaCha20-Poly1305 ESP and IKEv2 examples), RFC 3686 (AES-CTR), round trips
and tamper detection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.crypto.encr import CounterIv, encr_keymat_size, make_cipher, random_iv
from engine.crypto.errors import IntegrityError, NonceExhausted, UnsupportedTransform
from engine.crypto.transforms import EncrId

SETTINGS = settings(max_examples=40, deadline=None)


def h(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


# ---- AES-CBC, RFC 3602 §4 cases 1 and 2


@pytest.mark.parametrize(
    "key,iv,plain,cipher",
    [
        ("06a9214036b8a15b512e03d534120006", "3dafba429d9eb430b422da802c9fac41",
         b"Single block msg".hex(), "e353779c1079aeb82708942dbe77181a"),
        ("c286696d887c9aa0611bbb3e2025a45a", "562e17996d093d28ddb3ba695a2e6f58",
         "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
         "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1"),
    ],
)
def test_rfc3602_aes_cbc(key, iv, plain, cipher):
    c = make_cipher(EncrId.AES_CBC, 128, h(key))
    assert (c.aead, c.iv_size, c.block_size, c.icv_size) == (False, 16, 16, 0)
    assert c.encrypt(h(iv), h(plain)) == h(cipher)
    assert c.decrypt(h(iv), h(cipher)) == h(plain)


def test_cbc_requires_padding_and_whole_blocks():
    c = make_cipher(EncrId.AES_CBC, 256, bytes(32))
    with pytest.raises(ValueError, match="padded"):
        c.encrypt(bytes(16), b"x" * 15)
    with pytest.raises(IntegrityError):
        c.decrypt(bytes(16), b"x" * 17)
    with pytest.raises(IntegrityError):
        c.decrypt(bytes(15), b"x" * 16)


# ---- AES-GCM, McGrew & Viega test cases 4 (AES-128) and 16 (AES-256).
# RFC 4106 nonce = salt(4) | IV(8): the 12-byte vector IV is split that way.

GCM_PLAIN = (
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
GCM_AAD = "feedfacedeadbeeffeedfacedeadbeefabaddad2"
GCM_IV = "cafebabefacedbaddecaf888"


@pytest.mark.parametrize(
    "bits,key,cipher,tag",
    [
        (128, "feffe9928665731c6d6a8f9467308308",
         "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
         "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
         "5bc94fbc3221a5db94fae95ae7121a47"),
        (256, "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
         "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
         "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
         "76fc6ece0f4e1768cddf8853bb2d551b"),
    ],
)
@pytest.mark.parametrize("encr_id,icv", [(EncrId.AES_GCM_16, 16), (EncrId.AES_GCM_12, 12), (EncrId.AES_GCM_8, 8)])
def test_gcm_vectors(bits, key, cipher, tag, encr_id, icv):
    nonce = h(GCM_IV)
    keymat = h(key) + nonce[:4]
    assert encr_keymat_size(encr_id, bits) == len(keymat)
    c = make_cipher(encr_id, bits, keymat)
    assert (c.aead, c.iv_size, c.block_size, c.icv_size) == (True, 8, 4, icv)
    want = h(cipher) + h(tag)[:icv]  # a truncated GCM tag is the leading bytes
    assert c.encrypt(nonce[4:], h(GCM_PLAIN), h(GCM_AAD)) == want
    assert c.decrypt(nonce[4:], want, h(GCM_AAD)) == h(GCM_PLAIN)
    with pytest.raises(IntegrityError):
        c.decrypt(nonce[4:], want, h(GCM_AAD)[:-1])


# ---- ChaCha20-Poly1305, RFC 7634 appendix A (A.1 ESP, A.2 IKEv2)

CHACHA_KEYMAT = bytes(range(0x80, 0xA0)) + h("a0a1a2a3")  # key | salt
CHACHA_IV = h("1011121314151617")


def test_rfc7634_esp_example():
    plain = h(
        "4500005 4a6f20000 4001e778 c6336405 c0000205 08005b7a 3a080000 553bec10"
        "00073627 08090a0b 0c0d0e0f 10111213 14151617 18191a1b 1c1d1e1f 20212223"
        "24252627 28292a2b 2c2d2e2f 30313233 34353637 01020204"
    )
    aad = h("01020304 00000005")  # SPI | sequence number
    want = h(
        "24039428b97f417e3c13753a4f05087b67c352e6a7fab1b982d466ef407ae5c6"
        "14ee8099d52844eb61aa95dfab4c02f72aa71e7c4c4f64c9befe2facc638e8f3"
        "cbec163fac469b502773f6fb94e664da9165b82829f641e076aaa8266b7fb0f7"
        "b11b369907e1ad43"
    )
    assert encr_keymat_size(EncrId.CHACHA20_POLY1305, None) == 36
    c = make_cipher(EncrId.CHACHA20_POLY1305, None, CHACHA_KEYMAT)
    assert (c.aead, c.iv_size, c.block_size, c.icv_size, c.key_bits) == (True, 8, 4, 16, 256)
    assert c.encrypt(CHACHA_IV, plain, aad) == want
    assert c.decrypt(CHACHA_IV, want, aad) == plain


def test_rfc7634_ikev2_example():
    aad = h(
        "c0c1c2c3c4c5c6c7 d0d1d2d3d4d5d6d7 2e202500 00000009 00000045"  # IKE header
        "29000029"  # SK payload generic header
    )
    plain = h("0000000c000040010000000a00")
    want = h("610394701f8d017f7c129248896b71bfe25236efd7cdc67066906315b2")
    c = make_cipher(EncrId.CHACHA20_POLY1305, 256, CHACHA_KEYMAT)
    assert c.encrypt(CHACHA_IV, plain, aad) == want
    assert c.decrypt(CHACHA_IV, want, aad) == plain


# ---- AES-CTR, RFC 3686 test vectors 1, 2 and 7


@pytest.mark.parametrize(
    "bits,keymat,iv,plain,cipher",
    [
        (128, "ae6852f8121067cc4bf7a5765577f39e00000030", "0000000000000000",
         b"Single block msg".hex(), "e4095d4fb7a7b3792d6175a3261311b8"),
        (128, "7e24067817fae0d743d6ce1f32539163006cb6db", "c0543b59da48d90b",
         "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
         "5104a106168a72d9790d41ee8edad388eb2e1efc46da57c8fce630df9141be28"),
        (256, "776beff2851db06f4c8a0542c8696f6c6a81af1eec96b4d37fc1d689e6c1c10400000060",
         "db5672c97aa8f0b2", b"Single block msg".hex(), "145ad01dbf824ec7560863dc71e3e0c0"),
    ],
)
def test_rfc3686_aes_ctr(bits, keymat, iv, plain, cipher):
    c = make_cipher(EncrId.AES_CTR, bits, h(keymat))
    assert (c.aead, c.iv_size, c.block_size) == (False, 8, 4)
    assert c.encrypt(h(iv), h(plain)) == h(cipher)
    assert c.decrypt(h(iv), h(cipher)) == h(plain)


# ---- sizes and refusals


@pytest.mark.parametrize(
    "encr_id,bits,size",
    [
        (EncrId.AES_CBC, 128, 16), (EncrId.AES_CBC, 192, 24), (EncrId.AES_CBC, 256, 32),
        (EncrId.AES_GCM_16, 128, 20), (EncrId.AES_GCM_16, 192, 28), (EncrId.AES_GCM_16, 256, 36),
        (EncrId.AES_GCM_8, 128, 20), (EncrId.AES_GCM_12, 256, 36),
        (EncrId.CHACHA20_POLY1305, None, 36), (EncrId.CHACHA20_POLY1305, 256, 36),
        (EncrId.AES_CTR, 128, 20), (EncrId.NULL, None, 0),
    ],
)
def test_keymat_sizes(encr_id, bits, size):
    assert encr_keymat_size(encr_id, bits) == size


@pytest.mark.parametrize(
    "encr_id,bits",
    [
        (EncrId.AES_CBC, None), (EncrId.AES_CBC, 64), (EncrId.AES_GCM_16, 512),
        (EncrId.CHACHA20_POLY1305, 128), (EncrId.TRIPLE_DES, None), (EncrId.DES, None),
        (EncrId.AES_CCM_16, 128), (EncrId.NULL, 128), (999, None),
    ],
)
def test_unsupported_encr(encr_id, bits):
    with pytest.raises(UnsupportedTransform):
        encr_keymat_size(encr_id, bits)


def test_make_cipher_checks_keymat_length():
    with pytest.raises(ValueError, match="36 bytes"):
        make_cipher(EncrId.AES_GCM_16, 256, bytes(32))


def test_null_cipher():
    c = make_cipher(EncrId.NULL, None, b"")
    assert (c.aead, c.iv_size, c.block_size, c.icv_size) == (False, 0, 4, 0)
    assert c.encrypt(b"", b"abc") == b"abc" and c.decrypt(b"", b"abc") == b"abc"


def test_aead_rejects_short_input_and_wrong_iv():
    c = make_cipher(EncrId.AES_GCM_16, 128, bytes(20))
    with pytest.raises(IntegrityError, match="shorter"):
        c.decrypt(bytes(8), bytes(15))
    with pytest.raises(IntegrityError):
        c.decrypt(bytes(7), bytes(32))
    with pytest.raises(ValueError):
        c.encrypt(bytes(12), b"x")
    short = make_cipher(EncrId.AES_GCM_8, 128, bytes(20))
    with pytest.raises(IntegrityError):
        short.decrypt(bytes(8), bytes(7))


def test_repr_hides_keys():
    key = b"\x42" * 32 + b"salt"
    for c in (make_cipher(EncrId.AES_GCM_16, 256, key), make_cipher(EncrId.AES_CBC, 256, key[:32])):
        assert "42" not in repr(c) and "salt" not in repr(c)


# ---- property tests: every cipher round-trips; any flipped bit is caught by AEAD

ALL_CIPHERS = [
    (EncrId.AES_CBC, 128), (EncrId.AES_CBC, 192), (EncrId.AES_CBC, 256),
    (EncrId.AES_GCM_16, 128), (EncrId.AES_GCM_16, 192), (EncrId.AES_GCM_16, 256),
    (EncrId.AES_GCM_12, 128), (EncrId.AES_GCM_12, 256), (EncrId.AES_GCM_8, 256),
    (EncrId.CHACHA20_POLY1305, None), (EncrId.AES_CTR, 128), (EncrId.AES_CTR, 256),
    (EncrId.NULL, None),
]
AEAD_CIPHERS = [c for c in ALL_CIPHERS if c[0] in (EncrId.AES_GCM_16, EncrId.AES_GCM_12,
                                                   EncrId.AES_GCM_8, EncrId.CHACHA20_POLY1305)]


@pytest.mark.parametrize("encr_id,bits", ALL_CIPHERS)
@SETTINGS
@given(data=st.data(), plain=st.binary(max_size=300), aad=st.binary(max_size=40))
def test_round_trip(encr_id, bits, data, plain, aad):
    keymat = data.draw(st.binary(min_size=encr_keymat_size(encr_id, bits),
                                 max_size=encr_keymat_size(encr_id, bits)))
    c = make_cipher(encr_id, bits, keymat)
    iv = data.draw(st.binary(min_size=c.iv_size, max_size=c.iv_size))
    if encr_id == EncrId.AES_CBC:
        plain = plain + bytes(-len(plain) % 16)
    out = c.encrypt(iv, plain, aad)
    assert len(out) == len(plain) + c.icv_size
    assert c.decrypt(iv, out, aad) == plain


@pytest.mark.parametrize("encr_id,bits", AEAD_CIPHERS)
@SETTINGS
@given(data=st.data(), plain=st.binary(max_size=200), aad=st.binary(max_size=40))
def test_flipped_bit_is_an_integrity_error(encr_id, bits, data, plain, aad):
    c = make_cipher(encr_id, bits, bytes(range(encr_keymat_size(encr_id, bits))))
    iv = CounterIv(data.draw(st.integers(1, 2**64 - 1)))()
    sealed = bytearray(c.encrypt(iv, plain, aad))
    bit = data.draw(st.integers(0, len(sealed) * 8 - 1))  # ciphertext or tag
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError):
        c.decrypt(iv, bytes(sealed), aad)


@pytest.mark.parametrize("encr_id,bits", AEAD_CIPHERS)
def test_flipped_iv_or_aad_is_an_integrity_error(encr_id, bits):
    c = make_cipher(encr_id, bits, bytes(encr_keymat_size(encr_id, bits)))
    sealed = c.encrypt(b"\x00" * 7 + b"\x01", b"payload", b"header")
    with pytest.raises(IntegrityError):
        c.decrypt(b"\x00" * 7 + b"\x02", sealed, b"header")
    with pytest.raises(IntegrityError):
        c.decrypt(b"\x00" * 7 + b"\x01", sealed, b"headeR")


# ---- IVs


@SETTINGS
@given(start=st.integers(1, 2**64 - 1), n=st.integers(1, 300))
def test_counter_iv_never_repeats(start, n):
    ivs = CounterIv(start)
    seen = set()
    for _ in range(n):
        try:
            iv = ivs()
        except NonceExhausted:
            break
        assert len(iv) == 8 and iv not in seen
        seen.add(iv)
    assert len(seen) == min(n, 2**64 - start)


def test_counter_iv_starts_at_one_and_refuses_to_wrap():
    ivs = CounterIv()
    assert ivs() == b"\x00" * 7 + b"\x01" and ivs() == b"\x00" * 7 + b"\x02"
    last = CounterIv(2**64 - 1)
    assert last.remaining == 1
    assert last() == b"\xff" * 8
    with pytest.raises(NonceExhausted):
        last()
    with pytest.raises(NonceExhausted):  # stays exhausted
        last()
    with pytest.raises(ValueError):
        CounterIv(0)


def test_random_iv_uses_the_given_rng():
    assert random_iv(16, lambda n: b"\x07" * n) == b"\x07" * 16
    assert len(random_iv(16)) == 16
    with pytest.raises(ValueError):
        random_iv(16, lambda n: b"short")


@pytest.mark.parametrize("encr_id,bits", ALL_CIPHERS)
def test_accepts_memoryview_slices(encr_id, bits):
    # ESP hands in slices of a received datagram without copying.
    c = make_cipher(encr_id, bits, bytes(range(encr_keymat_size(encr_id, bits))))
    packet = bytearray(b"\x11" * c.iv_size + bytes(range(48)))
    view = memoryview(packet)
    iv, plain = view[: c.iv_size], view[c.iv_size :]
    sealed = c.encrypt(iv, plain, memoryview(b"aad"))
    assert sealed == c.encrypt(bytes(iv), bytes(plain), b"aad")
    assert c.decrypt(iv, memoryview(sealed), memoryview(b"aad")) == bytes(plain)


def test_cbc_open_context_paths_interoperate_with_plain_cbc():
    """encrypt_random_iv/decrypt_stream keep one cipher context open per direction;
    every packet must still be exactly CBC under the IV it carries."""
    import os as _os

    from engine.crypto.encr import make_cipher
    from engine.crypto.transforms import EncrId

    key = _os.urandom(32)
    a = make_cipher(EncrId.AES_CBC, 256, key)
    b = make_cipher(EncrId.AES_CBC, 256, key)
    ivs = set()
    for n in (16, 32, 1408, 16, 64):
        plain = _os.urandom(n)
        out = a.encrypt_random_iv(plain)
        iv, ct = out[:16], out[16:]
        ivs.add(iv)
        assert b.decrypt(iv, ct) == plain          # a fresh context agrees
        assert b.decrypt_stream(iv, ct) == plain   # and so does the open one
        assert a.encrypt(iv, plain) == ct
    assert len(ivs) == 5
    import pytest as _pytest

    from engine.crypto.errors import IntegrityError as _Ie

    with _pytest.raises(_Ie):
        b.decrypt_stream(b"\0" * 16, b"\0" * 15)
