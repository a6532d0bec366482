"""End to end on the real lab: the embedded engine negotiates on loopback, the
dashboard shows the SA, a rekey from the UI shows a new SPI."""

from __future__ import annotations

import time

from console.app import ConsoleApp
from console.runtime.embedded import EmbeddedRuntime
from console.screens.confirm import ConfirmScreen
from console.widgets.sa_tables import ChildSaTable

from tests.console.conftest import screen_text, wait_for
from tests.ops.labcopy import lab_address, lab_copy


async def test_lab_negotiates_and_a_rekey_from_the_ui_shows_a_new_spi(tmp_path):
    rt = EmbeddedRuntime.lab(lab_copy(tmp_path))
    app = ConsoleApp(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.store.snapshot is not None, timeout=10, what="first status")
        table = app.screen.query_one(ChildSaTable)
        await wait_for(pilot, lambda: table.row_keys, timeout=10, what="the lab's CHILD SA")
        # the misconfigured road warrior shows up in the alert strip
        await wait_for(pilot, lambda: "NO_PROP" in screen_text(app), timeout=10, what="alert")
        text = screen_text(app)
        assert "LAB" in text and "branch" in text and "ESTABLISHED" in text
        snap = app.store.snapshot
        child = next(c for sa in snap.ike_sas for c in sa.children)
        assert f"{child.spi_in:08x}" in text
        table.focus()
        await pilot.pause()
        old = table.row_keys[:]
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_keys and not set(table.row_keys) & set(old), timeout=10,
                       what="the rekeyed CHILD SA")
        new = next(c for sa in app.store.snapshot.ike_sas for c in sa.children)
        assert new.spi_in != child.spi_in
        assert f"{new.spi_in:08x}" in screen_text(app)
        # traffic keeps flowing through the new SA
        await wait_for(pilot, lambda: any(c.packets_in for sa in app.store.snapshot.ike_sas for c in sa.children
                                          if c.spi_in == new.spi_in), timeout=10, what="traffic on the new SA")


async def test_the_logs_screen_shows_the_engines_messages(tmp_path):
    app = ConsoleApp(EmbeddedRuntime.lab(lab_copy(tmp_path)))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: any("CHILD_SA" in m.text for m in app.store.logs), timeout=10,
                       what="the CHILD SA log line")
        assert any("IKE_AUTH" in m.text and m.level == "DEBUG" for m in app.store.logs)
        await wait_for(pilot, lambda: app.store.samples, timeout=10, what="a packet sample")
        # One wall clock: exchanges, packet samples and logs all carry Unix time (not seconds since boot).
        now = time.time()
        exchanges = [e for n in app.store.negotiations.values() for e in n.exchanges]
        assert exchanges and all(abs(e.time - now) < 60 for e in exchanges)
        # The first negotiation happened while the lab started: its ladder is whole nonetheless.
        first = app.store.negotiations[min(app.store.negotiations)]
        rungs = [(e.message.exchange, e.message.response) for e in first.exchanges]
        # lab.toml's branch is hybrid (x25519 + ML-KEM-768): one IKE_INTERMEDIATE round before IKE_AUTH.
        assert rungs[:6] == [("IKE_SA_INIT", False), ("IKE_SA_INIT", True), ("IKE_INTERMEDIATE", False),
                             ("IKE_INTERMEDIATE", True), ("IKE_AUTH", False), ("IKE_AUTH", True)], rungs
        assert all(abs(s.time - now) < 60 for s in app.store.samples)
        assert all(abs(m.time - now) < 60 for m in app.store.logs)


async def test_the_lab_packet_view_shows_the_esp_header_and_exports_a_pcap(tmp_path):
    from console.widgets.keyed_table import KeyedTable

    from tests.console.test_logs_packets import _tshark_spis

    app = ConsoleApp(EmbeddedRuntime.lab(lab_copy(tmp_path)))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        app.settings.export_dir = str(tmp_path)
        await wait_for(pilot, lambda: len(app.store.samples) >= 4, timeout=15, what="packet samples")
        await pilot.press("5")
        samples = app.screen.query_one("#pk-samples", KeyedTable)
        await wait_for(pilot, lambda: samples.row_count >= 4, what="sample rows")
        # Paused, as a person looking at one packet: a cursor on the last row follows the newest
        # packet, and on a loaded machine the next one can come before the dissection is drawn.
        await pilot.press("space")
        await wait_for(pilot, lambda: app.screen.paused, what="paused")
        key = next(k for k in samples.row_keys if samples.cell_text(k, "dir") == "out")
        samples.focus()
        samples.move_cursor(row=samples.get_row_index(key))
        sample = app.screen._samples[key]
        await wait_for(pilot, lambda: f"ESP   SPI 0x{sample.spi:08x}  seq {sample.seq}" in screen_text(app),
                       what="the ESP header")
        text = screen_text(app)
        assert f"IPv4  {lab_address('hq')} → {lab_address('branch')}" in text and "proto ESP (50)" in text
        assert "ICV 16" in text and "✓ no plaintext on the wire" in text
        await pilot.press("x")
        await wait_for(pilot, lambda: list(tmp_path.glob("*.pcap")), what="pcap")
        await wait_for(pilot, lambda: any("Packet capture" in (n.title or "") for n in app._notifications),
                       what="written")
        spis = {s.spi for s in app.store.samples}
    listed = _tshark_spis(next(tmp_path.glob("*.pcap")))
    assert listed and set(listed) <= spis and len(set(listed)) >= 2  # both directions of the tunnel
