"""Policies: validation, lint, diff, Apply and Save, form editing, the SPD question.

The rule under test above all: a policy that fails validation is never
applied nor saved.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, TabbedContent, TextArea

from console import policy_api
from console.runtime.fake import FakeRuntime
from console.screens.confirm import ConfirmScreen
from console.screens.policies import PoliciesScreen

from .conftest import make_app, ready, screen_text, wait_for

pytestmark = pytest.mark.skipif(policy_api.get("parse_policy") is None,
                                reason="needs engine.policy.parse_policy (the policy layer, issue 2)")


async def _open(pilot) -> PoliciesScreen:
    app = pilot.app
    await ready(pilot)
    await pilot.press("3")
    await wait_for(pilot, lambda: isinstance(app.screen, PoliciesScreen) and app.screen.validation is not None,
                   what="policies screen validated")
    return app.screen


async def _type_at_end(pilot, screen: PoliciesScreen, text: str) -> None:
    screen.query_one(TabbedContent).active = "pol-toml-tab"
    editor = screen.query_one("#pol-editor", TextArea)
    editor.focus()
    editor.move_cursor(editor.document.end)
    await pilot.pause()
    for ch in text:
        await pilot.press("enter" if ch == "\n" else ("space" if ch == " " else ch))
    await wait_for(pilot, lambda: screen.validation is not None and screen.validation.text == editor.text,
                   what="validation of the edit")


async def test_running_policy_is_shown_valid_without_secrets(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        assert screen.validation.ok
        text = screen_text(app)
        assert "✓ valid" in text and "branch" in text and "no-telnet" in text
        editor = screen.query_one("#pol-editor", TextArea)
        assert "[connections.branch]" in editor.text
        assert "secret =" not in editor.text


async def test_invalid_edit_is_never_applied_nor_saved(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    policy_file = Path(rt._policy.path)
    original = policy_file.read_bytes()
    app = make_app(rt)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await _open(pilot)
        # Break a value the parser checks: an unknown proposal keyword.
        editor = screen.query_one("#pol-editor", TextArea)
        bad = editor.text.replace('"aes256-sha384-ecp384"]\nlocal = { auth = "psk", id = "hq.example.org" }\n'
                                  'remote = { auth = "psk", id = "branch.example.org" }',
                                  '"aes256-sha384-nosuchgroup"]\nlocal = { auth = "psk", id = "hq.example.org" }\n'
                                  'remote = { auth = "psk", id = "branch.example.org" }', 1)
        assert bad != editor.text
        editor.load_text(bad)
        await _type_at_end(pilot, screen, "\n")
        assert not screen.validation.ok and screen.validation.errors
        assert any("connections.branch.proposals" in f.key_path for f in screen.validation.errors)
        assert "not applicable, not savable" in screen_text(app)
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: any("nothing applied" in n.message for n in app._notifications),
                       what="apply refused")
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any("was not written" in n.message for n in app._notifications),
                       what="save refused")
        assert [c for c in rt.commands if c[0] == "apply_policy"] == []
        assert policy_file.read_bytes() == original
        assert not policy_file.with_name(policy_file.name + ".bak").exists()


async def test_syntax_error_is_never_applied_nor_saved(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    policy_file = Path(rt._policy.path)
    original = policy_file.read_bytes()
    app = make_app(rt)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await _open(pilot)
        await _type_at_end(pilot, screen, "\n[[[oops\n")
        assert not screen.validation.ok
        await pilot.press("ctrl+g")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: sum("refused" in (n.title or "") for n in app._notifications) >= 2,
                       what="both refused")
        assert not any(c[0] == "apply_policy" for c in rt.commands)
        assert policy_file.read_bytes() == original


async def test_valid_edit_shows_diff_applies_changed_connection_only_and_saves(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    policy_file = Path(rt._policy.path)
    original = policy_file.read_text()
    app = make_app(rt)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await _open(pilot)
        editor = screen.query_one("#pol-editor", TextArea)
        editor.load_text(editor.text.replace('dpd_delay = "30s"', 'dpd_delay = "45s"'))
        await _type_at_end(pilot, screen, "\n")
        assert screen.validation.ok
        screen.query_one(TabbedContent).active = "pol-diff-tab"
        await pilot.pause()
        text = screen_text(app)
        assert "~ change connection branch" in text
        assert "untouched, SAs stay up" in text and "roadwarrior" in text
        assert '+dpd_delay = "45s"' in text
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm apply")
        assert "change branch" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: any(c[0] == "apply_policy" for c in rt.commands), what="applied")
        name, args = [c for c in rt.commands if c[0] == "apply_policy"][0]
        assert args["policy"].connection("branch").dpd_delay == 45.0
        assert '"45s"' in args["text"]
        await wait_for(pilot, lambda: any("changed branch" in n.message for n in app._notifications),
                       what="applied notice")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: '"45s"' in policy_file.read_text(), what="saved")
        assert policy_file.with_name(policy_file.name + ".bak").read_text() == original
        assert "# Head office gateway" in policy_file.read_text()  # hand-typed text saved as typed


async def test_engine_refusal_changes_nothing(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    error_type = policy_api.policy_error_type()
    Finding = policy_api.require("Finding")
    rt.fail_next["apply_policy"] = error_type([Finding("gateway.toml", "connections.branch", "error",
                                                       "the engine cannot do this")])
    app = make_app(rt)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await _open(pilot)
        editor = screen.query_one("#pol-editor", TextArea)
        editor.load_text(editor.text.replace('dpd_delay = "30s"', 'dpd_delay = "45s"'))
        await _type_at_end(pilot, screen, "\n")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await wait_for(pilot, lambda: any("nothing changed" in (n.title or "") for n in app._notifications),
                       what="refusal shown")
        policy, _ = await rt.policy()
        assert policy.connection("branch").dpd_delay == 30.0
        assert screen.running_text != editor.text  # still pending


async def test_form_edit_keeps_the_comments_of_a_hand_written_file(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        await wait_for(pilot, lambda: screen.query("#f-dpd_delay"), what="form for branch")
        editor = screen.query_one("#pol-editor", TextArea)
        before = editor.text
        field = screen.query_one("#f-dpd_delay", Input)
        assert field.value == "30s"
        field.focus()
        field.cursor_position = len(field.value)
        await pilot.press("backspace", "backspace", "backspace", "4", "5", "s")
        await wait_for(pilot, lambda: 'dpd_delay = "45s"' in editor.text, what="form edit in the text")
        assert not isinstance(app.screen, ConfirmScreen)  # nothing to warn about: comments stay
        assert "# Head office gateway" in editor.text
        changed = [ln for ln in editor.text.splitlines() if ln not in before.splitlines()]
        assert len(changed) == 1 and changed[0].startswith('dpd_delay = "45s"'), changed
        await wait_for(pilot, lambda: screen.validation.text == editor.text and screen.validation.ok,
                       what="valid")


async def test_form_shows_inline_errors(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        screen._form_consent = True
        await wait_for(pilot, lambda: screen.query("#f-remote_addrs"), what="form")
        field = screen.query_one("#f-remote_addrs", Input)
        field.focus()
        field.value = "not-an-address!"
        await wait_for(pilot, lambda: screen.validation is not None and not screen.validation.ok,
                       what="invalid")
        await pilot.pause()
        msg = screen.query_one("#f-remote_addrs-msg")
        assert msg.has_class("-shown") and "✗" in str(msg.render())


async def test_spd_question_is_answered(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        screen.query_one(TabbedContent).active = "pol-spd-tab"
        await pilot.pause()
        screen.query_one("#spd-src", Input).value = "198.51.100.5"
        screen.query_one("#spd-dst", Input).value = "198.51.100.130"
        screen.query_one("#spd-dport", Input).value = "443"
        screen.query_one("#spd-dst", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        text = screen_text(app)
        assert "PROTECT" in text and "lan" in text and "branch" in text
        screen.query_one("#spd-dst", Input).value = "192.0.2.99"  # outside every child
        screen.query_one("#spd-dport", Input).value = "23"
        await pilot.press("enter")
        await pilot.pause()
        assert "DISCARD" in screen_text(app) and "no-telnet" in screen_text(app)
