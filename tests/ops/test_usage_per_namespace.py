"""usage.json per network namespace (review item): two daemons in different network namespaces share
the default state folder (/var/lib/ipsec-console); each rewrote the whole usage.json with its own
record every sample, so each wiped out the other's counters. The file is now named per namespace,
as the kernel datapath's claim is keyed: usage.json in the host's, usage.NAME.json in an `ip netns`
one, usage.netns-INODE.json in an unnamed one; audit, run in the same namespace, reads the same file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from engine.ops import usage

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = """
import sys
from pathlib import Path
from types import SimpleNamespace
from engine.ops.usage import UsageTracker, usage_name
conn = SimpleNamespace(name=sys.argv[2], children=[])
policy = SimpleNamespace(connections=[conn], rules=[], secrets=SimpleNamespace(ike=[]))
status = SimpleNamespace(ike_sas=[], sas=[])
rt = SimpleNamespace(policy=policy, status=lambda: None, datapath=None)
t = UsageTracker(rt, Path(sys.argv[1]))
t.sample()
t.sample()
print(usage_name())
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"),
                                reason="needs root, ip and unshare (network namespaces)")


def _pid1_visible() -> bool:
    try:
        os.stat("/proc/1/ns/net")
        return True
    except OSError:
        return False


def _sample(folder: Path, conn: str, prefix: list[str]) -> str:
    run = subprocess.run([*prefix, sys.executable, "-c", SAMPLE, str(folder), conn], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@needs_root
def test_daemons_in_two_namespaces_keep_their_own_usage(tmp_path):
    name = f"cli15u{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert _sample(tmp_path, "host-conn", []) == "usage.json"
        assert _sample(tmp_path, "named-conn", ["ip", "netns", "exec", name]) == f"usage.{name}.json"
        # The host's daemon samples again: the other's record is untouched, its own kept.
        assert _sample(tmp_path, "host-conn", []) == "usage.json"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    host = json.loads((tmp_path / "usage.json").read_text())
    named = json.loads((tmp_path / f"usage.{name}.json").read_text())
    assert set(host["connections"]) == {"host-conn"} and host["samples"] == 4
    assert set(named["connections"]) == {"named-conn"} and named["samples"] == 2
    assert usage.load(tmp_path)["connections"].keys() == {"host-conn"}  # audit here reads the host's
    assert usage.load(tmp_path, f"usage.{name}.json")["connections"].keys() == {"named-conn"}


@needs_root
def test_an_unnamed_namespace_has_its_own_file(tmp_path):
    unnamed = _sample(tmp_path, "unnamed-conn", ["unshare", "--net"])
    if not _pid1_visible():
        # Where pid 1's namespace cannot be read (a container) an unnamed namespace cannot be told
        # from the host's: the documented fallback is the host's file (test_names_by_namespace
        # covers the naming with a /proc of its own).
        assert unnamed == "usage.json"
        return
    assert unnamed.startswith("usage.netns-") and unnamed.endswith(".json")
    assert set(json.loads((tmp_path / unnamed).read_text())["connections"]) == {"unnamed-conn"}
    assert not (tmp_path / "usage.json").exists()


def _fake_proc(tmp_path: Path, same: bool) -> Path:
    proc = tmp_path / "proc"
    (proc / "self" / "ns").mkdir(parents=True)
    (proc / "1" / "ns").mkdir(parents=True)
    (proc / "self" / "ns" / "net").write_text("")
    if same:
        os.link(proc / "self" / "ns" / "net", proc / "1" / "ns" / "net")
    else:
        (proc / "1" / "ns" / "net").write_text("")
    return proc


def test_names_by_namespace(tmp_path, monkeypatch):
    monkeypatch.setattr(usage, "NETNS_DIR", tmp_path / "netns")
    assert usage.usage_name(proc=str(tmp_path / "no-proc")) == "usage.json"
    assert usage.usage_name(proc=str(_fake_proc(tmp_path / "a", same=True))) == "usage.json"
    proc = _fake_proc(tmp_path / "b", same=False)
    ino = os.stat(proc / "self" / "ns" / "net").st_ino
    assert usage.usage_name(proc=str(proc)) == f"usage.netns-{ino}.json"
    (tmp_path / "netns").mkdir()
    os.link(proc / "self" / "ns" / "net", tmp_path / "netns" / "blue")
    assert usage.usage_name(proc=str(proc)) == "usage.blue.json"
