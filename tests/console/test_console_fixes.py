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
