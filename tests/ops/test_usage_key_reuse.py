"""Review of con16's per-namespace usage files: an unnamed namespace's digest key is named by its nsfs
inode as its usage file is (usage.netns-INODE.key). A new namespace that gets a dead one's inode
started a new record (load() rejects the other identity) but kept digesting its PSKs with the dead
namespace's key, so the same PSK in both gave the same digest: the two records told that the two
namespaces shared a secret, which a key per namespace is there to prevent."""

from __future__ import annotations

import json

from engine.ops import usage

from .test_usage_netns_identity import UNNAMED, _in_namespace, _runtime


def _digest(folder, name=UNNAMED):
    return json.loads((folder / name).read_text())["psks"]["branch"]["digest"]


def test_a_namespace_that_reuses_a_dead_ones_inode_does_not_reuse_its_key(tmp_path, monkeypatch):
    psk = {"branch": b"the same secret in both"}
    _in_namespace(monkeypatch, UNNAMED, cookie=75987)
    usage.UsageTracker(_runtime("conn", psk), tmp_path).sample(now=1000.0)
    dead_key, dead_digest = (tmp_path / "usage.netns-4026532174.key").read_bytes(), _digest(tmp_path)
    _in_namespace(monkeypatch, UNNAMED, cookie=75989)  # same inode, another namespace
    usage.UsageTracker(_runtime("conn", psk), tmp_path).sample(now=2000.0)
    key = tmp_path / "usage.netns-4026532174.key"
    assert key.read_bytes() != dead_key and len(key.read_bytes()) == 32
    assert key.stat().st_mode & 0o777 == 0o600
    assert _digest(tmp_path) != dead_digest


def test_the_same_unnamed_namespace_keeps_its_key_and_psk_dates(tmp_path, monkeypatch):
    psk = {"branch": b"a secret"}
    _in_namespace(monkeypatch, UNNAMED, cookie=75987)
    usage.UsageTracker(_runtime("conn", psk), tmp_path).sample(now=1000.0)
    key = (tmp_path / "usage.netns-4026532174.key").read_bytes()
    usage.UsageTracker(_runtime("conn", psk), tmp_path).sample(now=2000.0)
    assert (tmp_path / "usage.netns-4026532174.key").read_bytes() == key
    assert usage.load(tmp_path)["psks"]["branch"]["since"] == 1000.0


def test_an_upgraded_named_namespace_keeps_its_psk_dates_under_a_key_of_its_own(tmp_path, monkeypatch):
    """Its digests were made with usage.key, which every namespace shared before: con16 took that key
    over as blue's, so host and blue digested a shared PSK alike for good. The dates are kept by
    checking the old digest once with the old key, then digesting with blue's own key."""
    psk = {"branch": b"an old secret in both"}
    monkeypatch.setattr(usage, "key_name", lambda name: usage.DIGEST_KEY)  # the version before
    for name in ("usage.json", "usage.blue.json"):
        _in_namespace(monkeypatch, name, cookie=2)
        usage.UsageTracker(_runtime("conn", psk), tmp_path).sample(now=1000.0)
    monkeypatch.undo()
    for name in ("usage.json", "usage.blue.json"):
        _in_namespace(monkeypatch, name, cookie=2)
        usage.UsageTracker(_runtime("conn", psk), tmp_path).sample(now=9000.0)
        assert usage.load(tmp_path)["psks"]["branch"]["since"] == 1000.0, name
    assert (tmp_path / "usage.blue.key").read_bytes() != (tmp_path / "usage.key").read_bytes()
    assert _digest(tmp_path, "usage.json") != _digest(tmp_path, "usage.blue.json")
    usage.UsageTracker(_runtime("conn", psk), tmp_path).sample(now=9500.0)  # blue again: still known
    assert usage.load(tmp_path)["psks"]["branch"]["since"] == 1000.0
    usage.UsageTracker(_runtime("conn", {"branch": b"changed"}), tmp_path).sample(now=9600.0)
    assert usage.load(tmp_path)["psks"]["branch"]["since"] == 9600.0
