"""A screen removed while it mounts (q or a test's end right after a key opened it, a dialog popped
in the same burst that pushed it): its on_mount, on_screen_resume (and a Select's own mount) found
their children pruned and raised NoMatches, a traceback as the console quit (PoliciesScreen at a
test's teardown; every mode screen, the Logs screen's Selects, the SA detail, the dialogs)."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil

import pytest
from textual.screen import Screen

import console
from console.app import MODE_KEYS, ConsoleApp
from console.runtime.fake import FakeRuntime
from console.widgets.mounting import QuietWhenRemoved


async def _quit_while_mounting(open_screen, delay: float, *, pop: bool = False) -> None:
    app = ConsoleApp(FakeRuntime())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        open_screen(app)
        if delay:
            await asyncio.sleep(delay)
        if pop:
            app.pop_screen()
            await pilot.pause(0.2)
            assert app.return_code is None
        app.exit()
    assert app.return_code == 0


@pytest.mark.parametrize("mode", [mode for _, mode, _ in MODE_KEYS if mode != "dashboard"])
async def test_the_app_quits_while_a_mode_screen_mounts(mode):
    for delay in (0, 0.01):
        await _quit_while_mounting(lambda app: app.switch_mode(mode), delay)


def _pushed_screens():
    from console.screens.confirm import ConfirmScreen
    from console.screens.dialogs import AddDialog, NewFileDialog, PskDialog, TextPrompt
    from console.screens.help import HelpScreen
    from console.screens.sa_detail import SaDetailScreen
    from console.widgets.pki_forms import FolderForm, InitCaForm, IssueForm, PassphraseForm

    return {
        "help": lambda app: HelpScreen(app.screen),
        "sa detail": lambda app: SaDetailScreen("branch"),
        "confirm": lambda app: ConfirmScreen("Delete?", "body"),
        "text": lambda app: TextPrompt("Copy as", "help"),
        "new file": lambda app: NewFileDialog("New", "/tmp/x.toml", [("empty", "empty")], lambda p: ""),
        "psk": lambda app: PskDialog("branch", "secrets.toml", []),
        "add": lambda app: AddDialog([("connection", ("connections",))], lambda p: "c1", lambda p, n: ""),
        "issue": lambda app: IssueForm("/tmp/pki"),
        "init ca": lambda app: InitCaForm("/tmp/pki"),
        "folder": lambda app: FolderForm("/tmp/pki", "/tmp/pki"),
        "passphrase": lambda app: PassphraseForm("open", ""),
    }


def _push_all(app) -> None:
    for make in _pushed_screens().values():
        app.push_screen(make(app))


async def test_the_app_quits_while_pushed_screens_mount():
    for delay in (0, 0.005):
        await _quit_while_mounting(_push_all, delay)


@pytest.mark.parametrize("name", sorted(_pushed_screens()))
async def test_a_pushed_screen_popped_while_it_mounts(name):
    make = _pushed_screens()[name]
    await _quit_while_mounting(lambda app: app.push_screen(make(app)), 0, pop=True)


def test_every_console_screen_is_quiet_when_removed():
    for info in pkgutil.walk_packages(console.__path__, "console."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    ours = {cls for cls in subclasses(Screen) if cls.__module__.startswith("console.")}
    assert ours, "no console screens found"
    loud = sorted(cls.__qualname__ for cls in ours if not issubclass(cls, QuietWhenRemoved))
    assert not loud, loud
