"""Output files of import, export and doc: a missing folder is named before anything is written (it
was an errno naming a temporary file, or the secrets file written and the policy not), and export
never writes over an existing file (an earlier export, or anything else) without --force."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from console.cli import main
from engine.policy.samples import sample_path


@pytest.fixture
def policy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("site-to-site.toml", "site-to-site.secrets.toml"):
        shutil.copy(sample_path(name), tmp_path / name)
    (tmp_path / "site-to-site.secrets.toml").chmod(0o600)
    return tmp_path / "site-to-site.toml"


@pytest.mark.parametrize("args, missing", [
    (["export", "site-to-site.toml", "-o", "nope/gw.conf"], "nope"),
    (["export", "site-to-site.toml", "--secrets", "nope/s.conf", "-o", "gw.conf"], "nope"),
    (["export", "site-to-site.toml", "--secrets", "s.conf", "-o", "no/such/gw.conf"], "no/such"),
    (["doc", "site-to-site.toml", "-o", "nope/doc.md"], "nope"),
    (["import", "gw.conf", "-o", "nope/x.toml"], "nope"),
    (["import", "gw.conf", "-o", "x.toml", "--secrets", "nope/x.secrets.toml"], "nope"),
])
def test_a_missing_output_folder_is_named_and_nothing_is_written(policy, capsys, args, missing):
    Path("gw.conf").write_text("connections {\n}\n")
    before = set(Path(".").iterdir())
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"the folder {missing} does not exist" in err and "Traceback" not in err, err
    assert set(Path(".").iterdir()) == before


def test_export_never_replaces_an_existing_file_without_force(policy, capsys):
    assert main(["export", "site-to-site.toml", "-o", "gw.conf", "--secrets", "gw.secrets.conf"]) == 0
    first = Path("gw.conf").read_text()
    Path("gw.secrets.conf").write_text("# kept\n")
    capsys.readouterr()
    assert main(["export", "site-to-site.toml", "-o", "gw.conf", "--secrets", "gw.secrets.conf"]) == 1
    err = capsys.readouterr().err
    assert "gw.secrets.conf exists (use --force" in err and "nothing was written" in err, err
    assert Path("gw.secrets.conf").read_text() == "# kept\n" and Path("gw.conf").read_text() == first
    assert main(["export", "site-to-site.toml", "-o", "gw.conf", "--secrets", "other.conf"]) == 1
    assert not Path("other.conf").exists()  # refused before the secrets were written
    assert main(["export", "site-to-site.toml", "-o", "gw.conf", "--secrets", "gw.secrets.conf", "--force"]) == 0
    assert Path("gw.secrets.conf").read_text() != "# kept\n"
