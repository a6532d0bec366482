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
