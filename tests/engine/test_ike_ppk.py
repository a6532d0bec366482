"""RFC 8784 PPKs in IKE_AUTH between two of our endpoints: required, optional,
missing on one side; with and without additional key exchanges."""

from __future__ import annotations

import dataclasses

import pytest

from engine.crypto.kem import mlkem_available
from engine.crypto.transforms import KeId
from engine.events import ChildSaInstalled, ExchangeSent, NegotiationFailed
from engine.policy.model import PpkSecret
from engine.secret import Secret

from tests.engine.ike_pair import LEFT, RIGHT, Pair, connection, mirror, policy

PPK = Secret(bytes(range(32)))
OTHER = Secret(bytes(range(1, 33)))


def pair(a_kw, b_kw, ppk_a=PPK, ppk_b=PPK, ike=("aes256gcm16-prfsha256-x25519",)):
    a = connection(ike=ike, **a_kw)
    b = mirror(a, **{k: v for k, v in b_kw.items()})
    b = dataclasses.replace(b, ppk_id=b_kw.get("ppk_id"), ppk_required=b_kw.get("ppk_required", False))
    pa, pb = policy(a, address=LEFT), policy(b, address=RIGHT)
    if ppk_a is not None:
        pa = dataclasses.replace(pa, secrets=dataclasses.replace(pa.secrets, ppk=(PpkSecret("p", "ppk-1", ppk_a),)))
    if ppk_b is not None:
        pb = dataclasses.replace(pb, secrets=dataclasses.replace(pb.secrets, ppk=(PpkSecret("p", "ppk-1", ppk_b),)))
    p = Pair(pa, pb)
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def sent_notifies(p, side, exchange):
    return [n for e in p.of(side, ExchangeSent) if e.message.exchange == exchange for n in e.message.notifies]


def keys(p):
    a, b = p.of("a", ChildSaInstalled), p.of("b", ChildSaInstalled)
    assert a and b, (p.of("a", NegotiationFailed), p.of("b", NegotiationFailed))
    assert a[0].keys.encr_out == b[0].keys.encr_in
    return a[0].keys.encr_out.reveal()


def test_required_ppk_goes_into_the_keys():
    req = dict(ppk_id="ppk-1", ppk_required=True)
    p = pair(req, req)
    with_ppk = keys(p)
    assert p.a.sas[0].ppk_used and p.b.sas[0].ppk_used
    [info] = p.a.status(p.now)
    assert info.ppk and info.quantum_safe and info.children[0].quantum_safe
    assert "USE_PPK" in sent_notifies(p, "a", "IKE_SA_INIT") and "USE_PPK" in sent_notifies(p, "b", "IKE_SA_INIT")
    assert "PPK_IDENTITY" in sent_notifies(p, "a", "IKE_AUTH") and "NO_PPK_AUTH" not in sent_notifies(p, "a", "IKE_AUTH")
    assert "PPK_IDENTITY" in sent_notifies(p, "b", "IKE_AUTH")
    # Same seeds, no PPK: other keys (the PPK really changed SK_d).
    plain = pair({}, {}, ppk_a=None, ppk_b=None)
    assert keys(plain) != with_ppk and not plain.a.sas[0].ppk_used
    assert "USE_PPK" not in sent_notifies(plain, "a", "IKE_SA_INIT")


def test_different_ppks_fail_authentication():
    req = dict(ppk_id="ppk-1", ppk_required=True)
    p = pair(req, req, ppk_b=OTHER)
    assert not p.of("a", ChildSaInstalled)
    assert [e.notify for e in p.of("b", NegotiationFailed)] == ["AUTHENTICATION_FAILED"]


def test_optional_ppk_responder_without_it_uses_no_ppk_auth():
    p = pair(dict(ppk_id="ppk-1"), dict(ppk_id="ppk-1"), ppk_b=None)
    keys(p)
    assert "NO_PPK_AUTH" in sent_notifies(p, "a", "IKE_AUTH") and "PPK_IDENTITY" not in sent_notifies(p, "b", "IKE_AUTH")
    assert not p.a.sas[0].ppk_used and not p.b.sas[0].ppk_used
    assert not p.a.status(p.now)[0].quantum_safe


def test_optional_ppk_used_when_both_have_it():
    p = pair(dict(ppk_id="ppk-1"), dict(ppk_id="ppk-1"))
    keys(p)
    assert p.a.sas[0].ppk_used and p.b.sas[0].ppk_used


def test_required_ppk_refused_by_a_responder_without_ppk_support():
    p = pair(dict(ppk_id="ppk-1", ppk_required=True), {}, ppk_b=None)
    assert not p.of("a", ChildSaInstalled)
    fail = p.of("a", NegotiationFailed)[0]
    assert "USE_PPK" in fail.reason and fail.notify == "LOCAL"


def test_responder_requiring_ppk_refuses_initiator_without_one():
    p = pair({}, dict(ppk_id="ppk-1", ppk_required=True), ppk_a=None)
    assert not p.of("b", ChildSaInstalled)
    assert "PPK is required" in p.of("b", NegotiationFailed)[0].reason


@pytest.mark.skipif(not mlkem_available(KeId.ML_KEM_768), reason="cryptography without ML-KEM")
def test_ppk_with_hybrid_key_exchange():
    req = dict(ppk_id="ppk-1", ppk_required=True)
    p = pair(req, req, ike=("aes256gcm16-prfsha384-x25519-ke1_mlkem768",))
    keys(p)
    assert p.a.sas[0].ppk_used and p.a.sas[0].intermediate.complete
