"""The PKI screen (key 6) and the dashboard's certificate expiry warnings, on real CA
folders made with engine.pki.ca in tmp_path, beside the FakeRuntime's policy file.

Time is frozen: the CA functions and the app take the same ``clock``.
"""

from __future__ import annotations

import itertools
import stat
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from console.app import ConsoleApp
from console.commands import ConsoleCommands
from console.runtime.fake import FakeRuntime
from console.screens.confirm import ConfirmScreen
from console.screens.pki import PkiScreen
from console.widgets.pki_folder import expiry_alerts, pki_dir_for
from console.widgets.pki_forms import InitCaForm, IssueForm, PassphraseForm
from console.widgets.pki_table import CertTable
from engine.pki import ca
from engine.pki.validate import load_crl_files
from engine.policy import parse_policy
from engine.secret import Secret

from .conftest import ready, steady_cursors, screen_text, wait_for

T0 = datetime(2031, 3, 1, 9, 30, tzinfo=timezone.utc)
PEM_KEY_MARKER = "PRIVATE KEY"


def clock() -> datetime:
    return T0


def make_ca(folder: Path, *, certs: bool = True) -> Path:
    d = folder / "pki"
    ca.init_ca(d, "O=Example, CN=Example VPN CA", clock=clock)
    if certs:
        ca.issue(d, "gw.example.org", ["IP:192.0.2.1"], clock=clock)
        ca.issue(d, "alice@example.org", kind="client", days=400, clock=clock)
        ca.crl(d, clock=clock)
    return d


def make_app(tmp_path: Path) -> ConsoleApp:
    return ConsoleApp(FakeRuntime.in_folder(tmp_path), clock=clock)


async def open_pki(pilot) -> PkiScreen:
    await ready(pilot)
    await pilot.press("6")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, PkiScreen) and pilot.app.screen.view is not None,
                   what="the CA folder read")
    await pilot.pause()
    return pilot.app.screen


def rows(screen: PkiScreen) -> dict[str, str]:
    """serial -> status, as the table shows them."""
    table = screen.query_one(CertTable)
    return {k: table.cell_text(k, "status") for k in table.row_keys}


def form_error(app) -> str:
    """The inline error of the form on top."""
    return str(app.screen.query_one("#pki-form-error").render())


def record_syncs(table: CertTable) -> list[tuple[int, int, int]]:
    """Every (added, removed, updated) the table applies from now on."""
    seen: list[tuple[int, int, int]] = []
    original = table.sync

    def sync(new_rows):
        original(new_rows)
        seen.append(table.sync_stats)

    table.sync = sync
    return seen


async def test_lists_the_ca_and_what_it_issued(tmp_path):
    d = make_ca(tmp_path)
    entries = {e.serial_hex: e for e in ca.list_certs(d)}
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_pki(pilot)
        assert set(rows(screen)) == set(entries)
        assert set(rows(screen).values()) == {"valid"}
        text = screen_text(app)
        assert "O=Example, CN=Example VPN CA" in text and "ecdsa-p256" in text
        assert "CRL next update 2031-03-31" in text  # 30 days after the frozen now
        assert "pki/ (next to gateway.toml)" in text
        assert "gw.example.org" in text and "alice@example.org" in text
        # The detail line follows the selection and names the key file, not its content.
        table = screen.query_one(CertTable)
        table.move_cursor(row=table.get_row_index(next(k for k, e in entries.items() if e.kind == "client")))
        await pilot.pause()
        text = screen_text(app)
        assert "client · ecdsa-p256" in text and "private/alice@example.org.key (0600, never shown)" in text


async def test_issue_through_the_form_writes_the_files_and_adds_one_row(tmp_path):
    d = make_ca(tmp_path)
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_pki(pilot)
        before = set(rows(screen))
        syncs = record_syncs(screen.query_one(CertTable))
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, IssueForm), what="the issue form")
        form = app.screen
        form.query_one("#pki-cn").value = "my gateway"  # the CN also names the files
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, IssueForm) and form_error(app).startswith("CN: it also names the files")
        form.query_one("#pki-cn").value = ""
        await pilot.press(*"vpn2.example.org")
        form.query_one("#pki-sans").value = "IP:192.0.2.7, not a name!"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, IssueForm), "a bad SAN keeps the form open"
        assert form_error(app).startswith("SANs: subjectAltName 'not a name!'")
        form.query_one("#pki-sans").value = "IP:192.0.2.7"
        form.query_one("#pki-days").value = "90"
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(rows(screen)) == len(before) + 1, what="the new row")
        new = set(rows(screen)) - before
        assert before <= set(rows(screen)) and len(new) == 1
        assert all(removed == 0 for _, removed, _ in syncs) and any(added == 1 for added, _, _ in syncs)
        key = d / "private" / "vpn2.example.org.key"
        assert (d / "certs" / "vpn2.example.org.crt").exists()
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        [entry] = [e for e in ca.list_certs(d) if e.serial_hex in new]
        assert entry.sans == ("DNS:vpn2.example.org", "IP:192.0.2.7")
        assert entry.not_after == T0 + timedelta(days=90)
        # The same name again: refused by engine.pki, and the form comes back with the reason.
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, IssueForm), what="the issue form")
        app.screen.query_one("#pki-cn").value = "vpn2.example.org"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, IssueForm) and "already exists" in form_error(app),
                       what="the refusal")
        assert len(ca.list_certs(d)) == len(before) + 1


async def test_revoke_asks_first_then_marks_the_row_and_re_signs_the_crl(tmp_path):
    d = make_ca(tmp_path)
    [alice] = [e for e in ca.list_certs(d) if e.kind == "client"]
    number = tomllib.loads((d / "index.toml").read_text())["ca"]["crl_number"]
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_pki(pilot)
        table = screen.query_one(CertTable)
        table.move_cursor(row=table.get_row_index(alice.serial_hex))
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert "Revoke alice@example.org?" in screen_text(app)
        await pilot.press("n")
        await pilot.pause(0.2)
        assert rows(screen)[alice.serial_hex] == "valid"
        assert all(e.revoked is None for e in ca.list_certs(d))
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: rows(screen).get(alice.serial_hex) == "revoked", what="revoked row")
        assert "revoked" in screen_text(app)
    index = tomllib.loads((d / "index.toml").read_text())
    assert index["ca"]["crl_number"] == number + 1
    [crl] = load_crl_files([d / "crl.pem"])
    assert crl.get_revoked_certificate_by_serial_number(alice.serial) is not None
    assert len(crl) == 1


async def test_no_folder_offers_to_create_a_ca(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_pki(pilot)
        assert screen.view.state == "no-ca"
        text = screen_text(app)
        assert "No CA in pki/ (next to gateway.toml) yet" in text and "Initialize a CA here (n)" in text
        assert not screen.query_one(CertTable).display
        await pilot.press("r")  # nothing to revoke: a hint, not a crash
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, InitCaForm), what="the init form")
        await pilot.press(*"Test CA")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.view.state == "ok", what="the new CA")
        assert (tmp_path / "pki" / "ca.crt").exists()
        assert stat.S_IMODE((tmp_path / "pki" / "private" / "ca.key").stat().st_mode) == 0o600
        assert screen.query_one(CertTable).display and rows(screen) == {}
        assert "CN=Test CA" in screen_text(app)


async def test_a_refused_ca_name_brings_the_form_back_as_typed(tmp_path):
    """engine.pki refuses a name the form cannot judge (a CN over 64 characters): the form
    comes back with the reason and what was typed, as the issue form does, not a toast over
    an empty screen and the name to type again."""
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_pki(pilot)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, InitCaForm), what="the init form")
        long_name = "O=Lab, CN=" + "x" * 70
        app.screen.query_one("#pki-name").value = long_name
        app.screen.query_one("#pki-ca-days").value = "900"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InitCaForm) and app.screen.query_one(
            "#pki-form-error").has_class("-shown"), what="the form back with the reason")
        form = app.screen
        assert form.query_one("#pki-name").value == long_name and form.query_one("#pki-ca-days").value == "900"
        assert "64" in str(form.query_one("#pki-form-error").content)
        assert screen.view.state == "no-ca" and not (tmp_path / "pki" / "ca.crt").exists()
        form.query_one("#pki-name").value = "O=Lab, CN=Lab CA"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.view.state == "ok", what="the CA")
        assert "CN=Lab CA" in screen_text(app)


async def test_an_encrypted_ca_key_asks_for_its_passphrase(tmp_path):
    d = tmp_path / "pki"
    ca.init_ca(d, "CN=Locked CA", passphrase=Secret("open-sesame-Q7x"), clock=clock)
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_pki(pilot)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, PassphraseForm), what="the passphrase form")
        assert "encrypted and no passphrase" in form_error(app)
        await pilot.press(*"wrong-one")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PassphraseForm) and "wrong passphrase" in
                       form_error(app), what="asked again")
        await pilot.press(*"open-sesame-Q7x")
        shown = screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.view.crl_next_update is not None, what="the CRL")
        assert "open-sesame" not in shown and "open-sesame" not in screen_text(app)
    assert (d / "crl.pem").exists()


@pytest.mark.parametrize("damage", ["bad-index", "file", "permission"])
async def test_a_broken_or_unreadable_folder_is_a_message(tmp_path, monkeypatch, damage):
    if damage == "bad-index":
        d = make_ca(tmp_path, certs=False)
        (d / "index.toml").write_text("this is [not toml")
        expected = "not valid TOML"
    elif damage == "file":
        (tmp_path / "pki").write_text("not a folder")
        expected = "is a file, not a CA folder"
    else:
        make_ca(tmp_path, certs=False)

        def denied(d):  # we run as root here: simulate a folder owned by the daemon's user
            raise PermissionError(13, "Permission denied", str(Path(d) / "index.toml"))

        monkeypatch.setattr(ca, "ca_info", denied)
        expected = "permission denied"
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_pki(pilot)
        assert screen.view.state == "error"
        assert expected in screen.view.message
        assert expected in " ".join(screen_text(app).split())  # the box below wraps it
        await pilot.press("i")  # refused with a hint
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and isinstance(app.screen, PkiScreen)


async def test_no_private_key_is_ever_drawn(tmp_path):
    d = make_ca(tmp_path)
    assert PEM_KEY_MARKER in (d / "private" / "ca.key").read_text()  # the marker this test looks for
    app = make_app(tmp_path)
    seen: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_pki(pilot)
        table = screen.query_one(CertTable)
        for key in table.row_keys:
            table.move_cursor(row=table.get_row_index(key))
            await pilot.pause()
            seen += [screen_text(app), app.export_screenshot()]
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, IssueForm), what="the issue form")
        await pilot.press(*"db.example.org")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(table.row_keys) == 3, what="the new row")
        seen += [screen_text(app), app.export_screenshot()]
        await pilot.press("1")
        await pilot.pause(0.2)
        seen.append(screen_text(app))
    assert (d / "private" / "db.example.org.key").exists()
    for shown in seen:
        assert PEM_KEY_MARKER not in shown and "BEGIN" not in shown


async def test_dashboard_warns_of_a_certificate_expiring_in_10_days(tmp_path):
    d = make_ca(tmp_path)
    ca.issue(d, "branch.example.org", days=10, clock=clock)
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: any(a.kind == "cert" for a in app.store.alerts), what="the expiry alert")
        await pilot.pause()
        text = screen_text(app)
        assert "cert branch.example.org expires in 10 days — reissue with: ipsec-console pki issue" in text
        certs = [a for a in app.store.alerts if a.kind == "cert"]
        assert len(certs) == 1  # the others have two years or more
        # Checked again (the hourly tick, a policy change): the same alert, not a second one.
        app.check_cert_expiry()
        await pilot.pause(0.3)
        assert [a for a in app.store.alerts if a.kind == "cert"] == certs


def test_expiry_alerts_cover_the_policy_certificates_and_the_ca(tmp_path):
    """Certificates the policy names (from any CA) and the CA folder's CA, soonest first."""
    ours = make_ca(tmp_path, certs=False)
    other = tmp_path / "other"
    ca.init_ca(other, "CN=Partner CA", days=20, clock=clock)
    ca.issue(other, "partner.example.net", days=5, clock=clock)
    ca.issue(ours, "hq.example.org", days=25, clock=clock)
    (tmp_path / "p.toml").write_text("")
    policy = parse_policy("""
[connections.partner]
remote_addrs = ["192.0.2.40"]
local = { auth = "pubkey", certs = ["other/certs/partner.example.net.crt", "missing.crt"] }
remote = { auth = "pubkey", cacerts = ["other/ca.crt"] }
[connections.partner.children.x]
""", tmp_path / "p.toml")
    alerts = expiry_alerts(policy, pki_dir_for(policy), T0)
    texts = [a.text for a in alerts]
    assert texts[0].startswith("cert partner.example.net (other/certs/partner.example.net.crt, partner) "
                               "expires in 5 days — renew it")
    assert texts[1].startswith("CA cert Partner CA (other/ca.crt, partner) expires in 20 days")
    assert texts[2].startswith("cert hq.example.org expires in 25 days — reissue with: ipsec-console pki issue "
                               "hq.example.org --force --dir ")
    assert len(alerts) == 3  # our CA has ten years; the missing file is the loader's business
    # Revoked certificates do not nag; expired ones say so.
    ca.revoke(ours, "hq.example.org", clock=clock)
    later = T0 + timedelta(days=30)
    texts = [a.text for a in expiry_alerts(policy, pki_dir_for(policy), later)]
    assert not any("hq.example.org" in t for t in texts)
    assert texts[0].startswith("cert partner.example.net") and "expired on 2031-03-06" in texts[0]


async def test_palette_offers_the_pki_actions_everywhere(tmp_path):
    make_ca(tmp_path)
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        entries = {str(h.display): h for h in [h async for h in ConsoleCommands(app.screen).discover()]}
        for label in ("PKI: issue a certificate", "PKI: revoke the selected certificate", "PKI: re-sign the CRL",
                      "PKI: initialize a CA", "PKI: open another CA folder", "Go to PKI"):
            assert label in entries, label
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"PKI: issue")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, IssueForm), what="the issue form from the palette")
        await pilot.press("escape")
        await pilot.pause()
        # On the PKI screen its bindings are entries too, except one that cannot run now.
        pki_entries = {str(h.display) async for h in ConsoleCommands(app.screen).discover()}
        assert {"Issue", "Revoke", "CRL", "Folder", "Reload", "PKI: re-sign the CRL"} <= pki_entries
        assert "Init CA" not in pki_entries


def test_snapshot_80x24(snap_compare, tmp_path, monkeypatch):
    serials = itertools.count(0x1A2B3C4D5E6F0718, 0x0111111111111111)  # random in real life; distinct here
    monkeypatch.setattr(ca.x509, "random_serial_number", lambda: next(serials))
    d = make_ca(tmp_path)
    ca.issue(d, "branch.example.org", days=10, clock=clock)
    ca.revoke(d, "alice@example.org", clock=clock)

    async def run_before(pilot):
        await open_pki(pilot)
        steady_cursors(pilot.app)
        await pilot.pause(0.2)

    assert snap_compare(make_app(tmp_path), terminal_size=(80, 24), run_before=run_before)


def test_the_shipped_lab_keeps_its_ca_in_the_users_data_folder(tmp_path):
    from engine.policy.parse import load_policy
    from engine.policy.samples import sample_dir, sample_path

    from console.widgets.pki_folder import pki_dir_for

    lab = load_policy(sample_path("lab.toml"))
    d = pki_dir_for(lab)
    assert d == tmp_path / "data" / "ipsec-console" / "lab-pki"  # XDG_DATA_HOME (conftest)
    assert sample_dir().resolve() not in d.resolve().parents
    copy = tmp_path / "mine" / "lab.toml"  # a lab of one's own keeps pki/ beside it
    copy.parent.mkdir()
    copy.write_text(sample_path("lab.toml").read_text())
    for name in ("lab-branch.toml", "lab-roadwarrior.toml", "lab.secrets.toml"):
        (copy.parent / name).write_text(sample_path(name).read_text())
    assert pki_dir_for(load_policy(copy)) == copy.parent / "pki"


async def test_screenshot_from_the_palette_works_without_a_downloads_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    from .conftest import make_app as plain_app

    app = plain_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        app.action_screenshot()
        await wait_for(pilot, lambda: list(work.glob("*.svg")), what="screenshot file")
        await wait_for(pilot, lambda: any("Saved screenshot" in n.message for n in app._notifications),
                       what="notice")


@pytest.mark.parametrize("dialog", ["issue", "init_ca", "folder"])
def test_dialog_snapshots_80x24(snap_compare, tmp_path, dialog):
    if dialog != "init_ca":
        make_ca(tmp_path)

    async def run_before(pilot):
        await open_pki(pilot)
        await pilot.press({"issue": "i", "init_ca": "n", "folder": "f"}[dialog])
        await wait_for(pilot, lambda: len(pilot.app.screen_stack) > 1, what="the form")
        for inp in pilot.app.screen.query("Input"):
            if str(tmp_path) in inp.value:  # the test's folder is random: show a fixed one
                inp.value = inp.value.replace(str(tmp_path), "/srv/vpn")
        steady_cursors(pilot.app)
        await pilot.pause(0.3)

    assert snap_compare(make_app(tmp_path), terminal_size=(80, 24), run_before=run_before)
