"""engine.wire.natt (RFC 3948 demultiplexing) and engine.wire.summary (readable summaries)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.wire import (
    AuthPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    KePayload,
    MalformedMessage,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    SkfPayload,
    SkPayload,
    Transform,
    TsPayload,
    UnknownPayload,
    UnknownTs,
    WireTs,
    decode_message,
    encode_message,
)
from engine.wire.constants import FLAG_INITIATOR, FLAG_RESPONSE, NATT_KEEPALIVE, NON_ESP_MARKER, NotifyType, short_name
from engine.wire.natt import add_marker, classify_natt, strip_marker
from engine.wire.summary import dn_text, id_text, payload_detail, proposal_text, summarize
from engine.events import MessageSummary, from_dict, to_dict
from engine.policy.ts import parse_ts
from tests import strategies_wire as sw

SPI_I = bytes.fromhex("0102030405060708")
SPI_R = bytes.fromhex("1112131415161718")


# ---------------------------------------------------------------- NAT-T


def test_classify_natt():
    ike = encode_message(37, 3, SPI_I, SPI_R, FLAG_INITIATOR, [])
    assert classify_natt(NATT_KEEPALIVE) == "keepalive"
    assert classify_natt(b"\x00") == "invalid"
    assert classify_natt(add_marker(ike)) == "ike"
    assert classify_natt(NON_ESP_MARKER + ike[:27]) == "invalid"  # marker, but no room for a header
    esp = bytes.fromhex("c0010203") + (7).to_bytes(4, "big") + b"payload"
    assert classify_natt(esp) == "esp"
    assert classify_natt(esp[:7]) == "invalid"
    assert classify_natt((255).to_bytes(4, "big") + bytes(12)) == "invalid"  # reserved SPI
    assert classify_natt(b"") == "invalid"


def test_marker_round_trip():
    ike = encode_message(34, 0, SPI_I, bytes(8), FLAG_INITIATOR, [NoncePayload(b"n" * 16)])
    framed = add_marker(ike)
    assert framed[:4] == b"\0\0\0\0" and strip_marker(framed) == ike
    assert decode_message(strip_marker(framed)).payloads == (NoncePayload(b"n" * 16),)
    with pytest.raises(MalformedMessage, match="non-ESP marker"):
        strip_marker(bytes.fromhex("c0010203") + ike)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_classify_natt_is_total(data):
    kind = classify_natt(data)
    assert kind in ("keepalive", "ike", "esp", "invalid")
    if kind == "ike":
        assert strip_marker(data) == data[4:]


# ---------------------------------------------------------------- summaries


def test_short_names_follow_strongswan():
    expected = {
        NotifyType.NAT_DETECTION_SOURCE_IP: "NATD_S_IP", NotifyType.NAT_DETECTION_DESTINATION_IP: "NATD_D_IP",
        NotifyType.IKEV2_FRAGMENTATION_SUPPORTED: "FRAG_SUP", NotifyType.SIGNATURE_HASH_ALGORITHMS: "HASH_ALG",
        NotifyType.INITIAL_CONTACT: "INIT_CONTACT", NotifyType.MOBIKE_SUPPORTED: "MOBIKE_SUP",
        NotifyType.NO_PROPOSAL_CHOSEN: "NO_PROP", NotifyType.AUTHENTICATION_FAILED: "AUTH_FAILED",
        NotifyType.INVALID_KE_PAYLOAD: "INVAL_KE", NotifyType.TS_UNACCEPTABLE: "TS_UNACCEPT",
        NotifyType.REKEY_SA: "REKEY_SA", NotifyType.COOKIE: "COOKIE", NotifyType.USE_TRANSPORT_MODE: "USE_TRANSP",
        NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED: "ESP_TFC_PAD_N", NotifyType.NON_FIRST_FRAGMENTS_ALSO: "NON_FIRST_FRAG",
    }
    for ntype, name in expected.items():
        assert short_name(ntype) == name
    assert short_name(40000) == "40000"
    # Every registered notify has a short name.
    assert all(short_name(t) != str(int(t)) for t in NotifyType)


def test_iana_numbers_spot_checks():
    assert NotifyType.NO_ADDITIONAL_ADDRESSES == 16399 and NotifyType.REDIRECT_SUPPORTED == 16406
    assert NotifyType.CHILDLESS_IKEV2_SUPPORTED == 16418 and NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED == 16438
    assert NotifyType.STATE_NOT_FOUND == 47 and NotifyType.TEMPORARY_FAILURE == 43
    errors = [t for t in NotifyType if t.is_error]
    assert [int(t) for t in errors if t <= 47] == [1, 4, 5, 7, 9, 11, 14, 17, 24] + list(range(34, 48))


def test_summary_of_an_ike_sa_init_response():
    payloads = [
        SaPayload((Proposal(1, 1, b"", (Transform(1, 20, 256), Transform(2, 5), Transform(4, 31))),)),
        KePayload(31, b"k" * 32),
        NoncePayload(b"n" * 32),
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, data=b"\x01" * 20),
        CertReqPayload(4, b"h" * 40),
        NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, data=bytes.fromhex("000200030004")),
    ]
    raw = encode_message(34, 0, SPI_I, SPI_R, FLAG_RESPONSE, payloads)
    s = summarize(decode_message(raw), retransmit=2)
    assert s.brief() == "IKE_SA_INIT response 0 [ SA KE No N(NATD_S_IP) CERTREQ N(HASH_ALG) ]"
    assert (s.spi_i, s.spi_r, s.length, s.response, s.initiator_flag) == (0x0102030405060708, 0x1112131415161718,
                                                                          len(raw), True, False)
    assert s.retransmit == 2 and s.fragments == 1
    assert s.notifies == ("NAT_DETECTION_SOURCE_IP", "SIGNATURE_HASH_ALGORITHMS")
    details = {d.name: dict(d.fields) for d in s.details}
    assert details["SA"] == {"proposal 1": "IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519"}
    assert details["KE"] == {"group": "CURVE_25519", "length": "32 bytes"}
    assert details["No"] == {"length": "32 bytes"}
    assert details["N(NATD_S_IP)"]["data"] == "01" * 20
    assert details["CERTREQ"] == {"encoding": "X509_SIGNATURE", "CAs": "2"}
    assert details["N(HASH_ALG)"]["data"] == "SHA2_256 SHA2_384 SHA2_512"
    # The summary travels as JSON to an attached console.
    assert from_dict(to_dict(_event(s))).message == s


def _event(summary: MessageSummary):
    from engine.events import ExchangeReceived
    return ExchangeReceived(ike_sa=1, connection="c", message=summary, time=1.0)


def test_proposal_text_orders_like_charon():
    esp = Proposal(2, 3, b"\xc0\x01\x02\x03", (Transform(5, 0), Transform(3, 12), Transform(1, 12, 128)))
    assert proposal_text(esp) == "ESP:AES_CBC_128/HMAC_SHA2_256_128/NO_EXT_SEQ"
    ike = Proposal(1, 1, b"", (Transform(4, 14), Transform(2, 5), Transform(3, 12), Transform(1, 12, 256)))
    assert proposal_text(ike) == "IKE:AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048"
    assert dict(payload_detail(SaPayload((esp,))).fields)["proposal 2 SPI"] == "c0010203"


def test_ids_are_readable():
    assert id_text(1, bytes([192, 0, 2, 1])) == "192.0.2.1"
    assert id_text(2, b"moon.example") == "moon.example"
    assert id_text(3, b"carol@example.org") == "carol@example.org"
    assert id_text(5, bytes(15) + b"\x01") == "::1"
    assert id_text(11, b"\x01\x02") == "0102"
    assert id_text(13, b"") == "(null)"
    # C=CH, O=strongSwan, CN=moon (DER built by hand: SEQUENCE of SET of SEQUENCE { OID, string })
    def rdn(oid: bytes, value: bytes, tag: int = 0x0C) -> bytes:
        atv = b"\x06" + bytes([len(oid)]) + oid + bytes([tag, len(value)]) + value
        seq = b"\x30" + bytes([len(atv)]) + atv
        return b"\x31" + bytes([len(seq)]) + seq
    body = rdn(b"\x55\x04\x06", b"CH", 0x13) + rdn(b"\x55\x04\x0a", b"strongSwan") + rdn(b"\x55\x04\x03", b"moon")
    dn = b"\x30" + bytes([len(body)]) + body
    assert dn_text(dn) == "C=CH, O=strongSwan, CN=moon"
    assert id_text(9, dn) == "C=CH, O=strongSwan, CN=moon"
    assert id_text(9, dn[:-1]) == dn[:-1].hex()  # unreadable: hex
    assert id_text(2, b"\xff\xfe") == "fffe"


def test_details_hide_secrets():
    auth = payload_detail(AuthPayload(2, b"SECRETMAC" * 4))
    assert auth.fields == (("method", "PSK"),)
    nonce = payload_detail(NoncePayload(b"\xab" * 32))
    assert "ab" * 4 not in str(nonce)
    ke = payload_detail(KePayload(14, b"\xcd" * 256))
    assert "cdcd" not in str(ke)
    eap = payload_detail(EapPayload(2, 7, b"\x04" + b"md5-response-here"))
    assert "md5-response" not in str(eap) and dict(eap.fields)["type"] == "MD5"
    no_ppk = payload_detail(NotifyPayload(NotifyType.NO_PPK_AUTH, data=b"\xee" * 32))
    assert "eeee" not in str(no_ppk)


def test_names_of_the_other_payloads():
    ts = TsPayload(True, (WireTs.from_ts(parse_ts("198.51.100.0/24[tcp/80]")), UnknownTs(10, b"lbl")))
    cp = CpPayload(1, ((1, b""), (3, b""), (8, b"")))
    cp_reply = CpPayload(2, ((1, bytes([198, 51, 100, 5])), (7, b"ipsec-console")))
    payloads = [
        IdPayload(False, 1, bytes([192, 0, 2, 2])), ts, cp, cp_reply,
        EapPayload(1, 1, b"\x01"), EapPayload(3, 1), DeletePayload(3, (b"\xc0\x00\x00\x01",)),
        NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, data=b"\x00\x0e"),
        NotifyPayload(NotifyType.REKEY_SA, 3, b"\xc0\x00\x00\x02"),
        UnknownPayload(200, b"x"), SkfPayload(0, 2, 3, b"body"),
    ]
    s = summarize(decode_message(encode_message(35, 1, SPI_I, SPI_R, FLAG_INITIATOR, [])), payloads)
    assert s.payloads == ("IDr", "TSi", "CPRQ(ADDR DNS ADDR6)", "CPRP(ADDR VER)", "EAP/REQ/ID", "EAP/SUCC", "D",
                          "N(INVAL_KE)", "N(REKEY_SA)", "UNKN(200)", "EF(2/3)")
    d = [dict(x.fields) for x in s.details]
    assert d[0] == {"type": "IPV4_ADDR", "id": "192.0.2.2"}
    assert list(s.details[1].fields) == [("selector", "198.51.100.0/24[tcp/80]"), ("selector", "type 10 (3 bytes)")]
    assert d[2]["INTERNAL_IP4_ADDRESS"] == "(requested)"
    assert d[3] == {"type": "CFG_REPLY", "INTERNAL_IP4_ADDRESS": "198.51.100.5", "APPLICATION_VERSION": "ipsec-console"}
    assert d[6] == {"protocol": "ESP", "SPIs": "c0000001"}
    assert d[7]["data"] == "MODP_2048"
    assert d[8] == {"type": "REKEY_SA", "protocol": "ESP", "SPI": "c0000002"}
    assert d[10] == {"fragment": "2/3", "length": "4 bytes"}
    sk = payload_detail(SkPayload(35, b"x" * 40))
    assert sk.name == "E" and dict(sk.fields) == {"first inner": "IDi", "length": "40 bytes"}


@settings(max_examples=200, deadline=None)
@given(sw.payload_lists())
def test_any_decodable_message_can_be_summarized(payloads):
    msg = decode_message(encode_message(36, 9, SPI_I, SPI_R, FLAG_INITIATOR, payloads))
    s = summarize(msg)
    assert len(s.payloads) == len(s.details) == len(payloads)
    assert s.brief().startswith("CREATE_CHILD_SA request 9 [")
