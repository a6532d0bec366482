"""engine.ops.state.write_private: the usage key and records are secrets' neighbours, so the
temporary file they go through is always new, never a planted link or a stale file's mode."""

from __future__ import annotations

import os
import stat

from engine.ops.state import write_private


def _tmp_of(path):
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def test_a_link_planted_at_the_temporary_name_is_not_written_through(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    path = tmp_path / "usage.key"
    _tmp_of(path).symlink_to(target)
    write_private(path, b"secret key bytes")
    assert target.read_bytes() == b"untouched"
    assert path.read_bytes() == b"secret key bytes"
    assert not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_stale_temporary_file_does_not_lend_its_mode(tmp_path):
    path = tmp_path / "usage.json"
    stale = _tmp_of(path)
    stale.write_bytes(b"left by a crash")
    stale.chmod(0o644)
    write_private(path, b"{}")
    assert path.read_bytes() == b"{}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not stale.exists()


def test_replacing_keeps_only_the_new_content(tmp_path):
    path = tmp_path / "usage.json"
    write_private(path, b"one")
    write_private(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["usage.json"]
