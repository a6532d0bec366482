"""An unnamed network namespace's usage file is named by its nsfs inode, and the kernel hands a dead
namespace's inode to the next one at once (`unshare --net` twice: the same inode). The new
namespace's daemon loaded the dead one's counters as its own (connections "last used" that never
ran there), and audit read them. The file now records the namespace's identity (boot id and the
kernel's netns cookie, never reused in a boot) and a file of another identity is not loaded.
usage.key was shared by every namespace's daemon: each writes its own key now (usage.NAME.key)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.ops import usage
from engine.secret import Secret

ROOT = Path(__file__).resolve().parents[2]
UNNAMED = "usage.netns-4026532174.json"


def _runtime(conn: str, psks: dict[str, bytes] | None = None):
    secrets = SimpleNamespace(ike=[SimpleNamespace(name=n, secret=Secret(v)) for n, v in (psks or {}).items()])
    policy = SimpleNamespace(connections=[SimpleNamespace(name=conn, children=[])], rules=[], secrets=secrets)
    return SimpleNamespace(policy=policy, status=lambda: None, datapath=None)


def _in_namespace(monkeypatch, name: str, cookie: int | None, boot: str = "boot-a") -> None:
    monkeypatch.setattr(usage, "usage_name", lambda proc="/proc": name)
    monkeypatch.setattr(usage, "netns_identity", lambda: {"boot_id": boot, "cookie": cookie}, raising=False)


def test_a_namespace_that_reuses_a_dead_ones_inode_starts_its_own_record(tmp_path, monkeypatch):
    _in_namespace(monkeypatch, UNNAMED, cookie=75987)
    usage.UsageTracker(_runtime("dead-conn"), tmp_path).sample(now=1000.0)
    _in_namespace(monkeypatch, UNNAMED, cookie=75989)  # same inode, another namespace
    assert usage.load(tmp_path)["samples"] == 0  # audit there: no counters, not the dead one's
    t = usage.UsageTracker(_runtime("new-conn"), tmp_path)
    t.sample(now=2000.0)
    saved = json.loads((tmp_path / UNNAMED).read_text())
    assert set(saved["connections"]) == {"new-conn"} and saved["samples"] == 1
    assert saved["first_sample"] == 2000.0


def test_the_same_namespace_keeps_its_record_across_daemon_restarts(tmp_path, monkeypatch):
    _in_namespace(monkeypatch, UNNAMED, cookie=75987)
    usage.UsageTracker(_runtime("conn"), tmp_path).sample(now=1000.0)
    usage.UsageTracker(_runtime("conn"), tmp_path).sample(now=2000.0)
    saved = usage.load(tmp_path)
    assert saved["samples"] == 2 and saved["first_sample"] == 1000.0


def test_a_reboot_with_the_same_inode_and_cookie_is_another_namespace(tmp_path, monkeypatch):
    _in_namespace(monkeypatch, UNNAMED, cookie=7, boot="boot-a")
    usage.UsageTracker(_runtime("conn"), tmp_path).sample(now=1000.0)
    _in_namespace(monkeypatch, UNNAMED, cookie=7, boot="boot-b")
    assert usage.load(tmp_path)["samples"] == 0


def test_an_unnamed_file_without_an_identity_is_not_trusted(tmp_path, monkeypatch):
    _in_namespace(monkeypatch, UNNAMED, cookie=7)
    old = usage.empty() | {"samples": 5, "first_sample": 1.0, "last_sample": 2.0}
    (tmp_path / UNNAMED).write_text(json.dumps(old))
    assert usage.load(tmp_path)["samples"] == 0


def test_named_and_host_files_are_kept_by_name(tmp_path, monkeypatch):
    """A named namespace is the admin's: `ip netns add blue` after a reboot is the same blue."""
    for name in ("usage.json", "usage.blue.json"):
        _in_namespace(monkeypatch, name, cookie=1, boot="boot-a")
        usage.UsageTracker(_runtime("conn"), tmp_path).sample(now=1000.0)
        _in_namespace(monkeypatch, name, cookie=2, boot="boot-b")
        assert usage.load(tmp_path)["samples"] == 1, name


def test_each_namespace_has_its_own_digest_key(tmp_path, monkeypatch):
    psk = {"branch": b"the same secret in both"}
    _in_namespace(monkeypatch, "usage.json", cookie=1)
    usage.UsageTracker(_runtime("conn", psk), tmp_path).sample(now=1000.0)
    _in_namespace(monkeypatch, "usage.blue.json", cookie=2)
    usage.UsageTracker(_runtime("conn", psk), tmp_path).sample(now=1000.0)
    host_key, blue_key = (tmp_path / "usage.key").read_bytes(), (tmp_path / "usage.blue.key").read_bytes()
    assert len(host_key) == len(blue_key) == 32 and host_key != blue_key
    assert (tmp_path / "usage.blue.key").stat().st_mode & 0o777 == 0o600
    host = json.loads((tmp_path / "usage.json").read_text())["psks"]["branch"]["digest"]
    blue = json.loads((tmp_path / "usage.blue.json").read_text())["psks"]["branch"]["digest"]
    assert host != blue  # two files do not tell that two namespaces share a key


def test_a_named_namespace_upgraded_keeps_its_psk_dates(tmp_path, monkeypatch):
    """Its digests were made with the shared usage.key: checked once with it, so no PSK looks new, then
    digested with a key of its own (test_usage_key_reuse)."""
    psk = {"branch": b"an old secret"}
    _in_namespace(monkeypatch, "usage.blue.json", cookie=2)
    monkeypatch.setattr(usage, "key_name", lambda name: usage.DIGEST_KEY, raising=False)  # the version before
    usage.UsageTracker(_runtime("conn", psk), tmp_path).sample(now=1000.0)
    monkeypatch.undo()
    _in_namespace(monkeypatch, "usage.blue.json", cookie=2)
    (tmp_path / "usage.blue.key").unlink(missing_ok=True)
    usage.UsageTracker(_runtime("conn", psk), tmp_path).sample(now=9000.0)
    assert usage.load(tmp_path)["psks"]["branch"]["since"] == 1000.0
    assert (tmp_path / "usage.blue.key").read_bytes() != (tmp_path / "usage.key").read_bytes()


SAMPLE = """
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from engine.ops import usage
# Named by the real inode even where pid 1's namespace is hidden (a container: the host's name then).
usage.usage_name = lambda proc="/proc": f"usage.netns-{os.stat('/proc/self/ns/net').st_ino}.json"
conn = SimpleNamespace(name=sys.argv[2], children=[])
policy = SimpleNamespace(connections=[conn], rules=[], secrets=SimpleNamespace(ike=[]))
rt = SimpleNamespace(policy=policy, status=lambda: None, datapath=None)
t = usage.UsageTracker(rt, Path(sys.argv[1]))
t.sample()
print(t.name)
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_unnamed_namespaces_one_after_the_other(tmp_path):
    """Real namespaces and the kernel's cookie: one soon gets an inode a dead one had (the kernel frees
    a namespace's inode a moment after it dies and hands it out again)."""
    last: dict[str, str] = {}
    for n in range(8):
        conn = f"conn-{n}"
        run = subprocess.run(["unshare", "--net", sys.executable, "-c", SAMPLE, str(tmp_path), conn], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert run.returncode == 0, run.stderr
        name = run.stdout.strip()
        reused = name in last
        last[name] = conn
        if reused:
            saved = json.loads((tmp_path / name).read_text())
            assert set(saved["connections"]) == {conn} and saved["samples"] == 1, (name, saved)
            return
    pytest.skip("the kernel gave every namespace a new inode")
