"""Console fixes re-done in the eleventh session (each test failed before its fix)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from console.app import ConsoleApp
from console.runtime.fake import FakeRuntime

from .conftest import ready, screen_text, wait_for

T0 = datetime(2031, 3, 1, 9, 30, tzinfo=timezone.utc)


def clock() -> datetime:
    return T0


def test_lab_ca_folder_created_with_its_parents(tmp_path, monkeypatch):
    """The lab's CA folder lives in the user's data folder, which a fresh account lacks: creating
    the CA creates the folders above it too (it said "cannot create folder")."""
    from console.widgets.pki_folder import InitRequest, change, lab_pki_dir

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "fresh" / "share"))
    d = lab_pki_dir()
    assert not d.parent.exists()
    out = change(d, clock, "init", InitRequest("O=Lab, CN=Lab CA"))
    assert out.error == ""
    assert (d / "ca.crt").is_file()


async def test_packets_footer_says_resume_while_paused():
    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("5")
        await wait_for(pilot, lambda: app.screen.query("#pk-samples"), what="packets")
        await pilot.pause()
        footer = screen_text(app).splitlines()[-1]
        assert "Pause" in footer and "Resume" not in footer
        await pilot.press("space")
        await pilot.pause()
        assert app.screen.paused
        footer = screen_text(app).splitlines()[-1]
        assert "Resume" in footer and "Pause" not in footer
        await pilot.press("space")
        await pilot.pause()
        assert not app.screen.paused
        assert "Pause" in screen_text(app).splitlines()[-1]


async def test_quit_after_save_without_apply_is_not_called_losing_edits(tmp_path):
    """Saved, not applied: nothing is lost by quitting (the file holds it); the question says what
    is pending instead of "Quit and lose this?"."""
    from textual.widgets import TextArea

    from console.screens.confirm import ConfirmScreen

    from .test_policies import _open, _type_at_end

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        editor = screen.query_one("#pol-editor", TextArea)
        editor.load_text(editor.text.replace('dpd_delay = "30s"', 'dpd_delay = "45s"'))
        await _type_at_end(pilot, screen, "\n")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.file_text == editor.text, what="saved")
        screen.query_one("#pol-tree").focus()
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="quit guard")
        title = app.screen.title_text
        assert "lose" not in title and "not applied" in title
        await pilot.press("n")
        # Unsaved edits are still a loss, and called so.
        editor.load_text(editor.text.replace('dpd_delay = "45s"', 'dpd_delay = "50s"'))
        await _type_at_end(pilot, screen, "\n")
        screen.query_one("#pol-tree").focus()
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="quit guard")
        assert app.screen.title_text == "Quit and lose this?"


async def _save_as(pilot, target: Path) -> None:
    from console.screens.dialogs import NewFileDialog

    app = pilot.app
    await pilot.press("ctrl+o")
    await wait_for(pilot, lambda: isinstance(app.screen, NewFileDialog), what="save as dialog")
    await pilot.press("ctrl+a", "ctrl+k", *str(target), "enter")
    await wait_for(pilot, lambda: target.exists() and app.screen.file_path == str(target), what="saved as")


async def test_a_copy_is_never_applied_to_an_engine_that_rereads_its_own_file(tmp_path, monkeypatch):
    """The embedded engine (and a daemon) read their own file again at the next start or reload: a
    Save-as copy or a new file applied to it would run until then and vanish. Apply says so, and how
    to run the copy, instead of asking."""
    from textual.widgets import TextArea

    from console.screens.confirm import ConfirmScreen
    from console.screens.dialogs import NewFileDialog

    from .test_policies import _open, _type_at_end

    monkeypatch.chdir(tmp_path)
    rt = FakeRuntime.in_folder(tmp_path, kind="embedded")
    app = ConsoleApp(rt)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await _open(pilot)
        copy = tmp_path / "copy.toml"
        await _save_as(pilot, copy)
        editor = screen.query_one("#pol-editor", TextArea)
        editor.load_text(editor.text.replace('dpd_delay = "30s"', 'dpd_delay = "45s"'))
        await _type_at_end(pilot, screen, "\n")
        app._notifications.clear()
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: list(app._notifications), what="the refusal")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmScreen)
        said = " ".join(n.message for n in app._notifications)
        assert "gateway.toml" in said and f"ipsec-console {copy}" in said
        assert not any(c == "apply_policy" for c, _ in rt.commands)
        # A new file (ctrl+n) the same.
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewFileDialog), what="new file dialog")
        new = tmp_path / "new.toml"
        await pilot.press("ctrl+a", "ctrl+k", *str(new), "enter")
        await wait_for(pilot, lambda: screen.file_path == str(new), what="new file")
        app._notifications.clear()
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: list(app._notifications), what="the refusal")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmScreen)
        assert f"ipsec-console {new}" in " ".join(n.message for n in app._notifications)


async def test_the_lab_applies_a_second_save_as_copy(tmp_path, monkeypatch):
    """The lab never reads a file of its own again: what Save as wrote is applied, twice over."""
    from textual.widgets import TextArea

    from console.screens.confirm import ConfirmScreen

    from .test_policies import _open, _type_at_end

    monkeypatch.chdir(tmp_path)
    rt = FakeRuntime.in_folder(tmp_path, kind="lab")
    app = ConsoleApp(rt)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await _open(pilot)
        editor = screen.query_one("#pol-editor", TextArea)
        for n, delay in ((1, "45s"), (2, "50s")):
            await _save_as(pilot, tmp_path / f"copy{n}.toml")
            editor.load_text(editor.text.replace(f'dpd_delay = "{"30s" if n == 1 else "45s"}"',
                                                 f'dpd_delay = "{delay}"'))
            await _type_at_end(pilot, screen, "\n")
            await pilot.press("ctrl+g")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what=f"confirm apply {n}")
            await pilot.press("y")
            await wait_for(pilot, lambda: screen.running_text == editor.text, what=f"applied {n}")


async def test_save_as_names_the_secrets_file_the_copy_will_look_for(tmp_path):
    """[engine] secrets is relative to the policy file: a copy in another folder looks for its
    secrets there. The Save-as dialog names that file, and says when it is missing."""
    from console.screens.dialogs import NewFileDialog

    from .test_policies import _open

    (tmp_path / "elsewhere").mkdir()
    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await _open(pilot)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, NewFileDialog), what="save as dialog")
        note = app.screen.query_one("#file-note")
        await wait_for(pilot, lambda: "gateway.secrets.toml" in str(note.content), what="the secrets file named")
        assert "missing" not in str(note.content)  # beside the original: it is there
        await pilot.press("ctrl+a", "ctrl+k", *str(tmp_path / "elsewhere" / "copy.toml"))
        want = str(tmp_path / "elsewhere" / "gateway.secrets.toml")
        await wait_for(pilot, lambda: want in str(note.content), what="the copy's secrets file")
        assert "missing" in str(note.content)


def burst(app, *keys: str) -> None:
    """Keys as a terminal delivers a fast typist's (or a paste-like) burst: all queued at once,
    none handled before the next arrives (Pilot.press waits for idle after each key)."""
    from textual import events
    from textual.app import _character_to_key

    for key in keys:
        char = key if len(key) == 1 else None
        if char is not None and not key.isalnum():
            key = _character_to_key(key)
        event = events.Key(key, char)
        event.set_sender(app)
        app._driver.send_message(event)


async def test_a_key_burst_applies_in_order_in_a_form_field(tmp_path):
    """Backspace is an Input binding: Textual ran it only once the key had bubbled up to the app,
    behind the digits queued after it ("730", 3 x Backspace, "5000" gave "7305")."""
    from console.screens.pki import PkiScreen
    from console.widgets.pki_forms import IssueForm

    from .test_pki_screen import make_ca

    make_ca(tmp_path, certs=False)
    app = ConsoleApp(FakeRuntime.in_folder(tmp_path), clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("6")
        await wait_for(pilot, lambda: isinstance(app.screen, PkiScreen) and app.screen.view is not None,
                       what="the CA folder read")
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, IssueForm), what="the issue form")
        days = app.screen.query_one("#pki-days")
        days.focus()
        days.value = "730"
        days.cursor_position = 3
        await pilot.pause()
        burst(app, "backspace", "backspace", "backspace", *"5000")
        await pilot.pause(0.3)
        assert days.value == "5000"


async def test_a_key_burst_applies_in_order_in_the_policy_editor_and_its_form(tmp_path):
    from textual.widgets import TabbedContent, TextArea

    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        await wait_for(pilot, lambda: screen.query("#f-dpd_delay"), what="the form")
        field = screen.query_one("#f-dpd_delay")
        field.focus()
        field.cursor_position = len(field.value)
        await pilot.pause()
        assert field.value == "30s"
        burst(app, "backspace", "backspace", "backspace", *"45s")
        await pilot.pause(0.3)
        assert field.value == "45s"
        screen.query_one(TabbedContent).active = "pol-toml-tab"
        editor = screen.query_one("#pol-editor", TextArea)
        editor.focus()
        editor.load_text("abc")
        editor.move_cursor(editor.document.end)
        await pilot.pause()
        burst(app, "backspace", "backspace", *"xyz")
        await pilot.pause(0.3)
        assert editor.text == "axyz"


async def test_enter_in_a_dialog_takes_the_keys_typed_before_it(tmp_path):
    """Enter was a priority binding of the dialog: it ran as soon as the app saw it, before the
    field had taken the characters typed just before (a burst): the dialog accepted the old text."""
    from console.screens.dialogs import NewFileDialog

    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, NewFileDialog), what="save as dialog")
        target = tmp_path / "burst.toml"
        burst(app, "ctrl+a", "ctrl+k", *str(target), "enter")
        await wait_for(pilot, lambda: target.exists() and screen.file_path == str(target), what="saved where typed")
        # The add dialog: the name typed in the same burst as Enter.
        screen.query_one("#pol-tree").focus()
        await pilot.press("a")
        await wait_for(pilot, lambda: app.screen.query("#add-name"), what="add dialog")
        await pilot.press("tab")
        burst(app, "ctrl+a", "ctrl+k", *"quick", "enter")
        await wait_for(pilot, lambda: ".children.quick]" in screen._text(), what="added as typed")


def test_every_text_field_of_the_console_takes_bursts_in_order():
    """A plain Input or TextArea would bring back the key-order bug (console/widgets/fields.py)."""
    import re

    root = Path(__file__).resolve().parents[2] / "console"
    plain = re.compile(r"(?<![\w.])(Input|TextArea)(\(|\.code_editor\()")
    found = [f"{p.relative_to(root)}:{n}" for p in root.rglob("*.py") if p.name != "fields.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if plain.search(line)]
    assert not found


async def test_terminate_on_a_down_connection_refuses_at_once():
    """Nothing to terminate: say so now (no question whose only answer is a refusal)."""
    from console.screens.confirm import ConfirmScreen
    from console.widgets.sa_tables import ConnectionTable

    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        down = "branch"
        await app.runtime.terminate(down)
        app.runtime.commands.clear()
        app.poll_soon()
        await wait_for(pilot, lambda: any(c.name == down and c.state == "down"
                                          for c in app.store.snapshot.connections), what="branch down")
        table = app.screen.query_one(ConnectionTable)
        table.focus()
        table.move_cursor(row=table.get_row_index(down))
        await pilot.pause()
        await pilot.press("t")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmScreen)
        said = " ".join(n.message for n in app._notifications)
        assert down in said and "down" in said
        assert not any(c == "terminate" for c, _ in app.runtime.commands)


async def test_help_titles_name_screens_and_widgets_not_python_classes(tmp_path):
    import re

    from console.screens.help import binding_rows

    camel = re.compile(r"[a-z][A-Z]")  # SaDetailScreen, KeyedTable, PolicyTree ...
    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.screen.query_one("#child-sas").focus()
        await pilot.pause()
        titles = [t for t, _ in binding_rows(app.screen)]
        assert "In the focused table (CHILD SAs)" in titles, titles
        app.open_detail("branch")
        await pilot.pause(0.2)
        titles += [t for t, _ in binding_rows(app.screen)]
        assert any(t.startswith("This screen (SA detail") for t in titles), titles
        await pilot.press("escape")
        await pilot.press("3")
        await wait_for(pilot, lambda: getattr(app.screen, "validation", None) is not None, what="policies")
        app.screen.query_one("#pol-tree").focus()
        await pilot.pause()
        titles += [t for t, _ in binding_rows(app.screen)]
        await pilot.press("a")
        await wait_for(pilot, lambda: len(app.screen_stack) > 1, what="add dialog")
        titles += [t for t, _ in binding_rows(app.screen)]
        assert not [t for t in titles if camel.search(t)], titles


async def test_sa_detail_opened_from_negotiations_goes_back_there():
    from console.screens.negotiations import NegotiationsScreen
    from console.screens.sa_detail import SaDetailScreen

    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, NegotiationsScreen)
                       and app.screen.query_one("#nego-list").row_count, what="negotiations")
        app.screen.query_one("#nego-list").focus()
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, SaDetailScreen), what="detail")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, SaDetailScreen), what="back")
        assert isinstance(app.screen, NegotiationsScreen)
        # n (Exchanges) from a detail opened there goes back to the same screen, not a detail left open.
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, SaDetailScreen), what="detail again")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NegotiationsScreen), what="exchanges")
        assert len(app.screen_stack) == 1


def test_a_section_the_form_adds_is_followed_by_a_blank_line():
    """tomlkit puts a new table in its parent's place: without a blank line after it, the next
    section's header stuck to its last key. The file's last line stays a single newline."""
    from console import policy_form as pf
    from console.runtime.fake_data import DEMO_POLICY_TEXT

    doc = pf.load_doc(DEMO_POLICY_TEXT)
    for node in (("connection", "newc"), ("child", "branch", "kid"), ("rule", "r2")):
        pf.add_node(doc, node)
    out = pf.dump_doc(doc)
    lines = out.splitlines()
    stuck = [line for prev, line in zip(lines, lines[1:]) if line.startswith("[") and prev.strip() and not prev.startswith("#")]
    assert not stuck, stuck
    assert out.endswith('"]\n') and "\n\n\n" not in out
    # From an empty policy: sections added at the end, then one among them.
    doc = pf.load_doc(pf.EMPTY_POLICY)
    for node in (("connection", "a"), ("connection", "b"), ("child", "a", "k"), ("rule", "r")):
        pf.add_node(doc, node)
    out = pf.dump_doc(doc)
    lines = out.splitlines()
    assert not [line for prev, line in zip(lines, lines[1:]) if line.startswith("[") and prev.strip()]
    assert "\n\n\n" not in out


async def _logs(pilot):
    from textual.widgets import RichLog

    app = pilot.app
    await ready(pilot)
    await pilot.press("4")
    await wait_for(pilot, lambda: app.screen.query("#log") and app.screen.query_one(RichLog).lines,
                   what="log lines")
    return app.screen.query_one(RichLog)


async def test_logs_only_matches_keeps_what_the_search_finds():
    """The search (n) looks at the whole line as shown (time, level, [connection], text, source);
    "only matches" (m) looked at the text and source only and hid lines the search had found."""
    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        log = await _logs(pilot)
        await pilot.press("slash", *"[branch]", "enter")
        await pilot.pause()
        found = [s.text for s in log.lines if "[branch]" in s.text]
        assert found and "match 1/" in str(log.border_subtitle)
        log.focus()
        await pilot.press("m")
        await pilot.pause()
        shown = [s.text for s in log.lines]
        assert shown == found


async def test_copy_of_a_wrapped_log_line_copies_the_whole_line():
    rt = FakeRuntime()
    long_text = "a very long line " + "x" * 150 + " END-OF-LONG-LINE"
    rt._log("info", "engine.test", long_text, "branch")
    app = ConsoleApp(rt)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        log = await _logs(pilot)
        log.focus()
        await pilot.press("w")
        await pilot.pause()
        await pilot.press("slash", *"END-OF-LONG", "enter")
        await pilot.pause()
        log.focus()
        await pilot.press("y")
        assert app.clipboard.count("x") >= 150
        assert "a very long line" in app.clipboard and app.clipboard.rstrip().endswith("engine.test")


async def test_negotiations_show_whole_failure_names_at_80x24():
    from console.screens.negotiations import NegotiationsScreen

    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, NegotiationsScreen)
                       and app.screen.query_one("#nego-list").row_count, what="negotiations")
        await pilot.pause(0.2)
        rows = [line[:45] for line in screen_text(app).splitlines()]
        failed = [r for r in rows if "✗" in r]
        names = ("NO_PROPOSAL_CHOSEN", "TS_UNACCEPTABLE", "AUTHENTICATION_FAILED")
        assert len(failed) == 3 and all(any(f"✗ {n} " in r for n in names) for r in failed), failed


async def test_table_cells_cut_to_their_column_end_in_an_ellipsis():
    from textual.app import App

    from console.widgets.keyed_table import KeyedTable

    class One(App):
        def compose(self):
            yield KeyedTable((("name", "Name", 8), ("state", "State", 5)),
                             styler=lambda c, v: Text(v, style="bold") if c == "state" else v)

    from rich.text import Text

    app = One()
    async with app.run_test(size=(40, 6)) as pilot:
        table = app.query_one(KeyedTable)
        table.sync({"a": ("roadwarrior-eap", "ESTABLISHED"), "b": ("branch", "up")})
        await pilot.pause()
        text = screen_text(app)
        assert "roadwar…" in text and "ESTA…" in text
        assert "branch " in text and "up " in text  # what fits is left alone


async def test_policy_tree_labels_cut_to_the_tree_end_in_an_ellipsis(tmp_path):
    from textual.widgets import TextArea

    from console.widgets.policy_tree import PolicyTree

    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        editor = screen.query_one("#pol-editor", TextArea)
        long = "branch-office-in-the-north-wing"
        editor.load_text(editor.text.replace("[connections.branch]", f"[connections.{long}]")
                         .replace("[connections.branch.", f"[connections.{long}."))
        tree = screen.query_one(PolicyTree)
        await wait_for(pilot, lambda: ("connection", long) in tree.nodes(), what="the renamed connection")
        await pilot.pause(0.2)
        region = tree.content_region
        rows = [line[region.x:region.right] for line in screen_text(app).splitlines()[region.y:region.bottom]]
        cut = [r for r in rows if "branch-office" in r]
        assert cut and all(r.rstrip().endswith("…") for r in cut), rows


def test_a_certificate_shortened_to_the_ca_end_says_so(tmp_path):
    """A certificate never outlives its CA: asked for more days than the CA has left, it ends with
    the CA, and the PKI screen's notice says so (it read as if the days had been granted)."""
    from console.widgets.pki_folder import IssueRequest, change

    from .test_pki_screen import make_ca

    d = make_ca(tmp_path, certs=False)  # a CA of 3650 days from T0
    out = change(d, clock, "issue", IssueRequest("vpn.example.org", days=5000))
    assert out.error == "" and "shortened" in out.done and "5000" in out.done
    out = change(d, clock, "issue", IssueRequest("vpn2.example.org", days=90))
    assert out.error == "" and "shortened" not in out.done


def _cut_headers(app, table) -> list[str]:
    """Columns of ``table`` whose header the screen shows only in part (cut at the right edge)."""
    region = table.content_region
    header = screen_text(app).splitlines()[region.y][region.x:region.right]
    shown = [str(col.label) for col in table.columns.values()]
    return [label for label in shown if label not in header]


async def test_at_100_columns_the_dashboard_uses_the_width():
    """At 100 columns (under the 110 of the full layout) the tables showed the 80-column set and
    left a third of the screen empty; the alert strip shortened notify names it had room for."""
    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.pause(0.2)
        ike = app.screen.query_one("#ike-sas")
        child = app.screen.query_one("#child-sas")
        assert "local" in ike.visible_columns
        assert {"mode", "bytes_out"} <= set(child.visible_columns)
        for table in app.screen.query("KeyedTable"):
            assert not _cut_headers(app, table), table.id
        text = screen_text(app)
        assert "NO_PROPOSAL_CHOSEN" in text and "NO_PROP " not in text


async def test_clients_and_sa_detail_cells_are_not_cut_at_80x24():
    from console.screens.clients import ClientsScreen
    from console.screens.sa_detail import SaDetailScreen

    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("7")
        await wait_for(pilot, lambda: isinstance(app.screen, ClientsScreen)
                       and app.screen.query_one("#clients").row_count, what="clients")
        await pilot.pause(0.2)
        assert not _cut_headers(app, app.screen.query_one("#clients"))
        await pilot.press("1")
        app.open_detail("branch")
        await wait_for(pilot, lambda: isinstance(app.screen, SaDetailScreen), what="detail")
        await pilot.pause(0.2)
        assert not _cut_headers(app, app.screen.query_one("#detail-children"))


async def test_the_lab_at_80x24_shows_the_child_sa_table():
    """The lab's banner takes a row: the connections table (up to 8 rows) and the IKE SAs pushed
    the CHILD SAs, the traffic, off the screen."""
    app = ConsoleApp(FakeRuntime(kind="lab"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "LAB" in text
        assert "─CHILD SAs" in text and "branch/lan {1}" in text, text


async def test_toasts_never_hide_a_dialogs_buttons():
    from textual.widgets import Button
    from textual.widgets._toast import Toast

    from console.screens.confirm import ConfirmScreen

    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        app.screen.query_one("#child-sas").focus()
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        for n in range(3):
            app.notify(f"something happened meanwhile, number {n}, with a few words more", title="Runtime",
                       timeout=30)
        await pilot.pause(0.3)
        assert app.screen.query(Toast)
        buttons = list(app.screen.query(Button))
        assert buttons
        for button in buttons:  # every cell of every button shows the button, not a toast over it
            r = button.region
            for x in range(r.x, r.right):
                for y in range(r.y, r.bottom):
                    assert app.screen.get_widget_at(x, y)[0] is button, (button.id, x, y)


async def test_terminate_on_a_failing_connection_asks_to_stop_its_retries():
    """A connection that failed and waits for its next attempt has no IKE SA, yet is not down:
    `t` offers to stop the attempts (the engine cancels the pending one), and it then is down."""
    from console.screens.confirm import ConfirmScreen
    from console.widgets.sa_tables import ConnectionTable

    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await ready(pilot)
        snap = app.store.snapshot
        failing = next(c.name for c in snap.connections
                       if c.state == "failing" and not any(i.name == c.name for i in snap.ike_sas))
        table = app.screen.query_one(ConnectionTable)
        table.focus()
        table.move_cursor(row=table.get_row_index(failing))
        await pilot.pause()
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert app.screen.title_text == f"Stop {failing} trying again?"
        await pilot.press("y")
        await wait_for(pilot, lambda: ("terminate", {"name": failing, "unique_id": None}) in app.runtime.commands,
                       what="terminate sent")
        app.poll_soon()
        await wait_for(pilot, lambda: any(c.name == failing and c.state == "down"
                                          for c in app.store.snapshot.connections), what=f"{failing} down")
        assert not any(n.severity == "error" for n in app._notifications)
