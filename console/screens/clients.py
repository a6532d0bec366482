"""Clients: the road warriors connected to this gateway, one row each, and the pools' usage.

A client is an IKE SA we answered for a connection open to any peer, or one
that got a virtual IP or logged in with EAP. Columns: identity, the EAP user
or the certificate subject, virtual IP, outer address and port (where MOBIKE
moved it last), since, bytes, MOBIKE moves. ``d`` disconnects the selected
client (its IKE SA, by unique id, after a confirmation); ``o`` opens it.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label

from console import fmt
from console.screens.base import ConsoleScreen
from console.widgets.keyed_table import KeyedTable
from engine.printable import clean, escape
from engine.status import IkeSaInfo, StatusSnapshot

COLUMNS = (  # only whole columns are shown: 80 columns show identity to outer address (o opens the rest)
    ("identity", "Identity", 18),
    ("user", "EAP user / cert", 16),
    ("vip", "Virtual IP", 15),
    ("outer", "Outer address", 20),
    ("since", "Since", 6),
    ("bytes", "In/Out", 19),
    ("moves", "Moves", 5),
)


def is_client(ike: IkeSaInfo, open_connections: set[str]) -> bool:
    """Whether this IKE SA is a road warrior of ours."""
    if ike.virtual_ips or ike.eap_identity:
        return True
    # Who set the connection up, not the header role: a gateway that rekeyed the IKE SA is its
    # header initiator, and the road warrior is still its client.
    ours = ike.initiator if ike.connection_initiator is None else ike.connection_initiator
    return not ours and ike.name in open_connections


def open_connections(snap: StatusSnapshot) -> set[str]:
    """Connections that accept any peer (remote_addrs empty or %any): road-warrior gateways."""
    return {c.name for c in snap.connections
            if not c.remote_addrs or any(a.startswith("%any") for a in c.remote_addrs)}


def client_rows(snap: StatusSnapshot) -> dict[str, tuple[str, ...]]:
    rows: dict[str, tuple[str, ...]] = {}
    gateways = open_connections(snap)
    for ike in snap.ike_sas:
        if not is_client(ike, gateways):
            continue
        ident = ike.remote_id or ike.remote_addr
        if ike.eap_identity:  # the method alone when the EAP user is the IKE identity (saves the width)
            method = ike.eap_method or "EAP"
            user = method if ike.eap_identity == ident else f"{ike.eap_identity} ({method})"
        elif ike.cert_subject:
            user = "certificate" if ike.cert_subject == ident else ike.cert_subject
        else:
            user = "–"
        # As the peer sent them: an ESC in an FQDN or EAP identity would reach the terminal raw.
        ident, user = escape(ident), escape(user)
        bytes_in = sum(ch.bytes_in for ch in ike.children)
        bytes_out = sum(ch.bytes_out for ch in ike.children)
        rows[str(ike.unique_id)] = (
            ident,
            user,
            " ".join(ike.virtual_ips) or "–",
            f"{ike.remote_addr}:{ike.remote_port}",
            fmt.duration(ike.established_ago) if ike.established_ago is not None else ike.state.lower(),
            f"{fmt.size(bytes_in)}/{fmt.size(bytes_out)}",
            str(ike.mobike_moves),
        )
    return rows


def pool_text(snap: StatusSnapshot | None) -> str:
    if snap is None or not snap.pools:
        return "Pools: none configured"
    parts = [f"{p.name} {p.used}/{p.size} used ({p.addrs})" for p in snap.pools]
    return "Pools: " + "  ".join(parts)


class ClientsScreen(ConsoleScreen):
    """Road-warrior clients and pool usage."""

    TITLE_TEXT = "Clients"
    MODE = "clients"
    BINDINGS = [
        Binding("o", "open_detail", "Open", id="clients.open"),
        Binding("d", "disconnect", "Disconnect", id="clients.disconnect"),
    ]

    def body(self) -> ComposeResult:
        yield Label(pool_text(None), id="pools")
        table = KeyedTable(COLUMNS, id="clients", sort_column="identity")
        table.border_title = "Clients"
        yield table

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(KeyedTable).fit_columns(self.size.width, ("identity",))
        self.sync_all()

    def on_resize(self, event) -> None:
        self.query_one(KeyedTable).fit_columns(event.size.width, ("identity",))

    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        snap = self.app.store.snapshot
        if "status" in parts and snap is not None:
            self.query_one("#pools", Label).update(pool_text(snap))
            rows = client_rows(snap)
            table = self.query_one(KeyedTable)
            table.sync(rows)
            table.border_title = f"Clients ({len(rows)})"

    def _selected(self) -> IkeSaInfo | None:
        key = self.query_one(KeyedTable).selected_key
        return self.app.store.ike(int(key)) if key else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_detail()

    def action_open_detail(self) -> None:
        ike = self._selected()
        if ike is None:
            self.notify("No client selected", severity="warning")
            return
        self.app.open_detail(ike.name, ike.unique_id, None)

    def action_disconnect(self) -> None:
        ike = self._selected()
        if ike is None:
            self.notify("No client selected", severity="warning")
            return
        # In the words of this screen (d Disconnect, a client): the generic question said "Terminate
        # IKE SA #3 of roadwarrior? ... until the connection is initiated again", which a gateway
        # never does for a road warrior: the client connects again.
        # The peer's words, inert: its controls escaped (Static(markup=False) keeps markup inert, but
        # Textual passes ESC to the terminal), and bounded.
        who = clean(ike.eap_identity or ike.remote_id or ike.remote_addr, 80)
        name, unique_id = ike.name, ike.unique_id
        self.app._confirm(f"Disconnect {who}?",
                          f"Its IKE SA #{unique_id} ({name}) and CHILD SAs are deleted; its traffic stops "
                          "until the client connects again.", "disconnect",
                          lambda: self.app.runtime.terminate(name, unique_id=unique_id), danger=True,
                          yes="Disconnect")
