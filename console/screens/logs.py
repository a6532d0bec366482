"""The engine log with filters (connection, level, text) and follow mode."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Input, RichLog, Select

from engine.events import LogMessage

from console import fmt
from console.screens.base import ConsoleScreen

LEVELS = ("debug", "info", "warning", "error")
ALL = "__all__"


def log_line(m: LogMessage, colors: dict[str, str]) -> Text:
    level_style = {
        "error": f"bold {colors.get('error', 'red')}",
        "warning": colors.get("warning", "yellow"),
        "debug": "dim",
    }.get(m.level, "")
    t = Text()
    t.append(fmt.clock_ms(m.time) + " ", style="dim")
    t.append(f"{m.level[:4].upper():<4} ", style=level_style)
    if m.connection:
        t.append(f"[{m.connection}] ", style=colors.get("primary", ""))
    t.append(m.text, style=level_style if m.level in ("error", "warning") else "")
    t.append(f"  {m.source}", style="dim")
    return t


class LogsScreen(ConsoleScreen):
    """Filters at the top; ``f`` toggles follow, ``/`` jumps to the text filter."""

    TITLE_TEXT = "Logs"
    MODE = "logs"
    BINDINGS = [
        Binding("f", "toggle_follow", "Follow"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("l", "cycle_level", "Level"),
        Binding("escape", "clear_filters", "Clear", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown_serial = 0
        self._connections: tuple[str, ...] = ()

    def body(self) -> ComposeResult:
        with Horizontal(id="log-filters"):
            yield Select([(lv, lv) for lv in LEVELS], value="info", allow_blank=False, id="log-level",
                         compact=True)
            yield Select([("all connections", ALL)], value=ALL, allow_blank=False, id="log-conn", compact=True)
            yield Input(placeholder="text filter (/)", id="log-text", compact=True)
        log = RichLog(id="log", max_lines=5000, wrap=False, auto_scroll=True)
        log.border_title = "Engine log"
        yield log

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(RichLog).auto_scroll = self.app.settings.log_follow
        self._rebuild()

    # ------------------------------------------------------------- filtering
    def _passes(self, m: LogMessage) -> bool:
        level = self.query_one("#log-level", Select).value
        if m.level in LEVELS and LEVELS.index(m.level) < LEVELS.index(level):
            return False
        conn = self.query_one("#log-conn", Select).value
        if conn != ALL and m.connection != conn:
            return False
        text = self.query_one("#log-text", Input).value.strip().lower()
        if text and text not in m.text.lower() and text not in m.source.lower():
            return False
        return True

    def _rebuild(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        colors = self.app.theme_colors()
        for m in self.app.store.logs:
            if self._passes(m):
                log.write(log_line(m, colors))
        self._shown_serial = self.app.store.log_serial
        self._update_title()

    def _update_title(self) -> None:
        log = self.query_one(RichLog)
        follow = "following" if log.auto_scroll else "paused (f follows)"
        log.border_title = f"Engine log — {len(self.app.store.logs)} lines, {follow}"

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
            log = self.query_one(RichLog)
            colors = self.app.theme_colors()
            recent = list(store.logs)[-new:] if new < len(store.logs) else list(store.logs)
            for m in recent:
                if self._passes(m):
                    log.write(log_line(m, colors))
            self._shown_serial = store.log_serial
            self._update_title()

    def on_select_changed(self, event: Select.Changed) -> None:
        self._rebuild()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._rebuild()

    # ------------------------------------------------------------- actions
    def action_toggle_follow(self) -> None:
        log = self.query_one(RichLog)
        log.auto_scroll = not log.auto_scroll
        if log.auto_scroll:
            log.scroll_end(animate=False)
        self.app.settings.log_follow = log.auto_scroll
        self._update_title()

    def action_focus_filter(self) -> None:
        self.query_one("#log-text", Input).focus()

    def action_cycle_level(self) -> None:
        sel = self.query_one("#log-level", Select)
        sel.value = LEVELS[(LEVELS.index(sel.value) + 1) % len(LEVELS)]

    def action_clear_filters(self) -> None:
        self.query_one("#log-text", Input).value = ""
        self.query_one("#log-conn", Select).value = ALL
        self.query_one(RichLog).focus()
