"""What every console screen shares: top bar, lab banner, footer, and how it
hears about store changes."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from console.widgets.chrome import LabBanner, TopBar
from console.widgets.mounting import QuietWhenRemoved


class ConsoleScreen(QuietWhenRemoved, Screen):
    """Base of the mode screens. Subclasses compose ``body()`` and implement ``sync(parts)``."""

    TITLE_TEXT = ""
    MODE = ""
    """The app mode this screen is the base of (highlighted in the navigation strip)."""
    ready = False
    """Set once mounted: the app only forwards store changes to a ready screen."""

    def compose(self) -> ComposeResult:
        app = self.app
        yield TopBar(app.runtime.label, app.runtime.kind, id="topbar")
        if app.runtime.kind == "lab":
            yield LabBanner(app.runtime.label, id="lab-banner")
        yield from self.body()
        yield Footer(compact=True, show_command_palette=False)

    def body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        bar = self.query_one(TopBar)
        bar.screen_title = self.TITLE_TEXT
        bar.mode = self.MODE
        self.ready = True

    def on_screen_resume(self) -> None:
        # Catch up on what changed while another screen was shown.
        self.sync_all()

    def sync_all(self) -> None:
        self.sync(frozenset({"status", "logs", "negotiations", "alerts", "counters", "samples", "sas", "policy"}))

    def sync(self, parts: frozenset[str]) -> None:
        """Update reactives from ``self.app.store`` for the parts that changed."""
        if "status" in parts:
            self.query_one(TopBar).snapshot = self.app.store.snapshot
