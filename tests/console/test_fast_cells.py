"""The tables' cheaper cell rendering (console/widgets/fast_cells.py) draws exactly
what DataTable draws, and skips Rich's generic layers for one-line text cells."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.padding import Padding
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import App
from textual.widgets import DataTable

from console.widgets.fast_cells import _NULL, CellText, FastCells, _plain_line
from console.widgets.keyed_table import KeyedTable

WORDS = ["192.0.2.12", "INSTALLED", "", "a", "日本語テキスト", "x" * 40, "é̃ combining", "tab\tbed", "[tcp/443]",
         "…", "  lead", "trail  ", "two\nlines", "AES_GCM_16_256/X25519", "😀 wide"]
STYLES = ["", "bold red", "italic", Style(color="green", bgcolor="black"), "none"]


def _random_cell(rnd: random.Random):
    word = rnd.choice(WORDS)
    kind = rnd.random()
    if kind < 0.3:
        return CellText(word, no_wrap=True, end="", overflow="ellipsis")
    if kind < 0.5:
        return Text(word, style=rnd.choice(STYLES), no_wrap=rnd.choice([True, None]), end=rnd.choice(["", "\n"]),
                    overflow=rnd.choice(["ellipsis", "crop", "fold", "ignore", None]))
    if kind < 0.65:
        text = CellText(no_wrap=True, end="", overflow="ellipsis")
        text.append(word[:3], "bold")
        text.append(word[3:], "blue on white")
        return text
    if kind < 0.75:
        return Table()  # not a Text: DataTable's own path
    if kind < 0.85:
        return word  # markup, as DataTable reads a str
    return CellText(word, no_wrap=True, end="", overflow="ellipsis",
                    justify=rnd.choice([None, "left", "right", "center", "full", "default"]))


class _Table(FastCells):
    pass


class _App(App):
    def compose(self):
        yield _Table(cursor_type="row", fixed_rows=1, fixed_columns=1)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_cell_is_drawn_as_datatable_draws_it(seed):
    app = _App()
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.query_one(_Table)
        rnd = random.Random(seed)
        for i in range(10):
            table.add_column(f"c{i}", width=rnd.choice([1, 2, 3, 5, 8, 12, 20, None]))
        for r in range(25):
            table.add_row(*(_random_cell(rnd) for _ in range(10)), key=str(r),
                          height=rnd.choice([1, 1, 1, 1, 2]))
        await pilot.pause()
        base = Style(color="white", bgcolor="black")
        compared = 0
        for r in range(-1, 25):
            for c in range(-1, 10):
                for cursor, hover in ((False, False), (True, False), (False, True)):
                    for width in (1, 2, 3, 5, 9, 14, 30):
                        table._cell_render_cache.clear()
                        ours = FastCells._render_cell(table, r, c, base, width, cursor, hover)
                        table._cell_render_cache.clear()
                        theirs = DataTable._render_cell(table, r, c, base, width, cursor, hover)
                        assert ours == theirs, (r, c, width, cursor, hover, table.get_row_at(r)[c] if r >= 0 <= c else "")
                        compared += 1
        assert compared == 26 * 11 * 3 * 7


async def test_one_line_text_cells_skip_padding_and_are_kept(monkeypatch):
    """Rich's Padding is what cost most of a busy table's frame; our text cells never go through
    it, and a cell drawn again at the same width is not rendered again."""
    padded = []
    original = Padding.__rich_console__

    def counting(self, console, options):
        padded.append(self)
        return original(self, console, options)

    monkeypatch.setattr(Padding, "__rich_console__", counting)

    class _Keyed(App):
        def compose(self):
            yield KeyedTable((("name", "Name", 12), ("state", "State", 10)), id="t")

    app = _Keyed()
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(KeyedTable)
        table.sync({f"k{i}": (f"child-{i}", "INSTALLED") for i in range(5)})
        await pilot.pause()
        table.refresh()
        await pilot.pause()
        cells = [table.get_row_at(i)[0] for i in range(5)]
        assert all(isinstance(cell, CellText) for cell in cells)
        assert not [p for p in padded if isinstance(p.renderable, Text) and p.renderable in cells]
        kept = [cell._rendered for cell in cells]
        assert all(k is not None for k in kept)
        table.sync({**{f"k{i}": (f"child-{i}", "INSTALLED") for i in range(5)}, "k0": ("child-0", "REKEYED")})
        await pilot.pause()
        # A change elsewhere in the table redraws every cell; the unchanged ones from what they kept.
        assert [cell._rendered for cell in cells] == kept and all(
            a is b for a, b in zip((cell._rendered for cell in cells), kept))


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
       width=st.integers(1, 40),
       style=st.sampled_from(STYLES),
       overflow=st.sampled_from(["ellipsis", "crop", "fold", "ignore", None]),
       justify=st.sampled_from([None, "default", "left", "right", "center", "full"]),
       end=st.sampled_from(["", "\n"]))
def test_plain_line_is_what_rich_renders(text, width, style, overflow, justify, end):
    console = Console(width=120, force_terminal=True, color_system="truecolor")
    options = console.options.update_dimensions(width, 1).update(no_wrap=True)
    cell = Text(text, style=style, no_wrap=True, end=end, overflow=overflow, justify=justify)
    fast = _plain_line(console, cell, options)
    if fast is not None:
        assert fast == console.render_lines(cell, options, style=_NULL, pad=True)[0]


async def test_another_textual_falls_back_to_datatable(monkeypatch, caplog):
    """If Textual's private DataTable attributes move, tables are drawn as DataTable draws them."""
    monkeypatch.setattr(FastCells, "_fast", True)

    def moved(self, *args):
        raise AttributeError("'_Table' object has no attribute '_row_locations'")

    monkeypatch.setattr(FastCells, "_render_text_cell", moved)
    app = _App()
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(_Table)
        table.add_column("a", width=8)
        table.add_row(CellText("192.0.2.1", no_wrap=True, end="", overflow="ellipsis"), key="r")
        await pilot.pause()
        base = Style(color="white")
        ours = table._render_cell(0, 0, base, 10)
        table._cell_render_cache.clear()
        assert ours == DataTable._render_cell(table, 0, 0, base, 10)
        assert FastCells._fast is False
        assert "tables drawn the slow way" in caplog.text
