"""Every place the console (and the CLI) draws text a peer controls draws it inert: no control
character reaches the admin's terminal (Textual 8 passes ESC through: OSC 52 writes the clipboard,
ESC[2J clears the screen) and no Textual markup in it is interpreted ("[@click=app.quit]" made a
link of the peer's choosing, an unbalanced tag raised MarkupError and ended the console).

One hostile identity goes through the fake runtime into each place: the status snapshot (IKE
identity, EAP identity, certificate subject), an IKE_AUTH's decoded ID payload, a failure, a log
line, a packet's drop verdict (what an attached daemon, or an older one, sends as it is)."""

from __future__ import annotations

import unicodedata

import pytest

from engine.events import (ExchangeReceived, LogMessage, MessageSummary, NegotiationFailed, PacketSample,
                           PayloadDetail)

from console.runtime.fake import FakeRuntime

from .conftest import make_app, ready, screen_text, wait_for

HOSTILE = "m\x1b]52;c;cm0=\x07\x1b[2J[bold][@click=app.quit]x\x9b[/i]"
SHOWN = "m\\x1b]52;c;cm0="
"""How the identity's start is drawn: its ESC as an escape."""


def _controls(text: str) -> list[str]:
    """C0/C1 controls (and other non-printables but the line breaks of a multi-line drawing)."""
    return sorted({repr(ch) for ch in text if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf")})


def _hostile_runtime(monkeypatch) -> FakeRuntime:
    from console.runtime import fake_data

    rw = list(fake_data.ROAD_WARRIORS)
    remote, port, _, fields = rw[0]
    rw[0] = (remote, port, HOSTILE, {**fields, "eap_identity": HOSTILE, "cert_subject": HOSTILE})
    monkeypatch.setattr(fake_data, "ROAD_WARRIORS", tuple(rw))
    rt = FakeRuntime(road_warriors=True)
    now = rt.now
    auth = MessageSummary("IKE_AUTH", 1, False, True, 0x1111, 0x2222, 300, payloads=("IDi", HOSTILE),
                          details=(PayloadDetail("IDi", (("type", "FQDN"), ("id", HOSTILE))),))
    rt._emit(ExchangeReceived(ike_sa=998, connection="roadwarrior", message=auth, time=now,
                              local=("192.0.2.1", 4500), remote=("192.0.2.101", 4500)))
    rt._emit(NegotiationFailed(ike_sa=998, connection="roadwarrior", exchange="IKE_AUTH",
                               notify="AUTHENTICATION_FAILED", reason=HOSTILE, remote_ts=(HOSTILE,)))
    rt._emit(NegotiationFailed(ike_sa=997, connection="roadwarrior", exchange="IKE_AUTH", notify=HOSTILE,
                               reason="x"))
    rt._emit(PacketSample(time=now, direction="drop", spi=0x12345678, seq=1, outer=bytes(60), verdict=HOSTILE))
    rt._emit(LogMessage(time=now, level="INFO", source="engine.ike", text=HOSTILE, connection="roadwarrior"))
    return rt


def _hostile_ike(app):
    return next(i for i in app.store.snapshot.ike_sas if "mallory" in i.remote_id or "m\\x1b" in i.remote_id
                or "\x1b" in i.remote_id)


async def _dashboard_detail(app, pilot) -> str:
    from console.widgets.sa_tables import IkeSaTable

    table = app.screen.query_one(IkeSaTable)
    key = str(_hostile_ike(app).unique_id)
    await wait_for(pilot, lambda: key in table.row_keys, what="the hostile SA's row")
    table.focus()
    table.move_cursor(row=table.get_row_index(key))
    detail = app.screen.query_one("#dash-detail")

    def drawn() -> str:
        return "\n".join("".join(s.text for s in detail.render_line(y)) for y in range(detail.size.height))

    await wait_for(pilot, lambda: f"#{key} roadwarrior" in drawn(), what="the detail line")
    return drawn()


async def _sa_detail(app, pilot) -> str:
    from console.screens.sa_detail import SaDetailScreen

    app.push_screen(SaDetailScreen("roadwarrior", _hostile_ike(app).unique_id))
    await wait_for(pilot, lambda: isinstance(app.screen, SaDetailScreen) and SHOWN in screen_text(app),
                   what="SA detail")
    return screen_text(app)


async def _clients(app, pilot) -> str:
    await pilot.press("7")
    await wait_for(pilot, lambda: SHOWN in screen_text(app), what="clients")
    return screen_text(app)


async def _negotiations(app, pilot) -> str:
    from textual.widgets import Tree

    app.open_negotiations(998, "roadwarrior")
    await wait_for(pilot, lambda: app.screen.query("#explain") and app.screen.query(Tree)
                   and SHOWN in screen_text(app), what="the failed negotiation")
    tree = app.screen.query_one(Tree)
    tree.root.expand_all()
    await pilot.pause()
    labels = []
    stack = [tree.root]
    while stack:
        node = stack.pop()
        labels.append(node.label.plain)
        stack.extend(node.children)
    return screen_text(app) + "\n" + "\n".join(labels)


async def _alert_strip(app, pilot) -> str:
    await wait_for(pilot, lambda: f"✗ roadwarrior {SHOWN}" in screen_text(app), what="the alert")
    return screen_text(app)


async def _logs(app, pilot) -> str:
    await pilot.press("4")
    await wait_for(pilot, lambda: SHOWN in screen_text(app), what="the log line")
    return screen_text(app)


async def _copied_toast(app, pilot) -> str:
    """A copied log line is quoted in a toast (notify parses markup by default)."""
    from textual.widgets._toast import Toast

    await pilot.press("4")
    await wait_for(pilot, lambda: SHOWN in screen_text(app), what="the log line")
    await pilot.press("y")
    await wait_for(pilot, lambda: app.screen.query(Toast), what="the toast")
    await pilot.pause(0.3)
    drawn = screen_text(app)
    assert "[bold][@click=app.quit]" in drawn  # the markup shown as sent, not applied
    return drawn


async def _packets(app, pilot) -> str:
    await pilot.press("5")
    await wait_for(pilot, lambda: f"dropped before decryption: {SHOWN}" in screen_text(app),
                   what="the dropped packet's dissection")
    return screen_text(app)


PLACES = {
    "dashboard-detail": _dashboard_detail,
    "sa-detail": _sa_detail,
    "clients": _clients,
    "negotiations-and-explain": _negotiations,
    "alert-strip": _alert_strip,
    "logs": _logs,
    "copied-toast": _copied_toast,
    "packets": _packets,
}


class _Daemon:
    """A control socket's client whose daemon answers an initiate with a failure naming the peer."""

    path, timeout = "/nowhere", 1.0

    def __init__(self, *args, **kwargs) -> None:
        pass

    async def call(self, method: str, **args):
        if method == "list-conns":
            return {"connections": [{"name": "rw", "state": "down", "children": [{"name": "net"}]}]}
        if method == "list-sas":
            return {"ike_sas": []}
        return {}

    async def subscribe(self) -> None:
        pass

    async def next_event(self):
        return {"type": "NegotiationFailed", "connection": "rw", "notify": HOSTILE, "reason": HOSTILE}

    async def close(self) -> None:
        pass


async def _cli_initiate_wait(monkeypatch, capsys) -> str:
    from console import cli_control

    monkeypatch.setattr(cli_control, "ControlClient", _Daemon)
    assert await cli_control.initiate_and_wait(_Daemon(), None, "rw", None, 5.0) == 1
    out = capsys.readouterr()
    return out.out + out.err


@pytest.mark.parametrize("place", [*PLACES, "cli-sas", "cli-initiate-wait"])
async def test_a_hostile_peer_text_is_drawn_inert(place, monkeypatch, capsys):
    rt = _hostile_runtime(monkeypatch)
    if place == "cli-initiate-wait":
        out = await _cli_initiate_wait(monkeypatch, capsys)
        assert SHOWN in out
        assert not _controls(out), _controls(out)
        return
    if place == "cli-sas":
        from engine.jsonable import to_jsonable

        from console.cli_control import format_sas

        out = format_sas([to_jsonable(i) for i in rt.status_now().ike_sas])
        assert SHOWN in out
        assert not _controls(out), _controls(out)
        return
    app = make_app(rt)
    async with app.run_test(size=(200, 60), notifications=True) as pilot:
        await ready(pilot)
        drawn = await PLACES[place](app, pilot)
        assert SHOWN in drawn
        assert not _controls(drawn), _controls(drawn)
        await pilot.pause()
        assert app.is_running and app.return_code is None


def test_the_status_snapshot_carries_identities_as_display_strings():
    """The engine builds the snapshot the console, the control socket and `sas` read: a peer's
    identities in it are escapes (defence in depth for every reader, and for `sas --json`
    consumers), while the SA keeps the raw identity it matches and compares."""
    from engine.ike.status import ike_sa_info
    from engine.policy.model import Identity
    from tests.engine.test_ike_mobike import pair

    p = pair()
    gw = p.b.sas[0]
    gw.remote_id = Identity("fqdn", HOSTILE)
    gw.eap_identity = HOSTILE
    gw.cert_subject = "CN=" + HOSTILE
    info = ike_sa_info(gw, p.now)
    for shown in (info.remote_id, info.eap_identity, info.cert_subject):
        assert SHOWN in shown and not _controls(shown), shown
    assert gw.remote_id.value == HOSTILE and gw.eap_identity == HOSTILE  # the engine's own: untouched
    plain = p.a.sas[0]
    assert ike_sa_info(plain, p.now).local_id == str(plain.local_id)  # printable ids as they are


@pytest.mark.parametrize("text", ["CN=x\\", "x\\\\", "\\", "x[/b]", "[@click=app.quit]x"])
def test_a_peer_text_in_markup_leaves_the_tag_after_it_a_tag(text):
    """The alert strip and SA detail put a peer's text between tags: a trailing backslash escaped
    the closing tag (shown as "[/]", the colour running on over the rest of the line)."""
    from textual.content import Content

    from console.widgets.chrome import _esc

    shown = Content.from_markup(f"[b]{_esc(text)}[/b] tail")
    plain = shown.plain
    assert plain.startswith(text) and plain.endswith(" tail") and not plain[len(text):-len(" tail")].strip(), plain
