"""engine.wire: decode(encode(x)) == x for every payload and whole messages, and
the validation rules of RFC 7296 §3 on decode."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.wire import (
    AuthPayload,
    DeletePayload,
    IdPayload,
    InvalidMajorVersion,
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
    UnsupportedCriticalPayload,
    VendorIdPayload,
    WireTs,
    decode_header,
    decode_message,
    decode_payloads,
    encode_message,
    encode_payloads,
    encode_sk_message,
    encode_skf_prefix,
)
from engine.wire.constants import FLAG_INITIATOR, FLAG_RESPONSE, NotifyType, PayloadType, ProtocolId
from engine.wire.message import IkeHeader
from engine.policy.ts import parse_ts
from tests import strategies_wire as sw

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPI_I = bytes.fromhex("0011223344556677")
SPI_R = bytes.fromhex("8899aabbccddeeff")


def roundtrip(payload):
    first, chain = encode_payloads([payload])
    assert first == payload.payload_type
    return decode_payloads(first, chain, keep_unknown=True)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "name, strategy",
    [
        ("SA", sw.sa_payloads()),
        ("KE", sw.ke_payloads),
        ("ID", sw.id_payloads()),
        ("CERT", sw.cert_payloads),
        ("CERTREQ", sw.certreq_payloads),
        ("AUTH", sw.auth_payloads),
        ("No", sw.nonce_payloads),
        ("N", sw.notify_payloads()),
        ("D", sw.delete_payloads()),
        ("V", sw.vendor_payloads),
        ("TS", sw.ts_payloads()),
        ("CP", sw.cp_payloads),
        ("EAP", sw.eap_payloads()),
        ("SK", sw.sk_payloads),
        ("SKF", sw.skf_payloads()),
        ("unknown", sw.unknown_payloads),
    ],
)
def test_every_payload_round_trips(name, strategy):
    @PROPERTY
    @given(strategy)
    def check(payload):
        assert roundtrip(payload) == [payload]

    check()


@PROPERTY
@given(sw.message_args())
def test_messages_round_trip(args):
    exchange, mid, spi_i, spi_r, flags, payloads = args
    raw = encode_message(exchange, mid, spi_i, spi_r, flags, payloads)
    msg = decode_message(raw)
    assert msg.payloads == tuple(payloads)
    assert msg.raw == raw
    h = msg.header
    assert (h.exchange, h.mid, h.spi_i, h.spi_r, h.flags, h.length) == (exchange, mid, spi_i, spi_r, flags, len(raw))
    assert (h.major, h.minor) == (2, 0)
    assert h.encode() == raw[:28]
    if payloads and isinstance(payloads[-1], (SkPayload, SkfPayload)):
        body = payloads[-1].data
        assert raw[msg.sk_aad_end:] == body
    else:
        assert msg.sk_aad_end is None


@PROPERTY
@given(st.lists(sw.plain_payloads, max_size=4), sw.u32, st.binary(min_size=0, max_size=100), sw.exchanges)
def test_sk_prefix_is_the_aad_of_the_decoded_message(unencrypted, mid, body, exchange):
    prefix = encode_sk_message(exchange, mid, SPI_I, SPI_R, FLAG_INITIATOR, PayloadType.IDi, unencrypted,
                               body_len=len(body))
    msg = decode_message(prefix + body)
    assert msg.sk_aad_end == len(prefix)
    assert msg.payloads[:-1] == tuple(unencrypted)
    assert msg.encrypted == SkPayload(PayloadType.IDi, body)
    # The same message through the general encoder.
    assert encode_message(exchange, mid, SPI_I, SPI_R, FLAG_INITIATOR, [*unencrypted, SkPayload(35, body)]) == prefix + body


@PROPERTY
@given(st.integers(1, 50).flatmap(lambda t: st.tuples(st.integers(1, t), st.just(t))), st.binary(max_size=64))
def test_skf_prefix(frag, body):
    number, total = frag
    prefix = encode_skf_prefix(35, 7, SPI_I, SPI_R, FLAG_RESPONSE, number, total, PayloadType.IDr, len(body))
    msg = decode_message(prefix + body)
    skf = msg.encrypted
    assert isinstance(skf, SkfPayload)
    assert (skf.fragment_number, skf.total_fragments, skf.data) == (number, total, body)
    assert skf.next_payload == (PayloadType.IDr if number == 1 else 0)
    assert msg.sk_aad_end == len(prefix) == 28 + 8


def test_transform_attributes_keep_tv_and_tlv_forms_and_key_length_first():
    t = Transform(1, 12, 256, ((17, 5), (18, b"\x01\x02\x03")))
    body = encode_payloads([SaPayload((Proposal(1, 3, b"\xaa\xbb\xcc\xdd", (t,)),))])[1]
    # generic(4) proposal(8) spi(4) transform header(8): KEY_LENGTH TV, then TV 17, then TLV 18.
    attrs = body[24:]
    assert attrs == bytes.fromhex("800e0100" "80110005" "00120003010203")
    assert roundtrip(SaPayload((Proposal(1, 3, b"\xaa\xbb\xcc\xdd", (t,)),)))[0].proposals[0].transforms == (t,)


def test_wire_ts_converts_to_and_from_traffic_selectors():
    for text in ("10.0.0.0/8[tcp/80]", "192.0.2.1-192.0.2.9", "2001:db8::/32[udp/53]", "0.0.0.0/0"):
        ts = parse_ts(text)
        assert WireTs.from_ts(ts).to_ts() == ts
    with pytest.raises(ValueError):
        WireTs.from_ts(parse_ts("dynamic"))
    payload = TsPayload(True, (WireTs.from_ts(parse_ts("198.51.100.0/24")), UnknownTs(10, b"label")))
    assert payload.traffic_selectors() == (parse_ts("198.51.100.0/24"),)


def test_encode_rejects_misplaced_sk_and_bad_values():
    with pytest.raises(ValueError):
        encode_payloads([SkPayload(0, b""), NoncePayload(b"n" * 16)])
    with pytest.raises(ValueError):
        encode_payloads([DeletePayload(ProtocolId.ESP, (b"abc",))])
    with pytest.raises(ValueError):
        encode_payloads([SaPayload((Proposal(1, 1, b"", (Transform(1, 12, None, ((14, 128),)),)),))])
    with pytest.raises(ValueError):
        encode_message(34, 0, b"short", SPI_R, 0, [])
    with pytest.raises(ValueError):
        encode_skf_prefix(35, 1, SPI_I, SPI_R, 0, 3, 2, 35, 10)


# ---------------------------------------------------------------- validation on decode


def chain(ptype: int, body: bytes, critical: bool = False, nxt: int = 0) -> bytes:
    return struct.pack("!BBH", nxt, 0x80 if critical else 0, 4 + len(body)) + body


def msg_bytes(first: int, payload_bytes: bytes, major: int = 2, exchange: int = 34) -> bytes:
    length = 28 + len(payload_bytes)
    return SPI_I + SPI_R + struct.pack("!BBBBII", first, major << 4, exchange, FLAG_INITIATOR, 0, length) + payload_bytes


def malformed(first: int, body: bytes, match: str):
    with pytest.raises(MalformedMessage, match=match) as info:
        decode_message(msg_bytes(first, chain(first, body)))
    return info.value


def proposal(number=1, protocol=1, spi=b"", transforms=b"", tcount=0, last=0, length=None):
    length = 8 + len(spi) + len(transforms) if length is None else length
    return struct.pack("!BxHBBBB", last, length, number, protocol, len(spi), tcount) + spi + transforms


def transform(ttype=1, tid=12, attrs=b"", last=0):
    return struct.pack("!BxHBxH", last, 8 + len(attrs), ttype, tid) + attrs


def test_sa_errors_name_the_payload_and_offset():
    err = malformed(33, proposal(transforms=transform(last=3), tcount=2), r"SA at offset 28: .*transform 2 of 2 truncated")
    assert err.offset == 28 and err.payload == "SA"
    malformed(33, b"", "no proposal")
    malformed(33, proposal(number=1) + proposal(number=3), "'last substruc' 0 disagrees")
    two = proposal(number=3, last=2) + proposal(number=2)
    malformed(33, two, "proposal 2 is numbered 2, below proposal 1's 3")
    malformed(33, proposal(number=0), "numbered 0")
    malformed(33, proposal(protocol=3, spi=b"123"), "ESP proposal with SPI size 3")
    malformed(33, proposal(protocol=1, spi=b"1234"), "IKE proposal with SPI size 4")
    malformed(33, proposal(length=200), "proposal length 200 does not fit")
    malformed(33, proposal(transforms=transform(last=3), tcount=1), "has 'last substruc' 3")
    malformed(33, proposal(transforms=transform() + b"xx", tcount=1), "2 bytes after the 1 transforms")
    malformed(33, proposal(transforms=transform(attrs=b"\x00\x0e\x00\x02\x01\x00"), tcount=1), "TLV format")
    malformed(33, proposal(transforms=transform(attrs=b"\x80\x0e\x00\x80\x80\x0e\x01\x00"), tcount=1), "twice")
    malformed(33, proposal(transforms=transform(attrs=b"\x00\x11\x00\x09ab"), tcount=1), "overruns")


def test_simple_payload_errors():
    malformed(34, b"\x00", "KE at offset 28: body of 1 bytes")
    malformed(40, b"n" * 15, "nonce of 15 bytes")
    malformed(40, b"n" * 257, "nonce of 257 bytes")
    malformed(35, b"\x01\x00\x00\x00\x01\x02\x03", "ID type 1 with 3 bytes")
    malformed(41, struct.pack("!BBH", 0, 9, 16393) + b"12345678", "SPI size 9 overruns")
    malformed(41, struct.pack("!BBH", 0, 0, NotifyType.INVALID_KE_PAYLOAD) + b"\x00", "INVALID_KE_PAYLOAD with 1 bytes")
    malformed(41, struct.pack("!BBH", 0, 0, NotifyType.NAT_DETECTION_SOURCE_IP) + b"\x00" * 16, "need 20")
    malformed(41, struct.pack("!BBH", 0, 0, NotifyType.COOKIE), "COOKIE with 0 bytes")
    malformed(41, struct.pack("!BBH", 0, 0, NotifyType.SIGNATURE_HASH_ALGORITHMS) + b"\x00", "odd length")
    malformed(42, struct.pack("!BBH", 1, 8, 1) + b"12345678", "IKE Delete with SPI size 8")
    malformed(42, struct.pack("!BBH", 3, 4, 2) + b"1234", "2 SPIs announced, 4 bytes")
    malformed(42, struct.pack("!BBH", 3, 2, 1) + b"12", "SPI size 2")
    malformed(42, struct.pack("!BBH", 9, 4, 1) + b"1234", "unknown protocol 9")
    malformed(44, b"\x00\x00\x00\x00", "no traffic selector")
    malformed(44, b"\x01\x00\x00\x00" + struct.pack("!BBHHH", 7, 0, 40, 0, 65535) + bytes(32), "must be 16")
    malformed(44, b"\x02\x00\x00\x00" + struct.pack("!BBHHH", 7, 0, 16, 0, 65535) + bytes(8), "selector 2 of 2")
    malformed(44, b"\x01\x00\x00\x00" + struct.pack("!BBHHH", 7, 0, 16, 0, 65535) + bytes(9), "1 bytes after")
    malformed(47, b"\x01\x00\x00\x00\x00\x01\x00\x05ab", "attribute 1 length 5 overruns")
    malformed(48, b"\x01\x01\x00\x09ab", "EAP length 9")
    malformed(48, b"\x01\x01\x00\x04", "without a type")
    malformed(53, b"\x00\x03\x00\x02xx", "fragment 3 of 2")
    malformed(53, b"\x00\x00\x00\x02xx", "fragment 0 of 2")
    malformed(53, b"\x00\x01", "need at least 4")


def test_delete_of_the_ike_sa_ignores_a_bogus_count():
    # Some stacks send "# of SPIs" with SPI size 0: there is nothing to read either way.
    msg = decode_message(msg_bytes(42, chain(42, struct.pack("!BBH", 1, 0, 1))))
    assert msg.payloads == (DeletePayload(ProtocolId.IKE, ()),)


def test_chain_errors():
    nonce = b"n" * 16
    with pytest.raises(MalformedMessage, match="payload length 3"):
        decode_message(msg_bytes(40, struct.pack("!BBH", 0, 0, 3) + nonce))
    with pytest.raises(MalformedMessage, match="generic header truncated"):
        decode_message(msg_bytes(40, chain(40, nonce, nxt=43)))
    with pytest.raises(MalformedMessage, match="5 bytes after the last payload"):
        decode_message(msg_bytes(40, chain(40, nonce) + b"extra"))
    with pytest.raises(MalformedMessage, match="must be last"):
        decode_message(msg_bytes(46, chain(46, b"body", nxt=35) + chain(40, nonce)))
    with pytest.raises(MalformedMessage, match="IKE header says"):
        decode_message(msg_bytes(40, chain(40, nonce)) + b"\x00")
    with pytest.raises(MalformedMessage, match="IKE header truncated"):
        decode_header(b"\x00" * 27)
    bad_len = bytearray(msg_bytes(0, b""))
    bad_len[24:28] = struct.pack("!I", 20)
    with pytest.raises(MalformedMessage, match="below 28"):
        decode_header(bytes(bad_len))


def test_unknown_payloads_skipped_or_refused_by_the_critical_bit():
    nonce = NoncePayload(b"n" * 16)
    tail = chain(40, nonce.data)
    skipped = msg_bytes(200, chain(200, b"whatever", critical=False, nxt=40) + tail)
    assert decode_message(skipped).payloads == (nonce,)
    assert decode_payloads(200, skipped[28:], keep_unknown=True) == [UnknownPayload(200, b"whatever"), nonce]
    refused = msg_bytes(200, chain(200, b"whatever", critical=True, nxt=40) + tail)
    with pytest.raises(UnsupportedCriticalPayload) as info:
        decode_message(refused)
    assert info.value.payload_type == 200
    assert info.value.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert info.value.notify_data == b"\xc8"
    # A known payload with the C bit set is decoded (the bit only matters for unknown types).
    assert decode_message(msg_bytes(40, chain(40, nonce.data, critical=True))).payloads == (NoncePayload(nonce.data, True),)


def test_major_version_other_than_2_carries_the_header():
    raw = msg_bytes(0, b"", major=3)
    with pytest.raises(InvalidMajorVersion) as info:
        decode_message(raw)
    assert info.value.major == 3
    assert isinstance(info.value.header, IkeHeader) and info.value.header.spi_i == SPI_I
    assert info.value.notify == NotifyType.INVALID_MAJOR_VERSION


def test_header_flags():
    h = decode_header(msg_bytes(0, b""))
    assert h.initiator and not h.response
    raw = encode_message(37, 5, SPI_I, SPI_R, FLAG_RESPONSE, [])
    h = decode_header(raw)
    assert h.response and not h.initiator and h.mid == 5 and h.next_payload == 0


@settings(max_examples=40, deadline=None)
@given(sw.encoded_messages())
def test_truncation_at_every_offset_is_malformed(raw):
    for cut in range(len(raw)):
        short = raw[:cut]
        with pytest.raises(MalformedMessage):
            decode_message(short)
        # Also with the header length fixed up to the truncated size: the chain itself is short
        # (the payload before the cut still announces a longer length or a next payload).
        if cut >= 28 and raw[16] != 0:
            fixed = short[:24] + struct.pack("!I", cut) + short[28:]
            with pytest.raises(MalformedMessage):
                decode_message(fixed)
            with pytest.raises(MalformedMessage):
                decode_payloads(raw[16], short[28:])


def test_notify_and_ke_and_id_values():
    payloads = [
        KePayload(19, b"\x04" + b"x" * 64),
        IdPayload(True, 1, bytes([192, 0, 2, 1])),
        NotifyPayload(NotifyType.REKEY_SA, ProtocolId.ESP, b"\xc0\x01\x02\x03"),
        NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, data=b"\x00\x1f"),
        DeletePayload(ProtocolId.ESP, (b"\x01\x02\x03\x04", b"\x05\x06\x07\x08")),
    ]
    raw = encode_message(36, 2, SPI_I, SPI_R, FLAG_INITIATOR, payloads)
    assert decode_message(raw).payloads == tuple(payloads)


def test_sa_encoding_reuses_a_transform_list_once_encoded_and_the_memo_is_bounded(monkeypatch):
    """A responder answers every handshake with the same chosen proposal's transforms tuple, with or
    without a SPI: its bytes are encoded once (found by identity, no hashing); the memo holds at
    most TRANSFORMS_MEMO_MAX lists (an initiator's fresh offers only recycle it); the bytes are the
    ones a fresh encoding gives."""
    from engine.wire import codec
    from engine.wire.payloads import Proposal, SaPayload, Transform

    calls = []
    real = codec._encode_transforms
    monkeypatch.setattr(codec, "_encode_transforms", lambda ts: calls.append(ts) or real(ts))
    monkeypatch.setattr(codec, "_TRANSFORMS_MEMO", {})
    monkeypatch.setattr(codec, "TRANSFORMS_MEMO_MAX", 4)
    transforms = (Transform(1, 20, 256), Transform(5, 0))
    fresh = [codec.encode_sa(SaPayload((Proposal(1, 3, spi.to_bytes(4, "big"), transforms),)))
             for spi in range(1, 50)]
    assert len(calls) == 1
    for spi, body in enumerate(fresh, 1):
        again = (Transform(1, 20, 256), Transform(5, 0))  # equal, not the same: encoded anew
        assert body == codec.encode_sa(SaPayload((Proposal(1, 3, spi.to_bytes(4, "big"), again),)))
        assert len(codec._TRANSFORMS_MEMO) <= 4
    assert len(calls) == 50
    init = SaPayload((Proposal(1, 1, b"", (Transform(1, 20, 256), Transform(2, 5), Transform(4, 31))),
                      Proposal(2, 1, b"", transforms)))
    assert codec.encode_sa(init) == codec.encode_sa(init) == bytes.fromhex(
        "0200002401010003" "0300000c0100001480 0e0100" "0300000802000005" "0000000804 00001f"
        "0000001c02010002" "0300000c0100001480 0e0100" "0000000805000000".replace(" ", ""))


def test_decoded_plain_transforms_are_shared_and_the_sharing_is_bounded(monkeypatch, shared_codec):
    """A transform without attributes other than KEY_LENGTH is one frozen object for every message
    that names it (fewer objects per handshake); one with other attributes is its own; a peer
    naming made-up transforms fills the shared table only up to its bound."""
    import engine.wire.codec as codec

    sa = SaPayload((Proposal(1, ProtocolId.IKE, b"", (Transform(1, 20, 256), Transform(2, 5),
                                                          Transform(4, 31, None, ((17, 5),)))),), False)
    body = codec.encode_sa(sa)
    one = codec.decode_sa(PayloadType.SA, body, False, 0)
    codec._SHARED_TRANSFORM_LISTS.clear()  # the list as a whole is shared too: see the next test
    two = codec.decode_sa(PayloadType.SA, body, False, 0)
    assert one == two == sa
    t1, t2 = one.proposals[0].transforms, two.proposals[0].transforms
    assert t1[0] is t2[0] and t1[1] is t2[1] and t1[2] is not t2[2]
    monkeypatch.setattr(codec, "_SHARED_TRANSFORMS", {})
    monkeypatch.setattr(codec, "SHARED_TRANSFORMS_MAX", 3)
    for tid in range(1000, 1010):
        odd = SaPayload((Proposal(1, ProtocolId.IKE, b"", (Transform(1, tid),)),), False)
        assert codec.decode_sa(PayloadType.SA, codec.encode_sa(odd), False, 0) == odd
    assert len(codec._SHARED_TRANSFORMS) == 3
    with pytest.raises(MalformedMessage, match="proposal at 4: transform 1 length"):
        codec.decode_sa(PayloadType.SA, body[:8] + b"\x03\x00\x00\x07" + body[12:], False, 0)


@pytest.fixture
def shared_codec():
    """engine.wire.codec with the shared-decoding tables (engine.wire.shared's, which the chain
    walker holds: emptied in place, and the codec's transform lists) empty, and emptied again
    afterwards."""
    from engine.wire import codec, shared

    for table in shared.SHARED_DECODED.values():
        table.clear()
    codec._SHARED_TRANSFORM_LISTS.clear()
    yield codec
    for table in shared.SHARED_DECODED.values():
        table.clear()
    codec._SHARED_TRANSFORM_LISTS.clear()


def test_repeated_bodies_decode_to_one_shared_value_and_fresh_ones_do_not(shared_codec):
    """The offer, identities, vendor IDs, status notifies, selectors and the IKE Delete a peer sends
    in every handshake decode to one frozen value per body; keys, nonces, NAT-D, AUTH, an SA with a
    SPI and a critical payload are decoded anew. Either way the values are the ones sent."""
    ts = TsPayload(True, (WireTs(7, 0, 0, 65535, bytes([198, 51, 100, 1]), bytes([198, 51, 100, 1])),))
    offer = SaPayload((Proposal(1, ProtocolId.IKE, b"", (Transform(1, 20, 256), Transform(2, 5), Transform(4, 31))),))
    child = SaPayload((Proposal(1, ProtocolId.ESP, b"\x01\x02\x03\x04", (Transform(1, 20, 256), Transform(5, 0))),))
    shared = [offer, IdPayload(True, 2, b"left.example"), VendorIdPayload(b"ipsec-console 1\0"),
              NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED), ts,
              TsPayload(False, ts.selectors), DeletePayload(ProtocolId.IKE)]
    fresh = [KePayload(31, b"k" * 32), NoncePayload(b"n" * 32), AuthPayload(2, b"a" * 32), child,
             NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, data=b"d" * 20),
             NotifyPayload(NotifyType.USE_TRANSPORT_MODE, critical=True)]
    raw = encode_message(35, 1, SPI_I, SPI_R, FLAG_INITIATOR, shared + fresh)
    one, two = decode_message(raw).payloads, decode_message(raw).payloads
    assert one == two == tuple(shared + fresh)
    assert all(a is b for a, b in zip(one[:len(shared)], two[:len(shared)]))
    assert not any(a is b for a, b in zip(one[len(shared):], two[len(shared):]))
    assert two[-1].critical
    # TSi and TSr with the same bytes stay apart (the type is part of the key).
    assert (two[4].initiator, two[5].initiator) == (True, False)


def test_shared_decoding_is_bounded_and_never_keeps_or_hides_an_error(monkeypatch, shared_codec):
    from engine.wire import shared

    monkeypatch.setattr(shared, "SHARED_DECODED_MAX", 3)
    for i in range(10):
        vid = VendorIdPayload(b"vendor %d" % i)
        assert decode_payloads(PayloadType.VENDOR, encode_payloads([vid])[1]) == [vid]
        assert 1 <= len(shared.SHARED_DECODED[PayloadType.VENDOR]) <= 3
    # A body above its type's bound is decoded, not kept.
    big = VendorIdPayload(b"v" * (shared.SHARED_BODY_MAX[PayloadType.VENDOR] + 1))
    shared.SHARED_DECODED[PayloadType.VENDOR].clear()
    assert decode_payloads(PayloadType.VENDOR, encode_payloads([big])[1]) == [big]
    assert not shared.SHARED_DECODED[PayloadType.VENDOR]
    # A malformed body of a shared type raises with its offset every time and is never kept.
    good = encode_message(37, 0, SPI_I, SPI_R, 0, [VendorIdPayload(b"v"), NotifyPayload(NotifyType.INITIAL_CONTACT)])
    bad = good[:38] + b"\x09" + good[39:]  # the Notify's SPI size (its header at 28 + 5)
    for _ in range(2):
        with pytest.raises(MalformedMessage, match="N at offset 33: SPI size 9 overruns"):
            decode_message(bad)
    assert not shared.SHARED_DECODED[PayloadType.NOTIFY]
    decode_message(good)
    assert len(shared.SHARED_DECODED[PayloadType.NOTIFY]) == 1


def test_the_wire_form_of_a_selector_object_is_built_once_and_the_memo_is_bounded(monkeypatch):
    """The engine sends the same few selector objects in every handshake: the second from_ts of the
    same object is the first's value; an equal selector that is another object gets an equal value;
    a 'dynamic' one still raises every time; at most FROM_TS_MEMO_MAX selectors are kept."""
    from engine.wire import payloads

    monkeypatch.setattr(payloads, "_FROM_TS", {})
    monkeypatch.setattr(payloads, "FROM_TS_MEMO_MAX", 3)
    ts = parse_ts("198.51.100.0/24[tcp/80]")
    first = WireTs.from_ts(ts)
    assert WireTs.from_ts(ts) is first
    assert first == WireTs(7, 6, 80, 80, bytes([198, 51, 100, 0]), bytes([198, 51, 100, 255]))
    other = WireTs.from_ts(parse_ts("198.51.100.0/24[tcp/80]"))
    assert other == first and other is not first
    for _ in range(2):
        with pytest.raises(ValueError, match="dynamic"):
            WireTs.from_ts(parse_ts("dynamic"))
    for i in range(10):
        assert WireTs.from_ts(parse_ts(f"2001:db8::{i}/128")).to_ts() == parse_ts(f"2001:db8::{i}/128")
        assert 1 <= len(payloads._FROM_TS) <= 3


def test_a_child_sa_offer_shares_its_transform_list_with_the_last_one_and_the_list_memo_is_bounded(
        monkeypatch, shared_codec):
    """Successive CHILD SA offers differ in their SPI only: each SA payload is decoded (with its own
    SPI) but the transforms tuple is the last one's; a different count over the same bytes, or a
    malformed list, is decoded (and refused) as ever; at most SHARED_TRANSFORM_LISTS_MAX are kept."""
    codec = shared_codec
    transforms = (Transform(1, 20, 256), Transform(5, 0))
    got = [codec.decode_sa(PayloadType.SA, codec.encode_sa(
        SaPayload((Proposal(1, ProtocolId.ESP, spi.to_bytes(4, "big"), transforms),))), False, 0) for spi in (1, 2)]
    assert [g.proposals[0].spi for g in got] == [b"\0\0\0\1", b"\0\0\0\2"]
    assert got[0].proposals[0].transforms == transforms
    assert got[0].proposals[0].transforms is got[1].proposals[0].transforms
    body = codec.encode_sa(SaPayload((Proposal(1, ProtocolId.ESP, b"\0\0\0\3", transforms),)))
    wrong_count = body[:7] + b"\x03" + body[8:]
    for _ in range(2):
        with pytest.raises(MalformedMessage, match="proposal at 4: transform 2 of 3 has 'last substruc' 0"):
            codec.decode_sa(PayloadType.SA, wrong_count, False, 0)
    monkeypatch.setattr(codec, "SHARED_TRANSFORM_LISTS_MAX", 3)
    for tid in range(1000, 1010):
        odd = SaPayload((Proposal(1, ProtocolId.ESP, b"\0\0\0\1", (Transform(1, tid),)),), False)
        assert codec.decode_sa(PayloadType.SA, codec.encode_sa(odd), False, 0) == odd
        assert 1 <= len(codec._SHARED_TRANSFORM_LISTS) <= 3


# ---------------------------------------------------------------- read as charon reads them


def test_a_delete_of_protocol_0_without_spis_is_read_as_charon_does():
    """delete_payload.c verify() takes protocol 0 like IKE (SPI size 0); charon's
    INFORMATIONAL then ignores it. Not INVALID_SYNTAX for the whole message."""
    for count in (0, 3):
        msg = decode_message(msg_bytes(42, chain(42, struct.pack("!BBH", 0, 0, count))))
        assert msg.payloads == (DeletePayload(0, ()),)
    assert roundtrip(DeletePayload(0, ())) == [DeletePayload(0, ())]
    malformed(42, struct.pack("!BBH", 0, 4, 1) + b"1234", "SPI size 4")


@pytest.mark.parametrize("protocol, spi", [
    (ProtocolId.ESP, b"12345678"), (ProtocolId.AH, b"12"), (ProtocolId.ESP, b""), (ProtocolId.IKE, b"123"),
    (0, b"1234"),
])
def test_a_notify_whose_spi_size_does_not_fit_its_protocol_is_kept(protocol, spi):
    """notify_payload.c verify() checks only the protocol and some data lengths, never the
    SPI size against the protocol: the notify is kept, with the SPI as sent."""
    body = struct.pack("!BBH", protocol, len(spi), NotifyType.REKEY_SA) + spi + b"data"
    msg = decode_message(msg_bytes(41, chain(41, body)))
    assert msg.payloads == (NotifyPayload(NotifyType.REKEY_SA, protocol, spi, b"data"),)


@pytest.mark.parametrize("numbers", [(1, 3), (2,), (1, 2, 7, 8), (1, 1, 2), (5, 5)])
def test_proposal_numbers_with_gaps_are_accepted_as_charon_does(numbers):
    """RFC 7296 §3.3.1: senders number 1, 2, 3...; charon's sa_payload.c verify() only wants
    them never to go down (proposals sharing a number are an AH+ESP bundle, skipped later)."""
    body = b"".join(proposal(number=n, protocol=3, spi=b"1234", last=0 if i == len(numbers) - 1 else 2)
                    for i, n in enumerate(numbers))
    msg = decode_message(msg_bytes(33, chain(33, body)))
    assert tuple(p.number for p in msg.payloads[0].proposals) == numbers
