"""Console test helpers: an app on the FakeRuntime, isolated settings, frozen time."""

from __future__ import annotations

import asyncio
import time

import pytest

from console.app import ConsoleApp
from console.runtime.fake import FakeRuntime


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test reads or writes the real ~/.config or ~/.local/share; clocks render in UTC."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    time.tzset()


def make_app(runtime: FakeRuntime | None = None, tmp_path=None, **kwargs) -> ConsoleApp:
    rt = runtime or FakeRuntime()
    return ConsoleApp(rt, **kwargs)


async def wait_for(pilot, predicate, timeout: float = 5.0, what: str = "condition") -> None:
    """Let the app run until ``predicate()`` holds (fails the test after ``timeout``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def ready(pilot) -> None:
    """Wait for the first status snapshot and the scripted start-up events."""
    app = pilot.app
    await wait_for(pilot, lambda: app.store.snapshot is not None and app.store.logs, what="first status")
    await pilot.pause()


def screen_text(app) -> str:
    """Everything the current screen shows, as plain text (what a person reads)."""
    lines = []
    for strip in app.screen._compositor.render_strips():
        lines.append("".join(seg.text for seg in strip))
    return "\n".join(lines)


def steady_cursors(app) -> None:
    """Stop text cursors blinking, so a snapshot does not depend on when it was taken."""
    from textual.widgets import Input, TextArea

    for screen in app.screen_stack:
        for widget in screen.query("Input, TextArea"):
            if isinstance(widget, (Input, TextArea)):
                widget.cursor_blink = False
