"""``ipsec-console audit``: a lab run by the daemon's services (usage counters in
the state folder) names the rule that matched nothing and not the one that
did; counters survive a restart; keys, certificates, weak negotiated suites and
the change journal are reported."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from engine.ops import usage
from engine.ops.audit import AuditOptions, audit_file, format_report, weak_parts
from engine.ops.sdnotify import Notifier
from engine.runtime.daemon import Services
from engine.runtime.lab import LabRuntime
from tests.ops.labcopy import lab_copy

ROOT = Path(__file__).resolve().parents[2]
RULES = """
[rules.drop-https-to-65]
action = "discard"
local_ts = ["198.51.100.0/26"]
remote_ts = ["198.51.100.65/32[tcp/443]"]

[rules.never-used]
action = "bypass"
local_ts = ["198.51.100.0/26"]
remote_ts = ["198.51.100.200/32"]
"""


async def _run_lab(config: Path, seconds: float) -> None:
    lab = LabRuntime(config, rate=60)
    await lab.start()
    services = Services(lab, Notifier({}))
    await services.start()
    try:
        await asyncio.sleep(seconds)
    finally:
        await services.stop()  # the last usage sample is written here
        await lab.stop()


def test_audit_names_the_rule_no_traffic_matched(tmp_path):
    config = lab_copy(tmp_path, engine='state_dir = "state"', tail=RULES)
    asyncio.run(_run_lab(config, 6.0))
    data = usage.load(config.parent / "state")
    assert data["rules"]["drop-https-to-65"]["flows"] > 0, data["rules"]
    run = subprocess.run([sys.executable, "-m", "console", "audit", str(config), "--days", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    unused = run.stdout.split("never matched any traffic:")[1].split("\n\n")[0]
    assert "rule       never-used (bypass): never used" in unused
    assert "drop-https-to-65" not in unused
    assert "branch/hq-branch" not in unused  # the tunnel carried the generator's traffic
    assert "roadwarrior" in unused  # its negotiation fails (the lab's deliberate mistake): no traffic ever
    assert "PSK [ike." in run.stdout and "weak suites negotiated by peers:\n  none" in run.stdout

    # A restart keeps the counters: the rule that was used stays used, the unused one stays unused.
    before = usage.load(config.parent / "state")
    asyncio.run(_run_lab(config, 1.5))
    after = usage.load(config.parent / "state")
    assert after["rules"]["drop-https-to-65"]["flows"] >= before["rules"]["drop-https-to-65"]["flows"]
    assert after["rules"]["never-used"]["first_seen"] == before["rules"]["never-used"]["first_seen"]
    assert after["samples"] > before["samples"]
    report = audit_file(config, AuditOptions(unused_days=0))
    assert [u["name"] for u in report["unused"] if u["kind"] == "rule"] == ["never-used"]


def test_weak_parts_of_negotiated_suites():
    assert weak_parts("AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024") == ["HMAC-SHA1", "PRF-HMAC-SHA1",
                                                                             "MODP-1024"]
    assert weak_parts("AES_GCM_16_256/PRF_HMAC_SHA2_384/CURVE_25519") == []
    assert weak_parts("ESP/3DES/HMAC_MD5_96") == ["3DES (64-bit blocks)", "HMAC-MD5"]


def test_report_of_keys_suites_changes_and_no_state(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    now = time.time()
    data = usage.empty()
    data.update(samples=3, first_sample=now - 40 * 86400, last_sample=now)
    data["connections"]["c"] = {"first_seen": now - 40 * 86400, "last_up": now - 35 * 86400}
    data["children"]["c/k"] = {"first_seen": now - 40 * 86400, "last_traffic": now - 35 * 86400, "bytes": 1,
                               "packets": 1}
    data["psks"]["x"] = {"digest": "00", "since": now - 400 * 86400}
    data["suites"]["c|peer.example"] = {"connection": "c", "peer": "peer.example", "remote_addr": "192.0.2.2",
                                        "ike": {"AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024":
                                                {"first_seen": now - 40 * 86400, "last_seen": now - 35 * 86400}},
                                        "child": {}}
    (folder / "usage.json").write_text(json.dumps(data))
    (folder / "journal.jsonl").write_text(json.dumps({"time": "2026-01-01T00:00:00Z", "action": "apply",
                                                      "via": "control", "who": {"user": "root", "login": "alice"},
                                                      "file": "p.toml", "result": {"changed": ["c"]}}) + "\n")
    (tmp_path / "s.toml").write_text('[ike.x]\nsecret = "audit-test-psk-0123456789abcdef"\n')
    (tmp_path / "s.toml").chmod(0o600)
    policy = tmp_path / "p.toml"
    policy.write_text('[engine]\ndatapath = "kernel"\nsecrets = "s.toml"\nstate_dir = "state"\n\n[connections.c]\n'
                      'local = { auth = "psk", id = "a.example" }\nremote = { auth = "psk", id = "peer.example" }\n\n'
                      '[connections.c.children.k]\nlocal_ts = ["198.51.100.0/25"]\nremote_ts = ["198.51.100.128/25"]\n')
    run = subprocess.run([sys.executable, "-m", "console", "audit", str(policy)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    out = run.stdout
    assert run.returncode == 0, run.stderr
    assert "matched no traffic for 30 days:" in out and "child      c/k: last used" in out
    assert "connection c: last used" in out
    assert "PSK [ike.x]: 400 days old" in out and "rotate it" in out
    assert "c with peer.example (192.0.2.2), IKE SA: AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024" in out
    assert "alice (as root) via control: apply p.toml (changed c)" in out
    assert "audit-test-psk" not in out
    run = subprocess.run([sys.executable, "-m", "console", "audit", str(policy), "--days", "60"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert "matched no traffic for 60 days:\n  none" in run.stdout
    policy.write_text(policy.read_text().replace('state_dir = "state"\n', ""))
    run = subprocess.run([sys.executable, "-m", "console", "audit", str(policy), "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert json.loads(run.stdout)["state"] in (None, "/var/lib/ipsec-console")


def _plain_policy(tmp_path: Path) -> Path:
    policy = tmp_path / "p.toml"
    policy.write_text('[engine]\ndatapath = "kernel"\n')
    return policy


def test_a_state_path_that_is_a_file_or_a_damaged_journal_is_reported_not_a_traceback(tmp_path):
    """`audit --state FILE` (or a journal.jsonl that is a folder) ended in NotADirectoryError /
    IsADirectoryError; one non-UTF-8 byte in the journal (a disk error, a hand edit) in a
    UnicodeDecodeError, although lines that do not parse are meant to be skipped."""
    policy = _plain_policy(tmp_path)
    not_a_folder = tmp_path / "state.txt"
    not_a_folder.write_text("")
    report = audit_file(str(policy), AuditOptions(state=not_a_folder))
    assert report["changes"] == [] and "cannot read" in report["changes_problem"]
    assert f"cannot read {not_a_folder}/journal.jsonl" in format_report(report)

    folder = tmp_path / "state"
    folder.mkdir()
    good = {"time": "2026-01-01T00:00:00Z", "action": "save", "via": "console", "who": {"user": "root"},
            "file": "p.toml", "result": {}}
    (folder / "journal.jsonl").write_bytes(b"\xff\xfe garbage\n" + json.dumps(good).encode() + b"\n")
    report = audit_file(str(policy), AuditOptions(state=folder))
    assert [c["action"] for c in report["changes"]] == ["save"] and "changes_problem" not in report

    (folder / "journal.jsonl").unlink()
    (folder / "journal.jsonl").mkdir()
    run = subprocess.run([sys.executable, "-m", "console", "audit", str(policy), "--state", str(folder)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert f"latest policy changes:\n  cannot read {folder}/journal.jsonl: Is a directory" in run.stdout


def test_a_state_folder_that_does_not_exist_is_named_as_such(tmp_path):
    """--state with a typo read as 'no counters yet (the daemon writes them while it runs)', as if
    waiting would help; the report now says the folder does not exist."""
    (tmp_path / "p.toml").write_text("[engine]\n")
    missing = tmp_path / "nosuch"
    text = format_report(audit_file(tmp_path / "p.toml", AuditOptions(state=missing)))
    assert f"the state folder {missing} does not exist" in text and "yet" not in text.splitlines()[1]
    missing.mkdir()
    text = format_report(audit_file(tmp_path / "p.toml", AuditOptions(state=missing)))
    assert f"no counters in {missing} yet" in text


def test_a_peer_name_from_a_usage_file_is_printed_inert(tmp_path):
    """The audit report prints the peer names the usage file recorded; one written before the status
    snapshots escaped identities (or edited by hand) can hold terminal controls: printed as escapes."""
    (tmp_path / "p.toml").write_text("[engine]\n")
    report = audit_file(tmp_path / "p.toml", AuditOptions(state=tmp_path))
    report["weak_suites"] = [{"connection": "tun", "peer": "m\x1b]52;c;cm0=\x07\x1b[2J", "address": "192.0.2.9",
                              "sa": "IKE", "suite": "3des-sha1-modp1024", "weak": ["3des"], "last_seen": "now"}]
    text = format_report(report)
    assert "\x1b" not in text and "\x07" not in text
    assert "m\\x1b]52;c;cm0=\\x07" in text and "\nweak suites negotiated by peers:\n" in text
