"""Dashboard and SA detail: what is shown, keyed live updates, confirmed actions."""

from __future__ import annotations

import re

from console.runtime.fake import FakeRuntime
from console.screens.confirm import ConfirmScreen
from console.screens.sa_detail import SaDetailScreen
from console.widgets.sa_tables import ChildSaTable, ConnectionTable, IkeSaTable

from .conftest import make_app, ready, screen_text, wait_for


async def test_dashboard_shows_connections_sas_and_alerts():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        text = screen_text(app)
        for name in ("branch", "roadwarrior", "legacy", "partner", "vendor"):
            assert name in text
        assert "ESTABLISHED" in text and "INSTALLED" in text
        assert "NO_PROPOSAL_CHOSEN" in text
        # The road warrior's DPD timeout cleared itself: a new IKE SA of it came up since.
        assert "DPD timeout" not in text and not [a for a in app.store.alerts if a.kind == "dpd"]
        assert "LAB" not in text  # a fake is not a lab
        child = app.screen.query_one(ChildSaTable)
        snap = app.store.snapshot
        assert sorted(child.row_keys) == sorted(f"{c.spi_in:08x}" for i in snap.ike_sas for c in i.children)


async def test_lab_banner_when_kind_is_lab():
    app = make_app(FakeRuntime(kind="lab"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert "LAB — simulated peers on loopback" in screen_text(app)


async def test_live_update_is_a_keyed_diff_not_a_refill():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        table = app.screen.query_one(ChildSaTable)
        keys = table.row_keys
        row_objects = dict(table.rows)
        serial = app.store.snapshot.time
        # Every sync's (added, removed, updated): on a loaded machine the next regular poll (the
        # same data: nothing to update) can come before the test looks at the table.
        stats: list = []
        sync = table.sync

        def recorded(rows, **kw):
            sync(rows, **kw)
            stats.append(table.sync_stats)
        table.sync = recorded
        rt.advance(1.0)
        app.poll_soon()
        await wait_for(pilot, lambda: app.store.snapshot.time > serial, what="next snapshot")
        await wait_for(pilot, lambda: any(updated for _a, _r, updated in stats), what="a sync that updated cells")
        assert table.row_keys == keys
        assert all((added, removed) == (0, 0) for added, removed, _u in stats), stats
        assert dict(table.rows) == row_objects  # same Row objects: nothing was cleared
        k = keys[0]
        assert table.cell_text(k, "rate").endswith("/s") and table.cell_text(k, "rate") != "–"


async def test_rekey_child_from_dashboard_is_confirmed_and_shows_new_spi():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        table = app.screen.query_one(ChildSaTable)
        table.focus()
        await pilot.pause()
        old_key = table.selected_key
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        assert "Rekey CHILD SA" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: rt.commands, what="rekey command")
        assert rt.commands[0][0] == "rekey" and rt.commands[0][1]["ike"] is False
        await wait_for(pilot, lambda: old_key not in table.row_keys, what="new SPI")
        assert len(table.row_keys) == 3


async def test_cancelled_confirmation_sends_nothing():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.screen.query_one(ConnectionTable).focus()
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("n")
        await pilot.pause(0.1)
        assert rt.commands == []
        assert not isinstance(app.screen, ConfirmScreen)


async def test_initiate_and_terminate_from_dashboard():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        conns = app.screen.query_one(ConnectionTable)
        conns.focus()
        await pilot.press("t", "y")
        await wait_for(pilot, lambda: rt.commands, what="terminate")
        assert rt.commands[-1] == ("terminate", {"name": "branch", "unique_id": None})
        await wait_for(pilot, lambda: "branch" not in {i.name for i in app.store.snapshot.ike_sas},
                       what="branch down")
        await pilot.press("i", "y")
        await wait_for(pilot, lambda: len(rt.commands) == 2, what="initiate")
        assert rt.commands[-1] == ("initiate", {"name": "branch", "child": None})
        await wait_for(pilot, lambda: "branch" in {i.name for i in app.store.snapshot.ike_sas}, what="branch up")


async def test_sa_detail_actions_are_confirmed():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.screen.query_one(IkeSaTable).focus()
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, SaDetailScreen), what="detail")
        text = screen_text(app)
        assert "branch" in text and "hq.example.org" in text and "initiator" in text
        ike_id = app.screen.ike_id
        # Rekey IKE
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await wait_for(pilot, lambda: rt.commands, what="rekey ike")
        assert rt.commands[-1] == ("rekey", {"name": "branch", "ike": True, "unique_id": ike_id})
        await wait_for(pilot, lambda: isinstance(app.screen, SaDetailScreen) and app.screen.ike_id != ike_id,
                       what="detail follows the new IKE SA")
        # Rekey the selected CHILD
        child = app.screen.query_one(ChildSaTable)
        await wait_for(pilot, lambda: child.row_keys, what="children")
        await pilot.press("r", "y")
        await wait_for(pilot, lambda: len(rt.commands) == 2, what="rekey child")
        assert rt.commands[-1][1]["ike"] is False and rt.commands[-1][1]["unique_id"] is not None
        # Terminate, then initiate
        await pilot.press("t", "y")
        await wait_for(pilot, lambda: len(rt.commands) == 3, what="terminate")
        assert rt.commands[-1][0] == "terminate"
        await wait_for(pilot, lambda: "has no IKE SA" in screen_text(app), what="gone")
        await pilot.press("i", "y")
        await wait_for(pilot, lambda: len(rt.commands) == 4, what="initiate")
        assert rt.commands[-1] == ("initiate", {"name": "branch", "child": None})
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, SaDetailScreen), what="back")


async def test_command_refusal_is_a_notification_not_a_crash():
    from console.runtime.base import CommandError

    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        conns = app.screen.query_one(ConnectionTable)
        conns.focus()
        conns.move_cursor(row=0)  # branch: up, but the runtime refuses this time
        rt.fail_next["rekey"] = CommandError("branch is busy: try again")
        await pilot.press("r", "y")
        await wait_for(pilot, lambda: rt.commands, what="rekey")
        await wait_for(pilot, lambda: any("busy" in n.message for n in app._notifications),
                       what="notification")
        assert app.is_running


async def test_rekey_of_a_connection_that_is_down_says_so_before_asking():
    """A connection with no SA up: 'Rekey every CHILD SA of legacy?' had only one answer, the
    runtime's refusal after the admin confirmed. The console knows from the last status: it
    says what is missing instead of asking, and sends nothing."""
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        conns = app.screen.query_one(ConnectionTable)
        conns.focus()
        conns.move_cursor(row=conns.get_row_index("legacy"))
        assert not [i for i in app.store.snapshot.ike_sas if i.name == "legacy"]
        await pilot.press("r")
        await wait_for(pilot, lambda: any("legacy has no established IKE SA to rekey" in n.message
                                          for n in app._notifications), what="notification")
        assert not isinstance(app.screen, ConfirmScreen) and not rt.commands
        # From the command palette too (the same question underneath), for the IKE SA as well.
        app.confirm_rekey("legacy", ike=True)
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen) and not rt.commands
        # A connection that is up is still asked about, and rekeyed.
        conns.move_cursor(row=conns.get_row_index("branch"))
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: rt.commands, what="rekey")
        assert rt.commands[0] == ("rekey", {"name": "branch", "ike": False, "unique_id": None})


async def test_alerts_show_their_age_clear_when_the_tunnel_is_up_and_can_be_dismissed():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        assert "legacy NO_PROPOSAL_CHOSEN" in screen_text(app)
        rt.advance(150.0)
        app.poll_soon()
        await wait_for(pilot, lambda: "legacy NO_PROPOSAL_CHOSEN 2m30s" in screen_text(app), what="age")
        # The legacy peer gets fixed: its tunnel comes up, the alert goes by itself.
        rt._failing.discard("legacy")
        rt._establish(rt._conn("legacy"))
        await wait_for(pilot, lambda: "legacy NO_PROPOSAL_CHOSEN" not in screen_text(app), what="auto-clear")
        assert "partner TS_UNACCEPTABLE" in screen_text(app)
        # Dismissed by hand: the newest first, then everything.
        newest = app.store.shown_alerts()[0]
        await pilot.press("x")
        await pilot.pause()
        assert newest.text not in screen_text(app)
        await pilot.press("X")
        await pilot.pause()
        assert not app.store.alerts and "✓ no failed negotiation" in screen_text(app)


async def test_the_attached_top_bar_keeps_count_and_clock_at_80_columns():
    rt = FakeRuntime(kind="attached", label="attached to the daemon at /run/ipsec-console/control.sock")
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        top = screen_text(app).splitlines()[0]
        assert "2 up 3 failing" in top and "22:13:20" in top, top
        assert "1" in top and "6PKI" in top
        assert "7Clients" in top, top  # key 7 opens the Clients screen: the bar named only 1-6


async def test_the_top_bar_names_screen_7_and_keeps_the_sa_detail_name_at_80_columns():
    """Seven screens: the strip's labels give way to the SA's name (keys stay), not the name."""
    rt = FakeRuntime(kind="attached", label="attached to the daemon at /run/ipsec-console/control.sock")
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "SA detail" in screen_text(app).splitlines()[0], what="SA detail")
        top = screen_text(app).splitlines()[0]
        assert " 7 " in top and "22:13:20" in top, top
        await pilot.press("7")
        await wait_for(pilot, lambda: " 7 Clients " in screen_text(app).splitlines()[0], what="clients")


async def test_a_long_child_sa_name_keeps_its_unique_id_visible_at_80x24():
    """The lab's own CHILD SA, branch/hq-branch {1}, is 20 characters in an 18-cell column: at
    80x24 every row read "branch/hq-branch {", and a CHILD SA could not be told from its rekeyed
    successor. A long name is shortened in the middle; its {id} stays."""
    rt = FakeRuntime()
    for ike in rt._ikes.values():
        for ch in ike.children:
            if ike.connection == "branch":
                ch.config = "hq-branch-" + ch.config
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        table = app.screen.query_one(ChildSaTable)
        ids = [c.unique_id for i in app.store.snapshot.ike_sas if i.name == "branch" for c in i.children]
        assert len(ids) >= 2
        text = screen_text(app)
        for uid in ids:
            # Shortened (the connection gives way first), its {id} kept.
            assert re.search(r"…\S* " + re.escape(f"{{{uid}}}"), text), uid
        # The data is whole: the detail line, the sparkline's label and sorting read the full name.
        assert any(table.cell_text(k, "name").startswith("branch/hq-branch-") for k in table.row_keys)


async def test_sa_detail_title_never_pushes_the_clock_off_at_80x24():
    """The top bar's promise: the summary and the clock always show. 'SA detail: roadwarrior' at
    80 columns pushed the clock off the right edge; a longer name took the summary too."""
    from console import fmt

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        for name in ("roadwarrior", "frankfurt-datacenter-primary-uplink"):
            app.open_detail(name, None, None)
            await wait_for(pilot, lambda: isinstance(app.screen, SaDetailScreen), what="detail")
            await pilot.pause()
            top = screen_text(app).splitlines()[0]
            assert top.rstrip().endswith(fmt.clock(app.store.snapshot.time)), top
            assert " up " in top and ("SA detail: " in top or name[:8] in top)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, SaDetailScreen), what="back")


async def test_sa_detail_of_a_connection_that_is_down_says_why_r_and_y_do_nothing():
    """The detail of a connection with no SA: r answered "Select a CHILD SA first" (there is none
    to select) and y did nothing at all. Both say what is missing."""
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        assert not [i for i in app.store.snapshot.ike_sas if i.name == "legacy"]
        app.open_detail("legacy", None, None)
        await wait_for(pilot, lambda: isinstance(app.screen, SaDetailScreen), what="detail")
        await pilot.press("r")
        await wait_for(pilot, lambda: any("legacy has no IKE SA, so no CHILD SA to rekey" in n.message
                                          for n in app._notifications), what="why not")
        await pilot.press("y")
        await wait_for(pilot, lambda: any("no SPI to copy" in n.message for n in app._notifications),
                       what="nothing to copy")
        assert not rt.commands and not any("Select a CHILD SA first" in n.message for n in app._notifications)


async def test_a_connection_with_several_remote_addresses_never_shows_a_cut_address():
    """Remote addresses beyond the column were cut mid-address ("192.0.2.2, 198.5"), which reads
    as another peer. Whole addresses are shown, then how many more."""
    import dataclasses

    rt = FakeRuntime()
    rt._policy = dataclasses.replace(rt._policy, connections=tuple(
        dataclasses.replace(c, remote_addrs=("192.0.2.2", "198.51.100.77")) if c.name == "branch" else c
        for c in rt._policy.connections))
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        table = app.screen.query_one(ConnectionTable)
        assert table.cell_text("branch", "remote") == "192.0.2.2, 198.51.100.77"  # the data stays whole
        row = next(line for line in screen_text(app).splitlines() if line.startswith(" branch "))
        assert "192.0.2.2 +1" in row and "198.5" not in row
