"""What an admin met at 80x24 in tmux, on the demo and on a daemon beside strongSwan (sixteenth
session's tour, helper ux17)."""

from __future__ import annotations

from console.app import ConsoleApp
from console.runtime.fake import FakeRuntime

from .conftest import wait_for
from .test_console_fixes import burst
from .test_policies import _open


async def test_a_form_field_typed_then_tabbed_past_in_one_burst_keeps_its_text(tmp_path):
    """A form field's text typed fast and Tab in one burst (a typist over ssh, tmux send-keys) was
    dropped: the field's Changed message came round once focus had moved on, and the form took only
    edits of the focused field. Local ID shown "hq.example.org" on screen, but not in the file."""
    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        await wait_for(pilot, lambda: screen.query("#f-dpd_delay") and screen.query("#f-rekey_time"),
                       what="the form")
        field = screen.query_one("#f-dpd_delay")
        field.focus()
        field.cursor_position = len(field.value)
        await pilot.pause()
        burst(app, "backspace", "backspace", "backspace", *"45s", "tab", *"2h", "tab")
        await wait_for(pilot, lambda: 'dpd_delay = "45s"' in screen._text(), timeout=2,
                       what="dpd_delay = 45s in the text")
        await wait_for(pilot, lambda: 'rekey_time = "2h"' in screen._text(), timeout=2,
                       what="rekey_time = 2h in the text")
