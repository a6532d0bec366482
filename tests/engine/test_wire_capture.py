"""engine.wire on real captures: strongSwan 5.9.8 (Debian 12) in network namespaces.

Captured with the lab of ../shared/interop (netns-lab, strongswan-peer with
debug-keys.conf, tcpdump on the left veth): 192.0.2.1 (left.example, initiator)
to 192.0.2.2 (right.example), proposals ``aes256gcm16-prfsha256-x25519,
aes128-sha256-modp2048``. PSK_*: PSK authentication. RSA_*: RSA certificates,
so charon fragments IKE_AUTH (RFC 7383). Port-4500 messages are stored
without the non-ESP marker. The SK_e keys are the throw-away lab keys charon
logged; they let the test decrypt with AES-GCM and so prove that
``sk_aad_end`` is exactly the associated data charon used.

charon's own log lines are the expected payload lists.
"""

from __future__ import annotations

import struct
import timeit

import pytest

from engine.wire import (
    DeletePayload,
    IdPayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    SkfPayload,
    SkPayload,
    Transform,
    TsPayload,
    WireTs,
    decode_message,
    decode_payloads,
    encode_message,
)
from engine.wire.constants import AuthMethod, IdType, NotifyType, PayloadType
from engine.wire.summary import summarize
from engine.policy.ts import parse_ts

aead = pytest.importorskip("cryptography.hazmat.primitives.ciphers.aead", reason="cryptography is a dependency")
x509 = pytest.importorskip("cryptography.x509", reason="cryptography is a dependency")

PSK_INIT_REQUEST = bytes.fromhex(
    "ec1b8aa66721c61b00000000000000002120220800000000000001142200005402000024010100030300000c01000014"
    "800e01000300000802000005000000080400001f0000002c020100040300000c0100000c800e0080030000080300000c"
    "0300000802000005000000080400000e28000028001f0000a5161f82c9f8d2106e645b80dda2ab94b1c3c734433924c6"
    "b7da0122b140565729000024a3f5a3b3aed201e86c5133f0080a3c998bd461696b8d7510ea8c99d87e519cbe2900001c"
    "00004004aa4043da33b5e7a29a47fc5549435c48bb78746b2900001c00004005fd8421e4f7d8d26fedf74838f189012c"
    "aee9a147290000080000402e290000100000402f00020003000400050000000800004016"
)

PSK_INIT_RESPONSE = bytes.fromhex(
    "ec1b8aa66721c61b8be6271e9dc4a4cd2120222000000000000000f02200002800000024010100030300000c01000014"
    "800e01000300000802000005000000080400001f28000028001f0000a18a24f485538f2c99d35361484f9c476ade3cd4"
    "7f07bfc7e6f4b5876246002c29000024f493d261aebf88cb90b30a70ce63051c4f9577a9a705eb439e46a58e893d4698"
    "2900001c00004004bdf7739b9891eab7061f50d3a60a973532e733fb2900001c00004005233eb7f34a11758a85f88e76"
    "f3abd3a25ea00e78290000080000402e290000100000402f000200030004000529000008000040220000000800004014"
)

PSK_AUTH_REQUEST = bytes.fromhex(
    "ec1b8aa66721c61b8be6271e9dc4a4cd2e20230800000001000001362300011a30a583d2c8a1297c35c1737bdea144b3"
    "417dfe9e50667f3cba126025c82b48ed46f7f539c35af0e358e8a556c935db2358f5c33076b4e6459d58e4f65f2e434b"
    "b528537094416184ff8cdcd78044781e4814da4c99be22f6b5ad6add15ebac7bc04af4852fbfbe6da00cac920c74af94"
    "e95dc7222fcf3a57214b12569032b13fbc305dc78a69d39dc72054a587f523c9a26c68f732c754c7cf91565c6e92d47e"
    "0214f82fa6844db208f5315e91fb1d7229b2b02990191be34cc8de75e17a842fac04e134b326d3adcadaba002d50a841"
    "147b3252228aaf74ef3f27b9432abc77aeab242b53823accf5f6637024a5b44345be8f0e9266049b6409b3307c24df3b"
    "d8a2fbe45c9ea4068a2d59e30a142bcc2b2474efa8c9"
)

PSK_AUTH_RESPONSE = bytes.fromhex(
    "ec1b8aa66721c61b8be6271e9dc4a4cd2e20232000000001000000da240000be95384c5b96d4fbd10a268ab8dd52f4ae"
    "6568fe6a2939fe6dd0ed9d10b13b9cd9295099e497fd1c84505ddb5e875df31870fa6e1b8eda9181a1b7137d49e2ab15"
    "f246641cfae08afae3933b00784badc8e9cd99fb0818c478ebe862854b6952cafd38e0dc48fdf9fa9d288d2ca0d1b036"
    "96936fd15edc8da4618ab4b46156ba9326af09c656f57d2a55bb32d70fb35945a8842f88ca29084b570d02bdd9b1f22a"
    "3da5dad8aca76e6059c11d33537bce9e6f3838c09a30df0597b0"
)

PSK_DELETE_REQUEST = bytes.fromhex(
    "ec1b8aa66721c61b8be6271e9dc4a4cd2e20250800000002000000412a00002530a583d1c8a1297cad6c79cd06fa15b8"
    "6d6799812d8ab0b138422cd6ce52aca439"
)

PSK_DELETE_RESPONSE = bytes.fromhex(
    "ec1b8aa66721c61b8be6271e9dc4a4cd2e20252000000002000000390000001d95384c5896d4fbd1ac59613f461126cf"
    "6674294003c1561ff2"
)

PSK_SK_EI = bytes.fromhex(
    "4d12154f41c98cacfeacaccd4a8fd5d443c9a980fb446db842bc2051315c57dd5f24042d"
)

PSK_SK_ER = bytes.fromhex(
    "258694595122830d131cddaee845ee0b11429394d90a0f8dbdebaa15e1fc505a2413522f"
)

RSA_INIT_RESPONSE = bytes.fromhex(
    "2b9ab48215f4c659e97ce2bffa69f8422120222000000000000001092200002800000024010100030300000c01000014"
    "800e01000300000802000005000000080400001f28000028001f00009ed02b047e8a9cee4e905844451d9835094eda36"
    "2eb44ab3ceb4bdb077f63e0f29000024f566ab406bb9e32d70a4a630d7b93a656cb688554d66d82ec6ccb59815d75af9"
    "2900001c0000400460ef4db8903fdb2839caeeff275274a8ced441072600001c00004005fd5eabf3bab3d53cc424a162"
    "02353c973902de0829000019042ec0b353237b9311ea8f6d2424426b32d6b03a89290000080000402e29000010000040"
    "2f000200030004000529000008000040220000000800004014"
)

RSA_AUTH_REQUEST_FRAG1 = bytes.fromhex(
    "2b9ab48215f4c659e97ce2bffa69f8423520230800000001000004e0230004c400010002d0447822a936f0ee0330c8ac"
    "f4afd6714963cae833e3fc297122b09b645b145cdca36655d17e02f889122ca217934843efdc00ea78e5f0b77ab5b763"
    "b54736e98b75498892ae4056b62dd09bee70a35bdafa48850a2d3cd5bb57fe5e815bdb82a0ee7bab6d8584e5a4203a86"
    "c4abafd2d49e7acd7ed73a79326efa4ee8e533407cd0a97ac9660e47920c1bfbf84b24c62114b891e4ed8503f9370939"
    "f01f8db86d8d8e2943e478b2945ad8e400bf1aab8e9b6ddb9c06646f03fff6805627ed1d18ccb2168c7f6f7ed11d774c"
    "4ca05ea3ef64991abb09630eb5c1e07f5821cd9481742322dc81115ea866f12e3b37154c37272cf79a370fc60f0e9908"
    "b6a02c038b6c212f618bdd7a2b9d045ca38a3b21bf61bfe4223829468bfeba4fd028d136a039d149c9be1efe4a271948"
    "208ce4a76e80eb55c8257bb143c0df96e7b4c7f7b8f7928f469891792d62b5559a6206d2a8e0c6c766ab1cc5d1251260"
    "8141bac4920b68d2608ed7848a6a14e8c80b23459925541d9dd4d614977c7247e4b7884cc5a6521801105e7dd4bae33e"
    "8eb744ad5ab7d5d1f4244340f5b684c1edb7155cb3a25ba9f66022cade376c1c2c1b3eac5de1bd05aea7562ab7d49ea1"
    "4c8f3be1320c7ef9551b57fc162a89263b59c07b07822f6ec8e22fa7b072ed21691da6abaee788552a73bab53af3dfce"
    "bb9c8a4e21056aa48c8675a023e08240969430e0ef8f3a8fd13beb323cadf838634b457e9c2bfb809d3c56f0af74456f"
    "b336e36bcbdce1d3cf932a6f738426a426504ff9eea1bb2ffb6d4490a9ea0afd128b71488acb36903ef75a8fcdb61b19"
    "e0c1bf663b99180ad400d5617638bf94af0e33b66086f674d698fd4fe73615d33c64648d22f9683e7c0dd718085dac41"
    "25a5e0322505847e22c176eca32b7a66944593bb3aef1861acc91644dc7ea2ba9652fe2134eab57155deeba3ad2b37f1"
    "550853d9216364fb74af753753fa7e202896996190d6cea28fd68da9fc012f615e7e147df35ddcb86f4e86862c518254"
    "8b360c562392029fa6db012ab36e2ce7c0540c700a0a2c189c07dbe1e7c921a182236c36f44dabbbb72eb8828a631461"
    "20a15c4a902933e2162e347d4fc4ae644c1a0d5703550b4634a7c5cdd5792eca5ebedf6e9e2cd3c934fd1e9ac668d4fe"
    "5026823acb35e7f84f565543abddb4b1cd5b40f09b51a81b2750ab522ff5449ef0a6ecf486077acdc44e016d19da09f1"
    "8ff3c8adc7de6608fd7a7abf70e901addc50fcd402fa7f88641aab310f91c35baef21d173dd3916f40a9a568776fc91c"
    "c1d26af43a6362b80a861e69417ac60725c0f3ab5e9a10f7053471e226ce0d5567c7d0dbb0a7bd09dcdc7359d5d73b23"
    "1bf6957d4418cf7dc1e5be5adc4d0776dc1546771ff8dfc528aebb73cb3a0aa327a4289fa1acc7e02c0dafbc61a7b641"
    "4dbd97b3c6bc6c235f69d592f9de51b74258684d0dd69c4689f170f28aec73ece52093f1d71e651740acef795b8c0049"
    "45e92fd4f915a771d384dd9f27cf8365ed7eb56d8e96d86c995ea7b459bade05ee9addcd8c3443f588a5bd7d0c7f0d6f"
    "92cc91c641869dba2e1979c7d419232972c722834e71e0ac60fecc75d5560c138500d30d1e98dbf634e3132b7b0cae96"
    "3780768228df98353bf01a125cc3dba107514b9bf1ce0c26a63ee2012677ab86a1241ceb61fd954463166f9fe6b792a6"
)

RSA_AUTH_REQUEST_FRAG2 = bytes.fromhex(
    "2b9ab48215f4c659e97ce2bffa69f842352023080000000100000110000000f400020002d0447822a936f0ed13b8b468"
    "35b905363f0fd746ec0454ac703ffec8aa9adf6bf6d409a78ce5dd23eff986e88e3583cffbc539d879454c2414ac06fb"
    "f69aa026da4545f91dda9ba4261ab1e5d5e2421aa06d6ce8ea87e87c5088e8666ee28d2773e208c3873c5bf08390c978"
    "cb81139e365738893a624b942c2b7a3e172b3632022a7288caf806b1cce0991a6dcc2c3cf530e6f3b7be10c25c12b1a0"
    "ffad1f0d76ca9354c00a961136ca27f2b27de497158548ae879885947ed4c8df54040fef9e66b52210c080b78b48770c"
    "8710ded43d009873f9edb5e019db1f62ed8801f27831951ff7031a7b6c4c39d3"
)

RSA_SK_EI = bytes.fromhex(
    "f639c771b94b84d23db2b2bafddd27b225f8334caae3b71e9ec6949e6562074f9c1eb0f4"
)


# charon's "generating"/"parsed" log lines for these messages (left side).
CHARON_LOG = {
    "PSK_INIT_REQUEST": "IKE_SA_INIT request 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP) N(FRAG_SUP) N(HASH_ALG) N(REDIR_SUP) ]",
    "PSK_INIT_RESPONSE": "IKE_SA_INIT response 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP) N(FRAG_SUP) N(HASH_ALG) "
                         "N(CHDLESS_SUP) N(MULT_AUTH) ]",
    "PSK_AUTH_REQUEST": "IKE_AUTH request 1 [ IDi N(INIT_CONTACT) IDr AUTH SA TSi TSr N(MOBIKE_SUP) N(NO_ADD_ADDR) "
                        "N(MULT_AUTH) N(EAP_ONLY) N(MSG_ID_SYN_SUP) ]",
    "PSK_AUTH_RESPONSE": "IKE_AUTH response 1 [ IDr AUTH SA TSi TSr N(MOBIKE_SUP) N(NO_ADD_ADDR) ]",
    "PSK_DELETE_REQUEST": "INFORMATIONAL request 2 [ D ]",
    "RSA_INIT_RESPONSE": "IKE_SA_INIT response 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP) CERTREQ N(FRAG_SUP) N(HASH_ALG) "
                         "N(CHDLESS_SUP) N(MULT_AUTH) ]",
    "RSA_AUTH_REQUEST": "IKE_AUTH request 1 [ IDi CERT N(INIT_CONTACT) CERTREQ IDr AUTH SA TSi TSr N(MOBIKE_SUP) "
                        "N(NO_ADD_ADDR) N(MULT_AUTH) N(EAP_ONLY) N(MSG_ID_SYN_SUP) ]",
}


def decrypt(message, key: bytes) -> bytes:
    """AES-GCM-256 with 16-octet ICV (RFC 5282): the plaintext payloads, padding removed."""
    sk = message.encrypted
    iv, ct = sk.data[:8], sk.data[8:]
    plain = aead.AESGCM(key[:32]).decrypt(key[32:] + iv, ct, message.raw[:message.sk_aad_end])
    return plain[:-1 - plain[-1]]


def inner_payloads(message, key: bytes) -> list:
    return decode_payloads(message.encrypted.next_payload, decrypt(message, key), offset_base=message.sk_aad_end)


def test_ike_sa_init_request_field_by_field():
    """The captured request rebuilt from RFC 7296 §3 layouts, field by field."""
    spi_i = bytes.fromhex("ec1b8aa66721c61b")
    nonce = bytes.fromhex("a3f5a3b3aed201e86c5133f0080a3c998bd461696b8d7510ea8c99d87e519cbe")
    ke = bytes.fromhex("a5161f82c9f8d2106e645b80dda2ab94b1c3c734433924c6b7da0122b1405657")
    natd_s = bytes.fromhex("aa4043da33b5e7a29a47fc5549435c48bb78746b")
    natd_d = bytes.fromhex("fd8421e4f7d8d26fedf74838f189012caee9a147")
    built = b"".join([
        # IKE header: SPIi, SPIr=0, next SA(33), version 2.0, IKE_SA_INIT(34), flags I, MID 0, length 276
        spi_i, bytes(8), bytes([33, 0x20, 34, 0x08]), struct.pack("!II", 0, 276),
        # SA: next KE(34), length 84
        bytes([34, 0]), struct.pack("!H", 84),
        #   proposal 1 (more follow: 2), length 36, #1, IKE, SPI size 0, 3 transforms
        bytes([2, 0]), struct.pack("!H", 36), bytes([1, 1, 0, 3]),
        #     ENCR(1) AES_GCM_16(20) + KEY_LENGTH(TV 0x800e) 256; more transforms: 3
        bytes([3, 0]), struct.pack("!H", 12), bytes([1, 0]), struct.pack("!HHH", 20, 0x800E, 256),
        #     PRF(2) HMAC_SHA2_256(5)
        bytes([3, 0]), struct.pack("!H", 8), bytes([2, 0]), struct.pack("!H", 5),
        #     KE(4) CURVE25519(31), last transform
        bytes([0, 0]), struct.pack("!H", 8), bytes([4, 0]), struct.pack("!H", 31),
        #   proposal 2 (last), length 44, #2, IKE, SPI size 0, 4 transforms
        bytes([0, 0]), struct.pack("!H", 44), bytes([2, 1, 0, 4]),
        bytes([3, 0]), struct.pack("!H", 12), bytes([1, 0]), struct.pack("!HHH", 12, 0x800E, 128),  # AES_CBC 128
        bytes([3, 0]), struct.pack("!H", 8), bytes([3, 0]), struct.pack("!H", 12),  # INTEG HMAC_SHA2_256_128
        bytes([3, 0]), struct.pack("!H", 8), bytes([2, 0]), struct.pack("!H", 5),  # PRF HMAC_SHA2_256
        bytes([0, 0]), struct.pack("!H", 8), bytes([4, 0]), struct.pack("!H", 14),  # KE MODP_2048
        # KE: next Nonce(40), length 40, group 31, reserved, 32-byte public value
        bytes([40, 0]), struct.pack("!HHH", 40, 31, 0), ke,
        # Nonce: next N(41), length 36
        bytes([41, 0]), struct.pack("!H", 36), nonce,
        # N(NAT_DETECTION_SOURCE_IP 16388): protocol 0, SPI size 0, 20 bytes of SHA-1
        bytes([41, 0]), struct.pack("!H", 28), bytes([0, 0]), struct.pack("!H", 16388), natd_s,
        bytes([41, 0]), struct.pack("!H", 28), bytes([0, 0]), struct.pack("!H", 16389), natd_d,
        # N(IKEV2_FRAGMENTATION_SUPPORTED 16430), no data
        bytes([41, 0]), struct.pack("!H", 8), bytes([0, 0]), struct.pack("!H", 16430),
        # N(SIGNATURE_HASH_ALGORITHMS 16431): SHA2_256, SHA2_384, SHA2_512, IDENTITY
        bytes([41, 0]), struct.pack("!H", 16), bytes([0, 0]), struct.pack("!HHHHH", 16431, 2, 3, 4, 5),
        # N(REDIRECT_SUPPORTED 16406), last payload
        bytes([0, 0]), struct.pack("!H", 8), bytes([0, 0]), struct.pack("!H", 16406),
    ])
    assert built == PSK_INIT_REQUEST

    msg = decode_message(built)
    h = msg.header
    assert (h.spi_i, h.spi_r, h.exchange, h.mid, h.length) == (spi_i, bytes(8), 34, 0, 276)
    assert h.initiator and not h.response and (h.major, h.minor) == (2, 0)
    sa, ke_p, nonce_p, *notifies = msg.payloads
    assert sa == SaPayload((
        Proposal(1, 1, b"", (Transform(1, 20, 256), Transform(2, 5), Transform(4, 31))),
        Proposal(2, 1, b"", (Transform(1, 12, 128), Transform(3, 12), Transform(2, 5), Transform(4, 14))),
    ))
    assert (ke_p.group, ke_p.data, nonce_p.data) == (31, ke, nonce)
    assert notifies == [
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, data=natd_s),
        NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, data=natd_d),
        NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
        NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, data=bytes.fromhex("0002000300040005")),
        NotifyPayload(NotifyType.REDIRECT_SUPPORTED),
    ]


@pytest.mark.parametrize("name", ["PSK_INIT_REQUEST", "PSK_INIT_RESPONSE", "RSA_INIT_RESPONSE", "PSK_DELETE_REQUEST"])
def test_plaintext_payload_lists_match_charons_log_and_reencode_identically(name):
    raw = globals()[name]
    msg = decode_message(raw)
    if msg.encrypted is not None:
        payloads = inner_payloads(msg, PSK_SK_EI)
    else:
        payloads = list(msg.payloads)
        h = msg.header
        # Our encoder writes the same bytes charon wrote.
        assert encode_message(h.exchange, h.mid, h.spi_i, h.spi_r, h.flags, payloads) == raw
    assert summarize(msg, payloads).brief() == CHARON_LOG[name]


def test_ike_auth_sk_framing_and_contents():
    for raw, key, name in ((PSK_AUTH_REQUEST, PSK_SK_EI, "PSK_AUTH_REQUEST"),
                           (PSK_AUTH_RESPONSE, PSK_SK_ER, "PSK_AUTH_RESPONSE")):
        msg = decode_message(raw)
        assert len(msg.payloads) == 1 and isinstance(msg.payloads[0], SkPayload)
        assert msg.sk_aad_end == 32  # header and SK's generic header: GCM's associated data
        assert raw[msg.sk_aad_end:] == msg.payloads[0].data
        assert msg.payloads[0].next_payload == (PayloadType.IDi if msg.header.initiator else PayloadType.IDr)
        payloads = inner_payloads(msg, key)  # decrypts only if the AAD boundary is right
        assert summarize(msg, payloads).brief() == CHARON_LOG[name]

    request = inner_payloads(decode_message(PSK_AUTH_REQUEST), PSK_SK_EI)
    assert request[0] == IdPayload(True, IdType.FQDN, b"left.example")
    assert request[2] == IdPayload(False, IdType.FQDN, b"right.example")
    assert request[3].method == AuthMethod.PSK and len(request[3].data) == 32
    sa = request[4]
    # charon: "CHILD_SA psk-tunnel{1} established with SPIs 802e936b_i 7fa22563_o"
    assert [p.spi.hex() for p in sa.proposals] == ["802e936b", "802e936b"]
    assert sa.proposals[0].transforms == (Transform(1, 20, 256), Transform(5, 0))
    assert request[5] == TsPayload(True, (WireTs.from_ts(parse_ts("198.51.100.1/32")),))
    assert request[6].traffic_selectors() == (parse_ts("198.51.100.129/32"),)
    response = inner_payloads(decode_message(PSK_AUTH_RESPONSE), PSK_SK_ER)
    assert response[2].proposals[0].spi.hex() == "7fa22563"

    delete = decode_message(PSK_DELETE_REQUEST)
    assert inner_payloads(delete, PSK_SK_EI) == [DeletePayload(1, ())]
    assert inner_payloads(decode_message(PSK_DELETE_RESPONSE), PSK_SK_ER) == []


def test_fragmented_ike_auth_with_certificate():
    frags = [decode_message(raw) for raw in (RSA_AUTH_REQUEST_FRAG1, RSA_AUTH_REQUEST_FRAG2)]
    for number, msg in enumerate(frags, 1):
        skf = msg.encrypted
        assert isinstance(skf, SkfPayload)
        assert (skf.fragment_number, skf.total_fragments) == (number, 2)
        assert skf.next_payload == (PayloadType.IDi if number == 1 else 0)
        assert msg.sk_aad_end == 36  # header, SKF generic header, fragment number and total
        assert summarize(msg).brief() == f"IKE_AUTH request 1 [ EF({number}/2) ]"
    assert len(RSA_AUTH_REQUEST_FRAG1) == 1248  # charon's default fragment size fits 1280
    plain = b"".join(decrypt(m, RSA_SK_EI) for m in frags)
    payloads = decode_payloads(frags[0].encrypted.next_payload, plain)
    total = sum(len(r) for r in (RSA_AUTH_REQUEST_FRAG1, RSA_AUTH_REQUEST_FRAG2))
    summary = summarize(frags[0], payloads, length=total, fragments=2)
    assert summary.brief() == CHARON_LOG["RSA_AUTH_REQUEST"]
    assert (summary.fragments, summary.length) == (2, 1520)
    cert = payloads[1]
    assert cert.encoding == 4  # X.509 certificate - signature (DER)
    parsed = x509.load_der_x509_certificate(cert.data)
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["left.example"]
    assert payloads[0] == IdPayload(True, IdType.FQDN, b"left.example")
    assert payloads[5].method == AuthMethod.DIGITAL_SIGNATURE  # RFC 7427, from N(HASH_ALG)


def test_decode_time_of_a_typical_ike_auth_is_reported():
    """Not a timed assertion: prints the per-message decode cost for the report (pytest -s)."""
    msg = decode_message(PSK_AUTH_REQUEST)
    inner = decrypt(msg, PSK_SK_EI)
    n = 2000
    outer = timeit.timeit(lambda: decode_message(PSK_AUTH_REQUEST), number=n) / n
    plain = timeit.timeit(lambda: decode_payloads(PayloadType.IDi, inner), number=n) / n
    print(f"\nIKE_AUTH (310 bytes, 12 inner payloads): decode_message {outer * 1e6:.1f} us, "
          f"inner decode_payloads {plain * 1e6:.1f} us")
    assert decode_payloads(PayloadType.IDi, inner)[0].data == b"left.example"
