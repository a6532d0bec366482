"""engine.wire against an independent dissector: scapy.contrib.ikev2, both ways.

Our bytes dissected by scapy give the same fields; scapy-built packets decode
with ours to the same values.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.wire import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    SkfPayload,
    SkPayload,
    Transform,
    TsPayload,
    VendorIdPayload,
    WireTs,
    decode_message,
    encode_message,
)
from engine.wire.constants import FLAG_INITIATOR, FLAG_RESPONSE
from tests import strategies_wire as sw

scapy_ikev2 = pytest.importorskip("scapy.contrib.ikev2", reason="scapy is a test dependency (pip install scapy)")

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPI_I = bytes.fromhex("c0ffee00c0ffee00")
SPI_R = bytes.fromhex("0000000000000000")


def _addr(value) -> bytes:
    return value if isinstance(value, bytes) else ipaddress.ip_address(value).packed


def _chain(pkt):
    """Scapy's payload layers after the IKEv2 header."""
    layers = []
    layer = pkt.payload
    while layer and layer.__class__.__name__ != "NoPayload":
        layers.append(layer)
        layer = layer.payload
    return layers


def _transforms(layer):
    out = []
    while layer and layer.__class__.__name__ == "IKEv2_Transform":
        key_length = layer.key_length & 0xFFFF if layer.length > 8 else None
        out.append(Transform(layer.transform_type, layer.transform_id, key_length))
        layer = layer.payload
    return tuple(out)


def _proposals(layer):
    out = []
    while layer and layer.__class__.__name__ == "IKEv2_Proposal":
        out.append(Proposal(layer.proposal, layer.proto, bytes(layer.SPI), _transforms(layer.trans)))
        layer = layer.payload
    return tuple(out)


def from_scapy(layer):
    """Our payload value for one scapy payload layer (fields read from scapy's dissection)."""
    critical = bool(int(layer.flags) & 0x80)
    name = layer.__class__.__name__
    if name == "IKEv2_SA":
        return SaPayload(_proposals(layer.prop), critical)
    if name == "IKEv2_KE":
        return KePayload(layer.group, bytes(layer.ke), critical)
    if name == "IKEv2_Nonce":
        return NoncePayload(bytes(layer.nonce), critical)
    if name == "IKEv2_Notify":
        return NotifyPayload(layer.type, layer.proto or 0, bytes(layer.SPI), bytes(layer.notify), critical)
    if name in ("IKEv2_IDi", "IKEv2_IDr"):
        data = _addr(layer.ID) if layer.IDtype in (1, 5) else bytes(layer.ID)
        return IdPayload(name == "IKEv2_IDi", layer.IDtype, data, critical)
    if name in ("IKEv2_TSi", "IKEv2_TSr"):
        sels = []
        for ts in layer.traffic_selector:
            if ts.TS_type == 7:
                start, end = ts.starting_address_v4, ts.ending_address_v4
            else:
                start, end = ts.starting_address_v6, ts.ending_address_v6
            sels.append(WireTs(ts.TS_type, ts.IP_protocol_ID, ts.start_port, ts.end_port, _addr(start), _addr(end)))
        return TsPayload(name == "IKEv2_TSi", tuple(sels), critical)
    if name == "IKEv2_Delete":
        return DeletePayload(layer.proto, tuple(bytes(s) for s in layer.SPI), critical)
    if name == "IKEv2_CERT":
        return CertPayload(layer.cert_encoding, bytes(layer.cert_data), critical)
    if name == "IKEv2_CERTREQ":
        return CertReqPayload(layer.cert_encoding, bytes(layer.cert_authority), critical)
    if name == "IKEv2_AUTH":
        return AuthPayload(layer.auth_type, bytes(layer.load), critical)
    if name == "IKEv2_VendorID":
        return VendorIdPayload(bytes(layer.vendorID), critical)
    if name == "IKEv2_CP":
        attrs = tuple((a.type, _addr(a.value) if isinstance(a.value, str) else bytes(a.value)) for a in layer.attributes)
        return CpPayload(layer.CFGType, attrs, critical)
    if name == "IKEv2_EAP":
        load = bytes(layer.load)
        return EapPayload(load[0], load[1], load[4:], critical)
    if name == "IKEv2_Encrypted":
        return SkPayload(layer.next_payload, bytes(layer.load), critical)
    if name == "IKEv2_Encrypted_Fragment":
        return SkfPayload(layer.next_payload, layer.frag_number, layer.frag_total, bytes(layer.load), critical)
    raise AssertionError(f"unexpected scapy layer {name}")


# Payloads scapy dissects field by field: no transform attributes besides KEY_LENGTH
# (scapy reads only that one), certificates not parsed as X.509 by scapy (4, 7),
# notifies without scapy's REDIRECT special case, IP range selectors only.
scapy_transforms = st.builds(Transform, type=st.integers(1, 5), id=sw.u16,
                             key_length=st.one_of(st.none(), sw.u16))


@st.composite
def scapy_sa(draw):
    sa = draw(sw.sa_payloads())
    props = tuple(Proposal(p.number, p.protocol, p.spi, tuple(draw(st.lists(scapy_transforms, min_size=1, max_size=4))))
                  for p in sa.proposals)
    return SaPayload(props, sa.critical)


scapy_payloads = st.one_of(
    scapy_sa(),
    sw.ke_payloads,
    sw.nonce_payloads,
    sw.notify_payloads().filter(lambda n: n.type not in (16407, 16408)),
    sw.id_payloads(),
    sw.ts_payloads(allow_unknown=False),
    sw.delete_payloads(),
    sw.cert_payloads.filter(lambda c: c.encoding not in (4, 7)),
    sw.certreq_payloads,
    sw.auth_payloads,
    sw.vendor_payloads,
    sw.cp_payloads.map(lambda c: CpPayload(c.cfg_type, tuple((t & 0x7FFF, v) for t, v in c.attributes), c.critical)),
    sw.eap_payloads(),
)


@PROPERTY
@given(st.lists(scapy_payloads, max_size=6), st.one_of(st.none(), sw.sk_payloads, sw.skf_payloads()),
       sw.exchanges, sw.u32)
def test_scapy_dissects_our_messages_to_the_same_fields(payloads, encrypted, exchange, mid):
    if encrypted is not None:
        payloads = [*payloads, encrypted]
    raw = encode_message(exchange, mid, SPI_I, SPI_R, FLAG_INITIATOR | FLAG_RESPONSE, payloads)
    pkt = scapy_ikev2.IKEv2(raw)
    assert bytes(pkt.init_SPI) == SPI_I and bytes(pkt.resp_SPI) == SPI_R
    assert (pkt.exch_type, pkt.id, pkt.length, pkt.version) == (exchange, mid, len(raw), 0x20)
    assert int(pkt.flags) == FLAG_INITIATOR | FLAG_RESPONSE
    assert [from_scapy(layer) for layer in _chain(pkt)] == payloads


def test_scapy_built_ike_sa_init_decodes_with_ours():
    s = scapy_ikev2
    transforms = (s.IKEv2_Transform(transform_type=1, transform_id=12, length=12, key_length=0x800E0100)
                  / s.IKEv2_Transform(transform_type=3, transform_id=12)
                  / s.IKEv2_Transform(transform_type=2, transform_id=5)
                  / s.IKEv2_Transform(transform_type=4, transform_id=31))
    esp = (s.IKEv2_Transform(transform_type=1, transform_id=20, length=12, key_length=0x800E0080)
           / s.IKEv2_Transform(transform_type=5, transform_id=0))
    sa = s.IKEv2_SA(prop=s.IKEv2_Proposal(proposal=1, proto=1, trans_nb=4, trans=transforms)
                    / s.IKEv2_Proposal(proposal=2, proto=3, SPI=b"\xc1\x02\x03\x04", trans_nb=2, trans=esp))
    pkt = (s.IKEv2(init_SPI=SPI_I, resp_SPI=SPI_R, exch_type=34, flags="Initiator", id=0)
           / sa
           / s.IKEv2_KE(group=31, ke=b"K" * 32)
           / s.IKEv2_Nonce(nonce=b"N" * 32)
           / s.IKEv2_Notify(type=16388, notify=b"S" * 20)
           / s.IKEv2_Notify(type=16389, notify=b"D" * 20)
           / s.IKEv2_Notify(type=16430)
           / s.IKEv2_Notify(type=16431, notify=bytes.fromhex("0002000300040005"))
           / s.IKEv2_VendorID(vendorID=b"strongSwan"))
    msg = decode_message(bytes(pkt))
    assert msg.header.exchange == 34 and msg.header.initiator and not msg.header.response
    assert msg.payloads == (
        SaPayload((
            Proposal(1, 1, b"", (Transform(1, 12, 256), Transform(3, 12), Transform(2, 5), Transform(4, 31))),
            Proposal(2, 3, b"\xc1\x02\x03\x04", (Transform(1, 20, 128), Transform(5, 0))),
        )),
        KePayload(31, b"K" * 32),
        NoncePayload(b"N" * 32),
        NotifyPayload(16388, 0, b"", b"S" * 20),
        NotifyPayload(16389, 0, b"", b"D" * 20),
        NotifyPayload(16430),
        NotifyPayload(16431, 0, b"", bytes.fromhex("0002000300040005")),
        VendorIdPayload(b"strongSwan"),
    )


def test_scapy_built_ike_auth_payloads_decode_with_ours():
    s = scapy_ikev2
    # The inner payloads of an IKE_AUTH request, as the IKE layer decodes the SK plaintext.
    tsi = s.IKEv2_TSi(number_of_TSs=2, traffic_selector=[
        s.IPv4TrafficSelector(IP_protocol_ID=0, start_port=0, end_port=65535,
                              starting_address_v4="192.0.2.0", ending_address_v4="192.0.2.255"),
        s.IPv6TrafficSelector(IP_protocol_ID=17, length=40, start_port=53, end_port=53,
                              starting_address_v6="2001:db8::", ending_address_v6="2001:db8::ffff"),
    ])
    tsr = s.IKEv2_TSr(number_of_TSs=1, traffic_selector=[
        s.IPv4TrafficSelector(IP_protocol_ID=6, start_port=443, end_port=443,
                              starting_address_v4="198.51.100.7", ending_address_v4="198.51.100.7")])
    inner = (s.IKEv2_IDi(IDtype=2, ID=b"moon.example.org")
             / s.IKEv2_Notify(type=16384)
             / s.IKEv2_IDr(IDtype=1, ID="198.51.100.1")
             / s.IKEv2_AUTH(auth_type=2, load=b"\x01" * 32)
             / s.IKEv2_SA(prop=s.IKEv2_Proposal(proposal=1, proto=3, SPI=b"\xca\xfe\x00\x01", trans_nb=1,
                                                trans=s.IKEv2_Transform(transform_type=1, transform_id=20,
                                                                        length=12, key_length=0x800E0100)))
             / tsi / tsr
             # scapy would compute SPIsize as the length of the whole SPI list (8): give it.
             / s.IKEv2_Delete(proto=3, SPIsize=4, SPInum=2, SPI=[b"\x00\x00\x10\x01", b"\x00\x00\x10\x02"]))
    raw = bytes(inner)
    from engine.wire import decode_payloads
    payloads = decode_payloads(35, raw)
    assert payloads == [
        IdPayload(True, 2, b"moon.example.org"),
        NotifyPayload(16384),
        IdPayload(False, 1, bytes([198, 51, 100, 1])),
        AuthPayload(2, b"\x01" * 32),
        SaPayload((Proposal(1, 3, b"\xca\xfe\x00\x01", (Transform(1, 20, 256),)),)),
        TsPayload(True, (
            WireTs(7, 0, 0, 65535, bytes([192, 0, 2, 0]), bytes([192, 0, 2, 255])),
            WireTs(8, 17, 53, 53, ipaddress.ip_address("2001:db8::").packed,
                   ipaddress.ip_address("2001:db8::ffff").packed),
        )),
        TsPayload(False, (WireTs(7, 6, 443, 443, bytes([198, 51, 100, 7]), bytes([198, 51, 100, 7])),)),
        DeletePayload(3, (b"\x00\x00\x10\x01", b"\x00\x00\x10\x02")),
    ]


def test_scapy_built_encrypted_payloads_stay_opaque():
    s = scapy_ikev2
    body = bytes(range(48))
    pkt = (s.IKEv2(init_SPI=SPI_I, resp_SPI=b"\x11" * 8, exch_type=35, flags="Initiator", id=1)
           / s.IKEv2_Encrypted(next_payload=35, load=body))
    msg = decode_message(bytes(pkt))
    assert msg.payloads == (SkPayload(35, body),)
    assert bytes(pkt)[msg.sk_aad_end:] == body and msg.sk_aad_end == 32
    frag = (s.IKEv2(init_SPI=SPI_I, resp_SPI=b"\x11" * 8, exch_type=35, flags="Initiator", id=1)
            / s.IKEv2_Encrypted_Fragment(next_payload=0, frag_number=2, frag_total=3, load=body))
    msg = decode_message(bytes(frag))
    assert msg.payloads == (SkfPayload(0, 2, 3, body),)
    assert msg.sk_aad_end == 36
