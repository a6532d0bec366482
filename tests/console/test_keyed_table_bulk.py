"""KeyedTable.sync writes every changed cell and refreshes once: 10,000 CHILD SAs whose
lifetimes count down change 20,000 cells a poll, and DataTable.update_cell refreshes per cell."""

from __future__ import annotations

from textual.app import App
from textual.widgets import DataTable

from console.widgets.keyed_table import KeyedTable

COLUMNS = (("name", "Name", 10), ("rekey", "Rekey", 8), ("expire", "Expire", 8))


class _App(App):
    def compose(self):
        yield KeyedTable(COLUMNS, id="t")


def _rows(tick: int, n: int = 60) -> dict[str, tuple[str, ...]]:
    return {f"k{i}": (f"child-{i}", f"{(tick + i) % 60}s", f"{(tick + i) % 50}m") for i in range(n)}


async def test_many_changed_cells_refresh_the_table_once(monkeypatch):
    app = _App()
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(KeyedTable)
        table.sync(_rows(0))
        await pilot.pause()
        refreshes = []
        original = KeyedTable.refresh

        def counting(self, *args, **kwargs):
            refreshes.append(args)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(KeyedTable, "refresh", counting)
        per_cell = []
        monkeypatch.setattr(DataTable, "update_cell", lambda self, *a, **k: per_cell.append(a))
        table.sync(_rows(1))
        assert table.sync_stats == (0, 0, 120)
        assert not per_cell
        assert len(refreshes) == 1
        monkeypatch.undo()
        await pilot.pause()
        for i in range(60):
            row = table.get_row(f"k{i}")
            assert [str(cell) for cell in row] == list(_rows(1)[f"k{i}"])


async def test_cells_written_at_once_draw_as_update_cell_draws_them():
    app = _App()
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(KeyedTable)
        table.sync(_rows(0, 10))
        await pilot.pause()
        table.sync(_rows(7, 10))
        await pilot.pause()
        ours = [list(table.render_line(y)) for y in range(11)]
        assert "child-3" in "".join(segment.text for segment in ours[4])
        for k, row in _rows(7, 10).items():
            for i, c in enumerate(("name", "rekey", "expire")):
                DataTable.update_cell(table, k, c, table._cell(c, row[i]))
        await pilot.pause()
        theirs = [list(table.render_line(y)) for y in range(11)]
        assert ours == theirs
