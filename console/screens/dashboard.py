"""The dashboard: connections, IKE SAs and CHILD SAs live, throughput, alerts."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.scalar import Unit
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, Sparkline, Static

from engine.printable import escape

from console import fmt
from console.screens.base import ConsoleScreen
from console.widgets.chrome import AlertStrip
from console.widgets.sa_tables import (CHILD_NARROW, CONNECTION_NARROW, IKE_NARROW, NARROW_WIDTH, ChildSaTable,
                                      ConnectionTable, IkeSaTable)


CONNECTIONS_MIN_ROWS, IKE_MIN_ROWS, CHILD_MIN_ROWS = 3, 4, 5
"""The tables' smallest heights (app.tcss min-height): a title, a header and rows."""


class DashboardScreen(ConsoleScreen):
    """Default screen. Enter opens the selected SA; i/r/t act on the selected row (confirmed)."""

    TITLE_TEXT = "Dashboard"
    MODE = "dashboard"
    BINDINGS = [
        Binding("o", "open_detail", "Open", id="dashboard.open"),
        Binding("i", "initiate", "Initiate", id="dashboard.initiate"),
        Binding("r", "rekey", "Rekey", id="dashboard.rekey"),
        Binding("t", "terminate", "Terminate", id="dashboard.terminate"),
        Binding("x", "dismiss", "Dismiss", id="dashboard.dismiss"),
        Binding("X", "dismiss(True)", "Dismiss all alerts", show=False, id="dashboard.dismiss_all"),
        Binding("y", "copy", "Copy", id="dashboard.copy"),
    ]

    def body(self) -> ComposeResult:
        yield AlertStrip(id="alerts")
        with Vertical(id="tables"):
            t = ConnectionTable(id="connections")
            t.border_title = "Connections"
            yield t
            t = IkeSaTable(id="ike-sas")
            t.border_title = "IKE SAs"
            yield t
            t = ChildSaTable(id="child-sas")
            t.border_title = "CHILD SAs"
            yield t
        yield Static("", id="dash-detail", markup=False)
        with Horizontal(classes="spark-row"):
            yield Label("selected", id="spark-child-label", classes="spark-label")
            yield Sparkline([], id="spark-child", classes="spark")
            yield Label("–", id="spark-child-rate", classes="spark-rate")
        with Horizontal(classes="spark-row"):
            yield Label("all CHILD SAs", classes="spark-label")
            yield Sparkline([], id="spark-total", classes="spark")
            yield Label("–", id="spark-total-rate", classes="spark-rate")

    def on_mount(self) -> None:
        super().on_mount()
        self._layout(self.size.width)
        self._fit_heights(self.size.height)
        self.sync_all()

    def on_resize(self, event) -> None:
        self._layout(event.size.width)
        self._fit_heights(event.size.height)

    def _fit_heights(self, height: int) -> None:
        """The connections table (up to 8 rows) gives up rows before the CHILD SAs do: in the lab
        at 80x24 (its banner takes a row) it pushed the CHILD SA table, the traffic, off the screen."""
        fixed = 0
        for widget in self.children:
            h = widget.styles.height
            if widget.id != "tables" and h is not None and h.unit == Unit.CELLS:
                fixed += int(h.value)
        room = height - fixed - IKE_MIN_ROWS - CHILD_MIN_ROWS
        self.query_one(ConnectionTable).styles.max_height = max(CONNECTIONS_MIN_ROWS, min(8, room))

    def _layout(self, width: int) -> None:
        """Narrow terminals get fewer columns and a detail line for the selected row (no cut cells)."""
        narrow = 0 < width < NARROW_WIDTH
        for table, first in ((ConnectionTable, CONNECTION_NARROW), (IkeSaTable, IKE_NARROW),
                             (ChildSaTable, CHILD_NARROW)):
            if narrow:  # the narrow set, and whatever else fits whole (100 columns show more than 80)
                self.query_one(table).fit_columns(width, first)
            else:
                self.query_one(table).show_columns(None)
        self._sync_detail()  # shown at every width: wide tables still scroll sideways

    def _sync_detail(self) -> None:
        _show(self.query_one("#dash-detail", Static), self._detail_text())

    def _detail_text(self) -> str:
        # Identities, TS and names are drawn as data: controls written as escapes (the widget takes no markup).
        return "\n".join(map(escape, self._detail_lines().split("\n")))

    def _detail_lines(self) -> str:
        store = self.app.store
        snap = store.snapshot
        if snap is None:
            return ""
        focused = self.focused
        if isinstance(focused, IkeSaTable) and focused.selected_key:
            ike = store.ike(int(focused.selected_key))
            if ike is not None:
                return (f"#{ike.unique_id} {ike.name}: {ike.local_addr}:{ike.local_port} ⇄ "
                        f"{ike.remote_addr}:{ike.remote_port}, {ike.local_id} ⇄ {ike.remote_id}\n"
                        f"{fmt.algorithms(ike.encr, ike.integ, ike.ke, ike.prf, sep=' ')}, rekey in "
                        f"{fmt.duration(ike.rekey_in)}, expires in {fmt.duration(ike.expire_in)}")
        if isinstance(focused, ChildSaTable) and focused.selected_key:
            for ike in snap.ike_sas:
                for ch in ike.children:
                    if f"{ch.spi_in:08x}" == focused.selected_key:
                        return (f"{ike.name}/{ch.name} {{{ch.unique_id}}}: {' '.join(ch.local_ts)} ⇄ "
                                f"{' '.join(ch.remote_ts)}, {ch.mode}{' +udp' if ch.encap else ''}\n"
                                f"in {fmt.size(ch.bytes_in)}/{ch.packets_in} out {fmt.size(ch.bytes_out)}/"
                                f"{ch.packets_out}, {fmt.algorithms(ch.encr, ch.integ, ch.ke, sep=' ')}, rekey in "
                                f"{fmt.duration(ch.rekey_in)}")
        name = self.query_one(ConnectionTable).selected_key
        conn = next((c for c in snap.connections if c.name == name), None)
        if conn is None:
            return ""
        return (f"{conn.name}: {conn.local_id or '%any'} ⇄ {conn.remote_id or '%any'}\n"
                f"{', '.join(conn.local_addrs) or '%any'} ⇄ {', '.join(conn.remote_addrs) or '%any'}, "
                f"{conn.state}")

    # ------------------------------------------------------------- data
    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        store = self.app.store
        if "status" in parts and store.snapshot is not None:
            snap = store.snapshot
            self.query_one(ConnectionTable).snapshot = snap
            self.query_one(IkeSaTable).snapshot = snap
            child = self.query_one(ChildSaTable)
            child.set_reactive(ChildSaTable.rates, store.rates)
            child.snapshot = snap
            self._sync_sparklines()
            self._sync_detail()
        if parts & {"alerts", "counters", "status"}:
            strip = self.query_one(AlertStrip)
            strip.set_reactive(AlertStrip.drops, store.drops())
            strip.now = store._now()
            strip.alerts = tuple(store.shown_alerts())

    def _sync_sparklines(self) -> None:
        store = self.app.store
        total = list(store.total_history)
        # Padded to the full window so a young history grows from the right, not fills the bar.
        self.query_one("#spark-total", Sparkline).data = _padded(total)
        _show(self.query_one("#spark-total-rate", Label), fmt.rate(total[-1]) if total else "–")
        key = self.query_one(ChildSaTable).selected_key
        hist = list(store.rate_history.get(key, ())) if key else []
        label = self.query_one(ChildSaTable).cell_text(key, "name").split(" ")[0] if key else "selected"
        _show(self.query_one("#spark-child-label", Label), label[:22])
        self.query_one("#spark-child", Sparkline).data = _padded(hist)
        _show(self.query_one("#spark-child-rate", Label), fmt.rate(hist[-1]) if hist else "–")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "child-sas":
            self._sync_sparklines()
        self._sync_detail()

    def on_descendant_focus(self, event) -> None:
        self._sync_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_detail()

    # ------------------------------------------------------------- targets
    def _target(self) -> tuple[str | None, int | None, int | None]:
        """(connection, IKE SA id, CHILD SA id) of the focused table's selected row."""
        focused = self.focused
        store = self.app.store
        snap = store.snapshot
        if isinstance(focused, IkeSaTable) and focused.selected_key:
            ike = store.ike(int(focused.selected_key))
            return (ike.name, ike.unique_id, None) if ike else (None, None, None)
        if isinstance(focused, ChildSaTable) and focused.selected_key and snap is not None:
            for ike in snap.ike_sas:
                for ch in ike.children:
                    if f"{ch.spi_in:08x}" == focused.selected_key:
                        return ike.name, ike.unique_id, ch.unique_id
            return None, None, None
        conns = self.query_one(ConnectionTable)
        return conns.selected_key, None, None

    def action_open_detail(self) -> None:
        name, ike_id, child_id = self._target()
        if name is None:
            self.notify("Select a connection, IKE SA or CHILD SA first", severity="warning")
            return
        self.app.open_detail(name, ike_id, child_id)

    def action_initiate(self) -> None:
        name, _, _ = self._target()
        if name:
            self.app.confirm_initiate(name)

    def action_rekey(self) -> None:
        name, ike_id, child_id = self._target()
        if not name:
            return
        if child_id is not None:
            self.app.confirm_rekey(name, ike=False, unique_id=child_id)
        elif ike_id is not None:
            self.app.confirm_rekey(name, ike=True, unique_id=ike_id)
        else:
            self.app.confirm_rekey(name, ike=False)

    def action_copy(self) -> None:
        """The selected row's identifiers: a CHILD SA's SPIs, an IKE SA's SPIs, a connection's remote ID."""
        focused = self.focused
        store = self.app.store
        text = ""
        if isinstance(focused, ChildSaTable) and focused.selected_key and store.snapshot is not None:
            for ike in store.snapshot.ike_sas:
                for ch in ike.children:
                    if f"{ch.spi_in:08x}" == focused.selected_key:
                        text = f"{ch.spi_in:08x}_i {ch.spi_out:08x}_o"
        elif isinstance(focused, IkeSaTable) and focused.selected_key:
            ike = store.ike(int(focused.selected_key))
            if ike is not None:
                text = f"{ike.spi_i:016x}_i {ike.spi_r:016x}_r"
        else:
            name = self.query_one(ConnectionTable).selected_key
            conn = next((c for c in store.snapshot.connections if c.name == name), None) if store.snapshot else None
            text = (conn.remote_id or name) if conn is not None else ""
        if not text:
            self.notify("Select a row first", severity="warning")
            return
        self.app.copy_to_clipboard(text)
        self.notify(text, title="Copied")

    def action_dismiss(self, everything: bool = False) -> None:
        store = self.app.store
        shown = store.shown_alerts()
        if not shown:
            self.notify("No alert to dismiss", severity="information")
            return
        gone = list(store.alerts) if everything else [a for a in store.alerts
                                                       if (a.kind, a.connection) == (shown[0].kind, shown[0].connection)]
        store.dismiss(gone)
        self.sync(frozenset({"alerts"}))

    def action_terminate(self) -> None:
        name, ike_id, _ = self._target()
        if name:
            self.app.confirm_terminate(name, ike_id)


def _show(widget: Static, text: str) -> None:
    """Update a text widget only when its text changed: every update lays the screen out again,
    and with it every table's visible lines are drawn again (each status poll did it four times)."""
    if widget.content != text:
        widget.update(text)


def _padded(values: list[float]) -> list[float]:
    from console.store import HISTORY

    return [0.0] * (HISTORY - len(values)) + values
