"""ML-KEM key exchange (engine.crypto.kem, engine.crypto.ke.new_key_exchange/respond).

Known answers come from kyber-py, an independent pure-Python FIPS 203
implementation: the same seed d | z must give the same encapsulation key, a
ciphertext kyber-py encapsulated with a fixed m must decapsulate to its K, and
a damaged ciphertext must give kyber-py's implicit-rejection secret.
"""

from __future__ import annotations

import hashlib

import pytest

from engine.crypto import kem
from engine.crypto.errors import InvalidKeyExchange, MlKemUnavailable, UnsupportedTransform
from engine.crypto.ke import KeyExchange, ke_data_size, new_key_exchange, respond
from engine.crypto.kem import (
    MLKEM_GROUPS,
    MlKemExchange,
    is_kem,
    mlkem_available,
    mlkem_encapsulate,
    mlkem_unavailable_reason,
)
from engine.crypto.transforms import KeId

GROUPS = sorted(MLKEM_GROUPS)
SIZES = {KeId.ML_KEM_768: (1184, 1088), KeId.ML_KEM_1024: (1568, 1568)}


def need_mlkem(group: int) -> None:
    reason = mlkem_unavailable_reason(group)
    if reason:
        pytest.skip(f"{reason} (python3 -m pip install -U cryptography)")


def oracle(group: int):
    ml_kem = pytest.importorskip("kyber_py.ml_kem", reason="kyber-py is missing: python3 -m pip install -e '.[test]'")
    return {KeId.ML_KEM_768: ml_kem.ML_KEM_768, KeId.ML_KEM_1024: ml_kem.ML_KEM_1024}[group]


def seed(label: str) -> bytes:
    return hashlib.sha512(label.encode()).digest()


@pytest.mark.parametrize("group", GROUPS)
def test_round_trip_and_sizes(group):
    need_mlkem(group)
    ek_size, ct_size = SIZES[group]
    init = new_key_exchange(group)
    assert isinstance(init, MlKemExchange) and init.group == group
    assert len(init.public_bytes()) == ek_size == ke_data_size(group, initiator=True)
    ct, shared = respond(group, init.public_bytes())
    assert len(ct) == ct_size == ke_data_size(group, initiator=False)
    assert len(shared) == 32
    assert init.compute_shared(ct) == shared
    assert respond(group, init.public_bytes())[1] != shared  # fresh randomness every encapsulation


@pytest.mark.parametrize("group", GROUPS)
def test_keygen_matches_fips203_oracle(group):
    need_mlkem(group)
    ref = oracle(group)
    for label in ("a", "b"):
        ek, _ = ref.key_derive(seed(label))
        assert MlKemExchange.from_seed(group, seed(label)).public_bytes() == ek


@pytest.mark.parametrize("group", GROUPS)
def test_decapsulation_matches_fips203_oracle(group):
    need_mlkem(group)
    ref = oracle(group)
    ek, dk = ref.key_derive(seed("decaps"))
    ours = MlKemExchange.from_seed(group, seed("decaps"))
    for m in (bytes(32), bytes(range(32))):
        key, ct = ref._encaps_internal(ek, m)  # deterministic encapsulation with message m
        assert ours.compute_shared(ct) == key
        bad = bytearray(ct)
        bad[len(bad) // 2] ^= 0x40
        # Implicit rejection (FIPS 203 §6.3): J(z | c), not an error.
        assert ours.compute_shared(bytes(bad)) == ref.decaps(dk, bytes(bad)) != key


@pytest.mark.parametrize("group", GROUPS)
def test_encapsulation_checked_by_oracle(group):
    need_mlkem(group)
    ref = oracle(group)
    ek, dk = ref.key_derive(seed("encaps"))
    enc = mlkem_encapsulate(group, ek)
    assert ref.decaps(dk, enc.ciphertext) == enc.shared_secret.reveal()
    assert "secret" in repr(enc) and enc.shared_secret.reveal().hex() not in repr(enc)


@pytest.mark.parametrize("group", GROUPS)
def test_peer_data_checked(group):
    need_mlkem(group)
    ek_size, ct_size = SIZES[group]
    init = new_key_exchange(group)
    with pytest.raises(InvalidKeyExchange, match="expected"):
        respond(group, init.public_bytes()[:-1])
    with pytest.raises(InvalidKeyExchange, match="expected"):
        init.compute_shared(bytes(ct_size + 1))
    # A 12-bit coefficient of 4095 >= q = 3329: FIPS 203 §7.2 modulus check.
    ek = bytearray(init.public_bytes())
    ek[0] = 0xFF
    ek[1] |= 0x0F
    with pytest.raises(InvalidKeyExchange, match="modulus check"):
        respond(group, bytes(ek))


def test_kem_helpers_and_dh_still_work():
    assert is_kem(KeId.ML_KEM_768) and is_kem(KeId.ML_KEM_512) and not is_kem(KeId.CURVE25519)
    dh = new_key_exchange(KeId.CURVE25519)
    assert isinstance(dh, KeyExchange)
    data, shared = respond(KeId.CURVE25519, dh.public_bytes())
    assert dh.compute_shared(data) == shared
    assert ke_data_size(KeId.CURVE25519, initiator=True) == ke_data_size(KeId.CURVE25519, initiator=False) == 32
    assert "MlKem" in repr(MlKemExchange.__name__)


def test_mlkem_512_is_not_offered():
    assert "ML-KEM-512" in mlkem_unavailable_reason(KeId.ML_KEM_512)
    with pytest.raises(UnsupportedTransform):
        new_key_exchange(KeId.ML_KEM_512)


def test_missing_mlkem_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kem, "_mlkem", None)
    reason = mlkem_unavailable_reason(KeId.ML_KEM_768)
    assert "cryptography >= 47.0" in reason and not mlkem_available(KeId.ML_KEM_768)
    assert "cryptography >= 48.0" in mlkem_unavailable_reason(KeId.ML_KEM_1024)
    with pytest.raises(MlKemUnavailable, match="47.0"):
        new_key_exchange(KeId.ML_KEM_768)
    with pytest.raises(MlKemUnavailable):
        respond(KeId.ML_KEM_768, bytes(1184))


def test_backend_without_mlkem_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kem, "_backend_supported", lambda: False)
    reason = mlkem_unavailable_reason(KeId.ML_KEM_1024)
    assert "has no ML-KEM" in reason and "OpenSSL" in reason
    with pytest.raises(MlKemUnavailable, match="has no ML-KEM"):
        MlKemExchange(KeId.ML_KEM_1024)


def test_transform_ids_and_names():
    # IANA "Transform Type 4 - Key Exchange Method Transform IDs" and strongSwan's key_exchange.h.
    assert (KeId.ML_KEM_512, KeId.ML_KEM_768, KeId.ML_KEM_1024) == (35, 36, 37)
    from engine.crypto.transforms import (
        QUANTUM_SAFE_KE,
        AdditionalKeType,
        TransformType,
        additional_ke_number,
        additional_ke_type,
        transform_name,
    )

    assert [int(t) for t in AdditionalKeType] == list(range(6, 13))  # RFC 9370 §3.2
    assert additional_ke_type(1) == AdditionalKeType.ADDITIONAL_KEY_EXCHANGE_1 == 6
    assert additional_ke_number(12) == 7 and additional_ke_number(TransformType.KE) is None
    with pytest.raises(ValueError):
        additional_ke_type(8)
    assert not set(AdditionalKeType) & set(TransformType)  # engine.ike must not think it negotiates them
    assert transform_name(6, KeId.ML_KEM_768) == "KE1_ML_KEM_768"
    assert transform_name(7, KeId.CURVE25519) == "KE2_CURVE25519"
    assert transform_name(TransformType.KE, KeId.ML_KEM_1024) == "ML_KEM_1024"
    assert transform_name(8, 999) == "KE3_999"
    assert KeId.ML_KEM_768 in QUANTUM_SAFE_KE and KeId.CURVE448 not in QUANTUM_SAFE_KE
