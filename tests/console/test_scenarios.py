"""The issue's "must show" scenarios, driven by the keyboard alone as an
admin would in tmux: a new site-to-site policy authored from a file that does
not exist yet with the forms only (then `ipsec-console check` exits 0), and
the lab's road warrior fixed, saved and applied without typing any TOML."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from console.app import ConsoleApp, _default_runtime
from console.runtime.draft import DraftRuntime
from console.screens.confirm import ConfirmScreen
from console.screens.dialogs import AddDialog, PskDialog
from console.screens.policies import PoliciesScreen
from console.widgets.policy_tree import PolicyTree
from tests.ops.labcopy import lab_copy

from .conftest import screen_text, wait_for

ROOT = Path(__file__).resolve().parents[2]
PSK = "Scenario-Only-Key-4711-xyzzy-long"


async def _to_node(pilot, tree: PolicyTree, node: tuple) -> None:
    """Arrow keys until the tree's cursor is on ``node``."""
    for _ in range(40):
        if tree.cursor_node is not None and tree.cursor_node.data == node:
            return
        nodes = tree.nodes()
        here = nodes.index(tree.cursor_node.data) if tree.cursor_node.data in nodes else 0
        await pilot.press("down" if nodes.index(node) > here else "up")
    raise AssertionError(f"cursor never reached {node}")


async def _fill(pilot, values: list[str | None]) -> None:
    """From the first form field: replace each field's text (None: leave it) and Tab on."""
    for value in values:
        if value is not None:
            await pilot.press("ctrl+a", "ctrl+k", *value)  # start of line, delete to the end, type
        await pilot.press("tab")


async def _add(pilot, screen: PoliciesScreen, choice: str, name: str) -> None:
    await pilot.press("a")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, AddDialog), what="add dialog")
    dialog = pilot.app.screen
    labels = [label for label, _ in dialog.choices]
    for _ in range(labels.index(choice)):
        await pilot.press("down")
    await pilot.press("tab", "ctrl+a", "ctrl+k", *name, "enter")
    await wait_for(pilot, lambda: pilot.app.screen is screen, what="dialog closed")


@pytest.mark.slow
async def test_a_new_site_to_site_policy_authored_with_forms_only_passes_check(tmp_path):
    path = tmp_path / "gw.toml"
    rt = _default_runtime(str(path), None)
    assert isinstance(rt, DraftRuntime)  # a CONFIG that does not exist opens as a new file
    app = ConsoleApp(rt)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, PoliciesScreen) and app.screen.validation,
                       what="the new file in the editor")
        screen = app.screen
        tree = screen.query_one(PolicyTree)
        assert "gw.toml" in screen_text(app) and not path.exists()
        await _add(pilot, screen, "connection", "branch")
        await wait_for(pilot, lambda: ("connection", "branch") in tree.nodes(), what="the connection in the tree")
        await _to_node(pilot, tree, ("connection", "branch"))
        await wait_for(pilot, lambda: screen.query("#f-local_addrs"), what="its form")
        await pilot.press("enter")  # into the form
        await _fill(pilot, ["192.0.2.1", "192.0.2.2", None, None, "hq.example.org", None, "branch.example.org"])
        await pilot.press("escape")  # back to the tree
        await _add(pilot, screen, "CHILD SA config of branch", "lan")
        await wait_for(pilot, lambda: ("child", "branch", "lan") in tree.nodes(), what="the child")
        await _to_node(pilot, tree, ("child", "branch", "lan"))
        await wait_for(pilot, lambda: screen.query("#f-local_ts") and screen._form_node == ("child", "branch", "lan"),
                       what="its form")
        await pilot.press("enter")
        await _fill(pilot, [None, None, "198.51.100.0/25", "198.51.100.128/25", None, "start"])
        await pilot.press("escape")
        await _to_node(pilot, tree, ("connection", "branch"))
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, PskDialog), what="PSK dialog")
        await pilot.press(*PSK, "enter", *PSK, "enter")
        await wait_for(pilot, lambda: any((n.title or "") == "PSK written" for n in app._notifications),
                       what="PSK written")
        secrets = tmp_path / "gw.secrets.toml"
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
        await wait_for(pilot, lambda: screen.validation is not None and screen.validation.ok
                       and 'secrets = "gw.secrets.toml"' in screen.validation.text, what="valid")
        assert PSK not in screen_text(app) and PSK not in app.export_screenshot()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: path.exists(), what="saved")
        await pilot.press("q")  # nothing unsaved: quits at once
        await wait_for(pilot, lambda: not app.is_running, what="quit")
    doc = tomllib.loads(path.read_text())
    assert doc["connections"]["branch"]["remote"]["id"] == "branch.example.org"
    assert tomllib.loads(secrets.read_text())["ike"]["branch"]["secret"] == PSK
    check = subprocess.run([sys.executable, "-m", "console", "check", str(path)], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow
async def test_the_road_warrior_fixed_by_keyboard_saved_and_applied(tmp_path):
    config = lab_copy(tmp_path)  # ports of its own: another run's lab must not hold them
    app = ConsoleApp(_default_runtime(str(config), None))  # a lab policy: the whole lab runs
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await wait_for(pilot, lambda: "roadwarrior NO_PROP" in screen_text(app), timeout=15,
                       what="the road warrior failing")
        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, PoliciesScreen) and app.screen.validation,
                       what="policies")
        screen = app.screen
        tree = screen.query_one(PolicyTree)
        await _to_node(pilot, tree, ("connection", "roadwarrior"))
        await wait_for(pilot, lambda: screen._form_node == ("connection", "roadwarrior")
                       and screen.query("#f-proposals"), what="its form")
        await pilot.press("enter", "tab", "tab", "end", *", aes128-sha1-modp1024", "escape")
        await _to_node(pilot, tree, ("child", "roadwarrior", "hq-roadwarrior"))
        await wait_for(pilot, lambda: screen._form_node == ("child", "roadwarrior", "hq-roadwarrior")
                       and screen.query("#f-esp_proposals"), what="the child's form")
        await pilot.press("enter", "tab", "tab", "tab", "tab", "end", *", aes128-sha1", "tab", *"start",
                          "escape")
        await wait_for(pilot, lambda: screen.validation.ok and "aes128-sha1-modp1024" in screen.validation.text
                       and 'start_action = "start"' in screen.validation.text, what="valid fix")
        assert "# hq accepts only modern, quantum-safe algorithms" in screen.validation.text  # comments kept
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "aes128-sha1-modp1024" in config.read_text(), what="saved")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm apply")
        assert "change roadwarrior" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: any(c.name == "roadwarrior" and c.state == "up"
                                          for c in app.store.snapshot.connections), timeout=20,
                       what="the road warrior up")
        await pilot.press("1")
        await wait_for(pilot, lambda: "NO_PROP" not in screen_text(app), what="the alert cleared")
        assert app.pending_work() == []
    assert os.path.exists(str(config) + ".bak")


async def test_a_policy_that_does_not_validate_opens_for_fixing(tmp_path):
    """`ipsec-console gw.toml` after a hand edit broke it: the console used to print the first finding
    and exit 2, useless for the one thing needed. It now opens the file as it is on disk in the
    Policies screen with its findings (nothing runs) and says why, as for a new file."""
    lab = lab_copy(tmp_path)
    broken = lab.read_text().replace('datapath = "lab"', 'datapath = "warp"')
    path = tmp_path / "gw.toml"
    path.write_text(broken)
    for f in tmp_path.glob("*.secrets.toml"):
        f.chmod(0o600)
    rt = _default_runtime(str(path), None)
    assert isinstance(rt, DraftRuntime) and "engine.datapath" in rt.problem
    app = ConsoleApp(rt)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, PoliciesScreen) and app.screen.validation,
                       what="the broken file in the editor")
        screen = app.screen
        assert screen._text() == broken  # the file as it is, nothing rewritten
        errors = screen.validation.errors  # its findings, shown below the tree (wrapped by path length)
        assert any(f.key_path == "engine.datapath" and "not 'warp'" in f.message for f in errors), errors
        toasts = [n for n in app._notifications if n.title == "The policy does not validate"]
        assert toasts and "engine.datapath" in toasts[0].message and "Nothing runs" in toasts[0].message
        assert path.read_text() == broken


def test_an_unreadable_secrets_file_is_not_opened_for_fixing(tmp_path, monkeypatch):
    """A root-owned 0600 secrets file read by an admin without sudo: nothing to fix in the policy, so
    the embedded runtime's own refusal (run as root, or attach) stays what the admin sees."""
    import console.app as app_module
    from engine.policy import parse as parse_module
    from engine.policy.findings import Finding, PolicyError

    path = tmp_path / "gw.toml"
    path.write_text("[engine]\n")

    def unreadable(*a, **kw):
        raise PolicyError([Finding("gw.secrets.toml", "", "error",
                                   "cannot read the secrets file: [Errno 13] Permission denied")])
    monkeypatch.setattr(parse_module, "load_policy", unreadable)
    assert app_module._invalid(str(path)) == ""
    assert not isinstance(_default_runtime(str(path), None), DraftRuntime)
