"""audit (and the daemon's usage sampling) read usage.json and the journal from the state folder: a
damaged entry (wrong types from an editor, a disk or another version) ended audit in a traceback,
and the daemon's sampler in one too. Damaged entries are left out now."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.ops import usage
from engine.ops.audit import AuditOptions, audit_file, format_report
from engine.policy.samples import sample_path


@pytest.fixture
def policy(tmp_path):
    for name in ("site-to-site.toml", "site-to-site.secrets.toml"):
        shutil.copy(sample_path(name), tmp_path / name)
    (tmp_path / "site-to-site.secrets.toml").chmod(0o600)
    (tmp_path / "state").mkdir()
    return tmp_path / "site-to-site.toml"


@pytest.mark.parametrize("data", [
    {"version": 1, "connections": [], "children": 5, "rules": "x", "suites": None, "psks": [1], "samples": "x",
     "first_sample": "y", "last_sample": {}},
    {"version": 1, "connections": {"site-to-site": 5}, "psks": {"branch": "x"}, "suites": {"a": "b"}, "samples": 3},
    {"version": 1, "children": {"site-to-site/net": {"bytes": "many", "last_traffic": 1.0}}, "samples": 3,
     "suites": {"a": {"connection": "c", "peer": "p", "ike": {"AES": {"last_seen": "x"}}}}},
])
def test_a_damaged_usage_file_is_read_without_a_traceback(policy, data):
    (policy.parent / "state" / usage.USAGE).write_text(json.dumps(data))
    report = audit_file(policy, AuditOptions(state=policy.parent / "state"))
    format_report(report)
    loaded = usage.load(policy.parent / "state")
    assert all(isinstance(loaded[t], dict) for t in ("connections", "children", "rules", "suites", "psks"))


def test_good_entries_survive_beside_damaged_ones(policy):
    good = {"first_seen": 1.0, "last_traffic": 2.0, "bytes": 10, "packets": 1}
    data = {"version": 1, "samples": 2, "first_sample": 1.0, "last_sample": 2.0,
            "children": {"a/b": good, "c/d": {"first_seen": 1.0, "bytes": -1}}}
    (policy.parent / "state" / usage.USAGE).write_text(json.dumps(data))
    loaded = usage.load(policy.parent / "state")
    assert loaded["children"] == {"a/b": good} and loaded["samples"] == 2


def test_a_damaged_journal_line_is_one_line_of_the_report(policy):
    (policy.parent / "state" / "journal.jsonl").write_text(
        json.dumps({"time": "x", "who": 3, "result": ["a"], "action": 5}) + "\n"
        + json.dumps({"who": {"user": "root"}, "result": {"added": "gw"}}) + "\n")
    report = audit_file(policy, AuditOptions(state=policy.parent / "state"))
    assert len(report["changes"]) == 2
    format_report(report)
