"""Review of con16's keep_escape_before_symbols: Textual reissues an escape sequence it does not know
(a terminal's reply, a key it has no name for, a sequence cut by a slow link past ESCDELAY) as keys,
with the ESC as alt on the next character. con16 made alt+ stick to symbols too, so the "[" of an
unknown CSI, the "]" of an OSC reply and the "\\" of its string terminator became Escape + that key:
a stray reply pressed Escape (a form left, a dialog cancelled). Before con16 that ESC was dropped;
it is again for the characters that open or close an escape sequence (nothing binds them)."""

from __future__ import annotations

import time

import pytest


def _keys(data: str):
    from textual import constants
    from textual._xterm_parser import XTermParser

    from console.app import keep_escape_before_symbols, read_escape_digits_as_alt

    read_escape_digits_as_alt()
    keep_escape_before_symbols()
    parser = XTermParser()
    events = list(parser.feed(data))
    time.sleep(constants.ESCAPE_DELAY + 0.02)
    return events + list(parser.tick())


@pytest.mark.parametrize("data", [
    "\x1b[?1;2c",                      # a device attributes reply
    "\x1b[>41;400;0c",                 # a secondary one
    "\x1b[?u",                         # a kitty keyboard flags reply
    "\x1b]11;rgb:1111/2222/3333\x07",  # a colour reply ended by BEL
    "\x1b]11;rgb:1111/2222/3333\x1b\\",  # ... and by ST
    "\x1b[<0;10",                      # a mouse report cut by a slow link
    "\x1b_Gi=1;OK\x1b\\",              # an APC (kitty graphics) reply
])
def test_an_unknown_escape_sequence_does_not_press_escape(data):
    from console.app import split_escape

    keys = [e for e in _keys(data) if hasattr(e, "key")]
    assert not [e for e in keys if split_escape(e) is not None or e.key == "escape"], keys


def test_escape_then_a_symbol_still_splits():
    from console.app import split_escape

    (event,) = _keys("\x1b/")
    assert [k.key for k in split_escape(event)] == ["escape", "slash"]
