"""Console fixes re-done in the eleventh session (each test failed before its fix)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from console.app import ConsoleApp
from console.runtime.fake import FakeRuntime

from .conftest import ready, screen_text, wait_for

T0 = datetime(2031, 3, 1, 9, 30, tzinfo=timezone.utc)


def clock() -> datetime:
    return T0


def test_lab_ca_folder_created_with_its_parents(tmp_path, monkeypatch):
    """The lab's CA folder lives in the user's data folder, which a fresh account lacks: creating
    the CA creates the folders above it too (it said "cannot create folder")."""
    from console.widgets.pki_folder import InitRequest, change, lab_pki_dir

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "fresh" / "share"))
    d = lab_pki_dir()
    assert not d.parent.exists()
    out = change(d, clock, "init", InitRequest("O=Lab, CN=Lab CA"))
    assert out.error == ""
    assert (d / "ca.crt").is_file()


async def test_packets_footer_says_resume_while_paused():
    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("5")
        await wait_for(pilot, lambda: app.screen.query("#pk-samples"), what="packets")
        await pilot.pause()
        footer = screen_text(app).splitlines()[-1]
        assert "Pause" in footer and "Resume" not in footer
        await pilot.press("space")
        await pilot.pause()
        assert app.screen.paused
        footer = screen_text(app).splitlines()[-1]
        assert "Resume" in footer and "Pause" not in footer
        await pilot.press("space")
        await pilot.pause()
        assert not app.screen.paused
        assert "Pause" in screen_text(app).splitlines()[-1]


async def test_quit_after_save_without_apply_is_not_called_losing_edits(tmp_path):
    """Saved, not applied: nothing is lost by quitting (the file holds it); the question says what
    is pending instead of "Quit and lose this?"."""
    from textual.widgets import TextArea

    from console.screens.confirm import ConfirmScreen

    from .test_policies import _open, _type_at_end

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        editor = screen.query_one("#pol-editor", TextArea)
        editor.load_text(editor.text.replace('dpd_delay = "30s"', 'dpd_delay = "45s"'))
        await _type_at_end(pilot, screen, "\n")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.file_text == editor.text, what="saved")
        screen.query_one("#pol-tree").focus()
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="quit guard")
        title = app.screen.title_text
        assert "lose" not in title and "not applied" in title
        await pilot.press("n")
        # Unsaved edits are still a loss, and called so.
        editor.load_text(editor.text.replace('dpd_delay = "45s"', 'dpd_delay = "50s"'))
        await _type_at_end(pilot, screen, "\n")
        screen.query_one("#pol-tree").focus()
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="quit guard")
        assert app.screen.title_text == "Quit and lose this?"
