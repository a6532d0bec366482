"""import and export without --force never replace a file, even one that appears between the check
and the write (another export, an editor)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import console.cli_ops as cli_ops
from console.cli import main

CONF = """\
connections {
  a {
    remote_addrs = 192.0.2.2
    local {
      auth = psk
      id = a.example
    }
    remote {
      auth = psk
      id = b.example
    }
    children {
      c {
        local_ts = 198.51.100.0/25
        remote_ts = 198.51.100.128/25
      }
    }
  }
}
secrets {
  ike-office {
    id-1 = a.example
    secret = 0x0123456789abcdef0123456789abcdef
  }
}
"""


def _late_writer(monkeypatch, path: Path, text: str) -> None:
    """Every existence check says no; the file appears just after it (the race)."""
    real = os.path.lexists

    def lexists(p):
        if Path(p).absolute() == path and not real(p):
            path.write_text(text)
            return False
        return real(p)

    monkeypatch.setattr(os.path, "lexists", lexists)
    monkeypatch.setattr(Path, "exists", lambda self, **kw: False)


def test_a_file_that_appears_after_the_check_is_not_replaced(tmp_path, monkeypatch):
    target = tmp_path / "out.conf"
    _late_writer(monkeypatch, target, "someone else's\n")
    cli_ops._check_outputs([str(target)], False)
    with pytest.raises(FileExistsError):
        cli_ops._write(str(target), "ours\n", force=False)
    assert target.read_text() == "someone else's\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.conf"]  # no temporary file left


def test_exclusive_writes_keep_their_modes(tmp_path):
    cli_ops._write(str(tmp_path / "s.conf"), "secret\n", mode=0o600, force=False)
    cli_ops._write(str(tmp_path / "p.conf"), "policy\n", force=False)
    assert (tmp_path / "s.conf").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "p.conf").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "s.conf").read_text() == "secret\n" and (tmp_path / "p.conf").read_text() == "policy\n"


def test_import_losing_the_race_for_the_policy_leaves_no_new_secrets_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "gw.conf").write_text(CONF)
    monkeypatch.chdir(tmp_path)
    _late_writer(monkeypatch, tmp_path / "gw.toml", "# the admin's policy\n")
    assert main(["import", "gw.conf", "-o", "gw.toml"]) == 1
    assert (tmp_path / "gw.toml").read_text() == "# the admin's policy\n"
    assert not (tmp_path / "gw.secrets.toml").exists()
    assert "exists" in capsys.readouterr().err


def test_without_hard_links_the_file_is_still_created_only_if_new(tmp_path, monkeypatch):
    def no_link(*a, **kw):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    cli_ops._write(str(tmp_path / "s.conf"), "secret\n", mode=0o600, force=False)
    assert (tmp_path / "s.conf").read_text() == "secret\n" and (tmp_path / "s.conf").stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        cli_ops._write(str(tmp_path / "s.conf"), "other\n", mode=0o600, force=False)
    assert (tmp_path / "s.conf").read_text() == "secret\n"
    assert [p.name for p in tmp_path.iterdir()] == ["s.conf"]


@pytest.mark.parametrize("opt", ["-o", "--secrets"])
@pytest.mark.parametrize("name", ["sub/", "existing"])
def test_an_output_that_names_a_folder_is_refused(tmp_path, monkeypatch, capsys, opt, name):
    """`--secrets sub/` wrote the secrets to a file `sub`; an existing folder was told to use --force,
    which then failed with EISDIR."""
    from engine.policy.samples import sample_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    other = ["--secrets", "s.conf"] if opt == "-o" else ["-o", "x.conf"]
    for force in ([], ["--force"]):
        assert main(["export", str(sample_path("site-to-site.toml")), opt, name, *other, *force]) == 1
        assert "is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert not list((tmp_path / "existing").iterdir())
