"""Wire side of issue 11: PPK / IKE_INTERMEDIATE / ADDITIONAL_KEY_EXCHANGE notifies,
IntAuth octets (fragments, unencrypted payloads), names in summaries."""

from __future__ import annotations

import pytest

from engine.crypto.intauth import IntAuthChain
from engine.crypto.multi_ke import additional_ke_rounds, child_keymat_multi
from engine.crypto.keys import child_keymat, derive_ike_keys
from engine.crypto.ppk import ppk_key
from engine.crypto.transforms import KeId, PrfId
from engine.wire.constants import ExchangeType, NotifyType, PayloadType, short_name
from engine.wire.errors import MalformedMessage
from engine.wire.intauth import int_auth_octets
from engine.wire.message import decode_message, encode_message, encode_payloads
from engine.wire.payloads import KePayload, NotifyPayload, Proposal, SaPayload, SkPayload, Transform
from engine.wire.ppk import (
    PpkIdType,
    additional_key_exchange,
    additional_key_exchange_link,
    decode_ppk_identity,
    encode_ppk_identity,
    intermediate_exchange_supported,
    no_ppk_auth,
    ppk_identity,
    use_ppk,
)
from engine.wire.summary import payload_detail, proposal_text, summarize

SPI_I, SPI_R = bytes(range(8)), bytes(range(8, 16))


def test_notify_numbers_match_iana_and_strongswan():
    assert (NotifyType.USE_PPK, NotifyType.PPK_IDENTITY, NotifyType.NO_PPK_AUTH) == (16435, 16436, 16437)
    assert NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED == 16438 and NotifyType.ADDITIONAL_KEY_EXCHANGE == 16441
    assert (ExchangeType.IKE_INTERMEDIATE, ExchangeType.IKE_FOLLOWUP_KE) == (43, 44)
    assert [short_name(n) for n in (16435, 16436, 16437, 16438, 16441)] == [
        "USE_PPK", "PPK_ID", "NO_PPK", "IKE_INT_SUP", "ADD_KE"]  # strongSwan's log names


def test_ppk_identity_round_trip_through_a_message():
    msg = encode_message(ExchangeType.IKE_AUTH, 1, SPI_I, SPI_R, 0x08,
                         [ppk_identity(b"pqc-ppk-1"), no_ppk_auth(b"\x01" * 48), use_ppk(),
                          intermediate_exchange_supported(), additional_key_exchange(b"\x42")])
    n = decode_message(msg).payloads
    assert n[0].data == b"\x02pqc-ppk-1"  # PPK_ID_FIXED, as strongSwan sends it
    ident = decode_ppk_identity(n[0].data)
    assert ident.id_type == PpkIdType.PPK_ID_FIXED and str(ident) == "pqc-ppk-1"
    assert str(decode_ppk_identity(encode_ppk_identity(b"\xff\x00", PpkIdType.PPK_ID_OPAQUE))) == "0xff00"
    assert n[1].data == b"\x01" * 48 and n[2].data == b"" and n[3].data == b""
    assert additional_key_exchange_link(n[4]) == b"\x42"


@pytest.mark.parametrize("data, why", [(b"", "need a PPK type"), (b"\x02", "need a PPK type"),
                                       (b"\x07abc", "unknown PPK type 7"), (b"\x02" + b"x" * 256, "longer")])
def test_bad_ppk_identity_is_a_wire_error(data, why):
    with pytest.raises(MalformedMessage, match=why):
        decode_ppk_identity(data)


def test_notify_constructors_refuse_nonsense():
    with pytest.raises(ValueError):
        ppk_identity(b"")
    with pytest.raises(ValueError):
        no_ppk_auth(b"")
    with pytest.raises(ValueError):
        additional_key_exchange(b"x" * 65)
    with pytest.raises(MalformedMessage):
        additional_key_exchange_link(NotifyPayload(NotifyType.ADDITIONAL_KEY_EXCHANGE, data=b""))


def test_int_auth_octets_are_the_unfragmented_plaintext_message():
    first, inner = encode_payloads([KePayload(KeId.ML_KEM_768, b"\x11" * 1184)])
    octets = int_auth_octets(ExchangeType.IKE_INTERMEDIATE, 1, SPI_I, SPI_R, 0x08, first, inner)
    assert len(octets) == 28 + 4 + len(inner)
    assert octets[16] == PayloadType.SK and octets[18] == 43 and octets[19] == 0x08  # SK, not SKF
    assert int.from_bytes(octets[24:28], "big") == len(octets)  # length as if A | P were the message
    assert octets[28] == PayloadType.KE and int.from_bytes(octets[30:32], "big") == 4 + len(inner)
    assert octets[32:] == inner
    # The same message sent in fragments has the same octets (RFC 9242 §3.3.2 with RFC 7383).
    parts = [inner[:500], inner[500:1000], inner[1000:]]
    assert int_auth_octets(43, 1, SPI_I, SPI_R, 0x08, first, b"".join(parts)) == octets


def test_int_auth_octets_with_unencrypted_payloads_follow_the_rfc():
    first, inner = encode_payloads([KePayload(KeId.ML_KEM_768, b"\x22" * 32)])
    vid = NotifyPayload(NotifyType.USE_PPK)  # any unencrypted payload before SK
    octets = int_auth_octets(43, 2, SPI_I, SPI_R, 0x20, first, inner, [vid])
    assert octets[16] == PayloadType.NOTIFY and octets[28] == PayloadType.SK  # the N points at SK
    assert octets.endswith(inner) and int.from_bytes(octets[24:28], "big") == len(octets)


def test_int_auth_chain_order_and_empty_case():
    chain = IntAuthChain(PrfId.HMAC_SHA2_256)
    assert chain.int_auth(1) == b""  # no IKE_INTERMEDIATE: AUTH octets unchanged
    with pytest.raises(ValueError, match="without its request"):
        chain.add(from_initiator=False, sk_p=b"k" * 32, octets=b"x")
    one = chain.add(from_initiator=True, sk_p=b"k" * 32, octets=b"x")
    with pytest.raises(ValueError, match="before the response"):
        one.add(from_initiator=True, sk_p=b"k" * 32, octets=b"y")
    with pytest.raises(ValueError, match="no response yet"):
        one.int_auth(2)
    two = one.add(from_initiator=False, sk_p=b"r" * 32, octets=b"y")
    assert two.int_auth(2) == two.int_auth_i + two.int_auth_r + b"\0\0\0\x02" and len(two.int_auth_i) == 32
    assert chain.int_auth_i == b""  # immutable


def test_ppk_and_multi_ke_argument_checks():
    with pytest.raises(ValueError, match="empty PPK"):
        ppk_key(PrfId.HMAC_SHA2_256, b"", b"k" * 32)
    assert len(ppk_key(PrfId.HMAC_SHA2_256, b"p", b"k" * 32)) == 32
    with pytest.raises(ValueError, match="not an ADDITIONAL_KEY_EXCHANGE"):
        additional_ke_rounds({4: KeId.CURVE25519})
    assert additional_ke_rounds({7: KeId.ML_KEM_1024, 6: 0})[0].number == 2
    with pytest.raises(ValueError):
        child_keymat_multi(PrfId.HMAC_SHA2_256, b"d" * 32, b"n" * 16, b"m" * 16, 32, [])
    with pytest.raises(ValueError, match="single key exchange"):
        derive_ike_keys(PrfId.HMAC_SHA2_256, 20, 256, None, b"n" * 16, b"m" * 16, b"s", SPI_I, SPI_R,
                        additional_secrets=b"x")
    # With one secret, the multi-KE KEYMAT is RFC 7296's.
    assert child_keymat_multi(PrfId.HMAC_SHA2_256, b"d" * 32, b"n" * 16, b"m" * 16, 40, [b"s" * 32]) == \
        child_keymat(PrfId.HMAC_SHA2_256, b"d" * 32, b"n" * 16, b"m" * 16, 40, b"s" * 32)


def test_summary_names_additional_key_exchanges_like_strongswan():
    ike = Proposal(1, 1, b"", (Transform(1, 20, 256), Transform(2, 6), Transform(4, 31),
                               Transform(6, KeId.ML_KEM_768), Transform(7, KeId.ML_KEM_1024)))
    assert proposal_text(ike) == "IKE:AES_GCM_16_256/PRF_HMAC_SHA2_384/CURVE_25519/KE1_ML_KEM_768/KE2_ML_KEM_1024"
    esp = Proposal(1, 3, b"abcd", (Transform(6, KeId.ML_KEM_768), Transform(5, 0), Transform(4, 31),
                                   Transform(1, 20, 256)))
    assert proposal_text(esp) == "ESP:AES_GCM_16_256/CURVE_25519/NO_EXT_SEQ/KE1_ML_KEM_768"
    assert proposal_text(Proposal(1, 1, b"", (Transform(8, 31),))) == "IKE:KE3_CURVE_25519"
    s = summarize(decode_message(encode_message(ExchangeType.IKE_INTERMEDIATE, 1, SPI_I, SPI_R, 0x08,
                                                [SaPayload((ike,)), ppk_identity(b"pqc-ppk-1")])))
    assert s.exchange == "IKE_INTERMEDIATE" and s.payloads == ("SA", "N(PPK_ID)")
    assert ("data", "PPK_ID_FIXED pqc-ppk-1") in s.details[1].fields
    assert ("proposal 1", proposal_text(ike)) in s.details[0].fields
    bad = payload_detail(NotifyPayload(NotifyType.PPK_IDENTITY, data=b"\x09"))
    assert ("data", "malformed (1 bytes)") in bad.fields
    secret = payload_detail(no_ppk_auth(b"\xaa" * 48))
    assert ("data", "48 bytes") in secret.fields  # AUTH data is never shown


def test_sk_payload_still_last():
    with pytest.raises(ValueError):
        encode_payloads([SkPayload(34, b""), use_ppk()])
