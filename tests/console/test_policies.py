"""Policies: validation, lint, diff, Apply and Save, form editing, the SPD question.

The rule under test above all: a policy that fails validation is never
applied nor saved.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from textual.widgets import Input, Static, TabbedContent, TextArea

from engine.policy.findings import Finding, PolicyError
from console.runtime.fake import FakeRuntime
from console.policy_state import pools_supported
from console.screens.confirm import ConfirmScreen
from console.screens.policies import PoliciesScreen
from console.screens.policy_edits import editable

from .conftest import make_app, ready, screen_text, wait_for



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
    rt.fail_next["apply_policy"] = PolicyError([Finding("gateway.toml", "connections.branch", "error",
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


async def test_form_edits_keep_comments_and_never_stack_questions(tmp_path):
    """Typing or pasting into a field of a hand-written file: no dialog (let alone one per
    keystroke), every character lands in the field, comments and layout stay."""
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    asked = []
    async with app.run_test(size=(100, 30)) as pilot:
        app.screen_stack_changed = None
        screen = await _open(pilot)
        await wait_for(pilot, lambda: screen.query("#f-remote-id"), what="form for branch")
        field = screen.query_one("#f-remote-id", Input)
        assert field.value == "branch.example.org"
        field.focus()
        field.value = ""
        await pilot.press(*"13")  # digits typed into a field stay in the field (no screen switch)
        asked.append(isinstance(app.screen, ConfirmScreen))
        field.insert_text_at_cursor(".example.net")  # a paste
        await pilot.press("backspace", "t")
        asked.append(isinstance(app.screen, ConfirmScreen))
        assert app.current_mode == "policies" and field.value == "13.example.net"
        editor = screen.query_one("#pol-editor", TextArea)
        await wait_for(pilot, lambda: 'id = "13.example.net"' in editor.text, what="form edit in the text")
        assert "# Head office gateway" in editor.text  # comments kept
        assert "[connections.roadwarrior]       # laptops, usually behind a NAT" in editor.text
        assert editor.text.replace('"13.example.net"', '"branch.example.org"') == rt._text  # nothing else moved
        await pilot.press("escape")  # back to the tree; now digits navigate
        await pilot.press("1")
        assert app.current_mode == "dashboard"
    assert asked == [False, False]


async def test_ctrl_t_cycles_every_tab_from_the_tree_and_from_a_form_field(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        tabs = screen.query_one(TabbedContent)
        seen = []
        for _ in range(4):
            await pilot.press("ctrl+t")
            await pilot.pause(0.1)
            seen.append(tabs.active)
        assert seen == ["pol-toml-tab", "pol-diff-tab", "pol-spd-tab", "pol-tree-tab"]
        await wait_for(pilot, lambda: screen.query("#f-dpd_delay"), what="form")
        screen.query_one("#f-dpd_delay", Input).focus()
        await pilot.press("ctrl+t")
        await pilot.pause(0.1)
        assert tabs.active == "pol-toml-tab"


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


async def test_spd_question_reads_names_and_says_what_is_wrong_in_words(tmp_path):
    """The SPD question took only port numbers and answered a service name with Python's
    "invalid literal for int() with base 10: 'https'", an unknown protocol with a bare "'foo'",
    and ports beyond 65535 as if they existed. It reads names as the policy does and says what
    is wrong like the policy's own errors."""
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        screen.query_one(TabbedContent).active = "pol-spd-tab"
        await pilot.pause()
        answer = screen.query_one("#spd-answer", Static)
        screen.query_one("#spd-src", Input).value = "198.51.100.5"
        screen.query_one("#spd-dst", Input).value = "192.0.2.99"

        async def ask(proto: str, dport: str) -> str:
            screen.query_one("#spd-proto", Input).value = proto
            screen.query_one("#spd-dport", Input).value = dport
            screen.query_one("#spd-dst", Input).focus()
            await pilot.press("enter")
            await pilot.pause()
            return str(answer.content)

        assert "DISCARD" in await ask("tcp", "telnet") and "no-telnet" in str(answer.content)
        said = await ask("foo", "23")
        assert "unknown protocol 'foo'" in said and "Cannot ask that" in said
        said = await ask("tcp", "99999")
        assert "outside 0-65535" in said and "DISCARD" not in said
        said = await ask("tcp", "no-such-service")
        assert "unknown service 'no-such-service'" in said and "int()" not in said


async def test_long_form_values_stay_visible_at_80x24(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        await wait_for(pilot, lambda: screen.query("#f-proposals"), what="form")
        await pilot.pause(0.2)
        field = screen.query_one("#f-proposals", Input)
        assert len(field.value) > field.size.width  # wider than the field
        row = screen_text(app).splitlines()[field.region.y]
        assert "aes256gcm16-prfsha384-x25519, aes256" in row  # its start, not a blank line
        # the whole value, wrapped, right under the field
        assert "aes256-sha384-ecp384" in screen_text(app).splitlines()[field.region.y + 2]


async def _wait_node(pilot, screen, node, present=True):
    from console.widgets.policy_tree import PolicyTree

    tree = screen.query_one(PolicyTree)
    await wait_for(pilot, lambda: (node in tree.nodes()) == present, what=f"{node} {'in' if present else 'gone'}")
    return tree


async def test_new_sections_show_in_the_tree_before_the_policy_validates(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        await _type_at_end(pilot, screen, "\n[connections.new-site]\nremote_addrs = [\"192.0.2.99\"]\n"
                                          "[connections.new-site.children.net]\n")
        assert not screen.validation.ok  # no auth, no selectors yet...
        await _wait_node(pilot, screen, ("connection", "new-site"))  # ...and yet it shows
        await _wait_node(pilot, screen, ("child", "new-site", "net"))


async def test_add_copy_and_delete_from_the_tree(tmp_path):
    from console.screens.dialogs import AddDialog, TextPrompt

    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        editor = screen.query_one("#pol-editor", TextArea)
        tree = await _wait_node(pilot, screen, ("connection", "branch"))
        tree.focus()
        tree.select(("rule", "dns"))
        await pilot.press("a")  # on a rule, a rule comes first
        await wait_for(pilot, lambda: isinstance(app.screen, AddDialog), what="add dialog")
        assert app.screen.choices[0][1] == ("rule",)
        # pools are offered once the policy layer reads [pools] (road warriors)
        assert any(p == ("pool",) for _, p in app.screen.choices) == pools_supported()
        await pilot.press("tab", "ctrl+a", "ctrl+k", *"ntp", "enter")
        await _wait_node(pilot, screen, ("rule", "ntp"))
        assert "[rules.ntp]" in editor.text
        if pools_supported():
            await pilot.press("a")
            await wait_for(pilot, lambda: isinstance(app.screen, AddDialog), what="add dialog")
            index = [p for _, p in app.screen.choices].index(("pool",))
            await pilot.press(*["down"] * index, "tab", "ctrl+a", "ctrl+k", *"clients", "enter")
            await _wait_node(pilot, screen, ("pool", "clients"))
            assert '[pools.clients]\naddrs = "198.51.100.128/25"' in editor.text
        tree.select(("connection", "branch"))
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt), what="copy prompt")
        await pilot.press("ctrl+a", "ctrl+k", *"branch2", "enter")
        await _wait_node(pilot, screen, ("child", "branch2", "voice"))  # with its children
        tree.select(("child", "branch2", "voice"))
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="delete confirmation")
        await pilot.press("y")
        await _wait_node(pilot, screen, ("child", "branch2", "voice"), present=False)
        assert ("child", "branch2", "lan") in tree.nodes()
        tree.select(("connection", "branch2"))
        await pilot.press("x", "y")
        await _wait_node(pilot, screen, ("connection", "branch2"), present=False)
        assert "branch2" not in editor.text and "# Head office gateway" in editor.text
        await wait_for(pilot, lambda: screen.validation.text == editor.text and screen.validation.ok, what="valid")


async def test_names_over_64_characters_are_refused_where_they_are_typed(tmp_path):
    """The policy layer takes names of 1 to 64 characters. The add dialog refused spaces but took
    a 70-character name, which then made the whole policy invalid; and the copy of a 64-character
    connection was offered as NAME-2, 66 characters, refused the same way."""
    from console.screens.dialogs import AddDialog, TextPrompt

    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        editor = screen.query_one("#pol-editor", TextArea)
        tree = await _wait_node(pilot, screen, ("connection", "branch"))
        tree.focus()
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, AddDialog), what="add dialog")
        index = [p for _, p in app.screen.choices].index(("connection",))
        too_long = "frankfurt-datacenter-primary-uplink-to-the-head-office-in-zurich-01"
        assert len(too_long) > 64
        await pilot.press(*["down"] * index, "tab", "ctrl+a", "ctrl+k", *too_long, "enter")
        await pilot.pause()
        assert isinstance(app.screen, AddDialog) and "64" in screen_text(app)
        assert too_long not in editor.text
        await pilot.press("ctrl+a", "ctrl+k", *too_long[:64], "enter")
        await _wait_node(pilot, screen, ("connection", too_long[:64]))
        tree.select(("connection", too_long[:64]))
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt), what="copy prompt")
        offered = app.screen.query_one(Input).value
        assert len(offered) <= 64 and offered != too_long[:64]
        await pilot.press("enter")
        await _wait_node(pilot, screen, ("connection", offered))
        await wait_for(pilot, lambda: screen.validation.text == editor.text, what="validation")
        assert not [f for f in screen.validation.errors if "characters without spaces" in f.message]


async def test_new_file_from_a_template_save_as_and_the_shipped_lab_is_never_overwritten(tmp_path, monkeypatch):
    from console.screens.dialogs import NewFileDialog
    from engine.policy.samples import sample_path

    monkeypatch.chdir(tmp_path)
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await _open(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewFileDialog), what="new file dialog")
        target = tmp_path / "gw2.toml"
        await pilot.press("ctrl+a", "ctrl+k", *str(target), "tab", "down", "enter")  # the first sample
        editor = screen.query_one("#pol-editor", TextArea)
        first_sample = [n for n in __import__("engine.policy.samples", fromlist=["x"]).sample_names()
                        if n != "lab.toml" and not n.startswith("lab-")][0]
        await wait_for(pilot, lambda: editor.text == sample_path(first_sample).read_text(), what="template")
        assert screen.file_path == str(target) and not target.exists()
        assert any("edits not saved" in p for p in app.pending_work())
        # Save as somewhere else (its secrets file beside it): the text goes there, and so do later saves.
        secrets_name = first_sample.replace(".toml", ".secrets.toml")
        (tmp_path / secrets_name).write_text(sample_path(secrets_name).read_text())
        (tmp_path / secrets_name).chmod(0o600)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, NewFileDialog), what="save as dialog")
        other = tmp_path / "gw3.toml"
        await pilot.press("ctrl+a", "ctrl+k", *str(other), "enter")
        await wait_for(pilot, lambda: other.exists(), what="saved as")
        assert other.read_text() == sample_path(first_sample).read_text() and screen.file_path == str(other)
        await _type_at_end(pilot, screen, "# mine\n")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: other.read_text().endswith("# mine\n"), what="saved again")
        assert not target.exists()
        # The shipped lab is never written over: Save turns into Save as.
        lab = sample_path("lab.toml")
        before = lab.read_text()
        screen.file_path = str(lab)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, NewFileDialog), what="save as instead")
        await pilot.press("escape")
        assert lab.read_text() == before


async def test_quit_asks_and_names_what_would_be_lost(tmp_path):
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        editor = screen.query_one("#pol-editor", TextArea)
        editor.load_text(editor.text.replace('dpd_delay = "30s"', 'dpd_delay = "45s"'))
        await _type_at_end(pilot, screen, "\n")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm apply")
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.running_text == editor.text, what="applied")
        screen.query_one("#pol-tree").focus()
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="quit guard")
        text = screen_text(app)
        assert "edits not saved" in text and "lost at the next start" in text and "gateway.toml" in text
        await pilot.press("n")
        assert app.is_running
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not app.pending_work(), what="saved")
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, what="quit without asking")



async def test_saved_but_not_applied_is_not_called_a_policy_lost_at_the_next_start(tmp_path):
    """Save without Apply: the file holds the edit and the engine still runs what the file held
    before, which the admin replaced on purpose. The only thing pending is the Apply; the line
    under the editor and the quit guard must not warn that the running policy "is lost at the
    next start" (it was saved: it is the file's previous version, kept as .bak)."""
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        editor = screen.query_one("#pol-editor", TextArea)
        findings = screen.query_one("#pol-findings", Static)
        editor.load_text(editor.text.replace('dpd_delay = "30s"', 'dpd_delay = "45s"'))
        await _type_at_end(pilot, screen, "\n")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.file_text == editor.text, what="saved")
        await wait_for(pilot, lambda: "edits not saved" not in str(findings.content), what="findings after the save")
        assert app.pending_work() == ["gateway.toml: edits not applied to the engine (ctrl+g)"]
        assert "lost at the next start" not in str(findings.content)
        # Applied, then edited again and saved: the engine runs what the file held a moment ago.
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm apply")
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.running_text == editor.text, what="applied")
        assert app.pending_work() == []
        editor.load_text(editor.text.replace('dpd_delay = "45s"', 'dpd_delay = "50s"'))
        await _type_at_end(pilot, screen, "\n")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.file_text == editor.text, what="saved again")
        assert app.pending_work() == ["gateway.toml: edits not applied to the engine (ctrl+g)"]
        # Applied but not saved: that one is lost at the next start, and is named so.
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm apply")
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.running_text == editor.text, what="applied again")
        editor.load_text(editor.text.replace('dpd_delay = "50s"', 'dpd_delay = "55s"'))
        await _type_at_end(pilot, screen, "\n")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm apply")
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.running_text == editor.text, what="applied unsaved")
        assert any("lost at the next start" in p for p in app.pending_work())


async def test_save_over_a_file_changed_on_disk_asks_first(tmp_path):
    """Someone else (vi in another ssh session, ipsec-console import, a config tool) changed the
    policy file after the console read it. Ctrl+s wrote the console's text over it without a word
    (only a .bak, overwritten by the next save, kept their change). It asks first, and Cancel
    writes nothing."""
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        path = Path(screen.file_path)
        theirs = path.read_text() + "\n# added by a colleague: keep the legacy peer until Friday\n"
        path.write_text(theirs)
        editor = screen.query_one("#pol-editor", TextArea)
        editor.load_text(editor.text.replace('dpd_delay = "30s"', 'dpd_delay = "45s"'))
        await _type_at_end(pilot, screen, "\n")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert "changed on disk" in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        assert path.read_text() == theirs
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question again")
        await pilot.press("y")
        await wait_for(pilot, lambda: path.read_text() == editor.text, what="saved over it")
        assert Path(str(path) + ".bak").read_text() == theirs
        # Saved: the next save does not ask.
        await _type_at_end(pilot, screen, "\n")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: path.read_text() == editor.text, what="saved again")
        assert not isinstance(app.screen, ConfirmScreen)


async def test_a_new_psk_is_pending_until_applied(tmp_path):
    """k writes the PSK to the secrets file, not to the engine. The policy text does not change,
    so the line under the editor said "saved, same as running" and quitting asked nothing, while
    the engine still used the old key. The new PSK is named as not applied until ctrl+g."""
    from console.screens.dialogs import PskDialog

    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        findings = screen.query_one("#pol-findings", Static)
        assert "saved, same as running" in str(findings.content)
        tree = await _wait_node(pilot, screen, ("connection", "branch"))
        tree.focus()
        tree.select(("connection", "branch"))
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, PskDialog), what="PSK dialog")
        psk = "n3w-Shared-Key-for-the-branch-0042"
        await pilot.press(*psk, "enter", *psk, "enter")
        await wait_for(pilot, lambda: "not applied" in str(findings.content), what="the PSK named as pending")
        assert "same as running" not in str(findings.content) and psk not in screen_text(app)
        assert any("PSK" in p and "branch" in p and "ctrl+g" in p for p in app.pending_work())
        assert "PSK of branch" in str(screen.query_one("#pol-diff", Static).content)
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm apply")
        assert "change branch" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: "saved, same as running" in str(findings.content), what="applied")
        assert app.pending_work() == []


async def test_the_form_is_not_editable_while_the_toml_does_not_parse(tmp_path):
    """With the TOML broken in the TOML tab, the form kept its fields: typing in them showed the
    new value and changed nothing (the edit has no document to go to), and the value was gone
    once the TOML was fixed. The form says the TOML does not parse, and comes back when it does."""
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        await wait_for(pilot, lambda: screen.query("#f-remote-id"), what="form for branch")
        editor = screen.query_one("#pol-editor", TextArea)
        good = editor.text
        editor.load_text("[[[\n" + good)
        await wait_for(pilot, lambda: screen.validation.text == editor.text, what="validation of the break")
        await wait_for(pilot, lambda: not screen.query("#f-remote-id"), what="the fields gone")
        # The old fields go before the notice is mounted (one rebuild, two steps): wait for it.
        await wait_for(pilot, lambda: "does not parse" in screen_text(app), what="the notice")
        editor.load_text(good)
        await wait_for(pilot, lambda: screen.query("#f-remote-id"), what="the fields back")
        assert screen.query_one("#f-remote-id", Input).value == "branch.example.org"


async def test_moving_through_the_tree_never_cancels_a_form_half_built(tmp_path):
    """Holding an arrow key in the tree asks for a new form while the last one is still being
    removed or mounted. Cancelling that work half way (it awaits the fields' own tasks, and a
    cancelled gather cancels them) can leave fields in the form that no longer process anything:
    stale fields on screen, and a screen whose messages never drain (a Pilot pause timed out
    after 30 s in CI). Every rebuild runs to its end; the last form asked for is the one shown."""
    rt = FakeRuntime.in_folder(tmp_path)
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        await wait_for(pilot, lambda: screen.query("#f-remote-id"), what="form for branch")
        rebuild = screen._rebuild_form
        cancelled = []

        async def watched(node):
            try:
                await rebuild(node)
            except asyncio.CancelledError:
                cancelled.append(node)
                raise

        screen._rebuild_form = watched
        form = screen.query_one("#pol-form")
        tree = screen.query_one("#pol-tree")
        lines = [line for line in range(tree.last_line + 1) if tree.get_node_at_line(line) is not None]
        rng = random.Random(7)
        for _step in range(120):
            tree.cursor_line = rng.choice(lines)
            await asyncio.sleep(rng.random() * 0.012)  # catch rebuilds at every stage
        last = tree.cursor_node.data
        wanted = last if editable(last) else None  # a section line keeps the form before it

        def settled() -> bool:
            return ((wanted is None or screen._form_node == wanted) and bool(form.children)
                    and all(getattr(w, "form_node", None) == screen._form_node for w in form.children))

        await wait_for(pilot, settled, timeout=10, what="the last form's fields, and only them")
        assert not cancelled, f"{len(cancelled)} form rebuilds cancelled half way"

        def dead() -> list:
            return [w for w in screen.walk_children() if not w.is_running]

        # Fields mounted last start their message loops a moment later on a loaded machine: a
        # field that never starts is the failure, one still starting is not.
        try:
            await wait_for(pilot, lambda: not dead(), timeout=10, what="every widget processing messages")
        except AssertionError:
            raise AssertionError(f"{len(dead())} widgets on the screen process no messages: {dead()[:3]}") from None
        ids = [w.id for w in form.children if w.id]
        assert len(ids) == len(set(ids))
