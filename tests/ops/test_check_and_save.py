"""``check --format text|json|github`` with a line and column for every finding,
``--strict``; saves that keep an admin's comments; the journal of saves."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from console.cli import main
from engine.ops import journal
from engine.policy.locate import key_positions, locate
from engine.policy.parse import parse_policy
from engine.policy.samples import sample_names, sample_path
from engine.policy.save import save_policy, save_text
from engine.policy.serialize import dump_document, load_document, set_key, update_toml

BAD = """\
# header comment
[engine]
datapath = "kernel"
ike_port = "500"

[connections.c]
local = { auth = "psk", id = 'hq.example' }
"remote_addrs" = ["not an address!"]
encap = 1

[connections.c.children.x]
mode = "tunnel"
bogus = true
"""


def test_every_finding_gets_the_line_and_column_of_its_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("bad.toml").write_text(BAD)
    assert main(["check", "bad.toml", "--format", "json"]) == 1
    out = json.loads(capsys.readouterr().out)
    where = {f["key_path"]: (f["line"], f["column"]) for f in out["findings"]}
    assert where["engine.ike_port"] == (4, 1)
    assert where["connections.c.remote_addrs"] == (8, 1)
    assert where["connections.c.encap"] == (9, 1)
    assert where["connections.c.children.x.bogus"] == (13, 1)
    assert all(f["line"] >= 1 and f["column"] >= 1 for f in out["findings"])
    assert out["valid"] is False and out["errors"] == len([f for f in out["findings"] if f["severity"] == "error"])


def test_text_and_github_formats(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("bad.toml").write_text(BAD)
    assert main(["check", "bad.toml"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "bad.toml:4:1: engine.ike_port: error: expected an integer, got a string ('500')" in lines
    assert lines[-1].startswith("bad.toml: invalid: ")
    assert main(["check", "bad.toml", "--format", "github"]) == 1
    gh = capsys.readouterr().out.splitlines()
    assert "::error file=bad.toml,line=4,col=1,title=ipsec-console check::engine.ike_port: expected an integer, " \
           "got a string ('500')" in gh


def test_success_is_one_quiet_line_and_strict_fails_on_warnings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ok = sample_path("lab-branch.toml")  # quantum-safe: no advice either
    assert main(["check", str(ok)]) == 0
    assert capsys.readouterr().out == f"{ok}: valid\n"
    weak = Path("weak.toml")
    weak.write_text('[engine]\ndatapath = "kernel"\n\n[connections.c]\nproposals = ["3des-sha1-modp1024"]\n'
                    'local = { auth = "pubkey", id = "a.example", certs = ["a.crt"] }\n'
                    'remote = { auth = "pubkey", id = "b.example" }\n\n[connections.c.children.k]\n'
                    'local_ts = ["198.51.100.0/25"]\nremote_ts = ["198.51.100.128/25"]\n')
    assert main(["check", "weak.toml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("weak.toml: valid, ") and "weak.toml:5:1: connections.c.proposals: warning:" in out[0]
    assert main(["check", "weak.toml", "--strict"]) == 1
    assert capsys.readouterr().out.splitlines()[-1].endswith("(--strict: failing)")


@pytest.mark.parametrize("name", sample_names())
def test_locator_finds_every_key_the_parser_reads_in_the_samples(name):
    import tomllib

    text = sample_path(name).read_text()
    positions = key_positions(text)

    def walk(doc, prefix):
        for k, v in doc.items():
            path = f"{prefix}.{k}" if prefix else k
            if any(c in k for c in " .\"'") or not k:
                continue
            assert path in positions, path
            line, col = positions[path]
            assert k in text.splitlines()[line - 1][col - 1:], (path, line, col)
            if isinstance(v, dict):
                walk(v, path)

    walk(tomllib.loads(text), "")


def test_locator_handles_strings_arrays_and_falls_back_to_the_table():
    text = ('a = """multi\n[not.a.table]\nline"""\n[t]\nx = [\n  "1", # c\n  { k = 2 },\n]\n'
            '"quoted key".y = 3\n[t."odd name"]\nz = \'lit]\'\n')
    pos = key_positions(text)
    assert "not" not in pos and pos["t.x"] == (5, 1)
    assert pos['t."quoted key".y'] == (9, 14)
    assert pos['t."odd name".z'] == (11, 1)
    assert locate(pos, "t.missing") == (4, 2)
    assert locate(pos, "nowhere.at.all") == (1, 1)


# -- saves keep comments --------------------------------------------------------------------------
def test_a_model_save_keeps_comments_and_untouched_lines(tmp_path):
    src = sample_path("site-to-site.toml")
    path = tmp_path / "gw.toml"
    path.write_text(src.read_text())
    (tmp_path / "site-to-site.secrets.toml").write_text(
        (src.parent / "site-to-site.secrets.toml").read_text())
    (tmp_path / "site-to-site.secrets.toml").chmod(0o600)
    old = path.read_text()
    policy = parse_policy(old, path)
    c = policy.connections[0]
    changed = dataclasses.replace(policy, connections=(dataclasses.replace(c, dpd_delay=45.0),)
                                  + policy.connections[1:])
    save_policy(changed, path)
    new = path.read_text()
    assert parse_policy(new, path).connections[0].dpd_delay == 45.0
    old_comments = [ln for ln in old.splitlines() if ln.lstrip().startswith("#")]
    assert old_comments and all(ln in new.splitlines() for ln in old_comments)
    differing = [(a, b) for a, b in zip(old.splitlines(), new.splitlines()) if a != b]
    assert len(old.splitlines()) == len(new.splitlines()) and len(differing) == 1, differing
    assert differing[0][1].startswith('dpd_delay = "45s"') and "# probe the peer" in differing[0][1]


def test_update_keeps_explicit_defaults_unless_they_would_contradict():
    text = '# hi\n[engine]\ndatapath = "kernel"   # why\n\n[connections.c]\nmobike = true  # explicit default\n' \
           'rekey_time = "1h"\nover_time = "6m"  # = 10% explicitly\n\n[connections.c.children.k]\n' \
           'local_ts = ["198.51.100.0/25"]\nremote_ts = ["198.51.100.128/25"]\n'
    policy = parse_policy(text, load_secrets=False)
    c = policy.connections[0]
    new = dataclasses.replace(policy, connections=(dataclasses.replace(c, rekey_time=7200.0, over_time=720.0,
                                                                       rand_time=720.0),))
    out = update_toml(text, new)
    assert "mobike = true  # explicit default" in out and "# why" in out
    assert parse_policy(out, load_secrets=False).connections[0] == new.connections[0]


def test_form_helpers_edit_one_key_in_place():
    text = sample_path("lab.toml").read_text()
    doc = load_document(text)
    assert doc is not None and dump_document(doc) == text
    out = set_key(text, ("connections", "branch", "dpd_delay"), "20s")
    assert [ln for ln in out.splitlines() if ln not in text.splitlines()] == [
        'dpd_delay = "20s"']
    assert set_key(out, ("connections", "branch", "dpd_delay"), None).count("dpd_delay") == 0
    assert load_document("[broken") is None


def test_saves_are_journaled_with_a_diff(tmp_path):
    path = tmp_path / "p.toml"
    text = '[engine]\ndatapath = "kernel"\nstate_dir = "st"\n'
    save_text(text, path)
    save_text(text + 'ike_port = 600\n', path)
    save_text(text + 'ike_port = 600\n', path)  # no change: no entry
    entries = journal.read(tmp_path / "st")
    assert [e["action"] for e in entries] == ["save", "save"]
    assert entries[1]["diff"].endswith("+ike_port = 600\n") and entries[1]["via"] == "console"
    assert entries[0]["old_sha256"] is None


def test_without_a_state_folder_nothing_is_journaled(tmp_path, monkeypatch):
    import engine.ops.state as state

    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(state, "DEFAULT_STATE_DIR", tmp_path / "absent")
    save_text('[engine]\ndatapath = "kernel"\n', tmp_path / "p.toml")
    assert list(tmp_path.iterdir()) == [tmp_path / "p.toml"]
