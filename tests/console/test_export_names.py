"""Export file names: a connection name with a path separator stays one file in the export folder."""

from __future__ import annotations

from pathlib import Path

from console.export import stamped


def test_a_connection_name_with_a_slash_is_one_file_name():
    # "a/b" and "../x" are valid connection names (1 to 64 characters without spaces).
    for conn in ("a/b", "../../etc/x", "c\\\\d", "e\x1bf"):
        name = stamped(f"ipsec-console-{conn}-3", ".txt", now=0)
        folder = Path("/exports")
        assert (folder / name).parent == folder, name
        assert "/" not in name and "\\" not in name and "\x1b" not in name
        assert name.startswith("ipsec-console-") and name.endswith(".txt")


def test_an_ordinary_name_is_unchanged():
    assert stamped("ipsec-console-branch-12", ".txt", now=0).startswith("ipsec-console-branch-12-")
