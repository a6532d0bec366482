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
