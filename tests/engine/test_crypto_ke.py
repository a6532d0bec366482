"""Key exchange: RFC 5903 §8 ECP vectors, RFC 7748 / RFC 8031 Curve25519 and
Curve448 vectors, RFC 3526 prime sanity and MODP agreement, peer validation."""

from __future__ import annotations

import itertools
import random

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519  # test oracle only

from engine.crypto.errors import InvalidKeyExchange, UnsupportedTransform
from engine.crypto.ke import (
    MODP_GENERATOR,
    MODP_PRIMES,
    SUPPORTED_GROUPS,
    KeyExchange,
    ke_public_size,
)
from engine.crypto.transforms import KeId


def h(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


# ---- RFC 5903 §8.1-8.3: i, g^i, r, g^r, g^ir (x only on the wire)

RFC5903 = {
    KeId.ECP_256: dict(
        i="C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
        gi="DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180"
        "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
        r="C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
        gr="D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63"
        "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
        gir="D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE",
    ),
    KeId.ECP_384: dict(
        i="099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655"
        "E35B538041E649EE3FAEF896783AB194",
        gi="667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6"
        "DE3AC808ACB4BDB4C88732AEE95F41AA9482ED1FC0EEB9CAFC4984625CCFC23F"
        "65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C",
        r="41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942"
        "E0308312916B8ED2960E4BD55A7448FC",
        gr="E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D"
        "0D1AC43A0336DEF96FDA41D0774A3571DCFBEC7AACF3196472169E838430367F"
        "66EEBE3C6E70C416DD5F0C68759DD1FFF83FA40142209DFF5EAAD96DB9E6386C",
        gir="11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4"
        "D603135569B9E9D09CF5D4A270F59746",
    ),
    KeId.ECP_521: dict(
        i="0037ADE9319A89F4DABDB3EF411AACCCA5123C61ACAB57B5393DCE47608172A0"
        "95AA85A30FE1C2952C6771D937BA9777F5957B2639BAB072462F68C27A57382D4A52",
        gi="0015417E84DBF28C0AD3C278713349DC7DF153C897A1891BD98BAB4357C9ECBE"
        "E1E3BF42E00B8E380AEAE57C2D107564941885942AF5A7F4601723C4195D176CED3E"
        "017CAE20B6641D2EEB695786D8C946146239D099E18E1D5A514C739D7CB4A10A"
        "D8A788015AC405D7799DC75E7B7D5B6CF2261A6A7F1507438BF01BEB6CA3926F9582",
        r="0145BA99A847AF43793FDD0E872E7CDFA16BE30FDC780F97BCCC3F078380201E"
        "9C677D600B343757A3BDBF2A3163E4C2F869CCA7458AA4A4EFFC311F5CB151685EB9",
        gr="00D0B3975AC4B799F5BEA16D5E13E9AF971D5E9B984C9F39728B5E5739735A21"
        "9B97C356436ADC6E95BB0352F6BE64A6C2912D4EF2D0433CED2B6171640012D9460F"
        "015C68226383956E3BD066E797B623C27CE0EAC2F551A10C2C724D9852077B87"
        "220B6536C5C408A1D2AEBB8E86D678AE49CB57091F4732296579AB44FCD17F0FC56A",
        gir="01144C7D79AE6956BC8EDB8E7C787C4521CB086FA64407F97894E5E6B2D79B04"
        "D1427E73CA4BAA240A34786859810C06B3C715A3A8CC3151F2BEE417996D19F3DDEA",
    ),
}


@pytest.mark.parametrize("group", list(RFC5903))
def test_rfc5903_ecp_vectors(group):
    v = {k: h(x) for k, x in RFC5903[group].items()}
    ki = KeyExchange.from_private(group, v["i"])
    kr = KeyExchange.from_private(group, v["r"])
    assert ki.public_bytes() == v["gi"]
    assert kr.public_bytes() == v["gr"]
    assert ki.compute_shared(v["gr"]) == v["gir"]
    assert kr.compute_shared(v["gi"]) == v["gir"]
    assert len(v["gi"]) == ke_public_size(group)


@pytest.mark.parametrize("group", list(RFC5903))
def test_ecp_rejects_points_off_the_curve(group):
    ke = KeyExchange(group)
    good = bytearray(h(RFC5903[group]["gr"]))
    good[-1] ^= 1  # y no longer matches x
    with pytest.raises(InvalidKeyExchange):
        ke.compute_shared(bytes(good))
    with pytest.raises(InvalidKeyExchange):
        ke.compute_shared(bytes(ke_public_size(group)))  # (0, 0) is not on the curve
    with pytest.raises(InvalidKeyExchange, match="bytes"):
        ke.compute_shared(b"\x04" + h(RFC5903[group]["gr"]))  # SEC1 prefix is not IKE format


# ---- RFC 7748 / RFC 8031


def test_rfc7748_x25519_function_vector():
    # §5.2 first vector: X25519(scalar, u) through our API with u as the peer value.
    k = KeyExchange.from_private(
        KeId.CURVE25519, h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    )
    assert k.compute_shared(
        h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    ) == h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")


def test_rfc7748_x448_function_vector():
    k = KeyExchange.from_private(
        KeId.CURVE448,
        h("3d262fddf9ec8e88495266fea19a34d28882acef045104d0d1aae121"
          "700a779c984c24f8cdd78fbff44943eba368f54b29259a4f1c600ad3"),
    )
    assert k.compute_shared(
        h("06fce640fa3487bfda5f6cf2d5263f8aad88334cbd07437f020f08f9"
          "814dc031ddbdc38c19c6da2583fa5429db94ada18aa7a7fb4ef8a086")
    ) == h("ce3e4ff95a60dc6697da1db1d85e6afbdf79b50a2412d7546d5f239f"
           "e14fbaadeb445fc66a01b0779d98223961111e21766282f73dd96b6f")


DH_VECTORS = [
    pytest.param(  # RFC 7748 §6.1
        KeId.CURVE25519,
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
        id="rfc7748-6.1",
    ),
    pytest.param(  # RFC 8031 appendix A
        KeId.CURVE25519,
        "751fb4308655b476b6789b7325f9ea8cddd16a58533ff6d9e60009464a5f9d94",
        "48d5ddd4061257ba166fa3f9bbdb74f1a4e81c089384fa77f790709f0dfbc766",
        "0a54645253290d60ddadd0e030bacd9e5501efdc220755a1e978f1b839a05688",
        "0be7c1f5aad87d7e448662673298a443478b859745179eaf564c79c0ef6eee25",
        "c74950607a12327f3204d94b6825bfb068b7f8319a9e3708ed3d43ce8130c950",
        id="rfc8031-A",
    ),
    pytest.param(  # RFC 7748 §6.2
        KeId.CURVE448,
        "9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28dd9c9baf5"
        "74a9419744897391006382a6f127ab1d9ac2d8c0a598726b",
        "9b08f7cc31b7e3e67d22d5aea121074a273bd2b83de09c63faa73d2c22c5d9bb"
        "c836647241d953d40c5b12da88120d53177f80e532c41fa0",
        "1c306a7ac2a0e2e0990b294470cba339e6453772b075811d8fad0d1d6927c120"
        "bb5ee8972b0d3e21374c9c921b09d1b0366f10b65173992d",
        "3eb7a829b0cd20f5bcfc0b599b6feccf6da4627107bdb0d4f345b43027d8b972"
        "fc3e34fb4232a13ca706dcb57aec3dae07bdc1c67bf33609",
        "07fff4181ac6cc95ec1c16a94a0f74d12da232ce40a77552281d282bb60c0b56"
        "fd2464c335543936521c24403085d59a449a5037514a879d",
        id="rfc7748-6.2",
    ),
]


@pytest.mark.parametrize("group,a_priv,a_pub,b_priv,b_pub,shared", DH_VECTORS)
def test_montgomery_dh_vectors(group, a_priv, a_pub, b_priv, b_pub, shared):
    a = KeyExchange.from_private(group, h(a_priv))
    b = KeyExchange.from_private(group, h(b_priv))
    assert a.public_bytes() == h(a_pub) and b.public_bytes() == h(b_pub)
    assert a.compute_shared(h(b_pub)) == h(shared) == b.compute_shared(h(a_pub))


@pytest.mark.parametrize("group,size", [(KeId.CURVE25519, 32), (KeId.CURVE448, 56)])
def test_montgomery_rejects_all_zero_result(group, size):
    ke = KeyExchange(group)
    # u = 0 (and u = 1 for X25519) are small-order points: the result is all zero.
    with pytest.raises(InvalidKeyExchange):
        ke.compute_shared(bytes(size))
    if group == KeId.CURVE25519:
        with pytest.raises(InvalidKeyExchange):
            ke.compute_shared(b"\x01" + bytes(31))
    with pytest.raises(InvalidKeyExchange, match="bytes"):
        ke.compute_shared(bytes(size - 1))


def test_x25519_agrees_with_cryptography_directly():
    ours = KeyExchange(KeId.CURVE25519)
    theirs = x25519.X25519PrivateKey.generate()
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    their_pub = theirs.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert ours.compute_shared(their_pub) == theirs.exchange(
        x25519.X25519PublicKey.from_public_bytes(ours.public_bytes())
    )


# ---- RFC 3526 MODP groups


def _pi_fixed(bits: int) -> int:
    """floor(pi * 2**bits), Machin's formula in integers with guard bits."""
    guard = 64
    one = 1 << (bits + guard)

    def atan_inv(x: int) -> int:
        total, term, n, sign = 0, one // x, 1, 1
        while term:
            total += sign * (term // n)
            term //= x * x
            n += 2
            sign = -sign
        return total

    return (16 * atan_inv(5) - 4 * atan_inv(239)) >> guard


# RFC 2409 §6.2 and RFC 3526: p = 2^n - 2^(n-64) - 1 + 2^64 * ([2^(n-130) pi] + offset)
RFC3526_FORMULA = {2: (1024, 129093), 5: (1536, 741804), 14: (2048, 124476),
                   15: (3072, 1690314), 16: (4096, 240904), 17: (6144, 929484),
                   18: (8192, 4743158)}


def _probably_prime(n: int, rounds: int = 8) -> bool:
    rng = random.Random(n)  # deterministic witnesses
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@pytest.mark.parametrize("group", sorted(RFC3526_FORMULA))
def test_rfc3526_primes(group):
    bits, offset = RFC3526_FORMULA[group]
    p = MODP_PRIMES[group]
    assert p == 2**bits - 2 ** (bits - 64) - 1 + 2**64 * (_pi_fixed(bits - 130) + offset)
    assert p.bit_length() == bits and ke_public_size(group) == bits // 8
    assert MODP_GENERATOR == 2
    if bits <= 2048:  # keep the suite fast; the formula pins the larger ones
        assert _probably_prime(p, 4) and _probably_prime((p - 1) // 2, 4)  # safe prime


def test_modp_2048_exchange_agrees_and_matches_plain_arithmetic():
    p = MODP_PRIMES[KeId.MODP_2048]
    a = KeyExchange.from_private(KeId.MODP_2048, (0x1234567 << 300 | 0xABCDEF).to_bytes(48, "big"))
    b = KeyExchange(KeId.MODP_2048)
    ga, gb = a.public_bytes(), b.public_bytes()
    assert len(ga) == len(gb) == 256
    assert int.from_bytes(ga, "big") == pow(2, 0x1234567 << 300 | 0xABCDEF, p)
    shared = a.compute_shared(gb)
    assert shared == b.compute_shared(ga)
    assert len(shared) == 256
    assert int.from_bytes(shared, "big") == pow(int.from_bytes(gb, "big"), 0x1234567 << 300 | 0xABCDEF, p)


def test_modp_shared_secret_keeps_leading_zeros():
    # A peer value whose g^ir has a zero first byte (about 1 in 256, found with
    # plain arithmetic): the secret must still be the prime's length, since
    # RFC 7296 §2.14 feeds all of it to the prf.
    p = MODP_PRIMES[KeId.MODP_1024]
    x = 0xC0FFEE << 200
    a = KeyExchange.from_private(KeId.MODP_1024, x.to_bytes(32, "big"))
    peer_exp = next(e for e in itertools.count(2) if pow(2, x * e, p) < 1 << (1024 - 8))
    shared = a.compute_shared(pow(2, peer_exp, p).to_bytes(128, "big"))
    assert len(shared) == 128 and shared[0] == 0
    assert int.from_bytes(shared, "big") == pow(2, x * peer_exp, p)


@pytest.mark.parametrize("group", [KeId.MODP_2048, KeId.MODP_1024])
def test_modp_rejects_degenerate_public_values(group):
    p = MODP_PRIMES[group]
    size = ke_public_size(group)
    ke = KeyExchange(group)
    for y in (0, 1, p - 1, p, 2**(8 * size) - 1):
        with pytest.raises(InvalidKeyExchange):
            ke.compute_shared(y.to_bytes(size, "big"))
    with pytest.raises(InvalidKeyExchange, match="bytes"):
        ke.compute_shared(b"\x02" * (size - 1))


# ---- all groups


@pytest.mark.parametrize("group", sorted(g for g in SUPPORTED_GROUPS if g not in (17, 18)))
def test_every_group_agrees(group):
    a, b = KeyExchange(group), KeyExchange(group)
    assert len(a.public_bytes()) == ke_public_size(group)
    assert a.compute_shared(b.public_bytes()) == b.compute_shared(a.public_bytes())


@pytest.mark.parametrize("group", [KeId.MODP_2048, KeId.ECP_256, KeId.ECP_521, KeId.CURVE25519, KeId.CURVE448])
def test_rng_makes_keys_deterministic(group):
    def counter_rng():
        state = iter(range(1, 10**6))
        return lambda n: bytes(next(state) % 256 for _ in range(n))

    a1, a2 = KeyExchange(group, rng=counter_rng()), KeyExchange(group, rng=counter_rng())
    assert a1.public_bytes() == a2.public_bytes()
    b = KeyExchange(group)
    assert a1.compute_shared(b.public_bytes()) == b.compute_shared(a1.public_bytes())


@pytest.mark.parametrize("group", [0, 1, 22, 25, 28, 1000])
def test_unsupported_groups(group):
    with pytest.raises(UnsupportedTransform):
        ke_public_size(group)
    with pytest.raises(UnsupportedTransform):
        KeyExchange(group)


def test_repr_hides_private_key():
    k = KeyExchange.from_private(KeId.CURVE25519, b"\x41" * 32)
    assert repr(k) == "KeyExchange(CURVE25519)"
