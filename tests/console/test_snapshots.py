"""Snapshot tests of the main screens at 80x24 and 120x40.

The FakeRuntime is frozen (virtual time only moves when a test says so) and
clocks render in UTC, so these pictures are deterministic. Regenerate after a
deliberate UI change with ``pytest tests/console/test_snapshots.py --snapshot-update``
and look at the SVGs before committing them.
"""

from __future__ import annotations

import pytest

from console.app import ConsoleApp
from console.runtime.fake import FakeRuntime

from .conftest import ready, steady_cursors, wait_for

SIZES = [(80, 24), (120, 40)]


def _app(tmp_path=None, *, lab: bool = True) -> ConsoleApp:
    kind = "lab" if lab else "fake"
    if tmp_path is not None:
        rt = FakeRuntime.in_folder(tmp_path, kind=kind)
    else:
        rt = FakeRuntime(kind=kind)
    return ConsoleApp(rt)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_dashboard(snap_compare, size):
    async def run_before(pilot):
        await ready(pilot)
        rt = pilot.app.runtime
        rt.advance(1.0)
        pilot.app.poll_soon()
        await wait_for(pilot, lambda: pilot.app.store.snapshot.time == rt.now, what="second snapshot")
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_negotiation_failure(snap_compare, size):
    async def run_before(pilot):
        await ready(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: pilot.app.screen.query("#nego-list"), what="negotiations")
        await pilot.press("f")
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=size, run_before=run_before)


def test_policies(snap_compare, tmp_path):
    async def run_before(pilot):
        await ready(pilot)
        await pilot.press("3")
        await wait_for(pilot, lambda: getattr(pilot.app.screen, "validation", None) is not None
                       and pilot.app.screen.query("#f-dpd_delay"), what="policies")
        await pilot.pause()

    assert snap_compare(_app(tmp_path, lab=False), terminal_size=(80, 24), run_before=run_before)


def test_logs(snap_compare):
    async def run_before(pilot):
        await ready(pilot)
        await pilot.press("4")
        await wait_for(pilot, lambda: pilot.app.screen.query("#log"), what="logs")
        await pilot.pause()

    assert snap_compare(_app(lab=False), terminal_size=(80, 24), run_before=run_before)


async def _packets(pilot) -> None:
    """Four virtual seconds of traffic, then the Packets screen."""
    await ready(pilot)
    rt = pilot.app.runtime
    for _ in range(4):
        rt.advance(1.0)
    # every counter the screen shows must come from the last virtual second
    pilot.app.poll_soon()
    await wait_for(pilot, lambda: pilot.app.store.snapshot.time == rt.now, what="latest snapshot")
    await wait_for(pilot, lambda: pilot.app.store.counters is not None
                   and pilot.app.store.counters.time == rt.now, what="latest counters")
    await pilot.press("5")


def test_packets(snap_compare):
    async def run_before(pilot):
        await _packets(pilot)
        # The newest sample (a replay drop) is dissected first, in a thread.
        await wait_for(pilot, lambda: "dropped before decryption" in _text(pilot.app), what="dissection")
        steady_cursors(pilot.app)
        await pilot.pause(0.2)

    assert snap_compare(_app(lab=False), terminal_size=(120, 40), run_before=run_before)


def _text(app) -> str:
    from .conftest import screen_text

    return screen_text(app)


def test_packets_80x24(snap_compare):
    async def run_before(pilot):
        await _packets(pilot)
        samples = pilot.app.screen.query_one("#pk-samples")
        await wait_for(pilot, lambda: samples.row_count >= 4, what="samples")
        key = next(k for k in samples.row_keys if samples.cell_text(k, "dir") == "out")
        samples.focus()
        samples.move_cursor(row=samples.get_row_index(key))
        await wait_for(pilot, lambda: "no plaintext" in _text(pilot.app), what="dissection")
        steady_cursors(pilot.app)
        await pilot.pause(0.2)

    assert snap_compare(_app(lab=False), terminal_size=(80, 24), run_before=run_before)


def test_sa_detail_80x24(snap_compare):
    async def run_before(pilot):
        await ready(pilot)
        pilot.app.open_detail("branch")
        # At 80 columns the top bar's screen labels give way to the title (the clock and summary keep their room).
        await wait_for(pilot, lambda: "│ SA detail: branch │" in _text(pilot.app), what="detail")
        steady_cursors(pilot.app)
        await pilot.pause(0.2)

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=run_before)


def test_help_80x24(snap_compare):
    async def run_before(pilot):
        await ready(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: "Keys (Escape closes)" in _text(pilot.app), what="help")
        steady_cursors(pilot.app)
        await pilot.pause(0.2)

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=run_before)


def test_confirm_80x24(snap_compare):
    async def run_before(pilot):
        await ready(pilot)
        pilot.app.screen.query_one("#child-sas").focus()
        await pilot.press("t")
        await wait_for(pilot, lambda: "Terminate" in _text(pilot.app) and "Cancel" in _text(pilot.app),
                       what="confirmation")
        steady_cursors(pilot.app)
        await pilot.pause(0.2)

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=run_before)


async def _policies(pilot):
    await ready(pilot)
    await pilot.press("3")
    await wait_for(pilot, lambda: getattr(pilot.app.screen, "validation", None) is not None
                   and pilot.app.screen.query("#f-dpd_delay"), what="policies")


@pytest.mark.parametrize("tab", ["toml", "diff", "spd"])
def test_policy_tabs_80x24(snap_compare, tmp_path, tab):
    async def run_before(pilot):
        await _policies(pilot)
        screen = pilot.app.screen
        if tab == "diff":  # something to show: one changed value
            editor = screen.query_one("#pol-editor")
            editor.load_text(editor.text.replace('dpd_delay = "30s"', 'dpd_delay = "45s"'))
            await wait_for(pilot, lambda: screen.validation.text == editor.text, what="validated")
        presses = {"toml": 1, "diff": 2, "spd": 3}[tab]
        for _ in range(presses):
            await pilot.press("ctrl+t")
        if tab == "spd":
            await pilot.press(*"198.51.100.5", "tab", *"198.51.100.130", "tab", "tab", "tab", *"443", "enter")
        steady_cursors(pilot.app)
        await pilot.pause(0.3)

    assert snap_compare(_app(tmp_path, lab=False), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("dialog", ["add", "psk", "new-file", "delete", "quit"])
def test_policy_dialogs_80x24(snap_compare, tmp_path, dialog):
    async def run_before(pilot):
        await _policies(pilot)
        app = pilot.app
        if dialog == "add":
            await pilot.press("a")
        elif dialog == "psk":
            await pilot.press("k")
        elif dialog == "new-file":
            await pilot.press("ctrl+n")
            await wait_for(pilot, lambda: app.screen.query("#file-path"), what="dialog")
            app.screen.query_one("#file-path").value = "/etc/ipsec-console/gw.toml"  # not the test's tmp path
        elif dialog == "delete":
            await pilot.press("x")
        else:
            editor = app.screen.query_one("#pol-editor")
            editor.load_text(editor.text.replace('dpd_delay = "30s"', 'dpd_delay = "45s"'))
            await pilot.pause(0.1)
            await pilot.press("q")
        await wait_for(pilot, lambda: len(app.screen_stack) > 1, what="the dialog")
        steady_cursors(pilot.app)
        await pilot.pause(0.3)

    assert snap_compare(_app(tmp_path, lab=False), terminal_size=(80, 24), run_before=run_before)
