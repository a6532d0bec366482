"""Review of cli14: a NegotiationFailed with notify UNRESOLVED (the peer's host name did not resolve,
nothing was sent) on the Negotiations screen. Its explanation read "We rejected the peer" and gave
the generic fix ("see the exchanges above"): there were no exchanges and no peer."""

from __future__ import annotations

from engine.events import NegotiationFailed

from console.widgets.keyed_table import KeyedTable

from .conftest import make_app, ready, screen_text, wait_for

GW = "vpn.example.org"


def _unresolved(ike_sa: int) -> NegotiationFailed:
    return NegotiationFailed(
        ike_sa, "branch", "IKE_SA_INIT", "UNRESOLVED",
        f"{GW} did not resolve to an address, so nothing was sent: check the name (and the host's DNS), or put "
        "the peer's address in connections.branch.remote_addrs")


def test_the_explanation_says_the_name_did_not_resolve_not_that_we_rejected_the_peer():
    from rich.console import Console

    from console.explain import explain

    console = Console(width=200, record=True)
    console.print(explain(_unresolved(77)))
    text = console.export_text()
    assert "rejected" not in text, text
    assert "nothing was sent" in text.splitlines()[0], text
    assert f"\n{GW} did not resolve" in text, text  # the name as written ("Vpn.example.org" is not it)
    fix = text[text.index("Fix:"):]
    assert "connections.branch.remote_addrs" in fix and "DNS" in fix and "address" in fix, fix
    assert "see the exchanges above" not in fix, fix


def test_a_timeout_is_not_told_as_a_rejection():
    """(The same header for TIMEOUT: nobody rejected anybody, the peer never answered.)"""
    from rich.console import Console

    from console.explain import explain

    console = Console(width=200, record=True)
    console.print(explain(NegotiationFailed(3, "branch", "IKE_SA_INIT", "TIMEOUT", "no answer after 5 retransmits")))
    head = console.export_text().splitlines()[0]
    assert "rejected" not in head and "did not answer" in head, head


async def test_the_negotiations_screen_explains_an_unresolved_name():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.runtime._emit(_unresolved(9001))  # an id no IKE SA has: nothing was sent
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#nego-list"), what="negotiations screen")
        table = app.screen.query_one("#nego-list", KeyedTable)
        await wait_for(pilot, lambda: "9001" in table.row_keys, what="the failure listed")
        table.move_cursor(row=table.get_row_index("9001"))
        await pilot.pause()
        text = screen_text(app)
        assert "✗ UNRESOLVED" in text
        assert "We rejected the peer" not in text, text
        assert "nothing was sent" in text and "no exchange seen" not in text, text
