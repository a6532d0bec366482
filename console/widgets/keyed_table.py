"""A DataTable that takes whole row sets and applies only the difference.

Row keys are stable identities (IKE SA unique id, CHILD SA inbound SPI,
connection name); rows that vanished are removed, new ones added, and of the
others only the cells whose text changed are updated. Never clear and refill:
the cursor, the scroll position and the CPU stay where they were.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import re

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from console.widgets.fast_cells import CellText, FastCells
from console.widgets.fields import KeysInOrder
from engine.printable import escape

_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "k": 1e3, "M": 1e6}
_SIZE = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|k|M)?(?:/s)?$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def sort_key(text: str) -> tuple:
    """Numbers, sizes (1.5 KB), rates and durations (2h05m) by value; anything else by text.
    Numbers sort before text, and "–" (none) last."""
    t = text.strip()
    if t in ("–", "-", ""):
        return (2, 0.0, "")
    m = _SIZE.match(t)
    if m:
        return (0, float(m.group(1)) * _UNITS.get(m.group(2) or "B", 1), "")
    m = _DURATION.match(t)
    if m and any(m.groups()):
        d, h, mi, sec = (int(g) if g else 0 for g in m.groups())
        return (0, float(((d * 24 + h) * 60 + mi) * 60 + sec), "")
    return (1, 0.0, t.lower())


class KeyedTable(KeysInOrder, FastCells):
    """DataTable with ``sync(rows)``; see the module docstring. ``s`` sorts by the next column
    (``S`` reverses), a click on a header sorts by it. Keys run in the order typed (fields.py):
    ``t``, ``y`` in one burst answer the dialog ``t`` opens."""

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """
    BINDINGS = [
        Binding("s", "cycle_sort", "Sort", show=False, id="table.sort"),
        Binding("S", "reverse_sort", "Reverse sort", show=False, id="table.reverse_sort"),
    ]

    def action_select_cursor(self) -> None:
        # Enter opens the row at once where the screen opens rows (dashboard, clients), not through a
        # RowSelected message: the keys typed right after it (r, t, Escape) belong to what it opens.
        opener = getattr(self.screen, "action_open_detail", None)
        if opener is not None and hasattr(self.screen, "on_data_table_row_selected") and self.row_count:
            self._set_hover_cursor(False)
            opener()
            return
        super().action_select_cursor()

    def __init__(self, columns: Sequence[tuple], *, styler: Callable[[str, str], Text | str] | None = None,
                 sort_column: str | None = None, **kwargs) -> None:
        """``columns``: (key, label) or (key, label, width) tuples; a width keeps growing
        counters from being cut. ``styler(column_key, text)`` may turn a cell into styled
        Text. ``sort_column``: re-sort on it when rows were added (not on every update)."""
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", False)
        super().__init__(**kwargs)
        self._column_spec = tuple(columns)
        self._column_keys = tuple(c[0] for c in columns)
        self._visible: tuple[tuple[int, str], ...] = tuple(enumerate(self._column_keys))
        """(index in a row, column key) of the columns shown (narrow layouts show fewer)."""
        self._last_rows: Mapping[str, tuple[str, ...]] = {}
        self.sort_column = sort_column
        self.sort_reverse = False
        self.user_sorted = False
        """The admin chose the order: keep it while cells change (not only when rows arrive)."""
        self._cache: dict[str, tuple[str, ...]] = {}
        self._cells: dict[tuple[str, str], object] = {}
        """Cells made by `_cell`, by (column, text)."""
        self._cells_theme: str | None = None
        self.styler = styler
        self.sync_stats = (0, 0, 0)
        """(added, removed, cells updated) of the last sync, for tests and the benchmark."""
        self._pending: Mapping[str, tuple[str, ...]] | None = None

    def _add_columns(self) -> None:
        shown = {c for _, c in self._visible}
        for spec in self._column_spec:
            key, label = spec[0], spec[1]
            if key not in shown:
                continue
            width = spec[2] if len(spec) > 2 else None
            self.add_column(label, key=key, width=width)

    def show_columns(self, keys: tuple[str, ...] | None) -> None:
        """Show only these columns (None: all); rows keep every value (``cell_text`` still answers)."""
        wanted = tuple((i, c) for i, c in enumerate(self._column_keys) if keys is None or c in keys)
        if wanted == self._visible:
            return
        self._visible = wanted
        if not self.is_mounted:
            return
        self._rebuild_columns()

    def _rebuild_columns(self) -> None:
        """Columns rebuilt after a change of which are shown or how wide: rows and cursor kept."""
        selected = self.selected_key
        self.clear(columns=True)
        self._cache = {}
        self._add_columns()
        if self._last_rows:
            self.sync(self._last_rows)
        if selected is not None and selected in self._cache:
            self.move_cursor(row=self.get_row_index(selected))

    def fit_columns(self, width: int, first: tuple[str, ...] = ()) -> None:
        """Show only whole columns in ``width`` cells (a column cut at the edge reads as another
        value): the first column in any case, then ``first`` in its order, then the others in
        theirs, each while it fits whole (under 80 columns ``first`` alone may not)."""
        room = width - 1  # a vertical scrollbar
        key_column = self._column_keys[:1]
        chosen = set(key_column)
        used = sum(self._cell_width(k) for k in key_column)
        for key in (*first, *self._column_keys):
            if key not in chosen and used + self._cell_width(key) <= room:
                chosen.add(key)
                used += self._cell_width(key)
        self.show_columns(tuple(k for k in self._column_keys if k in chosen))

    def _cell_width(self, column: str) -> int:
        return (self.column_width(column) or len(dict((c[0], c[1]) for c in self._column_spec)[column])) \
            + 2 * self.cell_padding

    def set_width(self, column: str, width: int) -> None:
        """Give ``column`` another fixed width (the columns are rebuilt, rows and cursor kept)."""
        spec = tuple((c[0], c[1], width) if c[0] == column else c for c in self._column_spec)
        if spec == self._column_spec:
            return
        self._column_spec = spec
        if not self.is_mounted or not self.columns:
            return
        self._rebuild_columns()

    def column_width(self, column: str) -> int | None:
        spec = next(c for c in self._column_spec if c[0] == column)
        return spec[2] if len(spec) > 2 else None

    @property
    def visible_columns(self) -> tuple[str, ...]:
        return tuple(c for _, c in self._visible)

    def on_mount(self) -> None:
        if not self.columns:
            self._add_columns()

    def _cell(self, column: str, value: str):
        """The cell drawn for ``value`` in ``column``: one object per distinct pair, shared by the rows
        that show it (a cell is never changed once made; with 10,000 SAs whose ages tick, most
        changed cells read as one of a few hundred values). Cleared by restyle and its size."""
        kept = self._cells.get((column, value))
        if kept is None:
            if len(self._cells) >= self.CELL_CACHE:
                self._cells.clear()
            kept = self._cells[(column, value)] = self._make_cell(column, value)
        return kept

    def _current_theme(self) -> str | None:
        try:
            return self.app.theme
        except Exception:  # noqa: BLE001  (no app yet: nothing styled from one either)
            return None

    def _cells_for_theme(self) -> None:
        """Cells made under another theme (stylers colour from it) are made again: the app
        restyles only the tables of the current mode's screens; another mode's table catches up
        here, at its first sync after the change (its screen syncs when shown again)."""
        theme = self._current_theme()
        if theme != self._cells_theme:
            self._cells = {}
            if self._cells_theme is not None and self._cache:
                self.restyle()  # sets _cells_theme
            self._cells_theme = theme

    CELL_CACHE = 50_000
    """Distinct (column, text) cells kept at most."""

    def _make_cell(self, column: str, value: str):
        # Cells show peer-supplied text (identities, EAP names): controls drawn as escapes, never sent
        # to the terminal (Textual passes ESC through). Printable text is returned as it is.
        value = escape(value)
        if self.styler is not None:
            styled = self.styler(column, value)
            if not isinstance(styled, str):
                # Cut at the column's edge with "…", like a plain cell: a cut must show.
                styled.no_wrap = True
                styled.overflow = "ellipsis"
                return styled
        # Plain Text, not str: DataTable would parse a str as markup (slow, and data
        # such as "[tcp/443]" is not markup). A CellText keeps its rendering (fast_cells.py).
        return CellText(value, no_wrap=True, end="", overflow="ellipsis")

    ADD_BATCH = 1000
    """Rows added per frame: a first fill of 10,000 CHILD SAs shows its first page at
    once and the rest over the next frames, instead of one long freeze."""

    def sync(self, rows: Mapping[str, tuple[str, ...]], *, _continued: bool = False) -> None:
        """Make the table show exactly ``rows`` (key -> cell texts, in column order)."""
        if not self.columns:
            self._add_columns()
        if _continued and rows is not self._pending:
            return  # a newer sync took over
        self._pending = None
        self._last_rows = rows
        self._cells_for_theme()
        cache = self._cache
        had_rows = bool(cache)
        removed = [k for k in cache if k not in rows]
        for k in removed:
            self.remove_row(k)
            del cache[k]
        added = updated = 0
        changed_cells: list[tuple[str, str, object]] = []
        sorted_changed = False
        more = False
        visible = self._visible
        shown = dict(visible)
        indices = range(len(self._column_keys))
        cell = self._cell
        for k, row in rows.items():
            old = cache.get(k)
            if old is None:
                if added >= self.ADD_BATCH:
                    more = True
                    continue
                self.add_row(*(cell(c, row[i]) for i, c in visible), key=k)
                added += 1
            elif old != row:
                # Width fixed at first sight of a column's widest text: resizing
                # on every counter tick would re-measure the whole table.
                for i in [i for i, a, b in zip(indices, old, row) if a != b]:
                    c = shown.get(i)
                    if c is not None:
                        changed_cells.append((k, c, cell(c, row[i])))
                        updated += 1
                        sorted_changed = sorted_changed or c == self.sort_column
            else:
                continue
            cache[k] = row
        self._set_cells(changed_cells)
        if self.sort_column in self.visible_columns and not _continued and (
                (added and (had_rows or self.user_sorted)) or (self.user_sorted and sorted_changed)):
            self._apply_sort()  # a first fill arrives in order; a chosen order is kept
        if added or removed:
            self.refresh(layout=True)
        self.sync_stats = (added, len(removed), updated)
        if more:
            self._pending = rows
            self.call_after_refresh(self.sync, rows, _continued=True)

    _CONTENT_CACHES = ("_row_render_cache", "_cell_render_cache", "_row_renderable_cache", "_line_cache")
    """DataTable's caches of what cells draw (keyed by its update counter, or by line)."""

    def _set_cells(self, cells: list[tuple[str, str, object]]) -> None:
        """Put new values in existing cells with one refresh for all. DataTable.update_cell refreshes
        the widget per cell: 20,000 cells (10,000 CHILD SAs whose lifetimes count down) took 300 ms of
        the console's loop; the same values written at once and one refresh take a tenth of that.

        Nor does it count an update as update_cell does: DataTable's row order and line offsets are
        cached by that counter and rebuilt over every row after it moves (20-30 ms a poll for a
        10,000-row table); a cell's new value changes neither. The caches of what cells draw are
        emptied instead (the visible rows are drawn again, as after update_cell)."""
        if not cells:
            return
        data = getattr(self, "_data", None)
        caches = [getattr(self, name, None) for name in self._CONTENT_CACHES]
        if data is None or None in caches:
            for k, c, value in cells:
                self.update_cell(k, c, value)
            return
        for k, c, value in cells:
            row = data.get(k)
            if row is None or c not in row:
                self.update_cell(k, c, value)  # as DataTable would say: CellDoesNotExist
                continue
            row[c] = value  # str keys find DataTable's RowKey / ColumnKey (equal, same hash)
        for cache in caches:
            cache.clear()
        if self._shows_any(k for k, _, _ in cells):
            self.refresh()

    def _shows_any(self, keys) -> bool:
        """Whether a row of ``keys`` is on screen (its new cells must be drawn now; the others are
        drawn from the new values when scrolled to). True when it cannot tell."""
        locations = getattr(self, "_row_locations", None)
        height = self.size.height
        if locations is None or not height:
            return True
        top = self.scroll_offset.y
        first, last = top - 1, top + height + 1  # a row's worth of margin either side
        fixed = self.fixed_rows
        get = locations.get
        for k in keys:
            index = get(k)
            if index is None or first <= index <= last or index < fixed:
                return True
        return False

    def _apply_sort(self) -> None:
        selected = self.selected_key
        # By the cell's text, numbers by value (1.5 KB before 12 KB), not by styled Text objects.
        self.sort(self.sort_column, key=lambda v: sort_key(v.plain if isinstance(v, Text) else str(v)),
                  reverse=self.sort_reverse)
        if selected is not None:
            self.move_cursor(row=self.get_row_index(selected))

    def sort_by(self, column: str, reverse: bool = False) -> None:
        """Order rows by ``column`` from now on (numbers by value)."""
        self.sort_column = column
        self.sort_reverse = reverse
        self.user_sorted = True
        self._apply_sort()
        label = dict((c[0], c[1]) for c in self._column_spec).get(column, column)
        self.border_subtitle = f"sorted by {label}{' ↓' if reverse else ''}"

    def action_cycle_sort(self) -> None:
        keys = self.visible_columns
        nxt = keys[(keys.index(self.sort_column) + 1) % len(keys)] if self.sort_column in keys else keys[0]
        self.sort_by(nxt, False)

    def action_reverse_sort(self) -> None:
        column = self.sort_column if self.sort_column in self.visible_columns else self.visible_columns[0]
        self.sort_by(column, not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        column = event.column_key.value
        self.sort_by(column, not self.sort_reverse if column == self.sort_column and self.user_sorted else False)

    def restyle(self) -> None:
        """Re-apply the styler to every cell (after a theme change)."""
        if self.styler is None:
            return
        self._cells = {}
        self._cells_theme = self._current_theme()
        cells = []
        for k, row in self._cache.items():
            for i, c in self._visible:
                styled = self.styler(c, row[i])
                if not isinstance(styled, str):
                    cells.append((k, c, self._cell(c, row[i])))
        self._set_cells(cells)

    @property
    def row_keys(self) -> list[str]:
        return list(self._cache)

    def cell_text(self, key: str, column: str) -> str:
        return self._cache[key][self._column_keys.index(column)]

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:
            return None
        return row_key.value
