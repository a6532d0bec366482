"""PRF, prf+ and integrity transforms against RFC 4868, RFC 3566, RFC 4434,
RFC 4493/4494 and RFC 4615 known answers."""

from __future__ import annotations

import hmac as std_hmac
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.crypto.errors import UnsupportedTransform
from engine.crypto.integ import Integ, integ_icv_size, integ_key_size
from engine.crypto.prf import Prf, prf_plus
from engine.crypto.transforms import IntegId, PrfId

SETTINGS = settings(max_examples=60, deadline=None)


def h(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


# RFC 4868 §2.7.1 PRF test vectors (the PRF uses the whole HMAC output).
PRF_CASES = [
    pytest.param(
        b"\x0b" * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
        "faea9ea9076ede7f4af152e8b2fa9cb6",
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
        "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
        id="PRF-1",
    ),
    pytest.param(
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
        "8e2240ca5e69e2c78b3239ecfab21649",
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
        "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        id="PRF-2",
    ),
    pytest.param(
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b"
        "2a5ab39dc13814b94e3ab6e101a34f27",
        "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39"
        "bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
        id="PRF-3",
    ),
    pytest.param(
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6"
        "0c2ef6ab4030fe8296248df163f44952",
        "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
        "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
        id="PRF-5",
    ),
]


@pytest.mark.parametrize("key,data,want256,want384,want512", PRF_CASES)
def test_rfc4868_prf_vectors(key, data, want256, want384, want512):
    assert Prf(PrfId.HMAC_SHA2_256)(key, data) == h(want256)
    assert Prf(PrfId.HMAC_SHA2_384)(key, data) == h(want384)
    assert Prf(PrfId.HMAC_SHA2_512)(key, data) == h(want512)


# RFC 4868 §2.7.2 authentication vectors: full PRF output and the truncated ICV.
AUTH_CASES = [
    pytest.param(
        IntegId.HMAC_SHA2_256_128, b"\x0b" * 32, b"Hi There",
        "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7", id="AUTH256-1",
    ),
    pytest.param(
        IntegId.HMAC_SHA2_256_128, b"Jefe" * 8, b"what do ya want for nothing?",
        "167f928588c5cc2eef8e3093caa0e87c9ff566a14794aa61648d81621a2a40c6", id="AUTH256-2",
    ),
    pytest.param(
        IntegId.HMAC_SHA2_256_128, b"\xaa" * 32, b"\xdd" * 50,
        "cdcb1220d1ecccea91e53aba3092f962e549fe6ce9ed7fdc43191fbde45c30b0", id="AUTH256-3",
    ),
    pytest.param(
        IntegId.HMAC_SHA2_384_192, b"\x0b" * 48, b"Hi There",
        "b6a8d5636f5c6a7224f9977dcf7ee6c7fb6d0c48cbdee9737a959796489bddbc"
        "4c5df61d5b3297b4fb68dab9f1b582c2", id="AUTH384-1",
    ),
    pytest.param(
        IntegId.HMAC_SHA2_384_192, b"Jefe" * 12, b"what do ya want for nothing?",
        "2c7353974f1842fd66d53c452ca42122b28c0b594cfb184da86a368e9b8e16f5"
        "349524ca4e82400cbde0686d403371c9", id="AUTH384-2",
    ),
    pytest.param(
        IntegId.HMAC_SHA2_384_192, b"\xaa" * 48, b"\xdd" * 50,
        "809f439be00274321d4a538652164b53554a508184a0c3160353e3428597003d"
        "35914a18770f9443987054944b7c4b4a", id="AUTH384-3",
    ),
    pytest.param(
        IntegId.HMAC_SHA2_512_256, b"\x0b" * 64, b"Hi There",
        "637edc6e01dce7e6742a99451aae82df23da3e92439e590e43e761b33e910fb8"
        "ac2878ebd5803f6f0b61dbce5e251ff8789a4722c1be65aea45fd464e89f8f5b", id="AUTH512-1",
    ),
    pytest.param(
        IntegId.HMAC_SHA2_512_256, b"Jefe" * 16, b"what do ya want for nothing?",
        "cb370917ae8a7ce28cfd1d8f4705d6141c173b2a9362c15df235dfb251b15454"
        "6aa334ae9fb9afc2184932d8695e397bfa0ffb93466cfcceaae38c833b7dba38", id="AUTH512-2",
    ),
    pytest.param(
        IntegId.HMAC_SHA2_512_256, b"\xaa" * 64, b"\xdd" * 50,
        "2ee7acd783624ca9398710f3ee05ae41b9f9b0510c87e49e586cc9bf961733d8"
        "623c7b55cebefccf02d5581acc1c9d5fb1ff68a1de45509fbe4da9a433922655", id="AUTH512-3",
    ),
]

_PRF_FOR_INTEG = {
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
}


@pytest.mark.parametrize("integ_id,key,data,full", AUTH_CASES)
def test_rfc4868_auth_vectors_with_truncation(integ_id, key, data, full):
    full = h(full)
    integ = Integ(integ_id, key)
    icv = integ.compute(data)
    assert len(icv) == integ.icv_size == len(full) // 2
    assert icv == full[: len(full) // 2]
    assert integ.verify(data, icv)
    assert Prf(_PRF_FOR_INTEG[integ_id])(key, data) == full


def test_integ_sizes():
    assert (integ_key_size(IntegId.HMAC_SHA2_256_128), integ_icv_size(IntegId.HMAC_SHA2_256_128)) == (32, 16)
    assert (integ_key_size(IntegId.HMAC_SHA2_384_192), integ_icv_size(IntegId.HMAC_SHA2_384_192)) == (48, 24)
    assert (integ_key_size(IntegId.HMAC_SHA2_512_256), integ_icv_size(IntegId.HMAC_SHA2_512_256)) == (64, 32)
    assert (integ_key_size(IntegId.HMAC_SHA1_96), integ_icv_size(IntegId.HMAC_SHA1_96)) == (20, 12)
    assert (integ_key_size(IntegId.AES_XCBC_96), integ_icv_size(IntegId.AES_XCBC_96)) == (16, 12)


def test_hmac_sha1_96_matches_stdlib():
    key = bytes(range(20))
    data = b"interop only" * 7
    want = std_hmac.new(key, data, hashlib.sha1).digest()[:12]
    assert Integ(IntegId.HMAC_SHA1_96, key).compute(data) == want


@pytest.mark.parametrize("bad", [IntegId.HMAC_MD5_96, IntegId.DES_MAC, IntegId.NONE, 99])
def test_unsupported_integ(bad):
    with pytest.raises(UnsupportedTransform):
        integ_key_size(bad)
    with pytest.raises(UnsupportedTransform):
        Integ(bad, b"\x00" * 16)


def test_integ_rejects_wrong_key_length():
    with pytest.raises(ValueError, match="32-byte key"):
        Integ(IntegId.HMAC_SHA2_256_128, b"\x00" * 31)


def test_integ_is_reusable_and_verify_rejects():
    integ = Integ(IntegId.HMAC_SHA2_256_128, b"k" * 32)
    first = integ.compute(b"packet one")
    integ.compute(b"something else in between")
    assert integ.compute(b"packet one") == first  # the prepared context is not consumed
    assert not integ.verify(b"packet one", bytes(16))
    assert not integ.verify(b"packet one", first[:-1])
    assert not integ.verify(b"packet onE", first)


@pytest.mark.parametrize("bad", [PrfId.HMAC_MD5, PrfId.HMAC_TIGER, 0, 1000])
def test_unsupported_prf(bad):
    with pytest.raises(UnsupportedTransform):
        Prf(bad)


def test_prf_sizes():
    for pid, size in [(PrfId.HMAC_SHA1, 20), (PrfId.HMAC_SHA2_256, 32), (PrfId.HMAC_SHA2_384, 48),
                      (PrfId.HMAC_SHA2_512, 64), (PrfId.AES128_XCBC, 16), (PrfId.AES128_CMAC, 16)]:
        prf = Prf(pid)
        assert prf.id == pid and prf.hash_size == size
        assert prf.key_size == (16 if pid in (PrfId.AES128_XCBC, PrfId.AES128_CMAC) else size)


# ---- AES-XCBC (RFC 3566, RFC 4434) and AES-CMAC (RFC 4493, RFC 4494, RFC 4615)

K16 = bytes(range(16))
M20 = bytes(range(20))


@pytest.mark.parametrize(
    "data,mac",
    [
        (b"", "75f0251d528ac01c4573dfd584d79f29"),
        (bytes(range(3)), "5b376580ae2f19afe7219ceef172756f"),
        (bytes(range(16)), "d2a246fa349b68a79998a4394ff7a263"),
        (bytes(range(20)), "47f51b4564966215b8985c63055ed308"),
        (bytes(range(32)), "f54f0ec8d2b9f3d36807734bd5283fd4"),
    ],
)
def test_rfc3566_xcbc(data, mac):
    assert Prf(PrfId.AES128_XCBC)(K16, data) == h(mac)
    assert Integ(IntegId.AES_XCBC_96, K16).compute(data) == h(mac)[:12]


@pytest.mark.parametrize(
    "key,out",
    [
        (bytes(range(10)), "0fa087af7d866e7653434e602fdde835"),
        (bytes(range(16)) + b"\xed\xcb", "8cd3c93ae598a9803006ffb67c40e9e4"),
    ],
)
def test_rfc4434_xcbc_prf_variable_key(key, out):
    assert Prf(PrfId.AES128_XCBC)(key, M20) == h(out)


CMAC_KEY = h("2b7e151628aed2a6abf7158809cf4f3c")
CMAC_MSG = h(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)


@pytest.mark.parametrize(
    "n,mac",
    [
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ],
)
def test_rfc4493_cmac(n, mac):
    assert Prf(PrfId.AES128_CMAC)(CMAC_KEY, CMAC_MSG[:n]) == h(mac)
    assert Integ(IntegId.AES_CMAC_96, CMAC_KEY).compute(CMAC_MSG[:n]) == h(mac)[:12]


@pytest.mark.parametrize(
    "key,out",
    [
        (bytes(range(16)) + b"\xed\xcb", "84a348a4a45d235babfffc0d2b4da09a"),
        (bytes(range(16)), "980ae87b5f4c9c5214f5b6a8455e4c2d"),
        (bytes(range(10)), "290d9e112edb09ee141fcf64c0b72f3d"),
    ],
)
def test_rfc4615_cmac_prf(key, out):
    assert Prf(PrfId.AES128_CMAC)(key, M20) == h(out)


# ---- prf+ (RFC 7296 §2.13)


def _reference_prf_plus(hash_name: str, key: bytes, seed: bytes, length: int) -> bytes:
    """Independent prf+ from the RFC text, on the standard library's hmac."""
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = std_hmac.new(key, t + seed + bytes([i]), hash_name).digest()
        out += t
        i += 1
    return out[:length]


@pytest.mark.parametrize(
    "pid,name", [(PrfId.HMAC_SHA2_256, "sha256"), (PrfId.HMAC_SHA2_384, "sha384"),
                 (PrfId.HMAC_SHA2_512, "sha512"), (PrfId.HMAC_SHA1, "sha1")]
)
@SETTINGS
@given(key=st.binary(max_size=80), seed=st.binary(max_size=200), length=st.integers(0, 700))
def test_prf_plus_matches_independent_hmac(pid, name, key, seed, length):
    assert prf_plus(Prf(pid), key, seed, length) == _reference_prf_plus(name, key, seed, length)


def test_prf_plus_self_consistency():
    prf = Prf(PrfId.HMAC_SHA2_256)
    key, seed = b"K" * 32, b"Ni|Nr|SPIi|SPIr"
    long = prf_plus(prf, key, seed, 200)
    # T1 = prf(K, S | 0x01), T2 = prf(K, T1 | S | 0x02): the chain, block by block.
    t1 = prf(key, seed + b"\x01")
    t2 = prf(key, t1 + seed + b"\x02")
    assert long[:32] == t1 and long[32:64] == t2
    # Asking for less gives a prefix of asking for more.
    for n in (0, 1, 31, 32, 33, 64, 199):
        assert prf_plus(prf, key, seed, n) == long[:n]
    assert len(prf_plus(prf, key, seed, 255 * 32)) == 255 * 32


def test_prf_plus_length_limit():
    prf = Prf(PrfId.HMAC_SHA2_256)
    with pytest.raises(ValueError, match="prf\\+"):
        prf_plus(prf, b"k", b"s", 255 * 32 + 1)
    with pytest.raises(ValueError):
        prf_plus(prf, b"k", b"s", -1)


@pytest.mark.parametrize("integ_id,key_len", [(IntegId.HMAC_SHA2_256_128, 32), (IntegId.AES_XCBC_96, 16),
                                               (IntegId.AES_CMAC_96, 16), (IntegId.HMAC_SHA1_96, 20)])
def test_integ_accepts_memoryview(integ_id, key_len):
    integ = Integ(integ_id, bytes(range(key_len)))
    data = bytes(range(100))
    assert integ.compute(memoryview(data)[10:70]) == integ.compute(data[10:70])
    assert integ.verify(memoryview(data)[10:70], integ.compute(data[10:70]))
