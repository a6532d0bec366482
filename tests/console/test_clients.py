"""The Clients screen: road warriors with their EAP user or certificate, virtual IP, outer address,
MOBIKE moves, the pools' usage, and a confirmed disconnect by IKE SA unique id."""

from __future__ import annotations

import pytest

from console.app import ConsoleApp
from console.runtime.fake import FakeRuntime
from console.screens.clients import ClientsScreen, client_rows
from console.widgets.keyed_table import KeyedTable

from .conftest import make_app, ready, wait_for


async def test_clients_screen_lists_road_warriors_and_pool_usage():
    rt = FakeRuntime(road_warriors=True)
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("7")
        await wait_for(pilot, lambda: isinstance(app.screen, ClientsScreen), what="clients screen")
        table = app.screen.query_one(KeyedTable)
        await wait_for(pilot, lambda: len(table.row_keys) == 4, what="four clients")
        texts = {table.cell_text(k, "identity"): k for k in table.row_keys}
        alice = texts["alice@example.org"]
        assert table.cell_text(alice, "user") == "EAP-MSCHAPv2"  # the EAP user is the IKE identity
        assert table.cell_text(alice, "vip") == "198.51.100.130"
        assert table.cell_text(alice, "outer") == "192.0.2.101:4500"
        assert table.cell_text(alice, "moves") == "2"
        carol = texts["C=CH, O=Example, CN=carol-laptop"]
        assert table.cell_text(carol, "user") == "certificate"
        # The demo's certificate laptop answers on the open connection without a virtual IP.
        assert table.cell_text(texts["laptop.example.org"], "vip") == "–"
        assert "rw 3/126 used (198.51.100.128/25)" in str(app.screen.query_one("#pools").render())


async def test_disconnect_is_confirmed_and_terminates_by_unique_id():
    rt = FakeRuntime(road_warriors=True)
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("7")
        await wait_for(pilot, lambda: isinstance(app.screen, ClientsScreen), what="clients screen")
        table = app.screen.query_one(KeyedTable)
        await wait_for(pilot, lambda: len(table.row_keys) == 4, what="clients")
        table.focus()
        key = table.selected_key
        await pilot.press("d", "n")
        await pilot.pause()
        assert not rt.commands
        await pilot.press("d", "y")
        await wait_for(pilot, lambda: rt.commands, what="terminate")
        assert rt.commands[-1] == ("terminate", {"name": "roadwarrior", "unique_id": int(key)})
        await wait_for(pilot, lambda: key not in table.row_keys, what="row gone")


def test_rows_leave_out_site_to_site_sas():
    rt = FakeRuntime(road_warriors=True)
    rows = client_rows(rt.status_now())
    names = {ike.unique_id: ike.name for ike in rt.status_now().ike_sas}
    assert rows and all(names[int(k)] == "roadwarrior" for k in rows)
    assert "branch" in names.values()


@pytest.mark.parametrize("size", [(80, 24)], ids=["80x24"])
def test_clients_snapshot(snap_compare, size):
    async def run_before(pilot):
        await ready(pilot)
        await pilot.press("7")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ClientsScreen), what="clients screen")
        await wait_for(pilot, lambda: len(pilot.app.screen.query_one(KeyedTable).row_keys) == 4, what="rows")
        await pilot.pause()

    assert snap_compare(ConsoleApp(FakeRuntime(road_warriors=True)), terminal_size=size, run_before=run_before)


def test_eap_user_other_than_the_ike_identity_is_shown():
    import dataclasses

    snap = FakeRuntime(road_warriors=True).status_now()
    ike = next(i for i in snap.ike_sas if i.eap_identity == "alice@example.org")
    other = dataclasses.replace(ike, remote_id="192.0.2.101")
    rows = client_rows(dataclasses.replace(snap, ike_sas=(other,)))
    assert rows[str(ike.unique_id)][1] == "alice@example.org (EAP-MSCHAPv2)"
