"""explain's fixes name keys a policy often leaves out (proposals, esp_proposals, local_ts): the text
says what such a key means when it is not set, so that "add it to esp_proposals" does not become a
one-item list that drops every default suite the tunnel works with today."""

from __future__ import annotations

from rich.console import Console

from console.explain import explain
from engine.events import NegotiationFailed


def _text(f: NegotiationFailed) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(explain(f))
    return " ".join(console.export_text().split())


def test_no_proposal_chosen_says_what_a_missing_esp_proposals_is():
    f = NegotiationFailed(1, "gw", "IKE_AUTH", "NO_PROPOSAL_CHOSEN", "", "net", True,
                          local_proposals=("ESP:AES_GCM_16_256/NO_EXT_SEQ",),
                          remote_proposals=("ESP:3DES_CBC/HMAC_SHA1_96/NO_EXT_SEQ",))
    text = _text(f)
    assert 'When connections.gw.children.net.esp_proposals is not set it means ["default"]' in text, text
    assert 'esp_proposals = ["default", "3des-sha1"]' in text, text


def test_no_proposal_chosen_without_the_peers_list_and_ike():
    f = NegotiationFailed(1, "gw", "IKE_SA_INIT", "NO_PROPOSAL_CHOSEN", "", None, True,
                          local_proposals=("IKE:AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/ECP_256",))
    assert 'connections.gw.proposals not set is ["default"]' in _text(f)


def test_ts_unacceptable_says_what_missing_selectors_are():
    f = NegotiationFailed(1, "gw", "IKE_AUTH", "TS_UNACCEPTABLE", "", "net", True,
                          local_ts=("192.0.2.1/32",), remote_ts=("192.0.2.2/32",))
    assert 'not set are "dynamic": our own address and the peer\'s' in _text(f)


def test_invalid_ke_says_what_missing_proposals_are():
    f = NegotiationFailed(1, "gw", "IKE_SA_INIT", "INVALID_KE_PAYLOAD", "", None, True)
    assert 'When connections.gw.proposals is not set it means ["default"]' in _text(f)
