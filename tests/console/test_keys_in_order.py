"""Keys in the order typed (fifteenth session): application keys in a burst with text, and the
keys typed right after the Enter that closes a dialog."""

from __future__ import annotations

from console.app import ConsoleApp
from console.runtime.fake import FakeRuntime
from console.screens.confirm import ConfirmScreen
from console.widgets.sa_tables import ChildSaTable

from .conftest import make_app, ready, wait_for
from .test_console_fixes import burst, clock


async def test_keys_typed_after_the_enter_that_confirms_reach_the_screen_underneath():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        table = app.screen.query_one(ChildSaTable)
        table.focus()
        table.move_cursor(row=0)
        await pilot.pause()
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        burst(app, "tab", "enter", "down", "down")
        await wait_for(pilot, lambda: rt.commands, what="rekey command")
        await pilot.pause(0.3)
        assert app.focused is table
        assert table.cursor_row == 2


async def test_keys_typed_after_y_that_confirms_reach_the_screen_underneath():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        table = app.screen.query_one(ChildSaTable)
        table.focus()
        table.move_cursor(row=0)
        await pilot.pause()
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        burst(app, "n", "down")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, ConfirmScreen)
        assert table.cursor_row == 1


async def test_ctrl_s_typed_between_text_saves_what_was_typed_before_it(tmp_path):
    """ctrl+s (a binding of the screen) ran once the key had bubbled up to the app, behind the text
    typed after it: the file saved held text typed after the save."""
    from textual.widgets import TabbedContent, TextArea

    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        screen.query_one(TabbedContent).active = "pol-toml-tab"
        editor = screen.query_one("#pol-editor", TextArea)
        editor.focus()
        editor.move_cursor(editor.document.end)
        await pilot.pause()
        before = screen.file_text
        path = screen.file_path
        burst(app, "enter", *"# first", "ctrl+s", *"second")
        await wait_for(pilot, lambda: open(path).read() != before, what="saved")
        await pilot.pause(0.3)
        saved = open(path).read()
        assert saved.rstrip().endswith("# first"), saved[-40:]
        assert editor.text.rstrip().endswith("# firstsecond")


async def test_ctrl_o_typed_with_a_path_puts_the_path_in_the_dialog(tmp_path):
    """ctrl+o and the path typed after it in one burst: the path went into the policy text and the
    dialog opened on its suggested name."""
    from textual.widgets import TabbedContent, TextArea

    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        screen.query_one(TabbedContent).active = "pol-toml-tab"
        editor = screen.query_one("#pol-editor", TextArea)
        editor.focus()
        await pilot.pause()
        text = editor.text
        target = tmp_path / "copy.toml"
        burst(app, "ctrl+o", "ctrl+a", "ctrl+k", *str(target), "enter")
        await wait_for(pilot, lambda: target.exists(), what="saved where typed")
        assert editor.text == text


async def test_keys_typed_after_the_enter_that_adds_reach_the_tree(tmp_path):
    """The Add dialog's Enter, then Up in the same burst: Up went into the closing dialog."""
    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        tree = screen.query_one("#pol-tree")
        tree.focus()
        await pilot.pause()
        await pilot.press("a")
        await wait_for(pilot, lambda: app.screen.query("#add-name"), what="add dialog")
        await pilot.press("tab")
        await pilot.pause()
        burst(app, "ctrl+a", "ctrl+k", *"quick", "enter", "up")
        await wait_for(pilot, lambda: ".children.quick]" in screen._text(), what="added as typed")
        await pilot.pause(0.3)
        assert app.focused is tree
        added = next(line.node for line in tree._tree_lines if "quick" in str(line.node.label))
        assert tree.cursor_line == added.line - 1


async def test_a_whole_add_typed_in_one_burst_from_the_tree(tmp_path):
    """a, Tab, a name, Enter in one burst from the tree: the keys after "a" reached the tree before the
    dialog opened, and went nowhere once they bubbled up (the name typed was lost)."""
    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        tree = screen.query_one("#pol-tree")
        tree.focus()
        await pilot.pause()
        burst(app, "a", "tab", "ctrl+a", "ctrl+k", *"quick", "enter")
        await wait_for(pilot, lambda: ".children.quick]" in screen._text(), what="added as typed")


async def test_keys_typed_after_the_enter_that_opens_a_row_go_to_its_detail():
    """Enter opened the SA detail through a RowSelected message: r typed right after it was handled
    by the dashboard first (a rekey of the dashboard's selection, asked over the detail)."""
    from console.screens.sa_detail import SaDetailScreen

    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        table = app.screen.query_one(ChildSaTable)
        table.focus()
        await pilot.pause()
        burst(app, "enter", "escape", "down")
        await pilot.pause(0.5)
        assert app.focused is table and table.cursor_row == 1
        burst(app, "enter", "r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.focused is not None
                       and app.focused.id == "no", what="the confirmation, mounted")
        assert isinstance(app.screen_stack[-2], SaDetailScreen)


async def test_help_names_each_keys_own_binding_id():
    """Help merged ? and F1 (two binding ids, one action) into one row named app.help_f1: a keymap
    of that id moved F1 only. The tree's x and Delete the same (policy.delete_key)."""
    from console.screens.help import binding_rows

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        rows = {r[2]: r[0] for _, group in binding_rows(app.screen) for r in group}
        assert rows["app.help"] == "?"
        assert rows["app.help_f1"] == "f1"


def terminal_bytes(app, data: str) -> None:
    """``data`` as the terminal sends it, decoded by Textual's own parser (all in one read)."""
    import time

    from textual import constants
    from textual._xterm_parser import XTermParser

    parser = XTermParser()
    events = list(parser.feed(data))
    time.sleep(constants.ESCAPE_DELAY + 0.05)  # as the driver: a lone ESC is decided after this delay
    events += parser.tick()
    for event in events:
        event.set_sender(app)
        app._driver.send_message(event)


async def test_escape_then_a_key_in_one_read_is_escape_then_the_key():
    """tmux (escape-time 500 ms) and a slow link deliver Escape and the key after it as one read:
    Textual decodes ESC 2 as "™" (a WezTerm Option key) and ESC d as alt+d. Escape, 2 in the logs
    search put "™" into the search instead of leaving it for the Negotiations screen."""
    from console.screens.logs import LogsScreen
    from console.screens.negotiations import NegotiationsScreen

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("4")
        await wait_for(pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen.ready, what="logs")
        await pilot.press("slash", *"ike")
        field = app.screen.query_one("#log-text")
        terminal_bytes(app, "\x1bd")
        await pilot.pause(0.3)
        assert field.value == "ike" and app.focused is not field
        assert str(app.screen.query_one("#log-level").value) == "debug"
        await pilot.press("slash")
        terminal_bytes(app, "\x1b2")
        await wait_for(pilot, lambda: isinstance(app.screen, NegotiationsScreen), what="negotiations")
        assert field.value == "ike"
        await wait_for(pilot, lambda: app.screen.ready, what="negotiations mounted")


async def test_a_binding_remapped_to_an_alt_key_still_runs():
    app = make_app(settings_path=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.update_keymap({"app.logs": "alt+l"})
        terminal_bytes(app, "\x1bl")
        from console.screens.logs import LogsScreen

        await wait_for(pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen.ready, what="logs")


async def test_a_value_typed_right_after_enter_on_the_tree_goes_into_the_form(tmp_path):
    """Enter on the tree moves to the form's first field through Widget.focus(), which waits its turn:
    "x" typed right after it reached the tree first (x: delete this connection?)."""
    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        await wait_for(pilot, lambda: screen.query("#f-remote-id"), what="the form")
        tree = screen.query_one("#pol-tree")
        tree.focus()
        await pilot.pause()
        first = screen.query("#pol-form Input").first()
        before = first.value
        burst(app, "enter", "end", *"x")
        await pilot.pause(0.5)
        assert not isinstance(app.screen, ConfirmScreen)
        assert first.value == before + "x"


async def test_slash_and_a_search_in_one_burst_from_the_log():
    """The log view handed "/" on to the app and the search typed after it went nowhere."""
    from console.screens.logs import LogsScreen

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("4")
        await wait_for(pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen.ready, what="logs")
        app.screen.query_one("#log").focus()
        await pilot.pause()
        burst(app, "slash", *"ike")
        await pilot.pause(0.5)
        assert app.screen.query_one("#log-text").value == "ike"


async def test_keys_typed_after_the_enter_that_creates_a_ca_reach_the_pki_screen(tmp_path):
    """The PKI forms submitted through Input.Submitted, a message: a key typed right after Enter went
    into the name field ("i" gave a CA named "O=Lab, CN=Lab CAi")."""
    from console.screens.pki import PkiScreen
    from console.widgets.pki_forms import FolderForm, InitCaForm

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path), clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("6")
        await wait_for(pilot, lambda: isinstance(app.screen, PkiScreen) and app.screen.view is not None,
                       what="the CA folder read")
        pki = app.screen
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, InitCaForm), what="the init form")
        # f (another folder) works with or without a CA: it does not wait for the CA being written.
        burst(app, "ctrl+a", "ctrl+k", *"O=Lab, CN=Lab CA", "enter", "f")
        await wait_for(pilot, lambda: isinstance(app.screen, FolderForm), what="the folder form")
        await wait_for(pilot, lambda: pki.view is not None and pki.view.ca is not None, what="the CA")
        assert pki.view.ca.subject.endswith("CN=Lab CA"), pki.view.ca.subject


async def test_revert_asks_before_it_throws_edits_away(tmp_path):
    """ctrl+r replaced the edited text at once, without a word: one key lost every unsaved edit (the
    editor's undo history goes with load_text)."""
    from textual.widgets import TabbedContent, TextArea

    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        screen.query_one(TabbedContent).active = "pol-toml-tab"
        editor = screen.query_one("#pol-editor", TextArea)
        editor.focus()
        editor.move_cursor(editor.document.end)
        await pilot.pause()
        original = editor.text
        await pilot.press("enter", *"#", "space", *"mine")
        edited = editor.text
        assert edited != original
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is screen, what="back")
        assert editor.text == edited
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: editor.text == original, what="reverted")


def test_cut_child_sa_names_still_tell_siblings_apart():
    """The CHILD SA column kept "connection/chi…": 100 CHILD SAs of site000 all read "site000/net0… {N}"
    at 80 columns, their names (net010 ... net099) cut away."""
    from console.widgets.sa_tables import CHILD_NAME_WIDTH, fit_child_name

    for n in range(10, 100):
        shown = fit_child_name(f"site000/net0{n:02d} {{{n + 1}}}")
        assert len(shown) <= CHILD_NAME_WIDTH and f"net0{n:02d}" in shown and shown.endswith(f"{{{n + 1}}}")
    shown = fit_child_name("roadwarrior/hq-roadwarrior {2}")
    assert shown.endswith("-roadwarrior {2}") and len(shown) == CHILD_NAME_WIDTH
    assert fit_child_name("branch/lan {1}") == "branch/lan {1}"


async def test_sa_detail_footer_offers_initiate_not_rekey_when_there_is_no_sa():
    """The detail of a connection with no IKE SA said "Press i to initiate" while its footer offered
    Rekey IKE (only a warning then) and not i."""
    from console.screens.sa_detail import SaDetailScreen

    from .conftest import screen_text

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        snap = app.store.snapshot
        down = next(c.name for c in snap.connections if not any(i.name == c.name for i in snap.ike_sas))
        up = snap.ike_sas[0].name
        app.open_detail(down)
        await wait_for(pilot, lambda: isinstance(app.screen, SaDetailScreen) and app.screen.ready, what="detail")
        await pilot.pause(0.2)
        footer = screen_text(app).splitlines()[-1]
        assert "i Initiate" in footer and "Rekey IKE" not in footer, footer
        await pilot.press("escape")
        app.open_detail(up)
        await wait_for(pilot, lambda: isinstance(app.screen, SaDetailScreen) and app.screen.ready, what="detail")
        await pilot.pause(0.2)
        footer = screen_text(app).splitlines()[-1]
        assert "R Rekey IKE" in footer and "Initiate" not in footer, footer


async def test_pound_and_section_signs_typed_in_a_field_are_text():
    """Textual decodes ESC 3 as "£" (WezTerm's Option keys), the same key as a "£" typed: split_escape
    made every "£", "§" (shift+3 on UK and German keyboards), "–" typed into a field Escape and a
    digit: the search box closed and screen 3 opened; in the PSK dialog the secret was dropped."""
    from console.screens.logs import LogsScreen

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("4")
        await wait_for(pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen.ready, what="logs")
        await pilot.press("slash")
        field = app.screen.query_one("#log-text")
        terminal_bytes(app, "a£b§c–")
        await pilot.pause(0.3)
        assert isinstance(app.screen, LogsScreen)
        assert app.focused is field and field.value == "a£b§c–"
        terminal_bytes(app, "\x1b3")  # ESC 3 in one read still leaves the field for screen 3
        await wait_for(pilot, lambda: not isinstance(app.screen, LogsScreen), what="screen 3")
        assert field.value == "a£b§c–"
        await wait_for(pilot, lambda: app.screen.ready, what="screen 3 mounted")
