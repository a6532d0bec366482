"""Packets: what the datapath encrypts, decrypts and drops (by reason), and
recent packets dissected: the ESP packet on the wire (outer IP/UDP, SPI,
sequence, IV/ciphertext/ICV lengths, a check that nothing protected is
readable) beside the decrypted inner packet. ``x`` exports the samples as a
pcap that Wireshark and tshark open."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Static

from engine.events import PacketSample
from engine.printable import escape

from console import fmt
from console.export import deliver, stamped
from console.screens.base import ConsoleScreen
from console.widgets.keyed_table import KeyedTable

DROP_REASONS = ("replay", "icv", "no_sa", "policy_mismatch", "discard_rule", "malformed")
COUNTER_COLUMNS = (("what", "Counter", 20), ("packets", "Packets", 8), ("bytes", "Bytes", 9))
NARROW_WIDTH = 110
SAMPLE_NARROW = ("n", "dir", "spi", "seq", "verdict")
SAMPLE_COLUMNS = (("n", "#", 6), ("time", "Time", 8), ("dir", "Dir", 4), ("spi", "SPI", 8), ("seq", "Seq", 6),
                  ("len", "Len", 5), ("verdict", "Verdict", 14))


def counter_rows(totals: dict[str, int], drops: dict[str, int]) -> dict[str, tuple[str, ...]]:
    rows = {
        "encrypted": ("encrypted (out)", str(totals["packets_out"]), fmt.size(totals["bytes_out"])),
        "decrypted": ("decrypted (in)", str(totals["packets_in"]), fmt.size(totals["bytes_in"])),
    }
    for reason in DROP_REASONS + tuple(r for r in sorted(drops) if r not in DROP_REASONS):
        rows[f"drop-{reason}"] = (f"drop {reason}", str(drops.get(reason, 0)), "–")
    return rows


class PacketsScreen(ConsoleScreen):
    """Counters top left, samples top right, dissection below. Space pauses the samples."""

    TITLE_TEXT = "Packets"
    MODE = "packets"
    BINDINGS = [
        # One key, two labels: the footer says what space does now (check_action shows one of them).
        Binding("space", "pause(True)", "Pause", id="packets.pause"),
        Binding("space", "pause(False)", "Resume", id="packets.pause"),
        Binding("y", "copy_spi", "Copy SPI", id="packets.copy"),
        Binding("x", "export", "Export pcap", id="packets.export"),
        Binding("d", "dissect", "Dissect", show=False, id="packets.dissect"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self._samples: dict[str, PacketSample] = {}
        self._serial_shown = 0
        self._dissected: str | None = None

    def body(self) -> ComposeResult:
        with Horizontal(id="pk-top"):
            t = KeyedTable(COUNTER_COLUMNS, id="pk-counters", cursor_type="none")
            t.border_title = "Datapath counters"
            yield t
            t = KeyedTable(SAMPLE_COLUMNS, id="pk-samples")
            t.border_title = "Recent packets"
            yield t
        with Horizontal(id="pk-dissect"):
            outer = Static("Select a packet", id="pk-outer", markup=False)
            outer.border_title = "On the wire (outer)"
            yield outer
            inner = Static("", id="pk-inner", markup=False)
            inner.border_title = "Protected (inner)"
            yield inner

    def on_mount(self) -> None:
        super().on_mount()
        self._layout(self.size.width)
        self.sync_all()

    def on_resize(self, event) -> None:
        self._layout(event.size.width)

    def _layout(self, width: int) -> None:
        narrow = 0 < width < NARROW_WIDTH
        self.query_one("#pk-samples", KeyedTable).show_columns(SAMPLE_NARROW if narrow else None)
        self.query_one("#pk-counters", KeyedTable).show_columns(("what", "packets") if narrow else None)
        self.set_class(narrow, "-narrow")

    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        store = self.app.store
        if parts & {"status", "counters"}:
            self.query_one("#pk-counters", KeyedTable).sync(counter_rows(store.totals(), store.drops()))
        if "samples" in parts and not self.paused:
            self._sync_samples()

    def _sync_samples(self) -> None:
        store = self.app.store
        samples = list(store.samples)
        first_serial = store.sample_serial - len(samples) + 1
        rows = {}
        self._samples = {}
        for i, s in enumerate(samples):
            n = str(first_serial + i)
            self._samples[n] = s
            verdict = s.verdict or ("encrypted" if s.direction == "out" else "decrypted")
            rows[n] = (n, fmt.clock(s.time), s.direction, f"{s.spi:08x}", str(s.seq), str(len(s.outer)), verdict)
        table = self.query_one("#pk-samples", KeyedTable)
        at_end = table.cursor_row >= table.row_count - 1
        table.sync(rows)
        if at_end and table.row_count:
            table.move_cursor(row=table.row_count - 1)
        self._serial_shown = store.sample_serial
        self.action_dissect()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "pk-samples":
            self.action_dissect()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pause" and parameters:
            return parameters[0] != self.paused
        return True

    def action_pause(self, pause: bool) -> None:
        if pause == self.paused:
            return
        self.paused = pause
        self.refresh_bindings()
        self.query_one("#pk-samples", KeyedTable).border_title = (
            "Recent packets — paused (space resumes)" if self.paused else "Recent packets")
        if not self.paused:
            self._sync_samples()

    def action_dissect(self) -> None:
        key = self.query_one("#pk-samples", KeyedTable).selected_key
        if key is None or key == self._dissected or key not in self._samples:
            return
        self._dissected = key
        self._dissect(key, self._samples[key])

    @work(thread=True, group="dissect", exclusive=True, exit_on_error=False)
    def _dissect(self, key: str, sample: PacketSample) -> None:
        from console.dissect import dissect, wire_lines

        outer = wire_lines(sample, self.app.store.sa_by_spi.get(sample.spi))
        if sample.inner:
            inner = dissect(sample.inner, encrypted_payload=False)
        elif sample.direction == "drop":
            inner = [f"dropped before decryption: {sample.verdict or 'unknown reason'}",
                     "nothing protected is visible"]
        elif sample.direction == "in" or sample.direction == "out":
            inner = ["(the inner packet was not shared: a daemon sends it only to a subscriber that asks "
                     "for plaintext)"]
        else:
            inner = ["(not sampled)"]
        self.app.call_from_thread(self._show_dissection, key, sample, outer, inner)

    def _show_dissection(self, key: str, sample: PacketSample, outer: list[str], inner: list[str]) -> None:
        o = self.query_one("#pk-outer", Static)
        i = self.query_one("#pk-inner", Static)
        o.border_title = f"On the wire #{key}: {sample.direction}"
        # Decrypted inner packets and scapy's field reprs are peer data: controls as escapes.
        o.update("\n".join(map(escape, outer)))
        i.update("\n".join(map(escape, inner)))

    # ------------------------------------------------------------- copy / export
    def _selected(self) -> PacketSample | None:
        key = self.query_one("#pk-samples", KeyedTable).selected_key
        return self._samples.get(key) if key is not None else None

    def action_copy_spi(self) -> None:
        sample = self._selected()
        if sample is None:
            return
        text = f"{sample.spi:08x}"
        self.app.copy_to_clipboard(text)
        self.notify(text, title="Copied SPI")

    def action_export(self) -> None:
        samples = list(self.app.store.samples)
        if not samples:
            self.notify("No packet sample yet", severity="warning")
            return
        self._export(samples)

    @work(thread=True, group="pcap", exclusive=True, exit_on_error=False)
    def _export(self, samples: list[PacketSample]) -> None:
        from console.dissect import pcap_bytes

        by_spi = self.app.store.sa_by_spi
        data, n = pcap_bytes([(s, by_spi.get(s.spi)) for s in samples])
        if not n:
            self.app.call_from_thread(self.notify, "No ESP sample to export", severity="warning")
            return
        self.app.call_from_thread(deliver, self.app, data, stamped("ipsec-console-packets", ".pcap"), "pcap",
                                  "application/vnd.tcpdump.pcap")
