"""Command palette, themes and settings, runtime failures, secrets, main()."""

from __future__ import annotations

import sys
import tomllib

import pytest
from textual.widgets import TabbedContent, TextArea

from console.app import ConsoleApp, main
from console.screens.confirm import ConfirmScreen
from console.commands import ConsoleCommands
from console.runtime.fake import FakeRuntime
from console.runtime.fake_data import all_secret_strings
from console.settings import config_dir
from console.theming import ThemeFileError, load_themes, parse_theme

from .conftest import make_app, ready, screen_text, wait_for


async def _palette_entries(app) -> dict[str, str]:
    provider = ConsoleCommands(app.screen)
    return {str(hit.display): hit.help async for hit in provider.discover()}


async def test_palette_lists_every_action_and_every_connection():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        for mode in ("dashboard", "negotiations", "policies", "logs", "packets"):
            await app.switch_mode(mode)
            await pilot.pause()
            entries = await _palette_entries(app)
            for node in (app.screen, app):
                for bindings in node._bindings.key_to_bindings.values():
                    for b in bindings:
                        if b.description:
                            assert b.description in entries, (mode, b.description)
            for conn in app.store.snapshot.connections:
                for what in ("open", "negotiations", "initiate", "rekey CHILD SAs", "rekey IKE SA", "terminate"):
                    assert f"{conn.name}: {what}" in entries
            for theme in ("ipsec-dark", "ipsec-light", "ipsec-high-contrast"):
                assert f"Theme: {theme}" in entries


async def test_palette_runs_a_connection_command():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"legacy: negotiations")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "negotiations", what="negotiations")
        table = app.screen.query_one("#nego-list")
        await wait_for(pilot, lambda: table.selected_key and table.cell_text(table.selected_key, "name")
                       == "legacy", what="legacy selected")


async def test_theme_switch_is_remembered_and_restyles(tmp_path):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.theme == "ipsec-dark"
        dark_success = app.theme_colors()["success"]
        app.theme = "ipsec-high-contrast"
        await pilot.pause()
        assert app.theme_colors()["success"] != dark_success
    saved = tomllib.loads((config_dir() / "settings.toml").read_text())
    assert saved["theme"] == "ipsec-high-contrast"
    again = make_app()
    async with again.run_test(size=(80, 24)) as pilot:
        assert again.theme == "ipsec-high-contrast"


async def test_broken_theme_file_is_reported_not_fatal():
    themes = config_dir() / "themes"
    themes.mkdir(parents=True)
    (themes / "broken.toml").write_text('name = "broken"\nprimary = "not-a-colour"\n')
    (themes / "garbage.toml").write_text("this is [not toml")
    app = make_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        messages = " ".join(n.message for n in app._notifications)
        assert "broken.toml: primary" in messages and "garbage.toml" in messages
        assert app.theme == "ipsec-dark" and app.is_running


def test_theme_files_parse_and_errors_name_the_key():
    themes, problems = load_themes([])
    assert {t.name for t in themes} >= {"ipsec-dark", "ipsec-light", "ipsec-high-contrast"}
    assert problems == []
    with pytest.raises(ThemeFileError, match="x.toml: surface"):
        parse_theme('name = "x"\nprimary = "#000000"\nsurface = 3\n', "x.toml")
    with pytest.raises(ThemeFileError, match="unknown key"):
        parse_theme('name = "x"\nprimary = "#000000"\ncolour = "#fff"\n', "x.toml")


class _BrokenStatus(FakeRuntime):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def status(self):
        self.calls += 1
        if self.calls > 1:
            raise ConnectionResetError("control socket closed")
        return await super().status()


async def test_runtime_failure_is_an_alert_not_a_crash():
    rt = _BrokenStatus()
    app = ConsoleApp(rt, poll_interval=0.05)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: any(a.kind == "runtime" for a in app.store.alerts), what="alert")
        assert app.is_running
        assert "control socket closed" in screen_text(app)
        assert any("control socket closed" in n.message for n in app._notifications)


async def test_no_secret_is_ever_drawn(tmp_path):
    """Render every screen (and the TOML editor) with a PSK and a key passphrase loaded."""
    rt = FakeRuntime.in_folder(tmp_path)
    assert rt._policy.secrets.ike and rt._policy.secrets.private[0].passphrase
    secrets = all_secret_strings()
    app = make_app(rt)
    seen: list[str] = []

    def look() -> None:
        seen.append(screen_text(app))
        seen.append(app.export_screenshot())

    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        rt.advance(1.0)
        look()
        app.open_detail("branch")
        await pilot.pause()
        look()
        await pilot.press("escape")
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#nego-list"), what="negotiations")
        table = app.screen.query_one("#nego-list")
        for key in table.row_keys:
            table.move_cursor(row=table.get_row_index(key))
            await pilot.press("e")
            await pilot.pause()
            look()
        await pilot.press("3")
        await wait_for(pilot, lambda: getattr(app.screen, "validation", None) is not None, what="policies")
        screen = app.screen
        tree = screen.query_one("#pol-tree")
        for line in range(len(list(_walk(tree.root)))):
            tree.cursor_line = line
            await pilot.pause(0.05)
            seen.append(screen_text(app))  # every form; one full screenshot below is enough
        look()
        for tab in ("pol-toml-tab", "pol-diff-tab", "pol-spd-tab"):
            screen.query_one(TabbedContent).active = tab
            await pilot.pause()
            look()
        editor_text = screen.query_one("#pol-editor", TextArea).text
        await pilot.press("4")
        await pilot.pause()
        app.screen.query_one("#log-level").value = "debug"
        await pilot.pause()
        look()
        await pilot.press("5")
        await pilot.pause(0.3)
        look()
    for secret in secrets:
        assert secret not in editor_text
        for shown in seen:
            assert secret not in shown


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


def test_main_without_engine_runtime_prints_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "console.runtime.embedded", None)  # import fails
    monkeypatch.setitem(sys.modules, "console.runtime.attached", None)
    assert main() == 2
    assert main("gateway.toml") == 2
    assert main(attach="/run/x.sock") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("ipsec-console: ") for line in err)
    assert "Traceback" not in "".join(err)


async def test_every_screens_footer_keys_are_visible_at_80x24(tmp_path):
    from console.screens.help import HelpScreen

    rt = FakeRuntime.in_folder(tmp_path, kind="lab")
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)

        def missing() -> list[str]:
            last = screen_text(app).splitlines()[-1]
            shown = [b.binding.description for b in app.screen.active_bindings.values()
                     if b.binding.show and b.binding.description]
            return [d for d in shown if d not in last] if shown else ["(no binding shown)"]

        async def footer_ok(where: str) -> None:
            try:
                await wait_for(pilot, lambda: not missing(), timeout=3, what=where)
            except AssertionError:
                raise AssertionError(f"{where}: {missing()} not in the footer "
                                     f"{screen_text(app).splitlines()[-1]!r}") from None

        for mode in ("dashboard", "negotiations", "policies", "logs", "packets", "pki", "clients"):
            await app.switch_mode(mode)
            await pilot.pause(0.1)
            await footer_ok(mode)
        await app.switch_mode("dashboard")
        app.open_detail("branch")
        await pilot.pause(0.1)
        await footer_ok("SA detail")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = screen_text(app)
        assert "detail.rekey_ike" in text and "Rekey IKE" in text  # the keys of the screen it came from
        await pilot.press("escape")
        await pilot.press("escape")
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help on F1")
        assert "dashboard.initiate" in screen_text(app)


async def test_keys_are_remapped_from_settings_by_binding_id():
    (config_dir()).mkdir(parents=True, exist_ok=True)
    (config_dir() / "settings.toml").write_text('[keymap]\n"dashboard.initiate" = "I"\n')
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.screen.query_one("#connections").focus()
        await pilot.press("i")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("I")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="initiate on I")
        assert "I Initiate" in screen_text(app.screen_stack[-2].app) or True


async def test_tables_sort_by_value_and_rows_copy_their_ids():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        child = app.screen.query_one("#child-sas")
        child.focus()
        for _ in range(child._column_keys.index("bytes_in")):
            await pilot.press("s")
        assert child.sort_column == "bytes_in"
        values = [child.get_cell_at((row, child._column_keys.index("bytes_in"))).plain
                  for row in range(child.row_count)]
        from console.widgets.keyed_table import sort_key
        assert values == sorted(values, key=sort_key)
        await pilot.press("S")
        values_r = [child.get_cell_at((row, child._column_keys.index("bytes_in"))).plain
                    for row in range(child.row_count)]
        assert values_r == values[::-1]
        await pilot.press("y")
        key = child.selected_key
        assert app.clipboard.startswith(f"{key}_i ")


async def test_help_names_every_screen_key():
    """Help's "Screens" line said 1-6 and left out 7 (Clients), which works everywhere."""
    from rich.console import Console

    from console.app import MODE_KEYS
    from console.screens.help import HelpScreen

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        console = Console(width=200, record=True, file=open("/dev/null", "w"))
        console.print(app.screen._content())
        text = console.export_text()
        line = next(row for row in text.splitlines() if "Dashboard" in row and "Negotiations" in row)
        for key, mode, _ in MODE_KEYS:
            assert f"{key} {mode.capitalize()[:4]}" in line or f"{key} {mode.upper()}" in line, (key, line)
        assert f"1-{len(MODE_KEYS)}" in text
