"""RFC 8784 PPKs with EAP in IKE_AUTH, as charon's ike_auth.c does it: the PPK_IDENTITY (and
NO_PPK_AUTH) travel with the client's MSK AUTH after EAP-Success; the gateway's first AUTH (before
it knows of a PPK) is made with the unmodified SK_pr; the gateway's last, MSK-based AUTH with
SK_pr' when it used the PPK. A gateway whose EAP connection requires a PPK refuses a client that
does not use one."""

from __future__ import annotations

import dataclasses

from engine.events import ChildSaInstalled, ExchangeSent, NegotiationFailed
from engine.policy.model import PpkSecret
from engine.secret import Secret

from tests.engine.test_ike_roadwarrior import eap_pair

PPK = Secret(bytes(range(32)))
OTHER = Secret(bytes(range(1, 33)))


def ppk_eap_pair(client=None, gw=None, ppk_a=PPK, ppk_b=PPK, **kw):
    """Client ``a`` and gateway ``b`` of eap_pair with PPK settings (``ppk_id``, ``ppk_required``)."""
    p = eap_pair(**kw)
    for ep, conf, secret in ((p.a, client, ppk_a), (p.b, gw, ppk_b)):
        pol = ep.policy
        conns = tuple(dataclasses.replace(c, **(conf or {})) for c in pol.connections)
        secrets = pol.secrets if secret is None else \
            dataclasses.replace(pol.secrets, ppk=(PpkSecret("p", "ppk-1", secret),))
        ep.policy = dataclasses.replace(pol, connections=conns, secrets=secrets)
    p.a.initiate("tun", p.now)
    p.advance(3)
    return p


def notifies(p, side):
    return [e.message.notifies for e in p.of(side, ExchangeSent) if e.message.exchange == "IKE_AUTH"]


def up(p):
    a, b = p.of("a", ChildSaInstalled), p.of("b", ChildSaInstalled)
    assert a and b, (p.of("a", NegotiationFailed), p.of("b", NegotiationFailed))
    assert a[0].keys.encr_out == b[0].keys.encr_in
    return a[0].keys.encr_out.reveal()


REQ = dict(ppk_id="ppk-1", ppk_required=True)


def test_required_ppk_with_eap_goes_into_the_keys():
    p = ppk_eap_pair(REQ, REQ)
    with_ppk = up(p)
    assert p.a.sas[0].ppk_used and p.b.sas[0].ppk_used
    client = notifies(p, "a")
    assert "PPK_IDENTITY" not in client[0] and "PPK_IDENTITY" in client[-1] and "NO_PPK_AUTH" not in client[-1]
    assert "PPK_IDENTITY" in notifies(p, "b")[-1]
    plain = ppk_eap_pair(ppk_a=None, ppk_b=None)
    assert up(plain) != with_ppk


def test_optional_ppk_with_eap_used_when_both_have_it():
    p = ppk_eap_pair(dict(ppk_id="ppk-1"), dict(ppk_id="ppk-1"))
    up(p)
    assert p.a.sas[0].ppk_used and p.b.sas[0].ppk_used
    assert "NO_PPK_AUTH" in notifies(p, "a")[-1]


def test_optional_ppk_with_eap_gateway_without_it_takes_no_ppk_auth():
    p = ppk_eap_pair(dict(ppk_id="ppk-1"), dict(ppk_id="ppk-1"), ppk_b=None)
    up(p)
    assert not p.a.sas[0].ppk_used and not p.b.sas[0].ppk_used
    assert "PPK_IDENTITY" not in notifies(p, "b")[-1]


def test_eap_gateway_requiring_a_ppk_refuses_a_client_without_one():
    p = ppk_eap_pair(None, REQ, ppk_a=None)
    assert not p.of("b", ChildSaInstalled) and not p.of("a", ChildSaInstalled)
    (gw,) = p.of("b", NegotiationFailed)
    assert gw.notify == "AUTHENTICATION_FAILED" and "PPK is required" in gw.reason


def test_different_ppks_with_eap_fail_authentication():
    p = ppk_eap_pair(REQ, REQ, ppk_b=OTHER)
    assert not p.of("a", ChildSaInstalled) and not p.of("b", ChildSaInstalled)
    assert [e.notify for e in p.of("b", NegotiationFailed)] == ["AUTHENTICATION_FAILED"]


def test_required_ppk_with_eap_after_an_intermediate_round():
    """PPK, EAP and IKE_INTERMEDIATE together: the MSK AUTHs cover IntAuth and use the PPK keys."""
    import pytest

    from engine.crypto.kem import mlkem_available
    from engine.crypto.transforms import KeId
    from engine.policy.proposals import parse_proposal

    if not mlkem_available(KeId.ML_KEM_768):
        pytest.skip("cryptography without ML-KEM")
    hybrid = (parse_proposal("aes256gcm16-prfsha384-x25519-ke1_mlkem768", "ike"),)
    p = ppk_eap_pair(dict(REQ, proposals=hybrid), dict(REQ, proposals=hybrid))
    up(p)
    for ep in (p.a, p.b):
        sa = ep.sas[0]
        assert sa.ppk_used and sa.intermediate.done == 1
    assert p.a.status(p.now)[0].quantum_safe and p.b.status(p.now)[0].ppk
