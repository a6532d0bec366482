"""Logs (filters, follow) and Packets (counters by reason, outer beside inner)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from textual.widgets import Input, RichLog

from console.runtime.fake import FakeRuntime
from console.widgets.keyed_table import KeyedTable

from .conftest import make_app, ready, screen_text, wait_for


def samples_screen_sample(app, key):
    return app.screen._samples[key]


def _log_lines(app) -> list[str]:
    return [strip.text for strip in app.screen.query_one(RichLog).lines]


async def test_logs_filter_by_level_connection_and_text_and_follow():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        # The engine names levels like logging does (upper case); the filter must still work.
        assert {m.level for m in app.store.logs} <= {"DEBUG", "INFO", "WARNING", "ERROR"}
        await pilot.press("4")
        await wait_for(pilot, lambda: app.screen.query("#log") and _log_lines(app), what="log lines")
        lines = _log_lines(app)
        assert any("engine started" in l for l in lines)
        assert not any("sending IKE_SA_INIT" in l for l in lines)  # debug hidden at level info
        await pilot.press("l", "l")  # info -> warning -> error
        await pilot.pause()
        lines = _log_lines(app)
        assert lines and all("ERRO" in l for l in lines)
        await pilot.press("l")  # back to debug
        await pilot.pause()
        assert any("sending IKE_SA_INIT" in l for l in _log_lines(app))
        await pilot.press("d")  # debug off: one key
        await pilot.pause()
        assert not any("sending IKE_SA_INIT" in l for l in _log_lines(app))
        app.screen.query_one("#log-conn").value = "legacy"
        await pilot.pause()
        assert _log_lines(app) and all("[legacy]" in l for l in _log_lines(app))
        app.screen.query_one("#log-conn").value = "__all__"
        await pilot.press("slash")
        await pilot.press(*"dpd")
        await pilot.pause()
        await pilot.press("m")  # typed into the search box, not a key for the screen
        assert app.screen.query_one(Input).value == "dpdm"
        await pilot.press("backspace", "escape")
        app.screen.query_one(RichLog).focus()
        await pilot.press("m")  # only matching lines
        await pilot.pause()
        lines = _log_lines(app)
        assert lines and all("dpd" in l.lower() for l in lines)
        # New lines arrive while following; paused, the view stays where it is.
        log = app.screen.query_one(RichLog)
        app.screen.query_one(Input).value = ""
        log.focus()
        await pilot.press("f")
        assert log.auto_scroll is False and "paused" in screen_text(app)
        n = len(_log_lines(app))
        await rt.rekey("branch")
        await wait_for(pilot, lambda: len(_log_lines(app)) > n, what="new lines")
        await pilot.press("f")
        assert log.auto_scroll is True and app.settings.log_follow is True


async def test_logs_search_highlights_wraps_copies_and_exports(tmp_path):
    rt = FakeRuntime()
    app = make_app(rt)
    long_text = "a very long line " + "x" * 150 + " END-OF-LONG-LINE"
    rt._log("info", "engine.test", long_text, "branch")
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        app.settings.export_dir = str(tmp_path)
        await ready(pilot)
        await pilot.press("4")
        await wait_for(pilot, lambda: app.screen.query("#log") and _log_lines(app), what="log lines")
        assert "END-OF-LONG-LINE" not in screen_text(app)  # cut at the edge
        await pilot.press("w")
        await pilot.pause()
        assert "END-OF-LONG-LINE" in screen_text(app)  # wrapped onto the next line
        await pilot.press("slash", *"established", "enter")
        await pilot.pause()
        log = app.screen.query_one(RichLog)
        hit = next(strip for strip in log.lines if "established" in strip.text)
        styled = [seg for seg in hit if seg.text.lower() == "established"]
        assert styled and styled[0].style is not None and styled[0].style.reverse  # highlighted
        assert "match 1/" in str(log.border_subtitle)
        log.focus()
        await pilot.press("y")
        assert "established" in app.clipboard
        await pilot.press("x")
        await wait_for(pilot, lambda: list(tmp_path.glob("ipsec-console-log-*.txt")), what="export")
        exported = next(tmp_path.glob("ipsec-console-log-*.txt")).read_text()
        assert "END-OF-LONG-LINE" in exported and "engine started" in exported
        assert "sending IKE_SA_INIT" not in exported  # what is shown: INFO and up


async def test_packets_counters_and_dissection():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        for _ in range(4):
            rt.advance(1.0)
        await pilot.press("5")
        await wait_for(pilot, lambda: app.screen.query("#pk-samples"), what="packets screen")
        counters = app.screen.query_one("#pk-counters", KeyedTable)
        await wait_for(pilot, lambda: "drop-replay" in counters.row_keys, what="counters")
        for reason in ("replay", "icv", "no_sa", "policy_mismatch", "discard_rule", "malformed"):
            assert f"drop-{reason}" in counters.row_keys
        assert int(counters.cell_text("drop-discard_rule", "packets")) >= 12
        assert int(counters.cell_text("encrypted", "packets")) > 0
        samples = app.screen.query_one("#pk-samples", KeyedTable)
        await wait_for(pilot, lambda: samples.row_count >= 4, what="samples")
        out_key = next(k for k in samples.row_keys if samples.cell_text(k, "dir") == "out")
        samples.focus()
        samples.move_cursor(row=samples.get_row_index(out_key))
        await wait_for(pilot, lambda: "GET / HTTP/1.1" in screen_text(app), what="dissection")
        text = screen_text(app)
        sample = samples_screen_sample(app, out_key)
        sa = app.store.sa_by_spi[sample.spi]
        # outer: the real addresses (not the sequence number read as an IPv4 source), SPI, sequence, sizes
        assert f"IPv4  {sa.local_addr} → {sa.remote_addr}" in text and "proto ESP (50)" in text
        assert f"ESP   SPI 0x{sample.spi:08x}  seq {sample.seq}" in text
        assert "ciphertext" in text and "IV 8  ICV 16  AES_GCM_16_256" in text
        assert "✓ no plaintext on the wire" in text and "entropy" in text
        assert "src=0.0." not in text
        assert "TCP" in text and "dport=https" in text and "GET / HTTP/1.1" in text  # inner
        drop_key = next(k for k in samples.row_keys if samples.cell_text(k, "dir") == "drop")
        samples.move_cursor(row=samples.get_row_index(drop_key))
        await wait_for(pilot, lambda: "dropped before decryption: replay" in screen_text(app), what="drop")
        # Paused samples do not move under the reader's cursor.
        await pilot.press("space")
        before = samples.row_keys
        rt.advance(1.0)
        await pilot.pause(0.1)
        assert samples.row_keys == before


def _tshark_spis(path) -> list[int]:
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark: apt-get install tshark")
    run = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "esp.spi"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return [int(v, 16) if v.startswith("0x") else int(v) for v in run.stdout.split()]


async def test_packet_samples_export_as_a_pcap_tshark_reads(tmp_path):
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        app.settings.export_dir = str(tmp_path)
        await ready(pilot)
        for _ in range(4):
            rt.advance(1.0)
        await pilot.press("5")
        samples = app.screen.query_one("#pk-samples", KeyedTable)
        await wait_for(pilot, lambda: samples.row_count >= 4, what="samples")
        spis = {s.spi for s in app.store.samples}
        await pilot.press("x")
        await wait_for(pilot, lambda: list(tmp_path.glob("*.pcap")), what="pcap")
        await wait_for(pilot, lambda: any("Packet capture" in (n.title or "") for n in app._notifications),
                       what="notice")
        samples.focus()
        await pilot.press("y")
        assert app.clipboard == f"{app.screen._selected().spi:08x}"
    pcap = next(tmp_path.glob("*.pcap"))
    listed = _tshark_spis(pcap)
    assert listed and set(listed) == spis


async def test_the_sample_number_column_shows_five_digits():
    rt = FakeRuntime()
    app = make_app(rt)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.store.sample_serial = 10_000  # a console open for a while
        rt.advance(1.0)
        await pilot.press("5")
        samples = app.screen.query_one("#pk-samples", KeyedTable)
        await wait_for(pilot, lambda: samples.row_count >= 1, what="samples")
        await pilot.pause(0.1)
        assert "10001" in samples.row_keys[-1] or "10002" in samples.row_keys[-1]
        assert any(line.split()[0:1] == [samples.row_keys[-1]] or f" {samples.row_keys[-1]} " in line
                   for line in screen_text(app).splitlines())


def test_inner_icmp_echo_shows_only_the_fields_it_has():
    """scapy's ICMP layer declares the fields of every ICMP type (timestamps, gateway, address
    mask...) as conditional fields. An echo reply has none of them: shown, they read as
    timestamps and a gateway address the packet never carried (scapy even fills the
    timestamps with the current time)."""
    pytest.importorskip("scapy")
    from scapy.layers.inet import ICMP, IP

    from console.dissect import dissect

    pkt = bytes(IP(src="198.51.100.67", dst="198.51.100.1") / ICMP(type=0, id=0x1AB, seq=0x1122) / (b"x" * 56))
    icmp = next(line for line in dissect(pkt, encrypted_payload=False) if line.startswith("ICMP"))
    assert "type=echo-reply" in icmp and "id=0x1ab" in icmp and "seq=0x1122" in icmp
    for absent in ("ts_ori", "ts_rx", "ts_tx", "gw=", "ptr=", "addr_mask", "nexthopmtu", "unused", "extpad"):
        assert absent not in icmp
    # A time exceeded message has its own fields (none of the echo's id and seq).
    te = bytes(IP(src="198.51.100.1", dst="198.51.100.67") / ICMP(type=11, code=0) / IP(dst="192.0.2.9"))
    icmp = next(line for line in dissect(te, encrypted_payload=False) if line.startswith("ICMP"))
    assert "type=time-exceeded" in icmp and "id=" not in icmp and "ts_ori" not in icmp
    # The quoted packet's layer name is longer than the column: still a space before its fields.
    assert any(line.startswith("IP in ICMP id=") for line in dissect(te, encrypted_payload=False))
