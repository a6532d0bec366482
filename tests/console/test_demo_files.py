"""`python3 -m console.demo` writes its policy and PKI files to a folder of its own: gone when the
console quits (every run used to leave an ipsec-console-demo-* folder in /tmp)."""

from __future__ import annotations

import os

import pytest

import console.demo as demo


@pytest.mark.parametrize("fails", [False, True])
def test_the_demo_folder_is_removed_when_the_console_quits(monkeypatch, fails):
    folders = []
    make = demo.demo_runtime

    def recording(folder, *a, **kw):
        folders.append(folder)
        return make(folder, *a, **kw)

    def fake_main(*, runtime):
        assert os.path.isfile(os.path.join(folders[0], "gateway.toml"))  # there while the console runs
        if fails:
            raise RuntimeError("the terminal went away")
        return 0

    monkeypatch.setattr(demo, "demo_runtime", recording)
    monkeypatch.setattr(demo, "main", fake_main)
    if fails:
        with pytest.raises(RuntimeError):
            demo.run()
    else:
        assert demo.run() == 0
    assert folders and not os.path.exists(folders[0])
