"""Escape and a symbol key typed after it, in one read (tmux's escape-time, a fast typist over ssh):
Textual's parser read ESC / as "/" alone, the Escape dropped (it keeps alt+ only on letters and
digits), so Escape, / in the log search typed "/" into the search instead of leaving it."""

from __future__ import annotations

import string
import time

import pytest

from .conftest import make_app, ready, wait_for
from .test_keys_in_order import terminal_bytes

WORD_MOVES = {"b", "f"}
"""ESC b / ESC f are word moves (readline, macOS Option+arrows): Textual reads them as ctrl+left/right."""
INTRODUCERS = set("[]\\_^")
"""ESC [, ESC ] ... open an escape sequence: unplaced, their ESC stays dropped (console.app.SEQUENCE_INTRODUCERS)."""


@pytest.mark.parametrize("char", [c for c in string.printable if c.isprintable() and c not in WORD_MOVES | INTRODUCERS])
def test_escape_then_any_printable_key_in_one_read_is_escape_then_that_key(char):
    from textual import constants
    from textual._xterm_parser import XTermParser
    from textual.keys import _character_to_key

    from console.app import keep_escape_before_symbols, read_escape_digits_as_alt, split_escape

    read_escape_digits_as_alt()
    keep_escape_before_symbols()
    parser = XTermParser()
    events = list(parser.feed("\x1b" + char))
    time.sleep(constants.ESCAPE_DELAY + 0.02)
    events += parser.tick()
    assert len(events) == 1, events
    keys = split_escape(events[0])
    assert keys is not None, events[0]
    name = char if char.isalnum() else _character_to_key(char)
    assert [(k.key, k.character) for k in keys] == [("escape", "\x1b"), (name, char)]


async def test_escape_slash_and_escape_question_mark_from_the_log_search():
    from console.screens.help import HelpScreen
    from console.screens.logs import LogsScreen

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("4")
        await wait_for(pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen.ready, what="logs")
        await pilot.press("slash", *"ike")
        field = app.screen.query_one("#log-text")
        terminal_bytes(app, "\x1b/")  # Escape leaves the search, / comes back to it
        await pilot.pause(0.3)
        assert field.value == "ike" and app.focused is field
        terminal_bytes(app, "\x1b?")  # Escape leaves the search, ? opens the help
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        assert field.value == "ike"
