"""EAP in IKE_AUTH after IKE_INTERMEDIATE (RFC 9242, RFC 9370): a road-warrior client with a
hybrid ML-KEM proposal logs in with EAP-MSCHAPv2. Both MSK-based AUTHs cover the IntAuth of
the intermediate round (RFC 9242 §3.3.2), which sits in the first IKE_AUTH's Message ID although
the AUTH payloads travel rounds later."""

from __future__ import annotations

import dataclasses

import pytest

from engine.crypto.kem import mlkem_available
from engine.crypto.transforms import KeId
from engine.events import ChildSaInstalled, ExchangeSent, NegotiationFailed
from engine.ike import intermediate
from engine.policy.proposals import parse_proposal

from tests.engine.test_ike_roadwarrior import eap_pair

HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
pytestmark = pytest.mark.skipif(not mlkem_available(KeId.ML_KEM_768), reason="cryptography without ML-KEM")


def hybrid_eap_pair(**kw):
    p = eap_pair(**kw)
    hybrid = (parse_proposal(HYBRID, "ike"),)
    for ep in (p.a, p.b):
        conns = tuple(dataclasses.replace(c, proposals=hybrid) for c in ep.policy.connections)
        ep.policy = dataclasses.replace(ep.policy, connections=conns)
    return p


def sent(p, side):
    return [(e.message.exchange, e.message.payloads) for e in p.of(side, ExchangeSent)]


def test_eap_mschapv2_after_an_ml_kem_intermediate_round():
    p = hybrid_eap_pair()
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert not p.of("a", NegotiationFailed) and not p.of("b", NegotiationFailed), \
        (p.of("a", NegotiationFailed), p.of("b", NegotiationFailed))
    kinds = [x for x, _ in sent(p, "a")]
    assert kinds == ["IKE_SA_INIT", "IKE_INTERMEDIATE"] + ["IKE_AUTH"] * 5, kinds
    auths = [pl for x, pl in sent(p, "a") if x == "IKE_AUTH"]
    assert "AUTH" not in auths[0] and auths[-1] == ("AUTH",)
    (ia,), (ib,) = p.of("a", ChildSaInstalled), p.of("b", ChildSaInstalled)
    assert ia.keys.encr_out == ib.keys.encr_in and ia.spi_in == ib.spi_out
    for ep in (p.a, p.b):
        (info,) = ep.status(p.now)
        assert info.quantum_safe and info.additional_ke and info.additional_ke[0].startswith("KE1_")
        assert info.eap_method == "EAP-MSCHAPv2" and ep.sas[0].intermediate.done == 1
    assert p.b.status(p.now)[0].virtual_ips == ("198.51.100.193",)


def test_a_wrong_password_after_an_intermediate_round_fails_in_plain_words():
    p = hybrid_eap_pair(client_password="not-alice-password")
    p.a.initiate("tun", p.now)
    p.advance(5)
    assert not p.of("a", ChildSaInstalled) and not p.of("b", ChildSaInstalled)
    (gw,) = p.of("b", NegotiationFailed)
    assert gw.notify == "AUTHENTICATION_FAILED" and "EAP-MSCHAPv2" in gw.reason and "alice" in gw.reason
    assert not p.a.sas and not p.b.sas


def test_the_msk_auth_covers_the_intermediate_round(monkeypatch):
    """Tampering with what the gateway's IntAuth chain holds makes our client refuse its MSK AUTH:
    the intermediate round is bound into the EAP-based authentication."""
    p = hybrid_eap_pair()
    real = intermediate.int_auth

    def skewed(sa, mid):
        out = real(sa, mid)
        return out[:-1] + bytes([out[-1] ^ 1]) if out and not sa.original_initiator else out

    monkeypatch.setattr("engine.ike.exchanges.eap_auth.int_auth", skewed)
    p.a.initiate("tun", p.now)
    p.advance(5)
    assert not p.of("a", ChildSaInstalled)
    failed = p.of("a", NegotiationFailed) + p.of("b", NegotiationFailed)
    assert any(f.notify == "AUTHENTICATION_FAILED" for f in failed), failed
