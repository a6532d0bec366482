"""revlisten17: the Negotiations ladder titled every UNRESOLVED "the peer's name did not resolve",
also when it was our own local_addrs host name (listen17's NegotiationFailed for resolve_me)."""

from __future__ import annotations

from textual.widgets import Tree

from console.runtime.fake import FakeRuntime
from engine.events import NegotiationFailed

from .conftest import make_app, ready, wait_for

OURS = ("our host name me.test (connections.branch.local_addrs) did not resolve to an address, so nothing "
        "was sent: check the name (and this host's DNS), or put our address in connections.branch.local_addrs")
PEERS = ("gw.example did not resolve to an address, so nothing was sent: check the name (and the host's "
         "DNS), or put the peer's address in connections.branch.remote_addrs")


async def _title(reason: str) -> str:
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        rt._emit(NegotiationFailed(9000, "branch", "IKE_SA_INIT", "UNRESOLVED", reason))
        await wait_for(pilot, lambda: 9000 in app.store.negotiations, what="the failure")
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#ladder"), what="negotiations screen")
        from console.widgets.keyed_table import KeyedTable
        table = app.screen.query_one("#nego-list", KeyedTable)
        await wait_for(pilot, lambda: "9000" in table.row_keys, what="listed")
        table.move_cursor(row=table.get_row_index("9000"))
        await pilot.pause(0.2)
        return str(app.screen.query_one("#ladder", Tree).border_title)


async def test_our_own_unresolved_name_is_not_titled_as_the_peers():
    title = await _title(OURS)
    assert "our address's name did not resolve" in title and "peer" not in title, title


async def test_the_peers_unresolved_name_keeps_its_title():
    title = await _title(PEERS)
    assert "the peer's name did not resolve" in title, title
