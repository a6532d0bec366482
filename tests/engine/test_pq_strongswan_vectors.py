"""RFC 9370 / RFC 9242 / RFC 8784 key derivation against strongSwan 6.1.

tests/data/strongswan6_pq_vectors.json holds what the initiator of two charon
6.1 peers logged at level 4 (tests/interop/strongswan6_vectors.py made it):
x25519 + ke1_mlkem768 + ke2_mlkem1024, PSK with a required PPK, a CHILD SA
rekey with x25519 + ke1_mlkem768 and an IKE SA rekey. Each logged output is
recomputed here from the logged inputs with engine.crypto and engine.wire;
`verify` is also run on a fresh charon pair by tests/interop/test_strongswan6.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.crypto.auth import psk_auth_data, signed_octets
from engine.crypto.intauth import IntAuthChain, int_auth_step
from engine.crypto.keys import child_keymat, derive_ike_keys
from engine.crypto.multi_ke import (
    additional_ke_rounds,
    child_keymat_multi,
    derive_intermediate_keys,
    derive_rekeyed_ike_keys,
)
from engine.crypto.ppk import apply_ppk, ppk_key
from engine.crypto.prf import Prf
from engine.crypto.transforms import EncrId, KeId, PrfId
from engine.wire.constants import ExchangeType, PayloadType
from engine.wire.intauth import int_auth_octets

VECTORS = Path(__file__).resolve().parents[1] / "data" / "strongswan6_pq_vectors.json"
PRF = PrfId.HMAC_SHA2_384
ENCR = (EncrId.AES_GCM_16, 256)


def load() -> dict:
    return json.loads(VECTORS.read_text())


def b(v: str) -> bytes:
    return bytes.fromhex(v)


def keys_dict(skeyseed: bytes, keys) -> dict:
    return {"skeyseed": skeyseed.hex(), "sk_d": keys.sk_d.reveal().hex(), "sk_ei": keys.sk_ei.reveal().hex(),
            "sk_er": keys.sk_er.reveal().hex(), "sk_pi": keys.sk_pi.reveal().hex(), "sk_pr": keys.sk_pr.reveal().hex()}


def logged_keys(step: dict) -> dict:
    return {k: step[k] for k in ("skeyseed", "sk_d", "sk_ei", "sk_er", "sk_pi", "sk_pr")}


def check_ike_sa_init(v: dict) -> None:
    init = v["ike_sa_init"]
    seed, keys = derive_ike_keys(PRF, *ENCR, None, b(v["nonce_i"]), b(v["nonce_r"]), b(init["shared"]),
                                 b(v["spi_i"]), b(v["spi_r"]))
    assert keys_dict(seed, keys) == logged_keys(init)


def check_intermediate(v: dict) -> IntAuthChain:
    """Both IKE_INTERMEDIATE rounds: IntAuth octets and values, then the RFC 9370 key update."""
    rounds = additional_ke_rounds({6: KeId.ML_KEM_768, 7: KeId.ML_KEM_1024, 8: 0})
    assert [(r.number, r.group.name) for r in rounds] == [(1, "ML_KEM_768"), (2, "ML_KEM_1024")]
    prev = v["ike_sa_init"]
    chain = IntAuthChain(PRF)
    for mid, (r, logged) in enumerate(zip(rounds, v["intermediate"]), 1):
        assert logged["group"] == r.group.name
        for side, flags, sk_key in (("i", 0x08, "sk_pi"), ("r", 0x20, "sk_pr")):
            # The message was protected with the keys of the step before (RFC 9242 §3.3.2).
            assert logged[f"sk_p_{side}"] == prev[sk_key]
            octets = b(logged[f"octets_{side}"])
            inner = octets[28 + 4:]  # strongSwan's IntAuth_A is the IKE header and the SK header
            assert int_auth_octets(ExchangeType.IKE_INTERMEDIATE, mid, b(v["spi_i"]), b(v["spi_r"]), flags,
                                   PayloadType.KE, inner) == octets
            before = chain.int_auth_i if side == "i" else chain.int_auth_r
            assert before.hex() == logged[f"int_auth_prev_{side}"]
            chain = chain.add(from_initiator=side == "i", sk_p=b(prev[sk_key]), octets=octets)
            now = chain.int_auth_i if side == "i" else chain.int_auth_r
            assert now.hex() == logged[f"int_auth_{side}"]
            assert int_auth_step(PRF, b(prev[sk_key]), before, octets) == now
        seed, keys = derive_intermediate_keys(PRF, *ENCR, None, b(v["nonce_i"]), b(v["nonce_r"]),
                                              b(logged["shared"]), b(v["spi_i"]), b(v["spi_r"]), b(prev["sk_d"]))
        assert keys_dict(seed, keys) == logged_keys(logged)
        prev = logged
    assert chain.responses == 2
    return chain


def check_auth_and_ppk(v: dict, chain: IntAuthChain) -> None:
    last = v["intermediate"][-1]
    auth, ppk = v["auth"], b(v["ppk"])
    ike_auth_mid = 1 + chain.responses  # IKE_SA_INIT 0, IKE_INTERMEDIATE 1 and 2
    int_auth = chain.int_auth(ike_auth_mid)
    assert int_auth == chain.int_auth_i + chain.int_auth_r + bytes((0, 0, 0, 3))
    for side, sk_key, nonce in (("i", "sk_pi", v["nonce_r"]), ("r", "sk_pr", v["nonce_i"])):
        assert auth[f"ppk_{side}"] == v["ppk"]
        sk_p = ppk_key(PRF, ppk, b(last[sk_key]))  # SK_pi' = prf+(PPK, SK_pi) (RFC 8784 §3)
        assert sk_p.reveal().hex() == auth[f"sk_p_{side}"]
        octets = b(auth[f"octets_{side}"])
        real_message = octets[:len(octets) - 32 - Prf(PRF).hash_size - len(int_auth)]  # IKE_SA_INIT as sent
        assert real_message[17] == 0x20 and real_message[18] == ExchangeType.IKE_SA_INIT  # version, exchange
        assert signed_octets(real_message, b(nonce), PRF, sk_p, b(auth[f"id_body_{side}"]), int_auth) == octets
        assert psk_auth_data(PRF, b(v["psk"]), octets).hex() == auth[f"auth_{side}"]
    after = apply_ppk(PRF, ppk, b(last["sk_d"]), b(last["sk_pi"]), b(last["sk_pr"]))
    assert {k: getattr(after, k).reveal().hex() for k in ("sk_d", "sk_pi", "sk_pr")} == v["ppk_keys"]


def check_children(v: dict) -> None:
    sk_d = b(v["ppk_keys"]["sk_d"])  # CHILD SAs come from SK_d'
    child = v["child"]
    keymat = child_keymat(PRF, sk_d, b(v["nonce_i"]), b(v["nonce_r"]), 72)
    assert b(child["seed"]) == b(v["nonce_i"]) + b(v["nonce_r"])
    assert (keymat[:36].hex(), keymat[36:].hex()) == (child["encr_i"], child["encr_r"])
    rk = v["child_rekey"]
    shared, extra, seed = b(rk["shared"]), b(rk["additional"]), b(rk["seed"])
    # seed = SK(0) | Ni | Nr | SK(1) (RFC 9370 §2.2.4)
    assert seed[:32] == shared and seed[-32:] == extra and len(seed) == 128
    ni, nr = seed[32:64], seed[64:96]
    keymat = child_keymat_multi(PRF, sk_d, ni, nr, 72, [shared, extra])
    assert (keymat[:36].hex(), keymat[36:].hex()) == (rk["encr_i"], rk["encr_r"])


def check_ike_rekey(v: dict) -> None:
    rk = v["ike_rekey"]
    extra = b(rk["additional"])
    assert len(extra) == 64  # SK(1) from ML-KEM-768 | SK(2) from ML-KEM-1024, in exchange order
    seed, keys = derive_rekeyed_ike_keys(PRF, *ENCR, None, b(rk["nonce_i"]), b(rk["nonce_r"]),
                                         [b(rk["shared"]), extra[:32], extra[32:]], b(rk["spi_i"]), b(rk["spi_r"]),
                                         b(v["ppk_keys"]["sk_d"]), PRF)
    assert keys_dict(seed, keys) == logged_keys(rk)


def verify(v: dict) -> None:
    """Every check above on one vector set (stored or freshly logged)."""
    check_ike_sa_init(v)
    chain = check_intermediate(v)
    check_auth_and_ppk(v, chain)
    check_children(v)
    check_ike_rekey(v)


def test_ike_sa_init_keys():
    check_ike_sa_init(load())


def test_intermediate_int_auth_and_key_updates():
    check_intermediate(load())


def test_auth_octets_with_int_auth_and_ppk():
    v = load()
    check_auth_and_ppk(v, check_intermediate(v))


def test_child_sa_keys_with_additional_ke():
    check_children(load())


def test_ike_rekey_with_two_additional_kes():
    check_ike_rekey(load())


def test_a_changed_input_changes_the_outcome():
    """The checks can fail: a wrong order of the additional secrets is caught."""
    v = load()
    rk = v["ike_rekey"]
    extra = b(rk["additional"])
    rk["additional"] = (extra[32:] + extra[:32]).hex()
    with pytest.raises(AssertionError):
        check_ike_rekey(v)
