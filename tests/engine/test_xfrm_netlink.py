"""NETLINK_XFRM message classes: byte layouts against the uapi structs
(hand-computed offsets for 64-bit Linux, include/uapi/linux/xfrm.h), and
decoding of messages captured from a Debian 6.1 kernel (state and policy
added by iproute2, so the encoder under test played no part in them)."""

from __future__ import annotations

import socket
import struct

import pytest

from engine.datapath import xfrm_netlink as x
from engine.datapath.kernel import acquire_event
from engine.events import AcquireRequested

# ---------------------------------------------------------------- captures
# Captured in the qemu guest (tests/kernel/vm/run-in-vm) with:
#   ip xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x1234 reqid 367001602 mode tunnel
#      aead 'rfc4106(gcm(aes))' 0x0102...24 128 replay-window 128 flag esn
#      encap espinudp 4500 4501 0.0.0.0 limit byte-soft 1000 limit packet-hard 50
#   ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0xabcd reqid 9 mode transport
#      enc 'cbc(aes)' 0xaa..aa auth-trunc 'hmac(sha256)' 0xbb..bb 128 replay-window 32
#   ip xfrm policy add src 198.51.100.0/25 dst 198.51.100.128/25 proto tcp dport 443 dir out
#      priority 2000 tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 9 mode tunnel
# then a GETSA and a GETPOLICY dump (seq 77); an ACQUIRE from a ping hitting
#   ip xfrm policy add src 198.51.100.1/32 dst 198.51.100.129/32 proto icmp dir out priority 1000
#      tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 367001604 mode tunnel
# and the soft EXPIRE of an SA (spi 0x5555, reqid 367001603) with "limit time-soft 1".

SADUMP = bytes.fromhex(
    "2c020000100002004d000000fd6ce5c10000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000002000000000000000000000000000000c00002020000000000000000000000000000abcd32000000"
    "c0000201000000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "aa95096b0000000000000000000000000000000000000000000000000000000009000000020000200000000000000000"
    "68000100686d616328736861323536290000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000010000bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    "bbbbbbbbbbbbbbbb6c001400686d61632873686132353629000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000001000080000000bbbbbbbbbbbbbbbbbbbbbbbb"
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb58000200636263286165732900000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000080000000aaaaaaaa"
    "aaaaaaaaaaaaaaaaaaaaaaaa10000a00000000000000000000000000a8010000100002004d000000fd6ce5c100000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000020000000000000000000000"
    "00000000c00002010000000000000000000000000000123432000000c0000202000000000000000000000000e8030000"
    "00000000ffffffffffffffffffffffffffffffff32000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000009a95096b00000000000000000000000000000000"
    "0000000000000000000000000200e01502000100800000000000000070001200726663343130362867636d2861657329"
    "290000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "20010000800000000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223241c000400"
    "0200119411950000000000000000000000000000000000002c0017000400000000000000000000000000000000000000"
    "800000000000000000000000000000000000000014000000030002004d000000fd6ce5c100000000"
)

POLDUMP = bytes.fromhex(
    "08010000130002004d000000fd6ce5c1c6336480000000000000000000000000c6336400000000000000000000000000"
    "01bbffff0000000002001919060000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffff"
    "ffffffffffffffff00000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000ae95096b000000000000000000000000d007000001000000010000000000000044000500c0000202"
    "000000000000000000000000000000003200000002000000c00002010000000000000000000000000900000001000000"
    "ffffffffffffffffffffffff0a001000000000000000000014000000030002004d000000fd6ce5c100000000"
)

ACQUIRE = bytes.fromhex(
    "78010000170000000000000000000000c00002020000000000000000000000000000000032000000c000020100000000"
    "0000000000000000c6336481000000000000000000000000c63364010000000000000000000000000000ffff0008ffff"
    "02002020010000000200000000000000c6336481000000000000000000000000c6336401000000000000000000000000"
    "000000000000000002002020010000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffff"
    "ffffffffffffffff00000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000af95096b000000000000000000000000e8030000090000000100000000000000ffffffffffffffff"
    "ffffffff0100000044000500c0000202000000000000000000000000000000003200000002000000c000020100000000"
    "00000000000000000400e01501000000ffffffffffffffffffffffff0a0010000000000000000000"
)

EXPIRE = bytes.fromhex(
    "f80000001800000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000002000000000000000000000000000000c00002010000000000000000000000000000555532000000"
    "c0000202000000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
    "010000000000000064000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "b195096b000000000000000000000000000000000000000000000000000000000300e015020001000000000000000000"
    "0000000000000000"
)


IP = {a: socket.inet_aton(a) + bytes(12) for a in
      ("192.0.2.1", "192.0.2.2", "198.51.100.0", "198.51.100.1", "198.51.100.128", "198.51.100.129")}
INF = 0xFFFFFFFFFFFFFFFF


# ---------------------------------------------------------------- sizes

@pytest.mark.parametrize("struct_type, size", [
    (x.xfrm_selector, 56),         # 2 x 16 addr, 4 x be16, u16, 3 x u8 (+1 pad), int, uid
    (x.xfrm_id, 24),               # addr, be32 spi, u8 proto (+3)
    (x.xfrm_lifetime_cfg, 64),     # 8 x u64
    (x.xfrm_lifetime_cur, 32),     # 4 x u64
    (x.xfrm_stats, 12),
    (x.xfrm_user_tmpl, 64),        # id 24, family 2 (+2), saddr 16, reqid, 3 x u8 (+1), 3 x u32
    (x.xfrm_encap_tmpl, 24),       # u16, 2 x be16 (+2), addr
    (x.xfrm_mark, 8),
    (x.xfrm_replay_state, 12),
    (x.xfrm_userpolicy_type, 6),   # u8 (+1), u16, u8 (+1)
    (x.usersa_info_body, 224),     # sel 56 id 24 saddr 16 lft 64 cur 32 stats 12 seq reqid family mode win flags (+7)
    (x.userpolicy_info_body, 168), # sel 56 lft 64 cur 32 priority index dir action flags share (+4)
])
def test_struct_sizes_match_the_uapi(struct_type, size):
    assert struct_type.size == size
    assert len(struct_type.pack({})) == size


@pytest.mark.parametrize("cls, size", [
    (x.xfrm_usersa_info, 224),
    (x.xfrm_usersa_id, 24),        # addr, be32 spi, u16 family, u8 proto (+1)
    (x.xfrm_userpolicy_info, 168),
    (x.xfrm_userpolicy_id, 64),    # sel 56, index, dir (+3)
    (x.xfrm_user_acquire, 280),    # id 24 saddr 16 sel 56 policy 168 (8-aligned at 96) 4 x u32
    (x.xfrm_user_expire, 232),     # state 224, hard (+7)
    (x.xfrm_user_polexpire, 176),  # pol 168, hard (+7)
])
def test_message_bodies_encode_to_the_uapi_size(cls, size):
    data = x.encode_request(cls(), 0x10, 1, 1)
    assert len(data) == 16 + size
    assert struct.unpack_from("=I", data, 0)[0] == 16 + size


# ---------------------------------------------------------------- encoding

def test_newsa_layout():
    m = x.xfrm_usersa_info()
    m["sel"] = {"family": socket.AF_INET, "saddr": "198.51.100.1", "daddr": "198.51.100.129",
                "prefixlen_s": 32, "prefixlen_d": 32, "proto": 17, "sport": 500, "sport_mask": 0xFFFF,
                "dport": 4500, "dport_mask": 0xFFFF}
    m["id"] = {"daddr": "192.0.2.2", "spi": 0xC0DE1001, "proto": 50}
    m["saddr"] = "192.0.2.1"
    m["lft"] = {"soft_byte_limit": 1000, "hard_byte_limit": 2000, "soft_packet_limit": INF, "hard_packet_limit": INF}
    m["reqid"] = 0x15E00001
    m["family"] = socket.AF_INET
    m["mode"] = 1
    m["replay_window"] = 32
    m["flags"] = 0x20 | 0x80
    key = bytes(range(36))
    m["attrs"] = [
        ("XFRMA_ALG_AEAD", {"alg_name": "rfc4106(gcm(aes))", "alg_key_len": 288, "alg_icv_len": 128, "alg_key": key}),
        ("XFRMA_ENCAP", {"encap_type": 2, "encap_sport": 4500, "encap_dport": 4501}),
        ("XFRMA_REPLAY_ESN_VAL", {"bmp_len": 2, "replay_window": 64}),
    ]
    data = x.encode_request(m, x.XFRM_MSG_NEWSA, 0x605, 9)

    want = bytearray(240)
    struct.pack_into("=IHHII", want, 0, 240 + 112 + 28 + 36, 0x10, 0x605, 9, 0)
    # selector at 16
    want[16:32], want[32:48] = IP["198.51.100.129"], IP["198.51.100.1"]
    struct.pack_into(">HHHH", want, 48, 4500, 0xFFFF, 500, 0xFFFF)
    struct.pack_into("=HBBB", want, 56, 2, 32, 32, 17)
    # id at 72: daddr, spi (network order), proto
    want[72:88] = IP["192.0.2.2"]
    struct.pack_into(">I", want, 88, 0xC0DE1001)
    want[92] = 50
    want[96:112] = IP["192.0.2.1"]                       # saddr
    struct.pack_into("=4Q", want, 112, 1000, 2000, INF, INF)  # lft at 112 (8-aligned)
    # curlft 176..208 and stats 208..220 stay zero; seq at 220
    struct.pack_into("=IIHBBB", want, 220, 0, 0x15E00001, 2, 1, 32, 0xA0)  # ... flags at 232, pad to 240
    aead = bytearray(struct.pack("=HH", 112, 18)) + b"rfc4106(gcm(aes))".ljust(64, b"\0")
    aead += struct.pack("=II", 288, 128) + key
    encap = struct.pack("=HHH", 28, 4, 2) + struct.pack(">HH", 4500, 4501) + bytes(2) + bytes(16)
    esn = struct.pack("=HH", 36, 23) + struct.pack("=6I", 2, 0, 0, 0, 0, 64) + bytes(8)
    assert data == bytes(want) + bytes(aead) + encap + esn


def test_newpolicy_layout_with_template():
    m = x.xfrm_userpolicy_info()
    m["sel"] = {"family": socket.AF_INET, "saddr": "198.51.100.0", "prefixlen_s": 25,
                "daddr": "198.51.100.128", "prefixlen_d": 25}
    m["lft"] = {"soft_byte_limit": INF, "hard_byte_limit": INF, "soft_packet_limit": INF, "hard_packet_limit": INF}
    m["priority"] = 0x15E10010
    m["dir"] = 1
    m["action"] = 0
    m["attrs"] = [("XFRMA_TMPL", [{"id": {"daddr": "192.0.2.2", "proto": 50}, "family": 2, "saddr": "192.0.2.1",
                                   "reqid": 0x15E00001, "mode": 1, "aalgos": 0xFFFFFFFF, "ealgos": 0xFFFFFFFF,
                                   "calgos": 0xFFFFFFFF}])]
    data = x.encode_request(m, x.XFRM_MSG_NEWPOLICY, 0x605, 3)

    want = bytearray(16 + 168 + 68)
    struct.pack_into("=IHHII", want, 0, len(want), 0x13, 0x605, 3, 0)
    want[16:32], want[32:48] = IP["198.51.100.128"], IP["198.51.100.0"]
    struct.pack_into("=HBB", want, 56, 2, 25, 25)
    struct.pack_into("=4Q", want, 72, INF, INF, INF, INF)  # lft at 16 + 56
    struct.pack_into("=IIBB", want, 168, 0x15E10010, 0, 1, 0)  # priority at 16 + 152, dir at 16 + 160
    t = 184
    struct.pack_into("=HH", want, t, 68, 5)
    want[t + 4:t + 20] = IP["192.0.2.2"]                 # tmpl.id.daddr
    want[t + 24] = 50                                     # tmpl.id.proto (spi 0 at +20)
    struct.pack_into("=H", want, t + 28, 2)               # family
    want[t + 32:t + 48] = IP["192.0.2.1"]                 # saddr at 28 (after 2 pad bytes)
    struct.pack_into("=IB", want, t + 48, 0x15E00001, 1)  # reqid at 44, mode at 48
    struct.pack_into("=3I", want, t + 56, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)  # algos at 52
    assert data == bytes(want)


def test_delsa_and_delpolicy_ids():
    m = x.xfrm_usersa_id()
    m["daddr"], m["spi"], m["family"], m["proto"] = "192.0.2.1", 0x1234, 2, 51
    data = x.encode_request(m, x.XFRM_MSG_DELSA, 5, 1)
    assert data[16:] == IP["192.0.2.1"] + struct.pack(">I", 0x1234) + struct.pack("=HBx", 2, 51)

    p = x.xfrm_userpolicy_id()
    p["index"], p["dir"] = 0x123, 2
    data = x.encode_request(p, x.XFRM_MSG_DELPOLICY, 5, 1)
    assert data[16:] == bytes(56) + struct.pack("=IB3x", 0x123, 2)


def test_socket_policy_blob():
    """What socket_bypass hands to setsockopt(IP_XFRM_POLICY): a bare
    xfrm_userpolicy_info, action allow, the socket's family."""
    blob = x.userpolicy_info_body.pack({"sel": {"family": 10}, "action": 0, "dir": 1})
    assert len(blob) == 168
    assert struct.unpack_from("=H", blob, 40)[0] == 10     # sel.family
    assert blob[160:164] == bytes([1, 0, 0, 0])            # dir, action, flags, share
    assert blob.count(0) == 166


def test_ipv6_address_and_auth_trunc():
    m = x.xfrm_usersa_info()
    m["id"] = {"daddr": "2001:db8::2"}
    m["attrs"] = [("XFRMA_ALG_AUTH_TRUNC", {"alg_name": "hmac(sha512)", "alg_key_len": 512,
                                            "alg_trunc_len": 256, "alg_key": b"\x07" * 64})]
    data = x.encode_request(m, x.XFRM_MSG_NEWSA, 5, 1)
    assert data[72:88] == socket.inet_pton(socket.AF_INET6, "2001:db8::2")
    attr = data[240:]
    assert struct.unpack_from("=HH", attr) == (4 + 72 + 64, 20)
    assert struct.unpack_from("=II", attr, 68) == (512, 256)
    assert attr[76:] == b"\x07" * 64


def test_algo_key_length_must_match():
    m = x.xfrm_usersa_info()
    m["attrs"] = [("XFRMA_ALG_CRYPT", {"alg_name": "cbc(aes)", "alg_key_len": 256, "alg_key": b"\0" * 16})]
    with pytest.raises(ValueError, match="256 bits but the key has 16 bytes"):
        x.encode_request(m, x.XFRM_MSG_NEWSA, 5, 1)


def test_round_trip_of_every_message():
    for cls in x.BODY_SIZES:
        m = cls()
        if "sel" in dict(cls.fields):
            m["sel"] = {"family": 2, "saddr": "198.51.100.1", "prefixlen_s": 32, "proto": 6, "dport": 443,
                        "dport_mask": 0xFFFF}
        m["attrs"] = [("XFRMA_SRCADDR", "192.0.2.1"), ("XFRMA_MARK", {"v": 5, "m": 0xFF})]
        mtype = next(t for t, c in x.MESSAGE_CLASSES.items() if c is cls)
        (reply,) = list(x.parse_messages(x.encode_request(m, mtype, 5, 42)))
        assert reply.seq == 42 and isinstance(reply.msg, cls)
        assert reply.msg.get_attr("XFRMA_SRCADDR") == IP["192.0.2.1"]
        assert reply.msg.get_attr("XFRMA_MARK") == {"v": 5, "m": 0xFF}
        if "sel" in dict(cls.fields):
            sel = reply.msg["sel"]
            assert (sel["dport"], sel["proto"], x.address_text(sel["saddr"], 2)) == (443, 6, "198.51.100.1")


# ---------------------------------------------------------------- decoding captures

def test_decode_captured_sa_dump():
    replies = list(x.parse_messages(SADUMP))
    assert [r.type for r in replies] == [x.XFRM_MSG_NEWSA, x.XFRM_MSG_NEWSA, x.NLMSG_DONE]
    assert {r.seq for r in replies} == {77} and replies[-1].error == 0
    sas = {r.msg["id"]["spi"]: r.msg for r in replies[:2]}

    gcm = sas[0x1234]
    assert x.address_text(gcm["id"]["daddr"], 2) == "192.0.2.1"
    assert x.address_text(gcm["saddr"], 2) == "192.0.2.2"
    assert (gcm["reqid"], gcm["mode"], gcm["flags"], gcm["replay_window"]) == (367001602, 1, x.XFRM_STATE_ESN, 0)
    assert gcm["lft"]["soft_byte_limit"] == 1000 and gcm["lft"]["hard_packet_limit"] == 50
    assert gcm["lft"]["hard_byte_limit"] == INF
    assert gcm.get_attr("XFRMA_ALG_AEAD") == {"alg_name": "rfc4106(gcm(aes))", "alg_key_len": 288,
                                              "alg_icv_len": 128, "alg_key": bytes(range(1, 37))}
    encap = gcm.get_attr("XFRMA_ENCAP")
    assert (encap["encap_type"], encap["encap_sport"], encap["encap_dport"]) == (2, 4500, 4501)
    esn = gcm.get_attr("XFRMA_REPLAY_ESN_VAL")
    assert (esn["bmp_len"], esn["replay_window"], esn["bmp"]) == (4, 128, [0, 0, 0, 0])

    cbc = sas[0xABCD]
    assert (cbc["reqid"], cbc["mode"], cbc["replay_window"]) == (9, 0, 32)
    assert cbc.get_attr("XFRMA_ALG_CRYPT")["alg_key"] == b"\xaa" * 16
    auth = cbc.get_attr("XFRMA_ALG_AUTH_TRUNC")
    assert (auth["alg_name"], auth["alg_trunc_len"], auth["alg_key"]) == ("hmac(sha256)", 128, b"\xbb" * 32)
    assert cbc["curlft"]["add_time"] > 1_600_000_000


def test_decode_captured_policy_dump():
    replies = list(x.parse_messages(POLDUMP))
    assert [r.type for r in replies] == [x.XFRM_MSG_NEWPOLICY, x.NLMSG_DONE]
    pol = replies[0].msg
    sel = pol["sel"]
    assert (x.address_text(sel["saddr"], 2), sel["prefixlen_s"]) == ("198.51.100.0", 25)
    assert (x.address_text(sel["daddr"], 2), sel["prefixlen_d"]) == ("198.51.100.128", 25)
    assert (sel["proto"], sel["dport"], sel["dport_mask"], sel["sport_mask"]) == (6, 443, 0xFFFF, 0)
    assert (pol["priority"], pol["dir"], pol["action"], pol["index"]) == (2000, 1, 0, 1)
    (tmpl,) = pol.get_attr("XFRMA_TMPL")
    assert (tmpl["reqid"], tmpl["mode"], tmpl["id"]["proto"], tmpl["family"]) == (9, 1, 50, 2)
    assert x.address_text(tmpl["saddr"], 2) == "192.0.2.1"
    assert x.address_text(tmpl["id"]["daddr"], 2) == "192.0.2.2"
    assert pol.get_attr("XFRMA_POLICY_TYPE")["type"] == x.XFRM_POLICY_TYPE_MAIN


def test_decode_captured_acquire():
    (reply,) = list(x.parse_messages(ACQUIRE))
    assert reply.type == x.XFRM_MSG_ACQUIRE and reply.seq == 0
    acq = reply.msg
    # the flow that triggered it: an ICMP echo request (type 8 in the sport field)
    assert (acq["sel"]["proto"], acq["sel"]["sport"], acq["sel"]["sport_mask"]) == (1, 8, 0xFFFF)
    assert x.address_text(acq["sel"]["saddr"], 2) == "198.51.100.1"
    assert (acq["policy"]["priority"], acq["policy"]["dir"]) == (1000, 1)
    assert acq.get_attr("XFRMA_TMPL")[0]["reqid"] == 367001604
    assert acquire_event(acq) == AcquireRequested(reqid=4, local_addr="192.0.2.1", remote_addr="192.0.2.2")


def test_decode_captured_expire():
    (reply,) = list(x.parse_messages(EXPIRE))
    assert reply.type == x.XFRM_MSG_EXPIRE
    state = reply.msg["state"]
    assert reply.msg["hard"] == 0
    assert (state["id"]["spi"], state["reqid"]) == (0x5555, 367001603)
    assert state["lft"]["soft_add_expires_seconds"] == 1


# ---------------------------------------------------------------- errors and junk

def _error(code: int, text: str | None, capped: bool = True) -> bytes:
    orig = struct.pack("=IHHII", 256, 0x10, 0x605, 7, 0)  # the request's header
    body = struct.pack("=i", -code) + orig
    flags = 0x100 if capped else 0
    if text is not None:
        raw = text.encode() + b"\0"
        body += struct.pack("=HH", 4 + len(raw), 1) + raw + b"\0" * (-len(raw) % 4)
        flags |= 0x200
    return struct.pack("=IHHII", 16 + len(body), 2, flags, 7, 0) + body


def test_error_with_extended_ack():
    (reply,) = list(x.parse_messages(_error(38, "Requested AEAD algorithm not found")))
    assert (reply.type, reply.seq, reply.error) == (x.NLMSG_ERROR, 7, 38)
    assert reply.error_text == "Requested AEAD algorithm not found"


def test_ack_and_plain_error():
    (ack,) = list(x.parse_messages(_error(0, None)))
    assert (ack.error, ack.error_text) == (0, "")
    (err,) = list(x.parse_messages(_error(17, None)))
    assert err.error == 17


def test_truncated_datagrams_end_quietly():
    assert list(x.parse_messages(SADUMP[:100])) == []
    whole = list(x.parse_messages(SADUMP[:len(SADUMP) - 20]))
    assert [r.type for r in whole] == [x.XFRM_MSG_NEWSA, x.XFRM_MSG_NEWSA]
    assert list(x.parse_messages(b"\x05\x00\x00\x00" + bytes(20))) == []
