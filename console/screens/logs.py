"""The engine log: level, connection and text search (highlighted, optionally
filtering), follow, wrap, copy of a line and export of what is shown.

The engine names levels the way ``logging`` does (``INFO``, ``DEBUG``); every
comparison here goes through ``level_of`` so the case never matters. The view
opens at INFO: the embedded engine logs at DEBUG (every DPD round trip), so
DEBUG is one key away (``d``) rather than the default.
"""

from __future__ import annotations

import re

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Input, RichLog, Select

from engine.events import LogMessage
from engine.printable import escape

from console import fmt
from console.export import deliver, stamped
from console.screens.base import ConsoleScreen
from console.widgets.fields import Choice, Field, LogView, focus_now

LEVELS = ("debug", "info", "warning", "error")
ALL = "__all__"
DEFAULT_LEVEL = "info"
_LINE_START = re.compile(r"\d\d:\d\d:\d\d\.\d{3} ")
"""How a message's first row starts (fmt.clock_ms)."""
REBUILD_SLACK = 500
"""Lines shown beyond the store's size before the view is rebuilt from the store (bounded memory)."""


def level_of(m: LogMessage) -> str:
    """The message's level as one of LEVELS (logging's CRITICAL counts as error)."""
    name = m.level.lower()
    if name == "critical":
        return "error"
    return name if name in LEVELS else "info"


def plain_line(m: LogMessage) -> str:
    conn = f"[{m.connection}] " if m.connection else ""
    return f"{fmt.clock_ms(m.time)} {level_of(m)[:4].upper():<4} {conn}{m.text}  {m.source}"


def log_line(m: LogMessage, colors: dict[str, str], search: str = "") -> Text:
    level = level_of(m)
    level_style = {
        "error": f"bold {colors.get('error', 'red')}",
        "warning": colors.get("warning", "yellow"),
        "debug": "dim",
    }.get(level, "")
    t = Text()
    t.append(fmt.clock_ms(m.time) + " ", style="dim")
    t.append(f"{level[:4].upper():<4} ", style=level_style)
    if m.connection:
        t.append(f"[{m.connection}] ", style=colors.get("primary", ""))
    # A peer's text quoted in a line: controls as escapes (a multi-line message keeps its lines).
    t.append("\n".join(map(escape, m.text.split("\n"))), style=level_style if level in ("error", "warning") else "")
    t.append(f"  {m.source}", style="dim")
    if search:
        t.highlight_words([search], style=f"reverse {colors.get('accent', '')}".strip(), case_sensitive=False)
    return t


class LogsScreen(ConsoleScreen):
    """Filters at the top; see the module docstring for the keys."""

    TITLE_TEXT = "Logs"
    MODE = "logs"
    BINDINGS = [
        Binding("slash", "focus_search", "Search", id="logs.search"),
        Binding("n", "next_match", "Next", id="logs.next_match"),
        Binding("N", "previous_match", "Prev", show=False, id="logs.previous_match"),
        Binding("m", "toggle_only_matching", "Only matches", show=False, id="logs.only_matching"),
        Binding("d", "toggle_debug", "Debug", id="logs.debug"),
        Binding("l", "cycle_level", "Level", show=False, id="logs.level"),
        Binding("w", "toggle_wrap", "Wrap", id="logs.wrap"),
        Binding("f", "toggle_follow", "Follow", id="logs.follow"),
        Binding("y", "copy_line", "Copy", show=False, id="logs.copy"),
        Binding("x", "export", "Export", id="logs.export"),
        Binding("escape", "clear_filters", "Clear", show=False, id="logs.clear"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown_serial = 0
        self._shown_count = 0
        self._connections: tuple[str, ...] = ()
        self.only_matching = False
        self._match_y: int | None = None
        self._shown: list[LogMessage] = []
        """The messages the view shows, in order (what Export writes)."""

    def body(self) -> ComposeResult:
        with Horizontal(id="log-filters"):
            yield Choice([(lv, lv) for lv in LEVELS], value=DEFAULT_LEVEL, allow_blank=False, id="log-level",
                         compact=True)
            yield Choice([("all connections", ALL)], value=ALL, allow_blank=False, id="log-conn", compact=True)
            yield Field(placeholder="search (/), Enter: next", id="log-text", compact=True)
        log = LogView(id="log", max_lines=None, wrap=False, auto_scroll=True)
        log.border_title = "Engine log"
        yield log

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(RichLog).auto_scroll = self.app.settings.log_follow
        self._rebuild()

    # ------------------------------------------------------------- filtering
    @property
    def level(self) -> str:
        value = self.query_one("#log-level", Select).value
        # Blank only when the Select's own mount was cut short (the screen removed while it mounted).
        return str(value) if value in LEVELS else DEFAULT_LEVEL

    @property
    def search(self) -> str:
        return self.query_one("#log-text", Input).value.strip()

    def _passes(self, m: LogMessage) -> bool:
        if LEVELS.index(level_of(m)) < LEVELS.index(self.level):
            return False
        conn = self.query_one("#log-conn", Select).value
        if conn != ALL and m.connection != conn:
            return False
        text = self.search.lower()
        # The whole line as shown, as the search (n) reads it: "[branch]" or "WARN" match too.
        if self.only_matching and text and text not in plain_line(m).lower():
            return False
        return True

    def _rebuild(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        self._shown = []
        self._match_y = None
        colors = self.app.theme_colors()
        search = self.search
        for m in self.app.store.logs:
            if self._passes(m):
                self._shown.append(m)
                log.write(log_line(m, colors, search))
        self._shown_serial = self.app.store.log_serial
        self._shown_count = len(self.app.store.logs)
        self._update_title()

    def _update_title(self) -> None:
        log = self.query_one(RichLog)
        follow = "following" if log.auto_scroll else "paused (f follows)"
        parts = [f"{len(self._shown)}/{len(self.app.store.logs)} lines", f"≥{self.level}", follow]
        if log.wrap:
            parts.append("wrapped")
        if self.search:
            parts.append(f"“{self.search}”" + (" only" if self.only_matching else ""))
        log.border_title = "Engine log — " + ", ".join(parts)

    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        store = self.app.store
        if "status" in parts and store.snapshot is not None:
            names = tuple(c.name for c in store.snapshot.connections)
            if names != self._connections:
                self._connections = names
                sel = self.query_one("#log-conn", Select)
                current = sel.value
                sel.set_options([("all connections", ALL)] + [(n, n) for n in names])
                sel.value = current if current in names else ALL
        if "logs" in parts:
            new = store.log_serial - self._shown_serial
            if new <= 0:
                return
            if len(self._shown) > len(store.logs) + REBUILD_SLACK:
                self._rebuild()  # the store forgot old lines: so does the view
                return
            log = self.query_one(RichLog)
            colors = self.app.theme_colors()
            search = self.search
            recent = list(store.logs)[-new:] if new < len(store.logs) else list(store.logs)
            for m in recent:
                if self._passes(m):
                    self._shown.append(m)
                    log.write(log_line(m, colors, search))
            self._shown_serial = store.log_serial
            self._update_title()

    def on_select_changed(self, event: Select.Changed) -> None:
        self._rebuild()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._rebuild()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_next_match()

    # ------------------------------------------------------------- actions
    def action_toggle_follow(self) -> None:
        log = self.query_one(RichLog)
        log.auto_scroll = not log.auto_scroll
        if log.auto_scroll:
            log.scroll_end(animate=False)
        self.app.settings.log_follow = log.auto_scroll
        self._update_title()

    def action_focus_search(self) -> None:
        focus_now(self.query_one("#log-text", Input))

    def action_cycle_level(self) -> None:
        sel = self.query_one("#log-level", Select)
        sel.value = LEVELS[(LEVELS.index(str(sel.value)) + 1) % len(LEVELS)]

    def action_toggle_debug(self) -> None:
        sel = self.query_one("#log-level", Select)
        sel.value = DEFAULT_LEVEL if sel.value == "debug" else "debug"

    def action_toggle_wrap(self) -> None:
        log = self.query_one(RichLog)
        log.wrap = not log.wrap
        self._rebuild()

    def action_toggle_only_matching(self) -> None:
        self.only_matching = not self.only_matching
        self._rebuild()

    def _strip_texts(self) -> list[str]:
        return [strip.text.lower() for strip in self.query_one(RichLog).lines]

    def _jump(self, forward: bool) -> None:
        text = self.search.lower()
        if not text:
            self.notify("Type a search first (/)", severity="warning")
            return
        lines = self._strip_texts()
        hits = [i for i, line in enumerate(lines) if text in line]
        if not hits:
            self.notify(f"No line shown contains “{self.search}”", severity="warning")
            return
        log = self.query_one(RichLog)
        # A new search starts from the top (n) or the bottom (N).
        here = self._match_y if self._match_y is not None else (-1 if forward else len(lines))
        if forward:
            target = next((i for i in hits if i > here), hits[0])
        else:
            target = next((i for i in reversed(hits) if i < here), hits[-1])
        self._match_y = target
        log.auto_scroll = False
        log.scroll_to(y=max(0, target - log.scrollable_content_region.height // 2), animate=False)
        self._update_title()
        log.border_subtitle = f"match {hits.index(target) + 1}/{len(hits)}"

    def action_next_match(self) -> None:
        self._jump(True)

    def action_previous_match(self) -> None:
        self._jump(False)

    def action_copy_line(self) -> None:
        log = self.query_one(RichLog)
        if not log.lines:
            return
        y = self._match_y if self._match_y is not None and self._match_y < len(log.lines) else len(log.lines) - 1
        m = self._message_at(y)
        text = plain_line(m) if m is not None else log.lines[y].text.rstrip()
        self.app.copy_to_clipboard(text)
        self.notify(text[:80], title="Copied")

    def _message_at(self, y: int) -> LogMessage | None:
        """The message whose line (wrapped or not) the view's row ``y`` belongs to: a message starts
        a row with its time; a wrapped line's other rows do not."""
        lines = self.query_one(RichLog).lines
        index = sum(1 for strip in lines[:y + 1] if _LINE_START.match(strip.text)) - 1
        return self._shown[index] if 0 <= index < len(self._shown) else None

    def action_export(self) -> None:
        if not self._shown:
            self.notify("Nothing shown to export", severity="warning")
            return
        data = "\n".join(plain_line(m) for m in self._shown) + "\n"
        deliver(self.app, data, stamped("ipsec-console-log", ".txt"), "log")

    def action_clear_filters(self) -> None:
        if isinstance(self.focused, Input):  # Escape first leaves the search box, keeping the search
            focus_now(self.query_one(RichLog))
            return
        self.query_one("#log-text", Input).value = ""
        self.query_one("#log-conn", Select).value = ALL
        focus_now(self.query_one(RichLog))
