"""Two exports in a row never write over each other: their names are stamped to the second, so the
second export of a ladder or log within that second replaced the first (and a file of the admin's
that happened to bear the name was replaced too)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

from console.export import deliver


class _App:
    def __init__(self, folder: Path) -> None:
        self.settings = SimpleNamespace(export_dir=str(folder))
        self.is_web = False
        self.delivered: list[Path] = []
        self.done = threading.Event()

    def deliver_text(self, stream, *, save_directory, save_filename, **kw) -> None:
        # what Textual's local driver does: open(path, "w") and write
        path = Path(save_directory) / save_filename
        path.write_text(stream.read())
        self.delivered.append(path)

    def call_from_thread(self, fn, *args):
        return fn(*args)

    def post_message(self, message) -> None:
        self.delivered.append(message.path)
        self.done.set()


def test_two_exports_of_one_name_make_two_files(tmp_path):
    app = _App(tmp_path)
    (tmp_path / "ladder.txt").write_text("the admin's own notes\n")
    deliver(app, "first\n", "ladder.txt", "ladder")
    deliver(app, "second\n", "ladder.txt", "ladder")
    assert (tmp_path / "ladder.txt").read_text() == "the admin's own notes\n"
    assert [p.name for p in app.delivered] == ["ladder-2.txt", "ladder-3.txt"]
    assert [p.read_text() for p in app.delivered] == ["first\n", "second\n"]


def test_a_binary_export_gets_a_free_name_too(tmp_path):
    app = _App(tmp_path)
    (tmp_path / "capture.pcap").write_bytes(b"old")
    deliver(app, b"new", "capture.pcap", "pcap")
    assert app.done.wait(10)
    assert (tmp_path / "capture.pcap").read_bytes() == b"old"
    assert app.delivered == [tmp_path / "capture-2.pcap"] and app.delivered[0].read_bytes() == b"new"


def test_a_failed_binary_export_leaves_no_file(tmp_path, monkeypatch):
    import builtins

    import console.export as export

    app = _App(tmp_path)
    failures = []
    app.post_message = lambda message: (failures.append(message), app.done.set())
    real_open = builtins.open

    def full_disk(path, mode="r", *a, **kw):
        if "w" in mode and str(path).startswith(str(tmp_path)):
            f = real_open(path, mode, *a, **kw)
            f.write(b"half")
            f.close()
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr(export, "open", full_disk, raising=False)
    deliver(app, b"data", "capture.pcap", "pcap")
    assert app.done.wait(10)
    assert failures and not list(tmp_path.iterdir())
