"""One connection's IKE SA and its CHILD SAs, with the actions that act on them."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Static

from engine.printable import escape
from engine.status import ChildSaInfo, IkeSaInfo

from console import fmt
from console.widgets.chrome import TopBar, _esc
from console.widgets.fields import focus_now
from console.widgets.mounting import QuietWhenRemoved
from console.widgets.sa_tables import ChildSaTable
from textual.screen import Screen


def _kv(rows: list[tuple[str, str]], columns: int = 2) -> Table:
    t = Table.grid(padding=(0, 2), expand=True)
    for _ in range(columns):
        t.add_column(style="bold", no_wrap=True)
        t.add_column(overflow="fold")
    for i in range(0, len(rows), columns):
        cells: list[str] = []
        for k, v in rows[i:i + columns]:
            # Data, never markup (IDs look like [tags]); a peer's controls escaped (ESC reached the terminal).
            cells += [Text(k), Text(escape(v))]
        t.add_row(*cells)
    return t


def quantum_fact(safe: bool, additional: tuple[str, ...] = (), ppk: bool = False) -> list[tuple[str, str]]:
    """A 'quantum-safe' row for SAs whose keys resist a quantum computer (issue 11): what made
    them so. Classic SAs get no row (the policy's lint and check say what to change)."""
    if not safe:
        return []
    why = [*additional, *(["PPK"] if ppk else [])]
    return [("quantum-safe", "yes" + (f" ({', '.join(why)})" if why else " (ML-KEM, or keys from a quantum-safe SA)"))]


def ike_facts(ike: IkeSaInfo) -> list[tuple[str, str]]:
    return [
        ("connection", ike.name),
        ("IKE SA", f"#{ike.unique_id} {ike.state}"),
        ("role", "initiator" if ike.initiator else "responder"),
        ("local", f"{ike.local_addr}:{ike.local_port} [{ike.local_id}]"),
        ("remote", f"{ike.remote_addr}:{ike.remote_port} [{ike.remote_id}]"),
        ("SPI i", fmt.spi64(ike.spi_i)),
        ("SPI r", fmt.spi64(ike.spi_r)),
        ("algorithms", fmt.algorithms(ike.encr, ike.integ, ike.ke, ike.prf, sep=" ") or "–"),
        *quantum_fact(ike.quantum_safe, ike.additional_ke, ike.ppk),
        ("NAT", ("we are behind a NAT " if ike.nat_local else "") + ("peer behind a NAT" if ike.nat_remote else "")
         or "none detected"),
        ("established", fmt.duration(ike.established_ago) + " ago" if ike.established_ago is not None else "–"),
        ("rekey in", fmt.duration(ike.rekey_in)),
        ("reauth in", fmt.duration(ike.reauth_in)),
        ("expires in", fmt.duration(ike.expire_in)),
    ]


def _last(ago: float | None) -> str:
    """When the last packet passed: a CHILD SA that carried none yet said "last – ago"."""
    return "none yet" if ago is None else f"last {fmt.duration(ago)} ago"


def _packets(n: int) -> str:
    return f"{n} packet" if n == 1 else f"{n} packets"


def child_facts(ch: ChildSaInfo, rate: float | None) -> list[tuple[str, str]]:
    return [
        ("CHILD SA", f"{ch.name} {{{ch.unique_id}}} reqid {ch.reqid} {ch.state}"),
        ("mode", f"{ch.protocol.upper()} {ch.mode}" + (", UDP-encapsulated" if ch.encap else "")),
        ("SPI in / out", f"{ch.spi_in:08x} / {ch.spi_out:08x}"),
        ("algorithms", fmt.algorithms(ch.encr, ch.integ, ch.ke, sep=" ") + (" ESN" if ch.esn else "")),
        *quantum_fact(ch.quantum_safe, ch.additional_ke),
        ("local TS", " ".join(ch.local_ts)),
        ("remote TS", " ".join(ch.remote_ts)),
        ("in", f"{fmt.size(ch.bytes_in)}, {_packets(ch.packets_in)}, {_last(ch.last_in_ago)}"),
        ("out", f"{fmt.size(ch.bytes_out)}, {_packets(ch.packets_out)}, {_last(ch.last_out_ago)}"),
        ("rate", fmt.rate(rate)),
        ("drops", ", ".join(f"{r} {n}" for r, n in ch.drops) or "none"),
        ("installed", fmt.duration(ch.installed_ago) + " ago"),
        ("rekey / expires", f"{fmt.duration(ch.rekey_in)} / {fmt.duration(ch.expire_in)}"),
    ]


class SaDetailScreen(QuietWhenRemoved, Screen):
    """Everything about one connection's IKE SA and CHILD SAs. Esc goes back."""

    HELP_NAME = "SA detail"

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="detail.back"),
        Binding("r", "rekey_child", "Rekey", id="detail.rekey_child"),
        Binding("R", "rekey_ike", "Rekey IKE", id="detail.rekey_ike"),
        Binding("t", "terminate", "Terminate", id="detail.terminate"),
        Binding("n", "negotiations", "Exchanges", id="detail.negotiations"),
        Binding("y", "copy", "Copy", id="detail.copy"),
        Binding("i", "initiate", "Initiate", id="detail.initiate"),
    ]

    def __init__(self, connection: str, ike_id: int | None = None, child_id: int | None = None) -> None:
        super().__init__()
        self.connection = connection
        self.ike_id = ike_id
        self.child_id = child_id

    def compose(self) -> ComposeResult:
        yield TopBar(self.app.runtime.label, self.app.runtime.kind, id="topbar")
        with VerticalScroll(id="detail"):
            yield Static(id="ike-facts")
            t = ChildSaTable(id="detail-children")
            t.border_title = "CHILD SAs"
            yield t
            yield Static(id="child-facts")
        yield Footer(compact=True, show_command_palette=False)

    ready = False

    def on_mount(self) -> None:
        self.ready = True
        self.query_one(TopBar).screen_title = f"SA detail: {self.connection}"
        self.query_one(ChildSaTable).fit_columns(self.size.width, ("name",))
        self.sync(frozenset({"status"}))
        # Before the keys typed after the Enter that opened it; the IKE SA's facts stay in view.
        focus_now(self.query_one(ChildSaTable), scroll_visible=False)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # The footer offers what applies: with no IKE SA (down, failing) i, as the text says, in the
        # place of R (no IKE SA to rekey; r and y stay, they say what is missing); with one, not i.
        if action == "rekey_ike":
            return self._ike() is not None
        if action == "initiate":
            return self._ike() is None
        return True

    def on_resize(self, event) -> None:
        # Whole columns only (the facts under the table show all of the selected CHILD SA).
        self.query_one(ChildSaTable).fit_columns(event.size.width, ("name",))

    def on_screen_resume(self) -> None:
        self.sync(frozenset({"status"}))

    def _ike(self) -> IkeSaInfo | None:
        snap = self.app.store.snapshot
        if snap is None:
            return None
        sas = [i for i in snap.ike_sas if i.name == self.connection]
        if self.ike_id is not None:
            exact = [i for i in sas if i.unique_id == self.ike_id]
            if exact:
                return exact[0]
            # Rekeyed or gone: follow the connection's current IKE SA, if any.
        return sas[0] if sas else None

    def sync(self, parts: frozenset[str]) -> None:
        if "status" not in parts:
            return
        store = self.app.store
        self.query_one(TopBar).snapshot = store.snapshot
        ike = self._ike()
        if (ike is None) != getattr(self, "_had_no_sa", None):
            self._had_no_sa = ike is None
            self.refresh_bindings()
        facts = self.query_one("#ike-facts", Static)
        table = self.query_one(ChildSaTable)
        if ike is None:
            conn = next((c for c in store.snapshot.connections if c.name == self.connection), None) \
                if store.snapshot else None
            state = conn.state if conn else "unknown"
            tries = [n for n in store.negotiations.values() if n.connection == self.connection]
            last = max(tries, key=lambda n: n.ike_sa) if tries else None
            last = last if last is not None and last.failure is not None else None  # not one that came up
            # Why it is down, here too: the admin who opened it from the dashboard asks that first.
            why = (f" Its last attempt (#{last.ike_sa}) failed with [b]{_esc(last.failure.notify)}[/b] in "
                   f"{_esc(last.failure.exchange)}: [b]n[/b] shows why." if last is not None else "")
            facts.update(f"[b]{_esc(self.connection)}[/b] has no IKE SA (state: {state}).{why} "
                         "Press [b]i[/b] to initiate, [b]n[/b] to see its negotiations.")
            table.ike_filter = -1
            table.snapshot = store.snapshot
            self.query_one("#child-facts", Static).update("")
            return
        self.ike_id = ike.unique_id
        facts.update(_kv(ike_facts(ike)))
        table.set_reactive(ChildSaTable.rates, store.rates)
        table.set_reactive(ChildSaTable.ike_filter, ike.unique_id)
        table.snapshot = store.snapshot
        self._show_child()

    def _selected_child(self) -> ChildSaInfo | None:
        ike = self._ike()
        if ike is None:
            return None
        key = self.query_one(ChildSaTable).selected_key
        for ch in ike.children:
            if f"{ch.spi_in:08x}" == key:
                return ch
        return None

    def _show_child(self) -> None:
        ch = self._selected_child()
        out = self.query_one("#child-facts", Static)
        if ch is None:
            out.update("")
            return
        out.update(_kv(child_facts(ch, self.app.store.rates.get(f"{ch.spi_in:08x}"))))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_child()

    # ------------------------------------------------------------- actions
    def action_initiate(self) -> None:
        self.app.confirm_initiate(self.connection)

    def action_rekey_ike(self) -> None:
        ike = self._ike()
        if ike is None:
            self.notify(f"{self.connection} has no IKE SA to rekey", severity="warning")
            return
        self.app.confirm_rekey(self.connection, ike=True, unique_id=ike.unique_id)

    def action_rekey_child(self) -> None:
        ch = self._selected_child()
        if ch is None:
            ike = self._ike()
            if ike is None:
                self.notify(f"{self.connection} has no IKE SA, so no CHILD SA to rekey: press i to initiate it",
                            severity="warning")
            elif not ike.children:
                self.notify(f"IKE SA #{ike.unique_id} of {self.connection} has no CHILD SA to rekey",
                            severity="warning")
            else:
                self.notify("Select a CHILD SA first", severity="warning")
            return
        self.app.confirm_rekey(self.connection, ike=False, unique_id=ch.unique_id)

    def action_terminate(self) -> None:
        ike = self._ike()
        self.app.confirm_terminate(self.connection, ike.unique_id if ike else None)

    def action_copy(self) -> None:
        ch = self._selected_child()
        ike = self._ike()
        if ch is not None:
            text = f"{ch.spi_in:08x}_i {ch.spi_out:08x}_o"
        elif ike is not None:
            text = f"{ike.spi_i:016x}_i {ike.spi_r:016x}_r"
        else:
            self.notify(f"{self.connection} has no SA: no SPI to copy", severity="warning")
            return
        self.app.copy_to_clipboard(text)
        self.notify(text, title="Copied")

    def action_negotiations(self) -> None:
        ike = self._ike()
        if self.app.current_mode == "negotiations":
            self.app.pop_screen()  # opened from there: back to it, not a detail left over it
        self.app.open_negotiations(ike.unique_id if ike else None, self.connection)
