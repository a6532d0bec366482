"""Review of con17 (shared cells, rows from changed fields, no redraw for off-screen changes):
what the screen shows after any mix of polls and admin actions is what a table drawn from
scratch shows (the oracle: every DataTable cache emptied and the whole screen drawn again)."""

from __future__ import annotations

import random

from textual.app import App
from textual.containers import Vertical

from console.widgets.keyed_table import KeyedTable
from console.widgets.sa_tables import ChildSaTable, IkeSaTable
from tests.console.test_refresh_at_scale import _polls


def _strips(app) -> list[tuple[str, list]]:
    """Each line's text, and the style of its words (Textual draws the blank area right of the
    last column differently after a resize, on main as well: not ours)."""
    return [("".join(seg.text for seg in strip),
             [(seg.text, seg.style.clear_meta_and_links() if seg.style else None) for seg in strip if seg.text.strip()])
            for strip in app.screen._compositor.render_strips()]


def _texts(strips) -> list[str]:
    return [text for text, _ in strips]


async def _drawn_as_from_scratch(pilot, where: str) -> None:
    app = pilot.app
    await pilot.pause()
    shown = _strips(app)
    for table in app.screen.query(KeyedTable):
        table._clear_caches()
        table._update_count += 1
        table.refresh()
    await pilot.pause()
    truth = _strips(app)
    if shown != truth:
        a, b = _texts(shown), _texts(truth)
        diff = [f"{y}: shown {x!r}\n   truth {t!r}" for y, (x, t) in enumerate(zip(a, b)) if x != t]
        if not diff:
            diff = [f"{y}: shown {[s for s in x[1] if s not in t[1]]}\n   truth {[s for s in t[1] if s not in x[1]]}"
                    for y, (x, t) in enumerate(zip(shown, truth)) if x != t][:4]
        assert False, f"stale after {where}:\n" + ("\n".join(diff) or "(styles differ)")


class _Tables(App):
    def theme_colors(self):
        return self.get_css_variables()

    def compose(self):
        with Vertical():
            yield IkeSaTable(id="ike")
            yield ChildSaTable(id="child")


async def test_random_polls_and_actions_draw_what_a_fresh_table_draws():
    for seed in range(3):
        rng = random.Random(seed)
        app = _Tables()
        async with app.run_test(size=(100, 24)) as pilot:
            ike, child = app.query_one(IkeSaTable), app.query_one(ChildSaTable)
            rates: dict[str, float] = {}
            for n, snap in enumerate(_polls(50, 30, seed)):
                rates = {f"{ch.spi_in:08x}": rng.choice([0.0, 1.5, 2e6]) for i in snap.ike_sas
                         for ch in i.children if rng.random() < 0.7}
                child.set_reactive(ChildSaTable.rates, rates)
                ike.snapshot = snap
                child.snapshot = snap
                await _drawn_as_from_scratch(pilot, f"poll {n}")
                action = rng.randrange(9)
                table = rng.choice([ike, child])
                if action == 0 and table.row_count:
                    table.move_cursor(row=rng.randrange(table.row_count))
                elif action == 1:
                    table.scroll_to(y=rng.randrange(max(1, table.row_count)), animate=False)
                elif action == 2:
                    table.sort_by(rng.choice(table.visible_columns), rng.random() < 0.5)
                elif action == 3:
                    child.ike_filter = rng.choice([None, snap.ike_sas[0].unique_id, snap.ike_sas[-1].unique_id])
                elif action == 4:
                    await pilot.resize_terminal(rng.choice([80, 100, 140]), rng.choice([20, 24, 40]))
                elif action == 5:
                    app.theme = rng.choice(["textual-dark", "textual-light", "nord"])
                    await pilot.pause()
                    for t in (ike, child):
                        t.restyle()
                elif action == 6:
                    cols = table._column_keys
                    table.show_columns(None if rng.random() < 0.4 else tuple(rng.sample(cols, rng.randrange(1, len(cols)))))
                elif action == 7:
                    table.focus()
                await _drawn_as_from_scratch(pilot, f"poll {n} action {action} on {table.id}")


async def test_a_theme_chosen_on_another_screen_recolours_the_dashboard_on_return():
    """The app restyles the tables of the current mode's screens only: the dashboard's state
    cells kept the old theme's colours (for good, as long as a row's state did not change)."""
    from tests.console.conftest import make_app, ready

    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot)
        app.theme = "ipsec-dark"
        await pilot.pause()
        await app.switch_mode("logs")
        await pilot.pause()
        app.theme = "ipsec-light"
        await pilot.pause()
        await app.switch_mode("dashboard")
        await pilot.pause()
        want = app.theme_colors()["success"]
        for table in (app.screen.query_one(IkeSaTable), app.screen.query_one(ChildSaTable)):
            assert table.row_keys
            for key in table.row_keys:
                cell = table.get_row(key)[table.visible_columns.index("state")]
                if table.cell_text(key, "state") in ("ESTABLISHED", "INSTALLED"):
                    assert str(cell.style) == f"bold {want}", (table.id, key, cell.style)
        await _drawn_as_from_scratch(pilot, "theme chosen on the logs screen")


async def test_the_dashboard_at_scale_shows_what_it_would_draw_from_scratch():
    """The real dashboard, 400 CHILD SAs, polls of random lengths (times crossing minutes, hours,
    rekeys), the admin's keys, other screens, resizes and themes between them."""
    from console.messages import StatusUpdated
    from console.runtime.fake import FakeRuntime
    from tests.console.conftest import make_app, wait_for

    rng = random.Random(5)
    rt = FakeRuntime(scale_children=400, children_per_ike=10)
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.store.snapshot is not None, what="first status")
        await pilot.pause()
        for n in range(40):
            rt.advance(rng.choice([0.3, 1.0, 1.0, 59.0, 600.0, 3600.0]))
            app.post_message(StatusUpdated(rt.status_now()))
            await pilot.pause()
            if app.current_mode == "dashboard" and app.screen.ready:
                await _drawn_as_from_scratch(pilot, f"poll {n}")
            action = rng.randrange(8)
            if action == 0:
                await pilot.press(*rng.choices(["down", "up", "pagedown", "pageup", "end", "home"], k=3))
            elif action == 1:
                await pilot.press(rng.choice(["tab", "shift+tab"]))
            elif action == 2:
                await pilot.press(rng.choice(["s", "S"]))
            elif action == 3:
                await app.switch_mode(rng.choice(["dashboard", "logs", "dashboard"]))
            elif action == 4:
                await pilot.resize_terminal(rng.choice([80, 120, 160]), rng.choice([24, 30]))
            elif action == 5:
                app.theme = rng.choice(["ipsec-dark", "ipsec-light", "ipsec-high-contrast"])
            await pilot.pause()
            if app.current_mode == "dashboard" and app.screen.ready:
                await _drawn_as_from_scratch(pilot, f"poll {n} action {action}")


async def test_caches_stay_bounded_while_sas_churn_and_rows_stay_right(monkeypatch):
    """SAs replaced every poll (new ids, SPIs, names): the shared cells are capped (emptied at the
    cap, mid-sync too), the row memo holds the current SAs only, and what is drawn stays right."""
    from console.widgets import sa_tables
    from tests.console.test_refresh_at_scale import _child, _ike

    monkeypatch.setattr(KeyedTable, "CELL_CACHE", 300)
    app = _Tables()
    async with app.run_test(size=(100, 24)) as pilot:
        ike, child = app.query_one(IkeSaTable), app.query_one(ChildSaTable)
        for poll in range(12):
            base = 1000 * (poll + 1)
            snap = sa_tables.StatusSnapshot(time=1e9 + poll * 60, ike_sas=tuple(
                _ike(base + i, (_child(base * 10 + i * 3), _child(base * 10 + i * 3 + 1)), established_ago=poll * 61.5)
                for i in range(60)))
            ike.snapshot = child.snapshot = snap
            await _drawn_as_from_scratch(pilot, f"churn poll {poll}")
            for table, n in ((ike, 60), (child, 120)):
                assert len(table._cells) <= 300
                assert len(table._memo) == n and table.row_count == n
        assert len(sa_tables._DURATIONS) <= 100_001
