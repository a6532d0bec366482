"""import, export and doc never write over their own input nor write both outputs to one file: `export
p.toml -o p.toml` replaced the policy with swanctl.conf syntax, `export -o X --secrets X` wrote the
secrets and then a swanctl.conf over them that includes itself, `import -o X --secrets X` wrote the
secrets as X and then refused the policy ("X exists")."""

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


@pytest.mark.parametrize("args", [
    ["export", "site-to-site.toml", "-o", "site-to-site.toml"],
    ["export", "site-to-site.toml", "-o", "./site-to-site.toml"],
    ["export", "site-to-site.toml", "--secrets", "site-to-site.toml"],
    ["doc", "site-to-site.toml", "-o", "site-to-site.toml"],
])
def test_an_output_that_is_the_input_is_refused(policy, capsys, args):
    before = policy.read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "site-to-site.toml" in err and "is also" in err, err
    assert policy.read_bytes() == before and not Path(f"{policy}.bak").exists()


def test_export_to_one_file_for_conf_and_secrets_is_refused(policy, capsys):
    assert main(["export", "site-to-site.toml", "-o", "out.conf", "--secrets", "out.conf"]) == 2
    assert "out.conf" in capsys.readouterr().err and not Path("out.conf").exists()


def test_import_to_one_file_for_policy_and_secrets_is_refused(policy, capsys):
    assert main(["export", "site-to-site.toml", "-o", "gw.conf", "--secrets", "gw.secrets.conf"]) == 0
    capsys.readouterr()
    assert main(["import", "gw.conf", "-o", "x.toml", "--secrets", "x.toml"]) == 2
    assert "x.toml" in capsys.readouterr().err and not Path("x.toml").exists()
    assert main(["import", "gw.conf", "-o", "gw.conf", "--force"]) == 2
    assert Path("gw.conf").read_text().startswith("# swanctl.conf written by ipsec-console export")
    assert main(["import", "gw.conf", "-o", "x.toml"]) == 0  # different files: fine


@pytest.mark.parametrize("value", ["nan", "-1", "abc"])
def test_initiate_timeout_must_be_a_number_of_seconds(value, capsys):
    """--timeout nan was taken (and reported "no outcome within nans"); a negative one too."""
    with pytest.raises(SystemExit) as exit_:
        main(["initiate", "c", "--timeout", value, "--control", "/nonexistent/control.sock"])
    assert exit_.value.code == 2
    assert "--timeout" in capsys.readouterr().err


def test_a_mistyped_command_is_not_opened_as_a_new_policy(tmp_path, monkeypatch, capsys):
    """`ipsec-console stat` (or `list-sas`, swanctl's word) opened the full-screen console on a new
    policy file named "stat", and in a script (no terminal) it hung there."""
    import console.cli as cli

    monkeypatch.chdir(tmp_path)
    opened = []
    monkeypatch.setattr(cli, "run_console", lambda config: opened.append(config) or 0)
    assert main(["stat"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'stat'" in err and "'stats'" in err, err
    assert main(["list-sas"]) == 2 and "'sas'" in capsys.readouterr().err
    assert opened == []
    assert main(["new.toml"]) == 0 and main([]) == 0  # a new policy to author, the lab
    Path("existing").write_text('[engine]\ndatapath = "kernel"\n')
    assert main(["existing"]) == 0 and main(["sub/new-policy"]) == 0
    assert opened == ["new.toml", None, "existing", "sub/new-policy"]
