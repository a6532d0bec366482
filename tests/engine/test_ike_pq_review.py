"""Findings of the post-quantum review (RFC 8784 PPK, RFC 9242/9370, ML-KEM) not covered by the
older files: each test failed before its fix."""

from __future__ import annotations

from engine.events import ChildSaInstalled, NegotiationFailed
from engine.ike import ppk_auth
from engine.wire.constants import NotifyType
from engine.wire.payloads import NotifyPayload

from tests.engine.test_ike_ppk import pair, sent_notifies


def test_an_unreadable_ppk_identity_is_a_ppk_we_lack_and_no_ppk_auth_applies(monkeypatch):
    """RFC 8784 §3: a responder without the PPK the initiator names takes NO_PPK_AUTH (PPK optional).
    A PPK_ID of a type we do not know names no PPK of ours: the same, as charon's get_ppk_r
    (it refused the IKE SA before)."""
    monkeypatch.setattr(ppk_auth, "ppk_identity", lambda ppk_id: NotifyPayload(NotifyType.PPK_IDENTITY,
                                                                               data=b"\x07" + ppk_id))
    p = pair(dict(ppk_id="ppk-1"), dict(ppk_id="ppk-1"))
    a, b = p.of("a", ChildSaInstalled), p.of("b", ChildSaInstalled)
    assert a and b, (p.of("a", NegotiationFailed), p.of("b", NegotiationFailed))
    assert a[0].keys.encr_out == b[0].keys.encr_in
    assert not p.a.sas[0].ppk_used and not p.b.sas[0].ppk_used
    assert "PPK_IDENTITY" not in sent_notifies(p, "b", "IKE_AUTH")


def test_an_unreadable_ppk_identity_is_refused_when_the_ppk_is_required(monkeypatch):
    monkeypatch.setattr(ppk_auth, "ppk_identity", lambda ppk_id: NotifyPayload(NotifyType.PPK_IDENTITY,
                                                                               data=b"\x07" + ppk_id))
    p = pair(dict(ppk_id="ppk-1"), dict(ppk_id="ppk-1", ppk_required=True))
    assert not p.of("b", ChildSaInstalled)
    (gw,) = p.of("b", NegotiationFailed)
    assert gw.notify == "AUTHENTICATION_FAILED" and "PPK is required" in gw.reason
