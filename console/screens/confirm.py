"""A yes/no modal: every action that changes SAs is confirmed here first."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from engine.printable import escape

from console.widgets.fields import Press, focus_now
from console.widgets.mounting import QuietWhenRemoved


class ConfirmScreen(QuietWhenRemoved, ModalScreen[bool]):
    """Ask before acting. ``y``/Enter on Yes confirms, ``n``/Escape cancels."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, title: str, body: str, *, yes: str = "Yes", danger: bool = False) -> None:
        super().__init__()
        # Questions name peers (identities, CA subjects): no control character of theirs reaches the
        # terminal (markup=False below keeps their brackets inert; Textual passes ESC through).
        self.title_text = _inert(title)
        self.body_text = _inert(body)
        self.yes_label = yes
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.title_text, id="dialog-title", markup=False)
            yield Static(self.body_text, id="dialog-body", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield _Answer(f"{self.yes_label} (y)", id="yes", variant="error" if self.danger else "primary")
                yield _Answer("Cancel (n)", id="no")

    def on_mount(self) -> None:
        # Not query_one: when the app quits while this screen mounts, its buttons may be gone.
        for button in self.query("#no").results(Button):
            focus_now(button)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_answer(event.button.id == "yes")  # a click

    def action_answer(self, value: bool) -> None:
        if self.is_current:  # once (Enter, then y in the same burst)
            self.dismiss(value)


def _inert(text: str) -> str:
    return "\n".join(escape(line) for line in text.split("\n"))


class _Answer(Press):
    def action_press(self) -> None:
        # Enter answers as it is handled, not once a Pressed message got round: the keys typed after
        # it (already queued here) then find the dialog closed and go to the screen underneath.
        self.screen.action_answer(self.id == "yes")
