"""Small keyboard-first dialogs of the policy editor: a name, a file (with a
template), a pre-shared key. Enter accepts, Escape cancels; each says what is
wrong in place instead of closing."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from console.widgets.fields import Choices, Field, focus_now
from console.widgets.mounting import QuietWhenRemoved


class _Dialog(QuietWhenRemoved, ModalScreen):
    DEFAULT_CSS = """
    _Dialog, TextPrompt, NewFileDialog, PskDialog {
        align: center middle;
        background: $background 60%;
    }
    .dialog-box {
        width: 70;
        max-width: 96%;
        height: auto;
        max-height: 95%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    .dialog-title {
        text-style: bold;
        margin-bottom: 1;
    }
    .dialog-help {
        color: $text-muted;
    }
    .dialog-error {
        color: $error;
        height: auto;
    }
    .dialog-box Input {
        margin-bottom: 1;
    }
    .dialog-box OptionList {
        height: auto;
        max-height: 8;
        margin-bottom: 1;
    }
    """
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="dialog.cancel"),
        # Priority: Enter accepts from a field or a list alike (the field would take it as submit).
        Binding("enter", "enter", "OK", priority=True, id="dialog.accept"),
    ]

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_enter(self) -> None:
        # A priority binding runs as soon as the app sees the key, while the characters typed just
        # before it may still wait in the focused field's queue: accept behind them, not before.
        self._accept_behind(self.focused)

    def _accept_behind(self, widget) -> None:
        (widget or self).call_later(self._accept_if_current, widget)

    def _accept_if_current(self, queued_at) -> None:
        if not self.is_active:  # not twice (Enter, Enter)
            return
        if self.focused is not None and self.focused is not queued_at:
            # Focus moved meanwhile (Tab, the PSK dialog's first Enter): the keys typed before this
            # Enter went on to the focused field (fields.py); accept behind them there.
            self._accept_behind(self.focused)
            return
        self.action_accept()

    def action_accept(self) -> None:
        raise NotImplementedError

    def _error(self, text: str) -> None:
        self.query_one(".dialog-error", Static).update(text)


class TextPrompt(_Dialog):
    """Ask for one line of text. ``check(text)`` returns an error to show, or "" to accept."""

    def __init__(self, title: str, help_text: str, value: str = "", *,
                 check: Callable[[str], str] | None = None, placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.help_text = help_text
        self.value = value
        self.check = check
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Static(self.help_text, classes="dialog-help", markup=False)
            yield Field(self.value, placeholder=self.placeholder, id="prompt-input", compact=True)
            yield Static("", classes="dialog-error")
            yield Static("Enter: OK   Escape: cancel", classes="dialog-help")

    def on_mount(self) -> None:
        focus_now(self.query_one(Input))

    def action_accept(self) -> None:
        text = self.query_one(Input).value.strip()
        problem = self.check(text) if self.check is not None else ("" if text else "type something first")
        if problem:
            self._error(problem)
            return
        self.dismiss(text)


class NewFileDialog(_Dialog):
    """A path for a new policy file and the template it starts from (or Save as: no template)."""

    def __init__(self, title: str, path: str, templates: list[tuple[str, str]] | None,
                 check: Callable[[str], str], note: Callable[[str], str] | None = None) -> None:
        """``templates``: (label, key) pairs, or None for Save as (the current text is kept).
        ``note(path)``: a line about the typed path (Save as: the secrets file the copy reads)."""
        super().__init__()
        self.title_text = title
        self.path = path
        self.templates = templates
        self.check = check
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Static("File (a new path; relative to the folder you started in):", classes="dialog-help")
            yield Field(self.path, id="file-path", compact=True)
            if self.note is not None:
                yield Static(self.note(self.path), id="file-note", classes="dialog-help", markup=False)
            if self.templates is not None:
                yield Static("Start from (↑/↓):", classes="dialog-help")
                yield Choices(*(Option(label, id=key) for label, key in self.templates), id="file-template")
            yield Static("", classes="dialog-error")
            yield Static("Enter: OK   Tab: next field   Escape: cancel", classes="dialog-help")

    def on_mount(self) -> None:
        path = self.query_one("#file-path", Input)
        focus_now(path)
        path.cursor_position = len(path.value)
        if self.templates is not None:
            self.query_one(OptionList).highlighted = 0

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.note is not None and event.input.id == "file-path":
            self.query_one("#file-note", Static).update(self.note(event.value.strip()))

    def action_accept(self) -> None:
        path = self.query_one("#file-path", Input).value.strip()
        problem = self.check(path)
        if problem:
            self._error(problem)
            return
        template = None
        if self.templates is not None:
            options = self.query_one(OptionList)
            index = options.highlighted if options.highlighted is not None else 0
            template = self.templates[index][1]
        self.dismiss((path, template))


class PskDialog(_Dialog):
    """Type a pre-shared key twice. It is handed to the writer and never shown again."""

    def __init__(self, connection: str, where: str, ids: list[str]) -> None:
        super().__init__()
        self.connection = connection
        self.where = where
        self.ids = ids

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(f"Pre-shared key for {self.connection}", classes="dialog-title", markup=False)
            who = " and ".join(self.ids) if self.ids else "any identity"
            yield Static(f"Written to {self.where} (mode 0600) for {who}; it is never shown again. "
                         "Use 20 or more random characters.", classes="dialog-help", markup=False)
            yield Field(password=True, placeholder="key", id="psk-1", compact=True)
            yield Field(password=True, placeholder="the same key again", id="psk-2", compact=True)
            yield Static("", classes="dialog-error")
            yield Static("Enter: write   Escape: cancel", classes="dialog-help")

    def on_mount(self) -> None:
        focus_now(self.query_one("#psk-1", Input))

    def action_accept(self) -> None:
        first = self.query_one("#psk-1", Input)
        second = self.query_one("#psk-2", Input)
        if not first.value:
            self._error("type the key")
            self.set_focus(first)
            return
        # set_focus, not focus(): that waits for the app's queue, and the keys typed after this
        # Enter must find the second field focused when they come out of the first's queue.
        if self.focused is first and not second.value:
            self.set_focus(second)
            return
        if first.value != second.value:
            self._error("the two entries differ: type the key again")
            second.value = ""
            self.set_focus(second)
            return
        secret = first.value
        first.value = second.value = ""  # the widgets no longer hold it
        self.dismiss(secret)


class AddDialog(_Dialog):
    """What to add (connection, CHILD SA config of a connection, rule, pool) and its name."""

    def __init__(self, choices: list[tuple[str, tuple]], suggest: Callable[[tuple], str],
                 check: Callable[[tuple, str], str]) -> None:
        """``choices``: (label, node prefix) pairs, most likely first; the name completes the node.
        ``suggest(prefix)`` proposes a free name; ``check(prefix, name)`` returns an error or ""."""
        super().__init__()
        self.choices = choices
        self.suggest = suggest
        self.check = check
        self._suggested = ""
        """The name last put in for the kind highlighted (a name typed over it is the admin's)."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Add to the policy", classes="dialog-title")
            yield Choices(*(Option(label) for label, _ in self.choices), id="add-kind")
            yield Static("Name (letters, digits, - _ .):", classes="dialog-help")
            yield Field(id="add-name", compact=True)
            yield Static("", classes="dialog-error")
            yield Static("↑/↓: what   Tab: name   Enter: add   Escape: cancel", classes="dialog-help")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = 0
        focus_now(options)
        self._suggest(0)
        # The name for the kind chosen is put in as the highlight moves (a watch runs then), not when
        # the OptionHighlighted message comes round: Down, Tab and a name typed in one burst had the
        # name typed first, then the suggestion over it ("hq-dc2new-connection").
        self.watch(options, "highlighted", self._highlighted, init=False)

    def _suggest(self, index: int) -> None:
        field = self.query_one("#add-name", Input)
        field.value = self._suggested = self.suggest(self.choices[index][1])
        field.cursor_position = len(field.value)  # ctrl+u then clears it all, typing goes after it

    def _highlighted(self, index: int | None) -> None:
        if index is not None:
            # A name typed by the admin stays when they go back to change the kind: only our own
            # suggestion (or nothing) gives way to the next one.
            if self.query_one("#add-name", Input).value.strip() in ("", self._suggested):
                self._suggest(index)
            self._error("")

    def action_accept(self) -> None:
        index = self.query_one(OptionList).highlighted or 0
        prefix = self.choices[index][1]
        name = self.query_one("#add-name", Input).value.strip()
        problem = self.check(prefix, name)
        if problem:
            self._error(problem)
            return
        self.dismiss(prefix + (name,))
