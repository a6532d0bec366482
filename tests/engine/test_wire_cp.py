"""CP payload values (RFC 7296 §3.15) and the MOBIKE / redirect notifies (RFC 4555, RFC 5685):
round trips, refusals, charon-style summaries, and scapy's IKEv2 dissector as an independent check."""

from __future__ import annotations

import ipaddress as ip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.wire import CpPayload, NotifyPayload, decode_message, encode_message
from engine.wire import cp, mobility
from engine.wire.constants import CfgAttr, CfgType, NotifyType
from engine.wire.errors import MalformedMessage
from engine.wire.summary import payload_detail, payload_name

scapy_ikev2 = pytest.importorskip("scapy.contrib.ikev2", reason="scapy is a test dependency (pip install scapy)")
SPI = bytes.fromhex("c0ffee00c0ffee00")


def test_request_and_reply_round_trip_and_read_like_charon():
    req = cp.config_request(ip4=True, ip6=True, dns=True)
    assert payload_name(req) == "CPRQ(ADDR DNS ADDR6 DNS6)"
    c = cp.decode_config(req)
    assert c.cfg_type == CfgType.CFG_REQUEST and c.wants_ip4 and c.wants_ip6 and c.wants_dns
    reply = cp.config_reply(ip4=ip.ip_address("198.51.100.130"), ip4_netmask=ip.ip_address("255.255.255.255"),
                            ip6=ip.IPv6Interface("2001:db8:1::5/64"),
                            dns=["198.51.100.53", "2001:db8::53"], subnets=["198.51.100.0/25", "2001:db8:2::/48"])
    assert payload_name(reply) == "CPRP(ADDR MASK ADDR6 DNS DNS6 SUBNET SUBNET6)"
    back = cp.decode_config(decode_message(encode_message(35, 1, SPI, SPI, 0x20, [reply])).payloads[0])
    assert back.ip4 == (ip.ip_address("198.51.100.130"),)
    assert back.ip6 == (ip.IPv6Interface("2001:db8:1::5/64"),)
    assert back.dns == (ip.ip_address("198.51.100.53"), ip.ip_address("2001:db8::53"))
    assert back.subnets == (ip.ip_network("198.51.100.0/25"), ip.ip_network("2001:db8:2::/48"))
    assert not back.requested
    detail = dict(payload_detail(reply).fields)
    assert detail["INTERNAL_IP6_ADDRESS"] == "2001:db8:1::5/64" and detail["INTERNAL_IP4_SUBNET"] == "198.51.100.0/25"


def test_reply_leaves_out_a_family_the_client_gets_no_address_of():
    reply = cp.config_reply(ip4=ip.ip_address("198.51.100.130"), dns=["198.51.100.53", "2001:db8::53"],
                            subnets=["2001:db8::/32"])
    assert [t for t, _ in reply.attributes] == [CfgAttr.INTERNAL_IP4_ADDRESS, CfgAttr.INTERNAL_IP4_DNS]


def test_a_request_may_name_the_address_it_had():
    c = cp.decode_config(cp.config_request(ip4_hint=ip.ip_address("198.51.100.131")))
    assert c.wants_ip4 and c.ip4 == (ip.ip_address("198.51.100.131"),)
    assert CfgAttr.INTERNAL_IP4_ADDRESS not in c.requested


@pytest.mark.parametrize("attr, value, words", [
    (CfgAttr.INTERNAL_IP4_ADDRESS, b"\1\2\3", "ADDR (1): 3 bytes (allowed: 0 or 4)"),
    (CfgAttr.INTERNAL_IP6_ADDRESS, bytes(16), "ADDR6 (8): 16 bytes (allowed: 0 or 17)"),
    (CfgAttr.INTERNAL_IP6_ADDRESS, bytes(16) + b"\x81", "prefix length 129"),
    (CfgAttr.INTERNAL_IP4_SUBNET, bytes([198, 51, 100, 0, 255, 0, 255, 0]), "is not a netmask"),
    (CfgAttr.SUPPORTED_ATTRIBUTES, b"\0\1\0", "odd length"),
])
def test_wrong_attribute_lengths_are_named(attr, value, words):
    with pytest.raises(MalformedMessage, match=words.replace("(", r"\(").replace(")", r"\)")):
        cp.decode_config(CpPayload(CfgType.CFG_REPLY, ((attr, value),)))


def test_unknown_attributes_are_kept_and_text_bounded():
    c = cp.decode_config(CpPayload(CfgType.CFG_REPLY, ((99, b"xyz"), (CfgAttr.APPLICATION_VERSION, b"v" * 1000),
                                                       (CfgAttr.SUPPORTED_ATTRIBUTES, b"\0\1\0\3"))))
    assert c.other[0] == (99, b"xyz") and len(c.app_version) == cp.MAX_TEXT
    assert c.other[1] == (CfgAttr.SUPPORTED_ATTRIBUTES, b"\0\1\0\3")


def test_encode_refuses_the_wrong_family():
    with pytest.raises(ValueError, match="IPv4 address"):
        cp.encode_value(CfgAttr.INTERNAL_IP4_DNS, "2001:db8::1")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0x7FFF), st.binary(max_size=20)), max_size=8), st.integers(0, 255))
def test_decode_config_raises_only_malformed_message(attrs, cfg_type):
    try:
        cp.decode_config(CpPayload(cfg_type, tuple(attrs)))
    except MalformedMessage:
        pass


def test_scapy_reads_our_cp_reply_values():
    reply = cp.config_reply(ip4=ip.ip_address("198.51.100.130"), ip4_netmask=ip.ip_address("255.255.255.0"),
                            ip6=ip.IPv6Interface("2001:db8:1::5/64"), dns=["198.51.100.53", "2001:db8::53"],
                            subnets=["198.51.100.0/25"])
    raw = encode_message(35, 1, SPI, SPI, 0x20, [reply])
    layer = scapy_ikev2.IKEv2(raw).payload
    assert layer.__class__.__name__ == "IKEv2_CP" and layer.CFGType == CfgType.CFG_REPLY
    got = [(a.type, a.value) for a in layer.attributes]
    assert got[0] == (1, "198.51.100.130") and got[1] == (2, "255.255.255.0")
    assert got[2] == (8, ip.IPv6Interface("2001:db8:1::5/64").ip.packed + b"\x40")
    assert got[3] == (3, "198.51.100.53") and got[4] == (10, "2001:db8::53")
    assert got[5] == (13, bytes([198, 51, 100, 0, 255, 255, 255, 128]))


def test_scapy_built_cp_request_decodes_with_ours():
    s = scapy_ikev2
    pkt = s.IKEv2(init_SPI=SPI, resp_SPI=SPI, exch_type=35, flags="Initiator", id=1) / s.IKEv2_CP(
        CFGType=1, attributes=[s.ConfigurationAttribute(type=1), s.ConfigurationAttribute(type=3),
                               s.ConfigurationAttribute(type=8), s.ConfigurationAttribute(type=7, value=b"x/1")])
    c = cp.decode_config(decode_message(bytes(pkt)).payloads[0])
    assert c.requested == {1, 3, 8} and c.app_version == "x/1" and c.wants_ip4 and c.wants_ip6
    assert payload_name(decode_message(bytes(pkt)).payloads[0]) == "CPRQ(ADDR DNS ADDR6 VER)"


# -- MOBIKE and redirect -----------------------------------------------------------------------------

def test_mobike_notifies():
    assert mobility.mobike_supported() == NotifyPayload(NotifyType.MOBIKE_SUPPORTED)
    extra = mobility.additional_addresses(["192.0.2.7", "2001:db8::7"])
    assert [n.type for n in extra] == [NotifyType.ADDITIONAL_IP4_ADDRESS, NotifyType.ADDITIONAL_IP6_ADDRESS]
    assert [str(mobility.additional_address(n)) for n in extra] == ["192.0.2.7", "2001:db8::7"]
    assert mobility.additional_addresses([]) == [NotifyPayload(NotifyType.NO_ADDITIONAL_ADDRESSES)]
    assert mobility.update_sa_addresses().type == NotifyType.UPDATE_SA_ADDRESSES
    c = mobility.cookie2(b"\x01" * 16)
    assert mobility.cookie2_data(c) == b"\x01" * 16
    with pytest.raises(ValueError):
        mobility.cookie2(b"short")
    with pytest.raises(MalformedMessage, match="8 to 64"):
        mobility.cookie2_data(NotifyPayload(NotifyType.COOKIE2, data=b"x" * 65))
    n = mobility.no_nats_allowed("192.0.2.7", "198.51.100.1", 4500, 4500)
    assert len(n.data) == 12
    got = mobility.decode_no_nats_allowed(n)
    assert (str(got.src), str(got.dst), got.src_port, got.dst_port) == ("192.0.2.7", "198.51.100.1", 4500, 4500)
    with pytest.raises(MalformedMessage, match="12 for IPv4"):
        mobility.decode_no_nats_allowed(NotifyPayload(NotifyType.NO_NATS_ALLOWED, data=b"x" * 13))


@pytest.mark.parametrize("gateway, nonce", [("198.51.100.9", b"N" * 32), ("2001:db8::9", b""),
                                            ("gw2.example.org", b"")])
def test_redirect_round_trip_and_scapy_agrees(gateway, nonce):
    n = mobility.redirect(gateway, nonce)
    r = mobility.decode_redirect(n)
    assert (r.gateway, r.nonce) == (gateway, nonce)
    raw = encode_message(34, 0, SPI, SPI, 0x20, [n])
    layer = scapy_ikev2.IKEv2(raw).payload
    assert layer.type == 16407 and layer.gw_id_type == r.gw_type
    assert (layer.gw_id.decode() if isinstance(layer.gw_id, bytes) else layer.gw_id) == gateway
    assert bytes(layer.nonce) == nonce
    back = mobility.decode_redirect(mobility.redirected_from(gateway))
    assert back.gateway == gateway and back.nonce == b""


@pytest.mark.parametrize("data, words", [
    (b"\x01", "need a gateway type"),
    (b"\x01\x05\1\2\3\4", "overruns"),
    (b"\x01\x03\1\2\3", "IPv4 gateway of 3 bytes"),
    (b"\x03\x03a b", "not a host name"),
    (b"\x09\x01x", "unknown gateway identity type 9"),
    (b"\x01\x04\1\2\3\4" + b"n" * 3, "nonce of 3 bytes"),
])
def test_bad_redirects_are_named(data, words):
    with pytest.raises(MalformedMessage, match=words):
        mobility.decode_redirect(NotifyPayload(NotifyType.REDIRECT, data=data))


def test_redirect_refuses_a_bad_gateway():
    with pytest.raises(ValueError, match="not an IP address or a host name"):
        mobility.redirect("not a host!")
