"""Review of the con13 console merge (each test failed before its fix)."""

from __future__ import annotations

from console.app import ConsoleApp
from console.runtime.fake import FakeRuntime

from .conftest import ready, wait_for
from .test_console_fixes import burst, clock


async def test_enter_twice_in_a_pki_form_submits_once(tmp_path):
    """Enter, Enter in a burst gave the form two Input.Submitted: the second dismissed it again,
    ran the request's callback a second time and popped the PKI screen itself, the only screen of
    its mode (ScreenStackError: the console died)."""
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
        pki = app.screen
        asked = []
        original = pki._change
        pki._change = lambda *a: (asked.append(a[1]), original(*a))
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, IssueForm), what="the issue form")
        burst(app, *"gw.example.org", "enter", "enter")
        await pilot.pause(0.5)
        assert app.is_running and app.screen is pki
        assert asked == ["issue"]


async def test_narrow_terminals_show_whole_columns_only():
    """fit_columns showed the whole narrow set "in any case": under 80 columns the IKE SA table's
    Remote was cut at the edge ("127.0.0.2:1" reads as another port). The first column stays; the
    others of the set only while they fit whole, and every resize fits again."""
    from .test_console_fixes import _cut_headers

    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        for size in ((60, 20), (40, 24), (100, 30), (80, 24)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.3)
            for table in app.screen.query("KeyedTable"):
                assert not _cut_headers(app, table), (size, table.id)
                assert table.visible_columns[:1] == table._column_keys[:1], (size, table.id)


async def test_moving_the_cursor_shows_it_as_textual_does(tmp_path):
    """Input and TextArea restart the cursor's blink in their key handler: Field and Editor, which
    take their own bindings (arrows, Backspace) before it, left the cursor hidden half the time
    while it moved."""
    from textual.widgets import TabbedContent

    from console.screens.dialogs import TextPrompt

    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot)
        screen.query_one(TabbedContent).active = "pol-toml-tab"
        editor = screen.query_one("#pol-editor")
        editor.focus()
        await pilot.pause()
        for key in ("down", "right", "backspace"):
            editor._cursor_visible = False  # the blink's off half
            await pilot.press(key)
            assert editor._cursor_visible, key
        app.push_screen(TextPrompt("T", "help", "value"))
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt) and app.screen.query("#prompt-input"),
                       what="prompt")
        field = app.screen.query_one("#prompt-input")
        for key in ("left", "home", "delete"):
            field._cursor_visible = False
            await pilot.press(key)
            assert field._cursor_visible, key


async def test_help_lists_pause_and_resume_as_one_binding():
    """Packets binds space twice (Pause, Resume: the footer shows the one that applies); Help listed
    two rows "space Pause" and "space Resume" for the one binding id."""
    from console.screens.help import binding_rows

    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("5")
        await wait_for(pilot, lambda: app.screen.query("#pk-samples"), what="packets")
        rows = [r for _, group in binding_rows(app.screen) for r in group if r[2] == "packets.pause"]
        assert [r[1] for r in rows] == ["Pause / Resume"]


async def test_typing_a_save_as_path_parses_the_policy_once(tmp_path, monkeypatch):
    """The Save-as dialog's secrets line parsed the whole policy again at every key typed in the
    path (tomlkit: about 40 ms per 1000 lines, per key, on a policy that cannot change meanwhile)."""
    import console.policy_form as pf
    from console.screens.dialogs import NewFileDialog

    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await _open(pilot)
        parsed = []
        real = pf.load_doc
        monkeypatch.setattr(pf, "load_doc", lambda text: (parsed.append(1), real(text))[1])
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, NewFileDialog), what="save as dialog")
        note = app.screen.query_one("#file-note")
        await pilot.press("ctrl+a", "ctrl+k", *str(tmp_path / "copy.toml"))
        await wait_for(pilot, lambda: str(tmp_path / "gateway.secrets.toml") in str(note.content),
                       what="the note")
        assert len(parsed) <= 1


async def test_tab_in_a_burst_moves_on_before_the_keys_after_it(tmp_path):
    """Tab (the screen's focus_next) ran once the key had bubbled up to the app, and the app had
    already handed the keys typed after it to the field Tab leaves: "gw.example.org", Tab,
    "vpn.example.org" in one burst issued a certificate for CN gw.example.orgvpn.example.org."""
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
        await wait_for(pilot, lambda: isinstance(app.screen, IssueForm) and app.screen.focused is not None,
                       what="the issue form")
        form = app.screen
        burst(app, *"gw.example.org", "tab", *"DNS:vpn.example.org", "shift+tab", "end", *".net")
        await pilot.pause(0.5)
        assert form.query_one("#pki-cn").value == "gw.example.org.net"
        assert form.query_one("#pki-sans").value == "DNS:vpn.example.org"


async def test_enter_that_moves_to_the_second_psk_field_takes_the_keys_after_it():
    """The PSK dialog's Enter in the first field moves to the second: the key typed again after it
    in the same burst went on into the first field, and the dialog said the entries differ."""
    from console.screens.dialogs import PskDialog

    app = ConsoleApp(FakeRuntime())
    got = []
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.push_screen(PskDialog("branch", "gateway.secrets.toml", []), got.append)
        await wait_for(pilot, lambda: isinstance(app.screen, PskDialog) and app.screen.focused is not None,
                       what="the PSK dialog")
        burst(app, *"s3cret-key", "enter", *"s3cret-key", "enter")
        await pilot.pause(0.5)
        assert got == ["s3cret-key"]


async def test_tab_from_the_add_dialogs_list_in_a_burst_names_what_is_added(tmp_path):
    """The Add dialog opens on its list: "Tab, the name, Enter" in one burst handed the name to the
    list (which ignores letters) and added the suggested name instead of the one typed."""
    from .test_policies import _open

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        screen.query_one("#pol-tree").focus()
        await pilot.press("a")
        await wait_for(pilot, lambda: app.screen.query("#add-name") and app.screen.focused is not None,
                       what="add dialog")
        burst(app, "tab", "ctrl+a", "ctrl+k", *"quick", "enter")
        await wait_for(pilot, lambda: app.screen is screen, what="added")
        await pilot.pause(0.2)
        assert ".children.quick]" in screen._text()


async def test_tab_across_a_forms_choices_in_a_burst_reaches_the_days(tmp_path):
    """The issue form's Kind and Key type are Selects: Tabs typed in one burst past them left the
    keys after them with the Select (lost), and Enter opened its list instead of issuing."""
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
        await wait_for(pilot, lambda: isinstance(app.screen, IssueForm) and app.screen.focused is not None,
                       what="the issue form")
        form = app.screen
        burst(app, *"gw.example.org", "tab", "tab", "tab", "tab", "ctrl+a", "ctrl+k", *"365")
        await pilot.pause(0.5)
        assert form.focused is form.query_one("#pki-days")
        assert form.query_one("#pki-days").value == "365"


async def test_a_choices_open_list_takes_keys_and_closes(tmp_path):
    """A key unhandled in a Choice's open list bubbles up through the Choice: it is not sent back
    down to the list (the focused widget) again and again."""
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
        await wait_for(pilot, lambda: isinstance(app.screen, IssueForm) and app.screen.focused is not None,
                       what="the issue form")
        form = app.screen
        kind = form.query_one("#pki-kind")
        kind.focus()
        await pilot.pause()
        await pilot.press("space")
        await wait_for(pilot, lambda: kind.expanded, what="the list open")
        await pilot.press("x", "f5", "down", "enter")
        await wait_for(pilot, lambda: not kind.expanded, what="the list closed")
        assert kind.value == "client"
