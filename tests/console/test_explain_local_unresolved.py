"""listen17: UNRESOLVED for a host name in local_addrs (our address's name) is explained as ours,
not as the peer's name."""

from __future__ import annotations

from rich.console import Console

from engine.events import NegotiationFailed

from console.explain import explain


def _text(f: NegotiationFailed) -> str:
    console = Console(width=200, record=True)
    console.print(explain(f))
    return console.export_text()


def test_our_unresolved_name_is_explained_as_ours():
    text = _text(NegotiationFailed(
        5, "tun", "IKE_SA_INIT", "UNRESOLVED",
        "our host name me.test (connections.tun.local_addrs) did not resolve to an address, so nothing was "
        "sent: check the name (and this host's DNS), or put our address in connections.tun.local_addrs"))
    head = text.splitlines()[0]
    assert "our address's host name did not resolve" in head and "peer" not in head, head
    fix = text[text.index("Fix:"):]
    assert "connections.tun.local_addrs" in fix and "remote_addrs" not in fix, fix


def test_the_peers_unresolved_name_is_still_the_peers():
    text = _text(NegotiationFailed(
        5, "tun", "IKE_SA_INIT", "UNRESOLVED",
        "gw.example did not resolve to an address, so nothing was sent: check the name (and the host's DNS), "
        "or put the peer's address in connections.tun.remote_addrs"))
    assert "the peer's host name did not resolve" in text.splitlines()[0]
    assert "connections.tun.remote_addrs" in text[text.index("Fix:"):]
