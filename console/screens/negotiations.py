"""Negotiations: per IKE SA, the exchanges as a ladder, each message
expandable into its decoded payloads, and failures explained with the fix."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static, Tree

from engine.events import ExchangeReceived, ExchangeSent
from engine.printable import escape

from console import fmt
from console.explain import explain, unresolved_is_ours
from console.export import deliver, stamped
from console.screens.base import ConsoleScreen
from console.store import Negotiation
from console.widgets.keyed_table import KeyedTable

LANE = 26


LADDER_EXCHANGE = {"IKE_INTERMEDIATE": "INTERMEDIATE", "IKE_FOLLOWUP_KE": "FOLLOWUP_KE"}
"""Exchange names too long for a rung with its Message ID (RFC 9242, RFC 9370)."""


def ladder_label(ev, t0: float, colors: dict[str, str]) -> Text:
    """One rung: time, then ●──message──▶ (we sent) or ◀──message──● (we received)."""
    m = ev.message
    sent = isinstance(ev, ExchangeSent)
    kind = "resp" if m.response else "req"
    # Names as a daemon sent them (attached): drawn inert.
    name, tail = escape(LADDER_EXCHANGE.get(m.exchange, m.exchange)), f" {kind} {m.mid}"
    room = LANE - 2  # between the two ends
    core = f" {name}{tail} "
    if len(core) > room:
        core = f"{name}{tail}"  # "◀CREATE_CHILD_SA resp 12●": no space rather than no Message ID
    if len(core) > room:
        # The Message ID stays whole (it matches the rung to the peer's log); the name gives way.
        core = name[: max(0, room - len(tail) - 1)] + "…" + tail
    pad = room - len(core)
    arrow = ("─" * (pad // 2)) + core + ("─" * (pad - pad // 2))
    t = Text()
    t.append(f"+{ev.time - t0:.3f}".rjust(8) + " ", style="dim")
    err = colors.get("error", "red")
    warn = colors.get("warning", "yellow")
    failed = any(n.endswith(("_CHOSEN", "_FAILED", "UNACCEPTABLE", "INVALID_KE_PAYLOAD")) for n in m.notifies)
    style = f"bold {err}" if failed else ""
    t.append(("●" + arrow + "▶") if sent else ("◀" + arrow + "●"), style=style)
    if m.retransmit:
        t.append(f" ↻{m.retransmit}", style=f"bold {warn}")
    if m.fragments > 1:
        t.append(f" ⧉{m.fragments}", style="dim")
    t.append(f" {escape(' '.join(m.payloads))}", style=style or "dim")
    return t


STATE_WIDTH = 11
STATE_MAX = 26
"""The State column grows to show a failure's whole notify name ("✗ AUTHENTICATION_FAILED"), up to this."""
LIST_WIDTH = 30
"""The IKE SA list's width with the State column at STATE_WIDTH (app.tcss #nego-list)."""
NEGOTIATION_COLUMNS = (("id", "#", 2), ("name", "Connection", 11), ("state", "State", STATE_WIDTH))


class NegotiationsScreen(ConsoleScreen):
    """Pick an IKE SA on the left; its ladder and any failure on the right."""

    TITLE_TEXT = "Negotiations"
    MODE = "negotiations"
    BINDINGS = [
        Binding("e", "expand_all", "Expand", id="negotiations.expand"),
        Binding("c", "collapse_all", "Collapse", id="negotiations.collapse"),
        Binding("f", "next_failure", "Next failure", id="negotiations.next_failure"),
        Binding("o", "open_detail", "Detail", id="negotiations.detail"),
        Binding("y", "copy", "Copy", id="negotiations.copy"),
        Binding("x", "export", "Export", id="negotiations.export"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown: int | None = None
        self._shown_count = -1
        self._want: tuple[int | None, str | None] | None = None
        self._ladder_ends: tuple[str, str, str] | None = None
        """The shown SA's "#id name", our address and the peer's (the ladder's title)."""

    def body(self) -> ComposeResult:
        with Horizontal(id="nego"):
            t = KeyedTable(NEGOTIATION_COLUMNS, id="nego-list", styler=self._style)
            t.border_title = "IKE SAs"
            yield t
            with Vertical(id="nego-right"):
                tree: Tree = Tree("exchanges", id="ladder")
                tree.show_root = False
                tree.border_title = "Exchanges (Enter expands payloads)"
                yield tree
                with VerticalScroll(id="explain-box"):
                    yield Static(id="explain")

    def _style(self, column: str, value: str):
        from console.widgets.sa_tables import state_style

        if column == "state":
            if value.startswith("✗"):
                color = self.app.theme_colors().get("error")
                return Text(value, style=f"bold {color}") if color else value
            return state_style(self.app, value)
        return value

    def on_mount(self) -> None:
        super().on_mount()
        self.sync_all()

    def focus_ike(self, ike_id: int | None, connection: str | None) -> None:
        self._want = (ike_id, connection)
        self._select_wanted()

    def _select_wanted(self) -> None:
        if self._want is None:
            return
        ike_id, connection = self._want
        negs = self.app.store.negotiations
        target = None
        if ike_id is not None and ike_id in negs:
            target = ike_id
        elif connection is not None:
            ids = [i for i, n in negs.items() if n.connection == connection]
            target = ids[-1] if ids else None
        if target is None:
            return
        table = self.query_one("#nego-list", KeyedTable)
        if str(target) in table.row_keys:
            table.move_cursor(row=table.get_row_index(str(target)))
            self._want = None
            self._show(target)

    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        if "negotiations" not in parts and "sas" not in parts:
            return
        negs = self.app.store.negotiations
        rows = {}
        for ike_id, n in negs.items():
            state = f"✗ {n.failure.notify}" if n.failure else n.state
            rows[str(ike_id)] = (str(ike_id), n.connection, state)
        table = self.query_one("#nego-list", KeyedTable)
        self._fit_state_column(table, rows)
        table.sync(rows)
        self._select_wanted()
        key = table.selected_key
        if key is not None:
            self._show(int(key))

    def _fit_state_column(self, table: KeyedTable, rows: dict[str, tuple[str, ...]]) -> None:
        """The State column (and the list) as wide as the longest failure name shown, whole: this is
        where the narrow layouts' short names (NO_PROP) are read in full."""
        width = max([STATE_WIDTH] + [len(r[2]) for r in rows.values()])
        width = min(width, STATE_MAX)
        if width != table.column_width("state"):
            table.set_width("state", width)
            table.styles.width = LIST_WIDTH - STATE_WIDTH + width

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self._show(int(event.row_key.value))

    def _fit_ladder_title(self) -> None:
        """The ladder's title, as long as its width allows: at 80 columns the full one lost the peer's
        address under an ellipsis ("us 127.0.0.1 (left) ⇄ peer …"); the shorter ones keep it."""
        if self._ladder_ends is None:
            return
        sa, local, remote = self._ladder_ends
        room = self.query_one("#ladder", Tree).size.width - 2  # the border's corners
        titles = (f"{sa}: us {local} (left) ⇄ peer {remote} (right)", f"{sa}: us {local} ⇄ peer {remote}",
                  f"{sa}: {local} ⇄ {remote}", f"{sa} ⇄ {remote}")
        self.query_one("#ladder", Tree).border_title = next((t for t in titles if len(t) <= room), titles[-1])

    def on_resize(self, event) -> None:
        self._fit_ladder_title()

    def _show(self, ike_id: int) -> None:
        n: Negotiation | None = self.app.store.negotiations.get(ike_id)
        if n is None:
            return
        count = len(n.exchanges) + (1 if n.failure else 0)
        if self._shown == ike_id and self._shown_count == count:
            return
        colors = self.app.theme_colors()
        tree = self.query_one("#ladder", Tree)
        if self._shown == ike_id:
            # Same SA, more rungs: append the new ones only.
            known = len(tree.root.children)
            new = list(n.exchanges)[known:]
        else:
            tree.clear()
            new = list(n.exchanges)
        t0 = n.exchanges[0].time if n.exchanges else 0.0
        first = n.exchanges[0] if n.exchanges else None
        if first is not None:
            self._ladder_ends = (f"#{ike_id} {n.connection}", first.local[0], first.remote[0])
            self._fit_ladder_title()
            self.call_after_refresh(self._fit_ladder_title)  # the list may widen (_fit_state_column)
        elif n.failure is not None and n.failure.notify == "UNRESOLVED":
            # (#id is no IKE SA's: none was created, `sas` will not list it)
            self._ladder_ends = None
            whose = "our address's" if unresolved_is_ours(n.failure) else "the peer's"
            tree.border_title = f"#{ike_id} {n.connection}: nothing was sent ({whose} name did not resolve)"
        else:
            self._ladder_ends = None
            old = self._rekeyed_from(ike_id, n)
            # An IKE SA a rekey made has no exchange of its own yet: its CREATE_CHILD_SA is the old
            # SA's. "no exchange seen" alone read as a console that had missed them.
            tree.border_title = (f"#{ike_id} {n.connection}: made by rekeying #{old}" if old is not None
                                 else f"#{ike_id} {n.connection}: made by a rekey (of which SA: not seen)"
                                 if n.state_reason.startswith("rekeyed") and n.state in ("ESTABLISHED", "REKEYING")
                                 else f"#{ike_id} {n.connection}: no exchange seen")
        for ev in new:
            node = tree.root.add(ladder_label(ev, t0, colors), data=ev)
            m = ev.message
            node.add_leaf(Text(f"{fmt.clock_ms(ev.time)}  {m.exchange} "
                               f"{'response' if m.response else 'request'}  MID {m.mid}  "
                               f"{m.length} bytes  SPIs {m.spi_i:016x}/{m.spi_r:016x}", style="dim"))
            for d in m.details:
                pnode = node.add(Text(d.name, style="bold"))
                for label, value in d.fields:
                    pnode.add_leaf(Text(escape(f"{label}: {value}")))  # peer text: never markup, no controls
                if not d.fields:
                    pnode.allow_expand = False
            if not m.details:
                for p in m.payloads:
                    node.add_leaf(Text(escape(p)))
        self._shown = ike_id
        self._shown_count = count
        box = self.query_one("#explain", Static)
        if n.failure is not None:
            snap = self.app.store.snapshot
            conn = next((c for c in snap.connections if c.name == n.connection), None) if snap else None
            ids = (conn.local_id, conn.remote_id) if conn else ("", "")
            box.update(explain(n.failure, tuple(n.exchanges), colors, configured_ids=ids))
            self.query_one("#explain-box").display = True
        else:
            box.update("")
            self.query_one("#explain-box").display = False

    def _rekeyed_from(self, ike_id: int, n: Negotiation) -> int | None:
        """The IKE SA whose rekey made ``n`` (an SA with no exchange, established "rekeyed"): the earlier
        one of its connection whose IKE rekey (CREATE_CHILD_SA with no TS) carried ``n``'s SPIs in its SA
        payload. Several IKE SAs of one connection (road warriors) rekey in turn: the newest one that
        rekeyed is not always the one replaced. Without SPIs to tell, only a single candidate is named."""
        if not n.state_reason.startswith("rekeyed") or n.state not in ("ESTABLISHED", "REKEYING"):
            return None
        snap = self.app.store.snapshot
        info = next((i for i in snap.ike_sas if i.unique_id == ike_id), None) if snap is not None else None
        spis = {f"{s:016x}" for s in (info.spi_i, info.spi_r) if s} if info is not None else set()
        maybe = []
        for other in sorted(self.app.store.negotiations.values(), key=lambda o: -o.ike_sa):
            if other.ike_sa >= ike_id or other.connection != n.connection:
                continue
            rekeys = [ev.message for ev in other.exchanges if ev.message.exchange == "CREATE_CHILD_SA"
                      and "TSi" not in ev.message.payloads and "SA" in ev.message.payloads]
            if not rekeys:
                continue
            told = {value for m in rekeys for d in m.details if d.name == "SA"
                    for label, value in d.fields if label.endswith(" SPI")}
            if spis and told:
                if spis & told:
                    return other.ike_sa
                continue  # its rekey made another SA
            maybe.append(other.ike_sa)
        return maybe[0] if len(maybe) == 1 else None

    # ------------------------------------------------------------- actions
    def action_expand_all(self) -> None:
        self.query_one("#ladder", Tree).root.expand_all()

    def action_collapse_all(self) -> None:
        tree = self.query_one("#ladder", Tree)
        for node in tree.root.children:
            node.collapse_all()

    def action_next_failure(self) -> None:
        table = self.query_one("#nego-list", KeyedTable)
        keys = table.row_keys
        if not keys:
            return
        start = table.cursor_row
        negs = self.app.store.negotiations
        for step in range(1, len(keys) + 1):
            k = keys[(start + step) % len(keys)]
            n = negs.get(int(k))
            if n is not None and n.failure is not None:
                table.move_cursor(row=table.get_row_index(k))
                return
        self.notify("No failed negotiation", severity="information")

    def _ladder_text(self, ike_id: int) -> str:
        n = self.app.store.negotiations.get(ike_id)
        if n is None:
            return ""
        lines = [f"IKE SA #{ike_id} {n.connection} ({n.state})"]
        for ev in n.exchanges:
            arrow = "->" if isinstance(ev, ExchangeSent) else "<-"
            lines.append(f"{fmt.clock_ms(ev.time)} {arrow} {ev.remote[0]}:{ev.remote[1]} {ev.message.brief()}")
            for d in ev.message.details:
                for label, value in d.fields:
                    lines.append(f"      {d.name} {label}: {value}")
        if n.failure is not None:
            f = n.failure
            lines.append(f"FAILED {f.exchange} {f.notify}: {f.reason}")
        return "\n".join(lines) + "\n"

    def action_copy(self) -> None:
        """The highlighted message (time, direction, summary), or the IKE SA's SPIs."""
        tree = self.query_one("#ladder", Tree)
        node = tree.cursor_node
        while node is not None and node.parent is not None and node.parent is not tree.root:
            node = node.parent
        ev = node.data if node is not None else None
        if isinstance(ev, (ExchangeSent, ExchangeReceived)):
            arrow = "->" if isinstance(ev, ExchangeSent) else "<-"
            text = f"{fmt.clock_ms(ev.time)} {arrow} {ev.remote[0]} {ev.message.brief()}"
        else:
            key = self.query_one("#nego-list", KeyedTable).selected_key
            ike = self.app.store.ike(int(key)) if key else None
            if ike is None:
                self.notify("Select an exchange first", severity="warning")
                return
            text = f"{ike.spi_i:016x}_i {ike.spi_r:016x}_r"
        self.app.copy_to_clipboard(text)
        self.notify(text, title="Copied")

    def action_export(self) -> None:
        key = self.query_one("#nego-list", KeyedTable).selected_key
        if key is None:
            self.notify("No negotiation to export", severity="warning")
            return
        n = self.app.store.negotiations.get(int(key))
        deliver(self.app, self._ladder_text(int(key)), stamped(f"ipsec-console-{n.connection}-{key}", ".txt"),
                "ladder")

    def action_open_detail(self) -> None:
        key = self.query_one("#nego-list", KeyedTable).selected_key
        if key is None:
            return
        n = self.app.store.negotiations.get(int(key))
        if n is not None:
            self.app.open_detail(n.connection, n.ike_sa)  # over this screen: Escape comes back here
