"""Negotiations: the ladder, expandable payloads, failures explained with the fix."""

from __future__ import annotations

from textual.widgets import Tree


from console.explain import keyword_proposal, mark_proposals, transform_kind
from console.runtime.fake import LEGACY_IKE_PROPOSALS, LOCAL_IKE_PROPOSALS
from console.widgets.keyed_table import KeyedTable

from .conftest import make_app, ready, screen_text, wait_for


def _select(app, connection: str) -> None:
    table = app.screen.query_one("#nego-list", KeyedTable)
    for key in table.row_keys:
        if table.cell_text(key, "name") == connection:
            table.move_cursor(row=table.get_row_index(key))
            return
    raise AssertionError(f"{connection} not listed")


async def test_ladder_lists_exchanges_and_expands_payloads():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#ladder"), what="negotiations screen")
        _select(app, "branch")
        await pilot.pause()
        tree = app.screen.query_one("#ladder", Tree)
        labels = [str(n.label) for n in tree.root.children]
        assert any("IKE_SA_INIT req 0" in l and "●" in l.split("IKE")[0] for l in labels)  # we sent it
        assert any("IKE_AUTH resp 1" in l and l.rstrip().split(" [")[0] for l in labels)
        text = screen_text(app)
        assert "IKE_SA_INIT" in text and "192.0.2.2" in text
        # Expand the IKE_SA_INIT request: its proposals appear.
        tree.focus()
        await pilot.press("e")
        await pilot.pause()
        assert "proposal 1: IKE:AES_GCM_16_256/PRF_HMAC_SHA2_384/CURVE_25519" in screen_text(app)


async def test_peer_text_in_payload_details_is_shown_as_sent_never_as_markup(monkeypatch):
    from console.runtime.fake import FakeRuntime

    auth_pair = FakeRuntime._auth_pair

    def with_markup_id(self, ike, *args, **kw):
        ike.local_id = "gw[bold]x[/bold]"  # a DN or FQDN a peer chose, with Rich markup in it
        return auth_pair(self, ike, *args, **kw)

    monkeypatch.setattr(FakeRuntime, "_auth_pair", with_markup_id)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#ladder"), what="negotiations screen")
        _select(app, "branch")
        await pilot.pause()
        tree = app.screen.query_one("#ladder", Tree)
        leaves = [str(leaf.label) for n in tree.root.children for p in n.children for leaf in p.children]
        assert "id: gw[bold]x[/bold]" in leaves, leaves


async def test_no_proposal_chosen_shows_both_lists_with_mismatch_marked():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#ladder"), what="negotiations screen")
        _select(app, "legacy")
        await pilot.pause()
        text = screen_text(app)
        assert "NO_PROPOSAL_CHOSEN" in text
        assert "✗AES_CBC_128" in text and "✗AES_GCM_16_256" in text  # both sides, both marked
        assert "↻1" in text  # the peer's retransmission
        assert "connections.legacy.proposals" in text  # where to fix it
        assert "aes128-sha1-prfsha1-modp1024" in text


async def test_ts_unacceptable_and_auth_failed_are_explained():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#ladder"), what="negotiations screen")
        _select(app, "partner")
        await pilot.pause()
        text = screen_text(app)
        assert "TS_UNACCEPTABLE" in text
        assert "198.51.100.0/26[tcp/443]" in text and "198.51.100.224/28" in text
        assert "connections.partner.children.apps.local_ts" in text
        _select(app, "vendor")
        await pilot.pause()
        text = screen_text(app)
        assert "AUTHENTICATION_FAILED" in text
        assert "hq.example.org" in text and "vendor.example.com" in text
        assert "pre-shared" in text


async def test_next_failure_key_walks_the_failures():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#ladder"), what="negotiations screen")
        table = app.screen.query_one("#nego-list", KeyedTable)
        seen = set()
        for _ in range(3):
            await pilot.press("f")
            await pilot.pause()
            seen.add(table.cell_text(table.selected_key, "name"))
        assert seen == {"legacy", "partner", "vendor"}


async def test_detail_n_jumps_to_this_connections_exchanges():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.open_detail("roadwarrior")
        await pilot.pause()
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen.query("#nego-list"), what="negotiations")
        table = app.screen.query_one("#nego-list", KeyedTable)
        await wait_for(pilot, lambda: table.selected_key and table.cell_text(table.selected_key, "name")
                       == "roadwarrior", what="roadwarrior selected")


def test_transform_kinds_and_marks():
    assert transform_kind("PRF_HMAC_SHA1") == "PRF"
    assert transform_kind("MODP_1024") == "KE"
    assert transform_kind("HMAC_SHA1_96") == "INTEG"
    assert transform_kind("AES_CBC_128") == "ENCR"
    ours, theirs = mark_proposals(("IKE:AES_CBC_256/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048",),
                                  ("IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024",))
    assert [t.matched for t in ours[0]] == [False, True, True, False]
    assert [t.matched for t in theirs[0]] == [False, True, True, False]
    assert keyword_proposal(LEGACY_IKE_PROPOSALS[0]) == "aes128-sha1-prfsha1-modp1024"
    assert keyword_proposal(LOCAL_IKE_PROPOSALS[0]) == "aes256gcm16-prfsha384-x25519"
