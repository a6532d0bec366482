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


def test_import_over_an_existing_policy_writes_nothing_at_all(policy, capsys):
    """Without --force, a policy file already there is refused before anything is written: it used to
    write a new secrets file first, then refuse the policy, leaving the two out of step."""
    assert main(["export", "site-to-site.toml", "-o", "gw.conf", "--secrets", "gw.secrets.conf"]) == 0
    Path("hw.toml").write_text("x\n")
    capsys.readouterr()
    assert main(["import", "gw.conf", "-o", "hw.toml"]) == 1
    assert "hw.toml exists" in capsys.readouterr().err
    assert Path("hw.toml").read_text() == "x\n" and not Path("hw.secrets.toml").exists()


def test_import_writes_the_secrets_0600_and_keeps_a_policys_own_mode(policy, capsys):
    assert main(["export", "site-to-site.toml", "-o", "gw.conf", "--secrets", "gw.secrets.conf"]) == 0
    Path("gw.toml").write_text("x\n")
    Path("gw.toml").chmod(0o640)
    assert main(["import", "gw.conf", "-o", "gw.toml", "--force"]) == 0
    assert Path("gw.toml").stat().st_mode & 0o777 == 0o640  # was forced to 0644
    assert Path("gw.secrets.toml").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("option", ["--days", "--expiry-days", "--max-key-age"])
def test_audit_days_are_never_negative(policy, option):
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "site-to-site.toml", option, "-1"])
    assert exit_.value.code == 2


def test_import_errors_name_the_policy_file_written(policy, capsys):
    """Errors to fix in what import wrote name that file (they named the scratch copy, imported.toml)."""
    Path("a.conf").write_text("connections {\n  a {\n    remote_addrs = 192.0.2.1\n    local { auth = psk }\n"
                              "    remote { auth = psk }\n  }\n}\n")
    assert main(["import", "a.conf", "-o", "gw.toml"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error" in line]
    assert errors and all(line.startswith("gw.toml: ") for line in errors), errors


@pytest.mark.parametrize("value", ["70000", "-1", "0", "x"])
def test_serve_port_is_checked(value, capsys, monkeypatch):
    """--port 70000 or -1 ended in a traceback from bind() (OverflowError) after the banner; --port 0
    served on a random port while the printed URL said :0."""
    import console.serve

    monkeypatch.setattr(console.serve, "serve", lambda *a, **kw: pytest.fail("served"))
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--port" in err and "1 to 65535" in err and "Traceback" not in err, err
