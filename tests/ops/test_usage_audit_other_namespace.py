"""Review of usage per namespace (cli15): audit reads the usage file of the namespace it runs in. Run
on the host for a daemon in `ip netns` red, it said "no counters in STATE yet (the daemon writes them
while it runs)" beside a usage.red.json the daemon had been writing for weeks: it now says whose
files are there and how to audit them."""

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


def test_counters_of_another_namespace_are_named_not_taken_for_none(policy, monkeypatch):
    monkeypatch.setattr(usage, "usage_name", lambda proc="/proc": usage.USAGE)  # audit on the host
    data = {**usage.empty(), "samples": 40, "first_sample": 1.0, "last_sample": 2.0}
    (policy.parent / "state" / "usage.red.json").write_text(json.dumps(data))
    (policy.parent / "state" / "usage.netns-4026532999.json").write_text(json.dumps(data))
    text = format_report(audit_file(policy, AuditOptions(state=policy.parent / "state")))
    assert "yet (the daemon writes them" not in text
    assert "usage.json" in text and "usage.red.json" in text and "usage.netns-4026532999.json" in text
    assert "ip netns exec red" in text


def test_no_counters_at_all_is_said_as_before(policy, monkeypatch):
    monkeypatch.setattr(usage, "usage_name", lambda proc="/proc": usage.USAGE)
    text = format_report(audit_file(policy, AuditOptions(state=policy.parent / "state")))
    assert "no counters in" in text and "yet (the daemon writes them while it runs)" in text
