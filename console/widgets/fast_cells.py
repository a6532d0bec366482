"""Cheaper rendering of a DataTable's one-line text cells.

Under a thousand handshakes a second the SA tables change every refresh, and
any change makes DataTable render every visible cell again (its cell cache is
keyed by an update counter). DataTable renders a cell as
``render_lines(Styled(Padding(text, (0, p)), pre, post))``: three layers of
Rich's generic pipeline (generators, option copies, a lock, line splitting)
around the text itself, most of a frame's time on a busy gateway (~70-90 ms
of CPU for 430 cells on the benchmark's 2-CPU VM, `benchmarks/console_engine.py`).

`FastCells._render_cell` keeps DataTable's cache and styling decisions and
builds the same segments directly for a one-line cell: Rich still renders
the text (wrapping, cropping, ellipsis, spans), only the padding and the
style layers are done here, as Padding and Styled do them. A `CellText`
keeps its rendered text per width, so a cell that did not change costs a
few segment copies. Anything else (headers, labels, taller rows, other
renderables, a text with a line break) goes through DataTable unchanged.
``tests/console/test_fast_cells.py`` checks the segments are identical to
DataTable's own, cell by cell.
"""

from __future__ import annotations

import logging

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.widgets import DataTable

_NULL = Style.null()
log = logging.getLogger("console.tables")


class CellText(Text):
    """A Text that keeps its rendering for the last width it was drawn at.

    The table's cells are made once per value and never changed afterwards, so
    what Rich renders for them at a width stays right."""

    _rendered: tuple | None = None


def text_line(console, cell: Text, options) -> list[Segment]:
    """The cell's text as one line exactly ``options.max_width`` cells wide, as Padding
    has Rich render it (its pad style is Style.null(), from Padding's style "none")."""
    key = (options.max_width, options.justify, options.overflow, options.no_wrap, console.tab_size)
    kept = cell._rendered if isinstance(cell, CellText) else None
    if kept is not None and kept[0] == key:
        return kept[1]
    line = _plain_line(console, cell, options)
    if line is None:
        line = console.render_lines(cell, options, style=_NULL, pad=True)[0]
    if isinstance(cell, CellText):
        cell._rendered = (key, line)
    return line


def _plain_line(console, cell: Text, options) -> list[Segment] | None:
    """What Rich renders for a one-style, one-line, left-as-is text (Text.__rich_console__: wrap
    with no_wrap, truncate, join, render; then render_lines pads), or None for anything else."""
    plain = cell.plain
    if cell._spans or not plain or "\n" in plain or "\t" in plain or cell.end not in ("", "\n"):
        return None
    if (cell.justify or options.justify or "default") != "default":
        return None
    overflow = cell.overflow or options.overflow or "fold"
    if overflow == "ignore" or not (cell.no_wrap if cell.no_wrap is not None else options.no_wrap):
        return None
    width = options.max_width
    used = cell_len(plain)
    if used > width:
        plain = set_cell_size(plain, width - 1) + "…" if overflow == "ellipsis" else set_cell_size(plain, width)
        used = cell_len(plain)
    # Text.render: a text without spans is one segment without a style; the join makes the
    # text's own style a span, rendered as that style.
    style = console.get_style(cell.style, default=_NULL) if cell.style else None
    line = [Segment(plain, style)]
    if used < width:
        line.append(Segment(" " * (width - used), _NULL))
    elif used > width:  # a wide character cut at the edge
        line = Segment.adjust_line_length(line, width, style=_NULL)
    return line


def padded_cell(console, cell: Text, options, padding: int, pre: Style, post: Style) -> list[list[Segment]]:
    """``console.render_lines(Styled(Padding(cell, (0, padding)), pre, post), options)`` for a
    one-line cell (options of height 1, no_wrap), without the generic pipeline."""
    width = options.max_width
    inner = text_line(console, cell, options.update_width(width - 2 * padding))
    if padding:
        side = Segment(" " * padding, _NULL)
        line = [side, *inner, side]
    else:
        line = list(inner)
    # Styled: pre_style under each segment's own style, post_style over it (Segment.apply_style).
    if pre:
        add = pre.__add__
        line = [Segment(text, None if control else add(style), control) for text, style, control in line]
    if post:
        line = [Segment(text, None if control else (style + post if style else post), control)
                for text, style, control in line]
    # render_lines crops or pads the line to the width (a wide character at the edge).
    if sum(segment.cell_length for segment in line) != width:
        line = Segment.adjust_line_length(line, width)
    return [line]


class FastCells(DataTable):
    """A DataTable whose one-line text cells skip Rich's generic layers (see the module)."""

    _fast = True
    """False once DataTable's internals were not what this class reads (another Textual)."""

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False):
        if FastCells._fast and row_index >= 0 and column_index >= 0 and 2 * self.cell_padding < width:
            try:
                lines = self._render_text_cell(row_index, column_index, base_style, width, cursor, hover)
            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                # Textual's private DataTable API moved: draw as DataTable does from now on.
                FastCells._fast = False
                log.warning("DataTable internals changed (%s): tables drawn the slow way", exc)
                lines = None
            if lines is not None:
                return lines
        return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)

    def _render_text_cell(self, row_index, column_index, base_style, width, cursor, hover):
        """DataTable._render_cell's decisions, cache and styles; only the last step differs.
        None: not a one-line text cell."""
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        cache_key = (row_key, column_key, base_style, cursor, hover, self._show_hover_cursor,
                     self._update_count, self._pseudo_class_state)
        cache = self._cell_render_cache
        if cache_key in cache:
            return cache[cache_key]
        row = self.rows.get(row_key)
        if row is None or row.height != 1:
            return None
        _label, cells = self._get_row_renderables(row_index)
        cell = cells[column_index] if column_index < len(cells) else None
        if type(cell) not in (Text, CellText) or "\n" in cell.plain:
            return None
        fixed = row_index < self.fixed_rows or column_index < self.fixed_columns
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, fixed, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css")
        pre = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
        options = self.app.console_options.update_dimensions(width, 1).update(no_wrap=True)
        lines = padded_cell(self.app.console, cell, options, self.cell_padding, pre, post_style)
        cache[cache_key] = lines
        return lines
