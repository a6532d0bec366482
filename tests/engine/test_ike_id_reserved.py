"""RFC 7296 §2.15: the AUTH payload covers RestOfInitIDPayload / RestOfRespIDPayload, the ID payload's
body as sent: the ID type, the three RESERVED bytes, the data. §3.5: RESERVED MUST be sent as zero and
MUST be ignored on receipt, so a peer sending other bytes there signs them; charon (keymat_v2.c,
get_auth_octets) takes the received body. We rebuilt it with zero bytes and refused such a peer."""

from __future__ import annotations

import dataclasses

import pytest

from engine.events import ChildSaInstalled, NegotiationFailed
from engine.ike.auth import id_body
from engine.wire.codec import decode_id, encode_id
from engine.wire.constants import PayloadType
from engine.wire.payloads import IdPayload

from tests.engine.ike_pair import LEFT, RIGHT, Pair, connection, mirror, policy
from tests.engine.test_ike_certs import cert_pair, cert_policy, pki  # noqa: F401 (pki is a fixture)

ODD = b"\x01\x02\x03"


def test_the_signed_id_body_is_the_received_one():
    body = bytes([2]) + ODD + b"left.example"
    p = decode_id(PayloadType.IDi, body, False, 0)
    assert (p.id_type, p.data) == (2, b"left.example")
    assert id_body(p) == body
    assert encode_id(p) == body  # what was received reads back as it was
    ours = IdPayload(True, 2, b"left.example")
    assert encode_id(ours) == id_body(ours) == bytes([2]) + b"\0\0\0" + b"left.example"  # we send zero


def _odd_reserved(ep, which: str) -> None:
    """`ep` sends its IDi or IDr with RESERVED = 01 02 03 (its AUTH covers them, as the body it sends)."""
    make = ep.auth.id_payload

    def id_payload(conn, initiator, ike_addr):
        p = make(conn, initiator, ike_addr)
        return dataclasses.replace(p, reserved=ODD) if initiator == (which == "IDi") else p

    ep.auth.id_payload = id_payload


@pytest.mark.parametrize("side, which", [("a", "IDi"), ("b", "IDr")])
def test_a_peer_sending_non_zero_reserved_bytes_is_authenticated_psk(side, which):
    conn = connection()
    p = Pair(policy(conn), policy(mirror(conn), address=RIGHT))
    _odd_reserved(p.ep(side), which)
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert not p.of("a", NegotiationFailed) and not p.of("b", NegotiationFailed), \
        (p.of("a", NegotiationFailed), p.of("b", NegotiationFailed))
    assert len(p.of("a", ChildSaInstalled)) == 1


@pytest.mark.parametrize("side, which", [("a", "IDi"), ("b", "IDr")])
def test_a_peer_sending_non_zero_reserved_bytes_is_authenticated_certificates(pki, side, which):  # noqa: F811
    d = pki["ecdsa-p256"]
    p = cert_pair(cert_policy(d, "left.example", "right.example", LEFT),
                  cert_policy(d, "right.example", "left.example", RIGHT))
    _odd_reserved(p.ep(side), which)
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert not p.of("a", NegotiationFailed) and not p.of("b", NegotiationFailed), \
        (p.of("a", NegotiationFailed), p.of("b", NegotiationFailed))
    assert len(p.of("a", ChildSaInstalled)) == 1


def test_the_signed_reserved_bytes_still_count():
    """The bytes are signed: a peer whose AUTH covers other RESERVED bytes than it sent fails."""
    conn = connection()
    p = Pair(policy(conn), policy(mirror(conn), address=RIGHT))
    make = p.a.auth.id_payload
    sent: list[IdPayload] = []

    def id_payload(conn, initiator, ike_addr):
        got = make(conn, initiator, ike_addr)
        sent.append(got)
        return got

    p.a.auth.id_payload = id_payload
    import engine.ike.auth as auth_mod

    real = auth_mod.id_body

    def signed_body(payload):  # a's AUTH covers 01 02 03 while its IDi carries zeros
        return bytes([payload.id_type]) + ODD + payload.data if any(payload is s for s in sent) else real(payload)

    auth_mod.id_body = signed_body
    try:
        p.a.initiate("tun", p.now)
        p.advance(1)
    finally:
        auth_mod.id_body = real
    assert p.of("b", NegotiationFailed) and not p.of("a", ChildSaInstalled)
