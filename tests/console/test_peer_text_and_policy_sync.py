"""Second review of the ux17 merge (helper revux17): what the policy form, the add dialog and the
screens that name peers do when the program, not a person, changes things."""

from __future__ import annotations

from console.app import ConsoleApp
from console.policy_state import validate_text
from console.runtime.fake import FakeRuntime

from .conftest import wait_for
from .test_policies import _open


async def _select(pilot, screen, want: tuple) -> None:
    tree = screen.query_one("#pol-tree")
    tree.cursor_line = next(n for n in range(tree.last_line + 1) if tree.get_node_at_line(n) is not None
                            and tree.get_node_at_line(n).data == want)
    await wait_for(pilot, lambda: screen._form_node == want and screen.query("#f-start_action"),
                   what=f"the form of {want}")


async def _apply_elsewhere(rt: FakeRuntime, path: str, text: str) -> None:
    """Another console (or ipsec-console reload) applies ``text`` to the engine."""
    v = validate_text(text, path, load_secrets=True)
    assert v.ok, v.errors
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    await rt.apply_policy(v.policy, text)


async def test_an_apply_from_elsewhere_refills_the_form_of_the_node_kept_selected(tmp_path):
    """ux17 kept the node being edited selected when the policy is loaded again: the form was then
    never rebuilt, and showed the values of before the apply made elsewhere (start_action "start"
    while the file and the engine said "trap"); a key typed into that field wrote the old value
    back with it."""
    rt = FakeRuntime.in_folder(tmp_path)
    app = ConsoleApp(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        want = ("child", "partner", "apps")
        await _select(pilot, screen, want)
        assert screen.query_one("#f-start_action").value == "start"
        new = screen._text().replace('esp_proposals = ["aes256gcm16-x25519"]\nstart_action = "start"',
                                     'esp_proposals = ["aes256gcm16-x25519"]\nstart_action = "trap"')
        assert new != screen._text()
        await _apply_elsewhere(rt, screen.file_path, new)
        await wait_for(pilot, lambda: screen.running_text == new and screen._text() == new,
                       what="the policy loaded again")
        await pilot.pause(0.5)
        assert screen._form_node == want
        await wait_for(pilot, lambda: screen.query("#f-start_action")
                       and screen.query_one("#f-start_action").value == "trap",
                       what="the form showing what the engine now runs")


async def test_an_apply_from_elsewhere_over_unsaved_edits_is_said_and_known(tmp_path):
    """A policy applied from elsewhere (another console attached, ipsec-console reload) while this
    console had edits not applied was passed over in silence: no word to the admin, and the console
    still took the old policy for the running one (the Diff and Apply's question compared the edits
    with a policy no longer running, and called connections "untouched" that the apply changed)."""
    rt = FakeRuntime.in_folder(tmp_path)
    app = ConsoleApp(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        want = ("child", "partner", "apps")
        await _select(pilot, screen, want)
        field = screen.query_one("#f-start_action")
        field.focus()
        await pilot.pause()
        field.value = "none"
        await wait_for(pilot, lambda: 'start_action = "none"' in screen._text(), what="the edit")
        edited = screen._text()
        theirs = screen.running_text.replace('remote_addrs = ["192.0.2.50"]', 'remote_addrs = ["192.0.2.51"]')
        assert theirs != screen.running_text
        before = len(app._notifications)
        await _apply_elsewhere(rt, screen.file_path, theirs)
        await wait_for(pilot, lambda: screen.running_text == theirs, what="the running policy known")
        assert screen._text() == edited  # the edits stay
        await wait_for(pilot, lambda: any("elsewhere" in n.message for n in list(app._notifications)[before:]),
                       what="a warning that the policy was applied elsewhere")


async def test_our_own_apply_is_not_taken_for_one_made_elsewhere(tmp_path):
    """Our own apply's PolicyApplied (before or after the apply's answer came back) is not reported as
    an apply made elsewhere."""
    from console.screens.confirm import ConfirmScreen

    rt = FakeRuntime.in_folder(tmp_path)
    app = ConsoleApp(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        want = ("child", "partner", "apps")
        await _select(pilot, screen, want)
        field = screen.query_one("#f-start_action")
        field.focus()
        await pilot.pause()
        field.value = "trap"
        await wait_for(pilot, lambda: 'start_action = "trap"' in screen._text(), what="the edit")
        await pilot.press("escape", "ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm apply")
        before = len(app._notifications)
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.running_text == screen._text(), what="applied")
        await pilot.pause(1.0)
        assert not any("elsewhere" in n.message for n in list(app._notifications)[before:])
        assert screen._form_node == want


async def test_the_add_dialog_keeps_a_name_typed_when_the_kind_changes_after(tmp_path):
    """The add dialog puts the suggestion for the kind highlighted into the name field as the
    highlight moves: a name the admin had typed went too when they went back to change the kind
    ("hq-dc2" typed, shift+Tab, Down: the field said "new-connection")."""
    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        tree = screen.query_one("#pol-tree")
        await pilot.press("a")
        await wait_for(pilot, lambda: app.screen.query("#add-name"), what="add dialog")
        await pilot.press("tab", "ctrl+u", *"hq-dc2", "shift+tab", "down")
        assert app.screen.query_one("#add-name").value == "hq-dc2"
        await pilot.press("enter")
        want = ("connection", "hq-dc2")
        await wait_for(pilot, lambda: tree.cursor_node is not None and tree.cursor_node.data == want,
                       what="the new connection selected")


async def test_an_ike_sa_rekeyed_beside_another_of_its_connection_names_the_sa_it_replaced():
    """"made by rekeying #N" took the newest earlier IKE SA of the connection that ran an IKE rekey:
    on a gateway two road warriors of one connection (#5, #7) rekeyed in turn (#7 -> #8, then
    #5 -> #9, the second by the peer) had #9 titled "made by rekeying #7". The new SA's SPIs are in
    the SA payload of the rekey that made it: they tell which."""
    from dataclasses import replace

    from engine.events import ExchangeReceived, ExchangeSent, MessageSummary, PayloadDetail
    from console.store import Negotiation

    from .conftest import make_app, ready

    def rekey(old: int, spi: str, sent: bool, response: bool) -> object:
        m = MessageSummary("CREATE_CHILD_SA", 3, response, not (sent ^ response), 0x1111, 0x2222, 300,
                           payloads=("SA", "No", "KE"),
                           details=(PayloadDetail("SA", (("proposal 1", "AES_GCM_16_256/PRF_HMAC_SHA2_384/X25519"),
                                                          ("proposal 1 SPI", spi))),))
        cls = ExchangeSent if sent else ExchangeReceived
        return cls(ike_sa=old, connection="roadwarrior", message=m, time=100.0 + old)

    app = make_app(FakeRuntime())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#ladder"), what="negotiations screen")
        store = app.store
        template = store.snapshot.ike_sas[0]
        made = {8: (0x8a, 0x8b), 9: (0x9a, 0x9b)}
        store.snapshot = replace(store.snapshot, ike_sas=tuple(
            replace(template, unique_id=u, name="roadwarrior", spi_i=i, spi_r=r) for u, (i, r) in made.items()))
        n5 = Negotiation(5, "roadwarrior", state="DESTROYED", state_reason="rekeyed")
        n7 = Negotiation(7, "roadwarrior", state="DESTROYED", state_reason="rekeyed")
        n7.exchanges.extend([rekey(7, f"{0x8a:016x}", True, False), rekey(7, f"{0x8b:016x}", False, True)])
        # #5's rekey came from the peer: its request (received) carries the new SA's initiator SPI.
        n5.exchanges.extend([rekey(5, f"{0x9a:016x}", False, False), rekey(5, f"{0x9b:016x}", True, True)])
        n8 = Negotiation(8, "roadwarrior", state="ESTABLISHED", state_reason="rekeyed")
        n9 = Negotiation(9, "roadwarrior", state="ESTABLISHED", state_reason="rekeyed")
        for n in (n5, n7, n8, n9):
            store.negotiations[n.ike_sa] = n
        screen = app.screen
        assert screen._rekeyed_from(8, n8) == 7
        assert screen._rekeyed_from(9, n9) == 5


HOSTILE = "mallory\x1b]52;c;cm0gLXJmIH4=\x1b\\\x1b[2J[bold]x[/bold][@click=app.quit]y[/]"
"""An identity as a peer may send it (FQDN and EAP identities are read as ASCII / UTF-8, controls and
all): an OSC 52 clipboard write, a screen clear, and Textual markup."""


async def test_the_disconnect_question_shows_a_peer_identity_inert(monkeypatch):
    """ux17's "Disconnect <client>?" names the client by the identity the peer sent: its ESC went
    raw to the admin's terminal (Textual strips BEL, BS, VT, FF and CR only), so a road warrior could
    write the admin's clipboard or clear the screen when d was pressed on its row. The clients table
    drew the same identity raw. Escaped as the engine's log lines are (engine.printable)."""
    from console.runtime import fake_data
    from console.screens.clients import ClientsScreen, client_rows
    from console.screens.confirm import ConfirmScreen
    from console.widgets.keyed_table import KeyedTable

    from .conftest import make_app, ready

    rw = list(fake_data.ROAD_WARRIORS)
    remote, port, _, fields = rw[0]
    rw[0] = (remote, port, HOSTILE, {**fields, "eap_identity": HOSTILE})
    monkeypatch.setattr(fake_data, "ROAD_WARRIORS", tuple(rw))
    rt = FakeRuntime(road_warriors=True)
    rows = client_rows(rt.status_now())
    assert all("\x1b" not in cell for row in rows.values() for cell in row)
    assert any("mallory\\x1b]52" in row[0] for row in rows.values())
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("7")
        await wait_for(pilot, lambda: isinstance(app.screen, ClientsScreen), what="clients screen")
        table = app.screen.query_one(KeyedTable)
        await wait_for(pilot, lambda: len(table.row_keys) == 4, what="clients")
        table.focus()
        key = next(k for k in table.row_keys if "mallory" in table.cell_text(k, "identity"))
        table.move_cursor(row=table.get_row_index(key))
        await pilot.pause()
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.pause()
        title = app.screen.query_one("#dialog-title")
        shown = "".join(seg.text for strip in title.render_lines(title.region.reset_offset) for seg in strip)
        assert "\x1b" not in shown
        assert "[bold]x[/bold][@click=app.quit]y[/]" in shown  # markup shown as typed, not applied
        await pilot.press("n")


async def test_the_palette_over_a_question_naming_a_peer_does_not_read_its_markup(monkeypatch):
    """ux17's palette says where each key works in the help's words, a dialog by its question:
    over "Disconnect <client>?" that is the peer's identity, and the palette reads help texts as
    Textual markup. An identity "mallory[/b]" raised MarkupError (the console died on ctrl+p), and
    "[@click=...]" made a link of the peer's choosing."""
    from textual.command import CommandPalette

    from console.runtime import fake_data
    from console.screens.clients import ClientsScreen
    from console.screens.confirm import ConfirmScreen
    from console.widgets.keyed_table import KeyedTable

    from .conftest import make_app, ready

    rw = list(fake_data.ROAD_WARRIORS)
    remote, port, _, fields = rw[0]
    rw[0] = (remote, port, "mallory[/b]", {**fields, "eap_identity": "mallory[/b]"})
    monkeypatch.setattr(fake_data, "ROAD_WARRIORS", tuple(rw))
    app = make_app(FakeRuntime(road_warriors=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("7")
        await wait_for(pilot, lambda: isinstance(app.screen, ClientsScreen), what="clients screen")
        table = app.screen.query_one(KeyedTable)
        await wait_for(pilot, lambda: len(table.row_keys) == 4, what="clients")
        table.focus()
        key = next(k for k in table.row_keys if "mallory" in table.cell_text(k, "identity"))
        table.move_cursor(row=table.get_row_index(key))
        await pilot.pause()
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), what="the palette")
        await pilot.pause(0.5)
        assert app.is_running and app.return_code is None
        shown = [str(c.prompt) for c in app.screen.query("CommandList").first().options]
        assert any("Disconnect mallory[/b]?" in s for s in shown), shown


def test_the_sa_detail_facts_show_a_peer_identity_inert():
    """SA detail, opened from the clients screen (o), drew the peer's identity raw: its ESC reached
    the terminal as in the disconnect question."""
    from dataclasses import replace

    from rich.console import Console

    from console.screens.sa_detail import _kv, ike_facts

    ike = replace(FakeRuntime().status_now().ike_sas[0], remote_id=HOSTILE)
    console = Console(width=200, color_system=None, file=open("/dev/null", "w"))
    with console.capture() as cap:
        console.print(_kv(ike_facts(ike)))
    out = cap.get()
    assert "mallory\\x1b]52" in out and "\x1b" not in out
