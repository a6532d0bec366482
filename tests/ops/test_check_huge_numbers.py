"""`check` of a policy with an integer too large for a float as a duration: a clear error, not an
OverflowError traceback (TOML integers have no size limit in tomllib)."""

from __future__ import annotations

from console.cli import main


def test_a_huge_integer_duration_is_an_error_not_a_traceback(tmp_path, capsys):
    policy = tmp_path / "p.toml"
    policy.write_text('[engine]\ndatapath = "kernel"\n[connections.a]\nremote_addrs = ["192.0.2.1"]\n'
                      f"rekey_time = {'9' * 400}\n")
    assert main(["check", str(policy)]) == 1
    out = capsys.readouterr().out
    assert "connections.a.rekey_time: error: expected a duration" in out, out
