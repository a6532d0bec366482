"""What an admin met at 80x24 in tmux, on the demo and on a daemon beside strongSwan (sixteenth
session's tour, helper ux17)."""

from __future__ import annotations

import re

from console.app import ConsoleApp
from console.runtime.fake import FakeRuntime

from .conftest import wait_for
from .test_console_fixes import burst
from .test_policies import _open


async def test_a_form_field_typed_then_tabbed_past_in_one_burst_keeps_its_text(tmp_path):
    """A form field's text typed fast and Tab in one burst (a typist over ssh, tmux send-keys) was
    dropped: the field's Changed message came round once focus had moved on, and the form took only
    edits of the focused field. Local ID shown "hq.example.org" on screen, but not in the file."""
    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        await wait_for(pilot, lambda: screen.query("#f-dpd_delay") and screen.query("#f-rekey_time"),
                       what="the form")
        field = screen.query_one("#f-dpd_delay")
        field.focus()
        field.cursor_position = len(field.value)
        await pilot.pause()
        burst(app, "backspace", "backspace", "backspace", *"45s", "tab", *"2h", "tab")
        await wait_for(pilot, lambda: 'dpd_delay = "45s"' in screen._text(), timeout=2,
                       what="dpd_delay = 45s in the text")
        await wait_for(pilot, lambda: 'rekey_time = "2h"' in screen._text(), timeout=2,
                       what="rekey_time = 2h in the text")


async def test_apply_keeps_the_node_being_edited_selected(tmp_path):
    """After Apply (ctrl+g, y) the tree jumped back to the first connection and the form with it: the
    engine's PolicyApplied for our own apply was taken for an apply from elsewhere, and the policy
    reloaded as at start. The admin who had just added hq-dc2 / dc2-lan found branch's form."""
    from console.screens.confirm import ConfirmScreen

    rt = FakeRuntime.in_folder(tmp_path)
    app = ConsoleApp(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        tree = screen.query_one("#pol-tree")
        want = ("child", "partner", "apps")
        tree.cursor_line = next(n for n in range(tree.last_line + 1) if tree.get_node_at_line(n) is not None
                                and tree.get_node_at_line(n).data == want)
        await wait_for(pilot, lambda: screen._form_node == want and screen.query("#f-start_action"),
                       what="the CHILD SA config's form")
        field = screen.query_one("#f-start_action")
        field.focus()
        await pilot.pause()
        field.value = "trap"
        await wait_for(pilot, lambda: 'start_action = "trap"' in screen._text(), what="the edit")
        await pilot.press("escape")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm apply")
        await pilot.press("y")
        await wait_for(pilot, lambda: any(c[0] == "apply_policy" for c in rt.commands), what="applied")
        await wait_for(pilot, lambda: screen.running_text == screen._text(), what="running")
        await pilot.pause(1.0)  # the PolicyApplied event, the reload it led to, the tree rebuilt
        assert tree.cursor_node is not None and tree.cursor_node.data == want
        assert screen._form_node == want
        assert app.focused is tree


async def test_a_connection_added_at_80x24_is_scrolled_into_the_tree(tmp_path):
    """At 80x24 the tree shows 13 lines: a connection added below them got the cursor (its form
    opened) but the tree stayed scrolled to the top, the new node out of sight."""
    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        tree = screen.query_one("#pol-tree")
        assert app.focused is tree
        await pilot.press("a")
        await wait_for(pilot, lambda: app.screen.query("#add-name"), what="add dialog")
        await pilot.press("down", "tab", "ctrl+u", *"hq-dc2", "enter")
        want = ("connection", "hq-dc2")
        await wait_for(pilot, lambda: tree.cursor_node is not None and tree.cursor_node.data == want,
                       what="the new connection selected")
        await pilot.pause(0.3)
        top, height = tree.scroll_offset.y, tree.scrollable_content_region.height
        assert top <= tree.cursor_line < top + height, (top, height, tree.cursor_line)



def test_a_child_sa_that_carried_nothing_yet_says_so():
    """SA detail read "0 B, 0 packets, last – ago" for a CHILD SA just rekeyed (tmux, beside charon)."""
    from console.screens.sa_detail import child_facts
    from engine.status import ChildSaInfo

    ch = ChildSaInfo(name="lan", unique_id=2, reqid=1, state="INSTALLED", protocol="esp", mode="tunnel",
                     encap=True, spi_in=0x191684a8, spi_out=0xcdcf1375, bytes_out=84, packets_out=1,
                     last_out_ago=3.0)
    facts = dict(child_facts(ch, None))
    assert facts["in"] == "0 B, 0 packets, none yet"
    assert facts["out"] == "84 B, 1 packet, last 3s ago"


def test_a_create_child_sa_rung_keeps_its_message_id():
    """The ladder cut "CREATE_CHILD_SA resp 2" to "CREATE_CHILD_SA resp …": the response's Message ID,
    the one thing to match a rung with charon's log ("parsed CREATE_CHILD_SA response 2"), was lost."""
    from engine.events import ExchangeReceived, ExchangeSent, MessageSummary

    from console.screens.negotiations import LANE, ladder_label

    def rung(exchange, mid, response, cls=ExchangeReceived):
        m = MessageSummary(exchange, mid, response, True, 1, 2, 300, ("SA", "No"))
        return ladder_label(cls(1, "c", m, 10.0), 10.0, {}).plain

    for mid in (2, 12, 345, 67890, 2**32 - 1):
        for response, kind in ((False, "req"), (True, "resp")):
            for cls in (ExchangeSent, ExchangeReceived):
                text = rung("CREATE_CHILD_SA", mid, response, cls)
                arrow = text.split()[1]
                lane = text[text.index(arrow[0]):][:LANE]
                assert f" {kind} {mid}" in lane, lane
                assert lane[-1] in "▶●", lane  # the rung's length is the lane's, whatever the numbers
    assert "◀ CREATE_CHILD_SA resp 2 ●" in rung("CREATE_CHILD_SA", 2, True)
    assert "INFORMATIONAL req 9" in rung("INFORMATIONAL", 9, False)


def test_an_auth_failure_names_the_key_whole_in_the_narrow_explain_box():
    """At 80x24 the explain box is 38 columns: the ID table cut the key to fix to
    "(connections.psk-tunnel…": the where of the error was lost (a wrong PSK against charon)."""
    from rich.console import Console

    from console.explain import explain
    from engine.events import NegotiationFailed

    f = NegotiationFailed(4, "psk-tunnel", "IKE_AUTH", "AUTHENTICATION_FAILED", "", None, False)
    console = Console(width=37, record=True, file=open("/dev/null", "w"))
    console.print(explain(f, (), {}, configured_ids=("left.example", "right.example")))
    text = console.export_text()
    assert "…" not in text, text
    joined = "".join(text.split())  # a key folded over two lines is still read whole
    assert "(connections.psk-tunnel.local.id)" in joined, text
    assert "(expected:connections.psk-tunnel.remote.id)" in joined, text


def test_proposals_and_selectors_are_whole_in_the_narrow_explain_box():
    """At 80x24 the proposal table cut "PRF_HMAC_SHA2_384" to "PRF_HMAC_SHA2_3…" (the very digits that
    differed) and the selector table "198.51.100.0/26[tcp/443]" to "198.51.100.0/26[…"."""
    from rich.console import Console

    from console.explain import explain
    from engine.events import NegotiationFailed

    def text(f):
        console = Console(width=37, record=True, file=open("/dev/null", "w"))
        console.print(explain(f, (), {}))
        return console.export_text()

    nopro = text(NegotiationFailed(
        1, "legacy", "IKE_SA_INIT", "NO_PROPOSAL_CHOSEN", "", None, False,
        local_proposals=("IKE:AES_CBC_256/HMAC_SHA2_384_192/PRF_HMAC_SHA2_384/ECP_384",),
        remote_proposals=("IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024",)))
    ts = text(NegotiationFailed(1, "partner", "IKE_AUTH", "TS_UNACCEPTABLE", "", "apps", True,
                                local_ts=("198.51.100.0/26[tcp/443]",), remote_ts=("198.51.100.224/28",)))
    for out, whole in ((nopro, ("PRF_HMAC_SHA2_384", "HMAC_SHA2_384_192")), (ts, ("198.51.100.0/26[tcp/443]",))):
        assert "…" not in out, out
        lines = out.splitlines()
        rule = next(i for i, line in enumerate(lines) if line.startswith("───"))
        right = re.search(r"\S {2,}(\S)", lines[rule - 1]).start(1)  # where the second column starts
        body = lines[rule + 1:next(i for i, line in enumerate(lines) if line.startswith("Fix:"))]
        left = "".join("".join(line[:right].split()) for line in body)  # the first column, read down
        for word in whole:
            assert word in left, out


async def test_sa_detail_of_a_failing_connection_says_why_it_is_down():
    """SA detail of a connection whose every attempt failed (a wrong PSK against charon) said only
    "has no IKE SA (state: down)": the failure was one screen away, not named."""
    from .conftest import make_app, ready, screen_text

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.open_detail("legacy")
        await wait_for(pilot, lambda: "has no IKE SA" in screen_text(app), what="the detail of legacy")
        text = " ".join(screen_text(app).split())
        assert "failed with NO_PROPOSAL_CHOSEN in IKE_SA_INIT" in text, text
        app.pop_screen()
        # A later attempt that came up (then was terminated): the old failure is not its last word.
        from console.store import Negotiation

        app.store.negotiations[999] = Negotiation(999, "legacy", state="DESTROYED", state_reason="terminated")
        await pilot.pause()
        app.open_detail("legacy")
        await wait_for(pilot, lambda: "has no IKE SA" in screen_text(app), what="the detail of legacy")
        assert "failed with" not in screen_text(app)
        app.pop_screen()
        await pilot.pause()
        app.open_detail("branch")
        await pilot.pause(0.3)
        assert "failed with" not in screen_text(app)


async def test_the_findings_line_says_whole_what_is_not_saved(tmp_path):
    """The findings line shortened each problem to what follows its first ": ", meant to drop the file
    name: "the engine runs a policy not saved in policy.toml: it is lost at the next start" read
    "it is lost at the next start" (seen attached to a daemon whose file was edited elsewhere)."""
    from textual.widgets import Static

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        screen.file_text = screen.file_text + "\n# edited in vim meanwhile\n"
        screen.running_saved = False
        screen._validate_now()
        findings = screen.query_one("#pol-findings", Static)
        await wait_for(pilot, lambda: "lost at the next start" in str(findings.content), what="the line")
        line = " ".join(str(findings.content).split())
        assert "(edits not saved (ctrl+s); the engine runs a policy not saved in gateway.toml: it is lost " \
               "at the next start)" in line, line


async def test_a_finding_about_a_section_is_read_whole_in_its_form(tmp_path):
    """A CHILD SA config added as "lan" to a second connection: "the name 'lan' is already used by child
    'lan' of connection 'branch': child names must be unique (they are how ..." ran past the findings
    line's 5 rows at 80x24 (not focusable, so not scrollable by keyboard) and no field of the form
    carried it (its key is the section's own)."""
    from .conftest import screen_text

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        text = screen._text() + '\n[connections.partner.children.lan]\nlocal_ts = ["198.51.100.0/26"]\n'
        screen._set_editor(text)
        want = ("child", "partner", "lan")
        await wait_for(pilot, lambda: screen.validation is not None and screen.validation.text == text
                       and want in screen.query_one("#pol-tree").nodes(), what="the duplicate validated")
        problem = next(f for f in screen.validation.errors if f.key_path == "connections.partner.children.lan")
        screen.query_one("#pol-tree").select(want)
        await wait_for(pilot, lambda: screen._form_node == want and screen.query("#f-node-msg"), what="its form")
        await pilot.pause(0.3)
        r = screen.query_one("#pol-form").region
        rows = screen_text(app).splitlines()[r.y:r.y + r.height]
        form = " ".join(" ".join(row[r.x:r.x + r.width] for row in rows).split())
        assert "✗ " + " ".join(problem.message.split()) in form, form


async def test_the_palette_names_keys_and_screens_as_the_help_does():
    """The palette said "Quit — key ctrl+q — ConsoleApp" (q, the key the footer shows, left out; a Python
    class for "everywhere") and "Go to pki" where the help and the top bar say PKI."""
    from console.commands import ConsoleCommands

    from .conftest import make_app, ready

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        entries = {str(h.display): h.help async for h in ConsoleCommands(app.screen).discover()}
        assert entries["Quit"] == "key q, ^q — everywhere", entries["Quit"]
        assert entries["Initiate"] == "key i — Dashboard", entries["Initiate"]
        assert "Go to PKI" in entries and "Go to Negotiations" in entries
        assert not any("ConsoleApp" in h or "Screen" in h for h in entries.values())


async def test_disconnecting_a_client_asks_in_the_clients_words():
    """d Disconnect on the Clients screen asked "Terminate IKE SA #3 of roadwarrior? ... until the
    connection is initiated again": a gateway never initiates a road warrior, its client reconnects."""
    from console.screens.clients import ClientsScreen
    from console.screens.confirm import ConfirmScreen
    from console.widgets.keyed_table import KeyedTable

    from .conftest import make_app, ready, screen_text

    rt = FakeRuntime(road_warriors=True)
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("7")
        await wait_for(pilot, lambda: isinstance(app.screen, ClientsScreen), what="clients screen")
        table = app.screen.query_one(KeyedTable)
        await wait_for(pilot, lambda: table.row_keys, what="clients")
        table.focus()
        key = table.selected_key
        who = table.cell_text(key, "identity")
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        text = " ".join(screen_text(app).split())
        assert f"Disconnect {who}?" in text and f"IKE SA #{key} (roadwarrior)" in text, text
        assert "client connects again" in text and "initiated again" not in text, text
        await pilot.press("y")
        await wait_for(pilot, lambda: rt.commands, what="terminate")
        assert rt.commands[-1] == ("terminate", {"name": "roadwarrior", "unique_id": int(key)})


async def test_deleting_a_child_sa_config_names_its_connection(tmp_path):
    """x on "lan" of hq-dc2 asked "Delete CHILD SA config lan?": branch has a "lan" too."""
    from console.screens.confirm import ConfirmScreen

    from .conftest import screen_text

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        tree = screen.query_one("#pol-tree")
        tree.select(("child", "branch", "lan"))
        tree.focus()
        await pilot.pause()
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert "Delete CHILD SA config branch / lan?" in screen_text(app)
        await pilot.press("n")



async def test_the_top_bar_keeps_the_end_of_a_daemons_socket_path():
    """Attached, the top bar kept the start of the socket's path ("attached — /tmp/ux17lab/wo…" at 120
    columns): the folder and name that tell one daemon from another are at its end."""
    from console.widgets.chrome import _shortened

    from .conftest import make_app, ready, screen_text

    label = "attached — /tmp/ux17lab/work/ours-left/control.sock"
    app = make_app(FakeRuntime(kind="attached", label=label))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        top = screen_text(app).splitlines()[0]
        shown = top.split("│")[1].strip()
        assert shown.startswith("attached — …") and label.endswith(shown.split("…")[1]), top
        assert "ontrol.sock" in shown, top
    short = _shortened(label, 24)
    assert short == "attached — …control.sock" and len(short) == 24, short
    assert _shortened(label, 100) == label
    assert _shortened(label, 14) == "attached — /t…"  # too narrow for a useful end: as before
    assert _shortened("FAKE runtime — scripted peers", 20) == "FAKE runtime — scri…"  # not a path


async def test_a_value_is_repeated_under_its_field_only_when_the_field_cuts_it(tmp_path):
    """Every new connection's form at 80x24 showed its IKE proposal twice (the field, then the same
    text under it: any value over 40 characters was repeated, cut or not)."""
    from textual.widgets import Input

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        await pilot.press("a")
        await wait_for(pilot, lambda: app.screen.query("#add-name"), what="add dialog")
        await pilot.press("down", "tab", "ctrl+u", *"hq-dc2", "enter")
        await wait_for(pilot, lambda: screen._form_node == ("connection", "hq-dc2")
                       and screen.query("#f-proposals-full"), what="the new connection's form")
        await pilot.pause(0.3)
        field = screen.query_one("#f-proposals", Input)
        assert 40 < len(field.value) < field.content_region.width, (field.value, field.content_region)
        assert not screen.query_one("#f-proposals-full").has_class("-shown")
        # A value the field cuts is shown whole under it, as before.
        longer = field.value + ", aes256-sha384-ecp384"
        field.focus()
        await pilot.pause()
        field.value = longer
        await wait_for(pilot, lambda: screen.query_one("#f-proposals-full").has_class("-shown"), what="shown")
        assert str(screen.query_one("#f-proposals-full").content) == longer


async def test_an_ike_sa_made_by_a_rekey_names_the_sa_it_replaced():
    """After R (rekey IKE) beside charon, n opened the new IKE SA's ladder titled "#2 psk-tunnel: no
    exchange seen": its CREATE_CHILD_SA is the old SA's, which the title did not say."""
    from textual.widgets import Tree

    from console.widgets.keyed_table import KeyedTable

    from .conftest import make_app, ready

    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        old = next(i.unique_id for i in app.store.snapshot.ike_sas if i.name == "branch")
        await rt.rekey("branch", ike=True)
        await wait_for(pilot, lambda: any(n.connection == "branch" and n.ike_sa > old and n.state == "ESTABLISHED"
                                          for n in app.store.negotiations.values()), what="the new IKE SA")
        new = max(n.ike_sa for n in app.store.negotiations.values() if n.connection == "branch")
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#ladder"), what="negotiations screen")
        table = app.screen.query_one("#nego-list", KeyedTable)
        await wait_for(pilot, lambda: str(new) in table.row_keys, what="the new SA listed")
        table.move_cursor(row=table.get_row_index(str(new)))
        await pilot.pause(0.2)
        assert str(app.screen.query_one("#ladder", Tree).border_title) == f"#{new} branch: made by rekeying #{old}"


async def test_the_add_dialog_takes_kind_tab_and_name_in_one_burst(tmp_path):
    """a, then Down (connection), Tab, ctrl+u and the name typed in one burst made a connection named
    "hq-dc2new-connection": the name suggested for the kind chosen with Down came round after the
    typed name had gone in."""
    from console.screens.dialogs import AddDialog

    import asyncio

    app = ConsoleApp(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        for name, gap in (("hq-dc2", 0.0), ("hq-dc3", 0.005)):  # one read, or the name a moment later
            await pilot.press("a")
            await wait_for(pilot, lambda: isinstance(app.screen, AddDialog), what="add dialog")
            await pilot.pause(0.3)
            burst(app, "down", "tab", "ctrl+u")
            await asyncio.sleep(gap)
            burst(app, *name)
            await asyncio.sleep(gap)
            burst(app, "enter")
            await wait_for(pilot, lambda: not isinstance(app.screen, AddDialog), what="added")
            await pilot.pause(0.5)
            assert f"[connections.{name}]" in screen._text(), [
                line for line in screen._text().splitlines() if line.startswith("[connections.")]
            await pilot.press("escape")
