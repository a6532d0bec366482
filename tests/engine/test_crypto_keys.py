"""IKE SA / CHILD SA key derivation (RFC 7296 §2.14, §2.17, §2.18) and the AUTH,
NAT detection and cookie helpers (§2.15, §2.23, §2.6)."""

from __future__ import annotations

import hashlib
import hmac as std_hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.crypto.auth import (
    COOKIE_SIZE,
    cookie_value,
    nat_detection_hash,
    psk_auth_data,
    signed_octets,
    verify_cookie,
)
from engine.crypto.encr import make_cipher
from engine.crypto.integ import Integ
from engine.crypto.keys import IkeKeys, child_key_sizes, child_keymat, derive_ike_keys, split_child_keymat
from engine.crypto.prf import Prf, prf_plus
from engine.crypto.transforms import EncrId, IntegId, PrfId
from engine.secret import Secret

SETTINGS = settings(max_examples=40, deadline=None)


def h(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


def _keys_bytes(keys: IkeKeys) -> list[bytes]:
    return [getattr(keys, f).reveal() for f in ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr")]


# ---- an SP 800-135 style IKEv2 KDF vector (HMAC-SHA1), as printed by libreswan's
# CAVS tool (programs/cavp ikev2 test driver): 132 bytes of DKM is exactly the
# key material for AES-CBC-128 + HMAC-SHA1-96 + PRF-HMAC-SHA1.

CAVS = dict(
    gir="4b2c1f971981a8ad8d0abeafabf38cf75fc8349c148142465ed9c8b516b8be52",
    gir_new="863f3c9d06efd39d2b907b97f8699e5dd5251ef64a2a176f36ee40c87d4f9330",
    ni="32b50d5f4a3763f3", nr="9206a04b26564cb1",
    spii="34c9e7c188868785", spir="3ff77d760d2b2199",
    skeyseed="a9a7b222b59f8f48645f28a1db5b5f5d7479cba7",
    dkm="a14293677cc80ff8f9cc0eee30d895da9d8f405666e30ef0dfcb63c634a46002a2a63080e514a062768b"
        "76606f9fa5e992204fc5a670bde3f10d6b027113936a5c55b648a194ae587b0088d52204b702c979fa28"
        "0870d2ed41efa9c549fd11198af1670b143d384bd275c5f594cf266b05ebadca855e4249520a441a8115"
        "7435a7a56cc4",
    dkm_child="8059e3ee8810e6c3a91bc8bcd2a7a41151b8d0e6ae239c7b38093ad85ef4c5811a8e7b5d1cdabd95"
        "60b2d5e092d1f24e2d4b85eccdf0ad0dc9abd94b51ee71814ca6dbc8bb51b6309f5b9545c7eb35cf5580"
        "b1e521a8fe20754a2d883ba0c2cf285f524aea6545b33106bc03e614296d319d41d4b50b3f510b1c0a22"
        "f3e664994d234cb4",
    dkm_child_dh="bb43244c1860ad65ee1e211ffe8bb3661750c8f89cb9f547df7f4fa61d37301628190e38c66232"
        "eab4b3ab14c400a5197dd3730ed4820a8a10394d51e1c0400052f63ebd36b0e7ef53aaed31eba4a5080d"
        "7d4b5666023a8bbb5ffb7857240f9a05884d1b7d2f933708450b7b3288f1fc863ab49fa901227cffc06e"
        "27899c7054d56fd74c",
    skeyseed_rekey="63e81194946ebd05df7df5ebf5d8750056bf1f1d",
)


def test_ikev2_kdf_known_answer():
    v = {k: h(x) for k, x in CAVS.items()}
    assert len(v["dkm"]) == 132
    skeyseed, keys = derive_ike_keys(
        PrfId.HMAC_SHA1, EncrId.AES_CBC, 128, IntegId.HMAC_SHA1_96,
        v["ni"], v["nr"], v["gir"], v["spii"], v["spir"],
    )
    assert skeyseed == v["skeyseed"]
    parts = _keys_bytes(keys)
    assert [len(p) for p in parts] == [20, 20, 20, 16, 16, 20, 20]
    assert b"".join(parts) == v["dkm"]
    sk_d = parts[0]
    assert child_keymat(PrfId.HMAC_SHA1, sk_d, v["ni"], v["nr"], 132) == v["dkm_child"]
    assert child_keymat(PrfId.HMAC_SHA1, sk_d, v["ni"], v["nr"], 132, v["gir_new"]) == v["dkm_child_dh"]
    rekey_seed, _ = derive_ike_keys(
        PrfId.HMAC_SHA1, EncrId.AES_CBC, 128, IntegId.HMAC_SHA1_96,
        v["ni"], v["nr"], v["gir_new"], v["spii"], v["spir"], old_sk_d=sk_d,
    )
    assert rekey_seed == v["skeyseed_rekey"]


# ---- lengths for the common suites

SUITES = [
    # prf, encr, bits, integ, (SK_d/SK_p len, SK_a len, SK_e len)
    (PrfId.HMAC_SHA2_384, EncrId.AES_GCM_16, 256, None, (48, 0, 36)),
    (PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 128, None, (32, 0, 20)),
    (PrfId.HMAC_SHA2_256, EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, (32, 32, 16)),
    (PrfId.HMAC_SHA2_512, EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256, (64, 64, 32)),
    (PrfId.HMAC_SHA2_384, EncrId.AES_CBC, 192, IntegId.HMAC_SHA2_384_192, (48, 48, 24)),
    (PrfId.HMAC_SHA2_256, EncrId.CHACHA20_POLY1305, None, IntegId.NONE, (32, 0, 36)),
    (PrfId.AES128_XCBC, EncrId.AES_CBC, 128, IntegId.AES_XCBC_96, (16, 16, 16)),
    (PrfId.HMAC_SHA1, EncrId.AES_CTR, 128, IntegId.HMAC_SHA1_96, (20, 20, 20)),
]


@pytest.mark.parametrize("prf_id,encr_id,bits,integ_id,lens", SUITES)
def test_derive_ike_keys_lengths_and_usability(prf_id, encr_id, bits, integ_id, lens):
    p_len, a_len, e_len = lens
    ni, nr, gir = b"\x01" * 32, b"\x02" * 32, b"\x03" * 256
    spi_i, spi_r = bytes(range(8)), bytes(range(8, 16))
    skeyseed, keys = derive_ike_keys(prf_id, encr_id, bits, integ_id, ni, nr, gir, spi_i, spi_r)
    assert len(skeyseed) == Prf(prf_id).hash_size
    parts = _keys_bytes(keys)
    assert [len(p) for p in parts] == [p_len, a_len, a_len, e_len, e_len, p_len, p_len]
    assert all(isinstance(getattr(keys, f), Secret) for f in IkeKeys.__dataclass_fields__)
    # The stream is prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) cut in order.
    assert b"".join(parts) == prf_plus(Prf(prf_id), skeyseed, ni + nr + spi_i + spi_r, sum(map(len, parts)))
    # The keys fit the transforms they are for.
    make_cipher(encr_id, bits, parts[3])
    if a_len:
        Integ(integ_id, parts[1])
    # Directions differ.
    assert parts[3] != parts[4] and parts[5] != parts[6]


def test_skeyseed_uses_whole_nonces_for_hmac():
    ni, nr, gir = b"\xaa" * 32, b"\xbb" * 24, b"g" * 32
    skeyseed, _ = derive_ike_keys(PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 256, None, ni, nr, gir, b"i" * 8, b"r" * 8)
    assert skeyseed == std_hmac.new(ni + nr, gir, hashlib.sha256).digest()


@pytest.mark.parametrize("prf_id", [PrfId.AES128_XCBC, PrfId.AES128_CMAC])
def test_skeyseed_uses_half_of_each_nonce_for_fixed_key_prfs(prf_id):
    ni, nr, gir = bytes(range(32)), bytes(range(100, 132)), b"g" * 32
    skeyseed, _ = derive_ike_keys(prf_id, EncrId.AES_CBC, 128, IntegId.AES_XCBC_96, ni, nr, gir, b"i" * 8, b"r" * 8)
    assert skeyseed == Prf(prf_id)(ni[:8] + nr[:8], gir)


def test_rekey_skeyseed_uses_old_prf_and_sk_d():
    old_sk_d, gir, ni, nr = b"D" * 48, b"G" * 64, b"N" * 32, b"M" * 32
    seed, keys = derive_ike_keys(
        PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 128, None, ni, nr, gir, b"i" * 8, b"r" * 8,
        old_sk_d=old_sk_d, old_prf_id=PrfId.HMAC_SHA2_384,
    )
    assert seed == std_hmac.new(old_sk_d, gir + ni + nr, hashlib.sha384).digest()
    assert len(keys.sk_d) == 32  # the new SA's PRF sizes its keys


@pytest.mark.parametrize(
    "encr_id,bits,integ_id",
    [(EncrId.AES_GCM_16, 128, IntegId.HMAC_SHA2_256_128), (EncrId.AES_CBC, 128, None), (EncrId.AES_CBC, 128, 0)],
)
def test_derive_rejects_aead_with_integ_and_cbc_without(encr_id, bits, integ_id):
    with pytest.raises(ValueError):
        derive_ike_keys(PrfId.HMAC_SHA2_256, encr_id, bits, integ_id, b"n" * 16, b"m" * 16, b"g", b"i" * 8, b"r" * 8)


def test_derive_rejects_bad_spis():
    with pytest.raises(ValueError, match="SPI"):
        derive_ike_keys(PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 128, None, b"n" * 16, b"m" * 16, b"g", b"i" * 4, b"r" * 8)


def test_ike_keys_never_show_in_repr():
    _, keys = derive_ike_keys(PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 128, None, b"n" * 16, b"m" * 16, b"g", b"i" * 8, b"r" * 8)
    text = repr(keys)
    for part in _keys_bytes(keys):
        if part:
            assert part.hex() not in text and repr(part) not in text


# ---- CHILD SA keymat


def test_child_keymat_split_order():
    encr_len, integ_len = child_key_sizes(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_256_128)
    assert (encr_len, integ_len) == (32, 32)
    km = child_keymat(PrfId.HMAC_SHA2_256, b"d" * 32, b"n" * 32, b"m" * 32, 2 * (encr_len + integ_len))
    ei, ai, er, ar = split_child_keymat(km, encr_len, integ_len)
    assert km == ei + ai + er + ar
    assert (len(ei), len(ai), len(er), len(ar)) == (32, 32, 32, 32)
    assert child_key_sizes(EncrId.AES_GCM_16, 256, None) == (36, 0)
    ei, ai, er, ar = split_child_keymat(km[:72], 36, 0)
    assert (ei, ai, er, ar) == (km[:36], b"", km[36:72], b"")
    with pytest.raises(ValueError):
        split_child_keymat(km, 36, 0)


def test_child_keymat_with_and_without_pfs():
    sk_d, ni, nr, gir = b"d" * 32, b"n" * 32, b"m" * 32, b"g" * 256
    plain = child_keymat(PrfId.HMAC_SHA2_256, sk_d, ni, nr, 100)
    pfs = child_keymat(PrfId.HMAC_SHA2_256, sk_d, ni, nr, 100, shared_secret=gir)
    assert plain == prf_plus(Prf(PrfId.HMAC_SHA2_256), sk_d, ni + nr, 100)
    assert pfs == prf_plus(Prf(PrfId.HMAC_SHA2_256), sk_d, gir + ni + nr, 100)


# ---- AUTH (§2.15)


def test_psk_auth_and_signed_octets_match_the_rfc_formulas():
    real_message = b"IKE_SA_INIT request bytes" * 10
    nonce_r = b"R" * 32
    sk_pi = b"P" * 32
    id_body = b"\x02\x00\x00\x00" + b"gateway.example"  # ID_FQDN, reserved, data
    octets = signed_octets(real_message, nonce_r, PrfId.HMAC_SHA2_256, sk_pi, id_body)
    mac_id = std_hmac.new(sk_pi, id_body, hashlib.sha256).digest()
    assert octets == real_message + nonce_r + mac_id
    psk = b"correct horse battery staple"
    pad_key = std_hmac.new(psk, b"Key Pad for IKEv2", hashlib.sha256).digest()
    want = std_hmac.new(pad_key, octets, hashlib.sha256).digest()
    assert psk_auth_data(PrfId.HMAC_SHA2_256, psk, octets) == want
    assert psk_auth_data(PrfId.HMAC_SHA2_256, Secret(psk), octets) == want
    assert signed_octets(real_message, nonce_r, PrfId.HMAC_SHA2_256, Secret(sk_pi), id_body) == octets
    assert psk_auth_data(PrfId.HMAC_SHA2_256, psk + b"!", octets) != want


# ---- NAT detection (§2.23)


@pytest.mark.parametrize("addr,packed", [("192.0.2.1", bytes([192, 0, 2, 1])),
                                         ("2001:db8::1", bytes.fromhex("20010db8" + "00" * 11 + "01"))])
def test_nat_detection_hash(addr, packed):
    spi_i, spi_r = bytes(range(8)), bytes(8)
    got = nat_detection_hash(spi_i, spi_r, addr, 4500)
    assert got == hashlib.sha1(spi_i + spi_r + packed + b"\x11\x94").digest()
    assert len(got) == 20
    assert nat_detection_hash(spi_i, spi_r, addr, 500) != got


def test_nat_detection_rejects_bad_input():
    with pytest.raises(ValueError):
        nat_detection_hash(bytes(8), bytes(8), "not-an-ip", 500)
    with pytest.raises(ValueError):
        nat_detection_hash(bytes(8), bytes(8), "192.0.2.1", 70000)


# ---- cookies (§2.6)


def test_cookie_value_and_rotation():
    ni, spi_i = b"n" * 32, bytes(range(8))
    c = cookie_value(b"secret-1", ni, "198.51.100.7", spi_i, version=1)
    assert len(c) == COOKIE_SIZE and c[0] == 1
    assert c[1:] == std_hmac.new(b"secret-1", ni + bytes([198, 51, 100, 7]) + spi_i, hashlib.sha256).digest()
    secrets = {1: b"secret-1", 2: Secret(b"secret-2")}
    assert verify_cookie(secrets, c, ni, "198.51.100.7", spi_i)
    assert verify_cookie(secrets, cookie_value(secrets[2], ni, "198.51.100.7", spi_i, 2), ni, "198.51.100.7", spi_i)
    assert not verify_cookie(secrets, c, ni, "198.51.100.8", spi_i)      # other address
    assert not verify_cookie(secrets, c, b"x" * 32, "198.51.100.7", spi_i)  # other nonce
    assert not verify_cookie({2: b"secret-2"}, c, ni, "198.51.100.7", spi_i)  # retired secret
    assert not verify_cookie(secrets, c[:-1], ni, "198.51.100.7", spi_i)
    with pytest.raises(ValueError):
        cookie_value(b"s", ni, "198.51.100.7", spi_i, version=256)


@SETTINGS
@given(cookie=st.binary(max_size=40))
def test_verify_cookie_never_raises_on_garbage(cookie):
    assert verify_cookie({0: b"s"}, cookie, b"n" * 16, "192.0.2.1", bytes(8)) in (True, False)
