"""The help screen (``?`` or F1): every key of the screen it was opened from,
of the focused widget and of the whole console, with the binding ids a
``[keymap]`` in settings.toml remaps."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import (Button, DataTable, Input, OptionList, RichLog, Select, Static, Switch, TextArea,
                             Tree)

from console.settings import config_dir
from console.widgets.mounting import QuietWhenRemoved

NAV = "1 Dashboard · 2 Negotiations · 3 Policies · 4 Logs · 5 Packets · 6 PKI · 7 Clients (road warriors)"


def _key_display(app, key: str) -> str:
    return ", ".join(app.get_key_display(Binding(k, "")) for k in key.split(","))


def screen_name(screen: Screen) -> str:
    """What a person calls the screen: its title, a dialog's question, never its Python class."""
    for attr in ("TITLE_TEXT", "HELP_NAME", "FORM_TITLE", "title_text"):
        name = getattr(screen, attr, "")
        if isinstance(name, str) and name:
            return name
    return "dialog" if screen.is_modal else "screen"


_WIDGET_WORDS = ((DataTable, "table"), (Tree, "tree"), (TextArea, "editor"), (Input, "text field"),
                 (OptionList, "list"), (RichLog, "log"), (Select, "choice"), (Switch, "switch"),
                 (Button, "button"))


def widget_name(node) -> str:
    """A focused widget in words ("table (CHILD SAs)"), its title when it has one."""
    kind = next((word for cls, word in _WIDGET_WORDS if isinstance(node, cls)), "field")
    title = getattr(node, "border_title", None)
    return f"{kind} ({title})" if title else kind


def binding_rows(screen: Screen) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(group title, [(keys, description, binding id)]) for ``screen``, keymap applied."""
    app = screen.app
    groups: list[tuple[str, list[tuple[str, str, str]]]] = []
    seen: set[tuple[str, str]] = set()
    chain = screen._binding_chain
    if not any(node is screen for node, _ in chain):
        chain = [(screen, screen._bindings)] + chain
    for node, bindings_map in chain:
        rows: list[tuple[str, str, str]] = []
        by_action: dict[tuple[str, str], list[str]] = {}
        info: dict[tuple[str, str], Binding] = {}
        for key, bindings in bindings_map.key_to_bindings.items():
            for b in bindings:
                # Ours carry ids (remappable); Textual's own widget keys (cursor moves) are left out.
                if not b.description or b.system or not b.id:
                    continue
                # Keys of one binding id share a row; two ids never do (? and F1: the row named only
                # F1's id, and a keymap of it moved F1 and left ? where it was).
                ident = (b.action, b.description, b.id)
                by_action.setdefault(ident, []).append(key)
                info[ident] = b
        merged: dict[tuple[str, str], int] = {}
        for ident, keys in by_action.items():
            if ident in seen:
                continue
            seen.add(ident)
            b = info[ident]
            row = (", ".join(_key_display(app, k) for k in keys), b.description, b.id or "")
            # One key with a label per state (space: Pause, Resume; the footer shows the one that
            # applies) is one binding: one row.
            at = merged.setdefault((row[0], row[2]), len(rows))
            if at < len(rows):
                rows[at] = (row[0], f"{rows[at][1]} / {row[1]}", row[2])
            else:
                rows.append(row)
        if not rows:
            continue
        if node is app:
            title = "Everywhere"
        elif node is screen:
            title = f"This screen ({screen_name(screen)})"
        else:
            title = f"In the focused {widget_name(node)}"
        groups.append((title, rows))
    order = {"This": 0, "In": 1, "Everywhere": 2}
    return sorted(groups, key=lambda g: order.get(g[0].split()[0], 1))


class HelpScreen(QuietWhenRemoved, ModalScreen[None]):
    """See the module docstring. Escape, q or ? closes it."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
        background: $background 60%;
    }
    HelpScreen #help-box {
        width: 90;
        max-width: 98%;
        height: 90%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    """
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close", id="help.close")]

    def __init__(self, target: Screen) -> None:
        super().__init__()
        self.target = target

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box") as box:
            box.border_title = "Keys (Escape closes)"
            yield Static(self._content(), id="help-text")

    def _content(self) -> Group:
        parts: list = []
        for title, rows in binding_rows(self.target) + [("Screens and text fields", [
                ("1-7", NAV, ""),
                ("Escape", "leave a text field (then 1-7 and the other keys work again)", ""),
                ("ctrl+p", "every action and connection, searchable", "")])]:
            parts.append(Text(title, style="bold underline"))
            table = Table.grid(padding=(0, 2))
            table.add_column(style="bold", no_wrap=True, min_width=10)
            table.add_column(ratio=1)
            table.add_column(style="dim", no_wrap=True)
            for keys, description, ident in rows:
                table.add_row(keys, description, ident)
            parts += [table, Text("")]
        parts.append(Text("Remap keys", style="bold underline"))
        parts.append(Text(f"In {config_dir() / 'settings.toml'}, binding id = keys:\n"
                          '[keymap]\n"dashboard.initiate" = "I"\n"logs.export" = "e,ctrl+e"'))
        return Group(*parts)

    def on_mount(self) -> None:
        self.query_one("#help-box").focus()  # arrows and page keys scroll

    def action_dismiss(self, result=None) -> None:
        self.dismiss(None)
