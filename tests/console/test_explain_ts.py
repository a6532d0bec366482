"""TS_UNACCEPTABLE explained from the side that refused: the peer (we initiated) or us (we responded)."""

from __future__ import annotations

from rich.console import Console

from console.explain import explain
from engine.events import NegotiationFailed


def _text(f: NegotiationFailed) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(explain(f))
    return " ".join(console.export_text().split())


def test_ts_unacceptable_we_sent_names_our_policy_not_the_peers():
    # What the engine emits as responder (child_sa.choose): our CHILD configs, then the peer's TSi === TSr.
    f = NegotiationFailed(1, "gw", "IKE_AUTH", "TS_UNACCEPTABLE", "no CHILD config matches", None, False,
                          local_ts=("10.1.0.0/16", "===", "10.2.0.0/16"),
                          remote_ts=("10.9.0.0/16", "===", "10.1.0.0/16"))
    text = _text(f)
    assert "We rejected the peer" in text
    assert "the peer's policy does not cover" not in text
    assert "our policy does not cover" in text
    assert "connections.gw.children.*.remote_ts cover the peer's TSi" in text
    assert "local_ts → TSi" not in text  # as responder our local side is TSr


def test_ts_unacceptable_the_peer_sent_still_names_the_peers_policy():
    f = NegotiationFailed(1, "gw", "IKE_AUTH", "TS_UNACCEPTABLE", "", "net", True,
                          local_ts=("10.1.0.0/16",), remote_ts=("10.2.0.0/16",))
    text = _text(f)
    assert "the peer's policy does not cover these selectors" in text
    assert "connections.gw.children.net.local_ts" in text
    assert "local_ts → TSi" in text
