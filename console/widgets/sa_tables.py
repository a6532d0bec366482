"""Live tables of connections, IKE SAs and CHILD SAs (keyed diffs)."""

from __future__ import annotations

from collections.abc import Mapping
from operator import attrgetter

from rich.text import Text
from textual.reactive import reactive

from engine.status import ChildSaInfo, IkeSaInfo, StatusSnapshot

from console import fmt
from console.widgets.fast_cells import CellText
from console.widgets.keyed_table import KeyedTable

GOOD = {"ESTABLISHED", "INSTALLED", "up"}
BUSY = {"CONNECTING", "REKEYING", "REKEYED", "INSTALLING", "CREATED", "connecting", "DELETING"}
BAD = {"failing", "DESTROYED", "DELETED"}


def state_style(app, value: str) -> Text | str:
    """A state word coloured from the current theme (never a hard-coded colour)."""
    colors = app.theme_colors() if hasattr(app, "theme_colors") else {}
    if value in GOOD:
        color = colors.get("success")
    elif value in BUSY:
        color = colors.get("warning")
    elif value in BAD:
        color = colors.get("error")
    else:
        return value
    return CellText(value, style=f"bold {color}") if color else value


CONNECTION_COLUMNS = (
    ("name", "Connection", 14),
    ("state", "State", 10),
    ("remote", "Remote", 16),
    ("ike", "IKE", 3),
    ("child", "CHILD", 5),
    ("ids", "Local ID ⇄ Remote ID", 40),
)

IKE_COLUMNS = (
    ("id", "#", 4),
    ("name", "Connection", 12),
    ("state", "State", 11),
    ("local", "Local", 18),
    ("remote", "Remote", 18),
    ("local_id", "Local ID", 18),
    ("remote_id", "Remote ID", 20),
    ("role", "Role", 4),
    ("nat", "NAT", 6),
    ("spis", "SPIs (i / r)", 34),
    ("algs", "Algorithms", 44),
    ("up", "Up", 6),
    ("rekey", "Rekey in", 8),
    ("expire", "Expires", 8),
)

CHILD_COLUMNS = (
    ("name", "CHILD SA", 18),
    ("state", "State", 10),
    ("spi_in", "SPI in", 8),
    ("spi_out", "SPI out", 8),
    ("mode", "Mode", 10),
    ("rate", "Rate", 11),
    ("bytes_in", "Bytes in", 9),
    ("bytes_out", "Bytes out", 9),
    ("pkts_in", "Pkts in", 7),
    ("pkts_out", "Pkts out", 8),
    ("rekey", "Rekey in", 8),
    ("expire", "Expires", 8),
    ("algs", "Algorithms", 30),
    ("local_ts", "Local TS", 22),
    ("remote_ts", "Remote TS", 22),
    ("drops", "Drops", 14),
)


CHILD_NAME_WIDTH = next(c[2] for c in CHILD_COLUMNS if c[0] == "name")


def fit_child_name(label: str, width: int = CHILD_NAME_WIDTH) -> str:
    """"connection/child {id}" in ``width`` cells: a long name is shortened, never its {id}, which
    tells a CHILD SA from its rekeyed successor (cut at the column's edge, both read the same).
    The connection gives way first (the row's detail line and the IKE SA table name it): cut at the
    end, the CHILD SA names of one connection all read "site000/net0… {N}" (net001 ... net099)."""
    if len(label) <= width:
        return label
    name, sep, uid = label.rpartition(" {")
    if not sep:
        return label[:width - 1] + "…"
    tail = sep + uid
    room = width - len(tail)
    if room < 4:
        return label[:width - 1] + "…"
    conn, slash, child = name.partition("/")
    if slash and len(child) + 3 <= room:  # at least "s…/" before the whole CHILD SA name
        return conn[:room - len(child) - 2] + "…/" + child + tail
    return "…" + (child or name)[-(room - 1):] + tail  # its end tells siblings apart


REMOTE_WIDTH = next(c[2] for c in CONNECTION_COLUMNS if c[0] == "remote")


def fit_addresses(text: str, width: int = REMOTE_WIDTH) -> str:
    """"a, b, c" in ``width`` cells: whole addresses and how many more ("192.0.2.2 +2"), never an
    address cut into another one ("192.0.2.2, 198.5" reads as a different peer)."""
    if len(text) <= width:
        return text
    addrs = text.split(", ")
    for n in range(len(addrs) - 1, 0, -1):
        shown = ", ".join(addrs[:n]) + f" +{len(addrs) - n}"
        if len(shown) <= width:
            return shown
    more = f" +{len(addrs) - 1}" if len(addrs) > 1 else ""
    return addrs[0][:max(1, width - len(more) - 1)] + "…" + more


NARROW_WIDTH = 110
"""Below this many columns the dashboard's tables show NARROW_* columns and a detail line."""
CONNECTION_NARROW = ("name", "state", "remote", "ike", "child")
IKE_NARROW = ("id", "name", "state", "remote", "role", "nat", "up")
CHILD_NARROW = ("name", "state", "spi_in", "spi_out", "rate", "bytes_in")


def connection_rows(snap: StatusSnapshot) -> dict[str, tuple[str, ...]]:
    counts: dict[str, list[int]] = {}
    for ike in snap.ike_sas:
        c = counts.setdefault(ike.name, [0, 0])
        c[0] += 1
        c[1] += len(ike.children)
    rows = {}
    for conn in snap.connections:
        n = counts.get(conn.name, [0, 0])
        rows[conn.name] = (
            conn.name, conn.state, ", ".join(conn.remote_addrs) or "%any", str(n[0]), str(n[1]),
            f"{conn.local_id or '%any'} ⇄ {conn.remote_id or '%any'}",
        )
    return rows


def pq_mark(quantum_safe: bool) -> str:
    """What the algorithms cell adds for an SA whose keys resist a quantum computer (issue 11)."""
    return " +PQ" if quantum_safe else ""


_DURATIONS: dict[int, str] = {}


def duration(seconds: float | None) -> str:
    """fmt.duration, kept by whole second (it reads nothing finer): 50,000 times a poll with 10,000 SAs."""
    if seconds is None:
        return "–"
    s = int(seconds)
    text = _DURATIONS.get(s)
    if text is None:
        if len(_DURATIONS) > 100_000:
            _DURATIONS.clear()
        text = _DURATIONS[s] = fmt.duration(s)
    return text


_IKE_FIXED = attrgetter("unique_id", "name", "state", "local_addr", "local_port", "remote_addr", "remote_port",
                        "local_id", "remote_id", "initiator", "nat_local", "nat_remote", "spi_i", "spi_r",
                        "encr", "integ", "ke", "prf", "quantum_safe")
"""What an IKE SA row shows apart from its times: `_ike_cells` reads nothing else."""
_IKE_TIMES = attrgetter("established_ago", "rekey_in", "expire_in")


def _ike_cells(unique_id, name, state, local_addr, local_port, remote_addr, remote_port, local_id, remote_id,
               initiator, nat_local, nat_remote, spi_i, spi_r, encr, integ, ke, prf, quantum_safe) -> tuple[str, ...]:
    nat = "peer" if nat_remote else ("us" if nat_local else "no")
    if nat_local and nat_remote:
        nat = "both"
    return (
        str(unique_id), name, state, f"{local_addr}:{local_port}", f"{remote_addr}:{remote_port}",
        local_id, remote_id, "init" if initiator else "resp", nat,
        f"{fmt.spi64(spi_i)} {fmt.spi64(spi_r)}", fmt.algorithms(encr, integ, ke, prf) + pq_mark(quantum_safe),
    )


def ike_row(ike: IkeSaInfo) -> tuple[str, ...]:
    return _ike_cells(*_IKE_FIXED(ike)) + tuple(map(duration, _IKE_TIMES(ike)))


RowMemo = dict
"""A table's rows of the last poll by source identity: (what the row was made from, cells). With
10,000 SAs held, most rows' sources are the same from one poll to the next but their times:
only the times are formatted again (ike_row and child_row in full took ~200 ms a poll)."""


def ike_rows(snap: StatusSnapshot, memo: RowMemo | None = None) -> dict[str, tuple[str, ...]]:
    """The IKE SA table's rows; ``memo`` (the last call's, updated in place) saves formatting
    what did not change."""
    old = memo if memo is not None else {}
    new: RowMemo = {}
    rows = {}
    for ike in snap.ike_sas:
        fixed = _IKE_FIXED(ike)
        uid = fixed[0]
        kept = old.get(uid)
        if kept is None or kept[0] != fixed:
            kept = (fixed, _ike_cells(*fixed))
        new[uid] = kept
        cells = kept[1]
        rows[cells[0]] = cells + tuple(map(duration, _IKE_TIMES(ike)))
    if memo is not None:
        memo.clear()
        memo.update(new)
    return rows


_CHILD_FIXED = attrgetter("unique_id", "name", "state", "spi_in", "spi_out", "mode", "encap", "encr", "integ", "ke",
                          "quantum_safe", "local_ts", "remote_ts", "drops")
"""What a CHILD SA row shows apart from its counters, rate and times (with its IKE SA's name)."""
_CHILD_COUNTERS = attrgetter("bytes_in", "bytes_out", "packets_in", "packets_out")
_CHILD_TIMES = attrgetter("rekey_in", "expire_in")


def _child_cells(ike_name, unique_id, name, state, spi_in, spi_out, mode, encap, encr, integ, ke, quantum_safe,
                 local_ts, remote_ts, drops) -> tuple[str, ...]:
    """(name, state, SPI in, SPI out, mode, algorithms, local TS, remote TS, drops)."""
    dropped = ",".join(f"{r} {n}" for r, n in drops if n)
    return (
        f"{ike_name}/{name} {{{unique_id}}}", state, f"{spi_in:08x}", f"{spi_out:08x}", mode + ("+udp" if encap else ""),
        fmt.algorithms(encr, integ, ke) + pq_mark(quantum_safe), " ".join(local_ts), " ".join(remote_ts),
        dropped or "–",
    )


def _counter_cells(bytes_in, bytes_out, packets_in, packets_out) -> tuple[str, ...]:
    return fmt.size(bytes_in), fmt.size(bytes_out), fmt.count(packets_in), fmt.count(packets_out)


def _child_row(f: tuple[str, ...], counters: tuple[str, ...], rate: str, times) -> tuple[str, ...]:
    return (f[0], f[1], f[2], f[3], f[4], rate, *counters, duration(times[0]), duration(times[1]),
            f[5], f[6], f[7], f[8])


def child_row(ike: IkeSaInfo, ch: ChildSaInfo, rate: float | None) -> tuple[str, ...]:
    return _child_row(_child_cells(ike.name, *_CHILD_FIXED(ch)), _counter_cells(*_CHILD_COUNTERS(ch)),
                      fmt.rate(rate), _CHILD_TIMES(ch))


def child_rows(snap: StatusSnapshot, rates: Mapping[str, float], ike_filter: int | None = None,
               memo: RowMemo | None = None) -> dict[str, tuple[str, ...]]:
    """The CHILD SA table's rows (keyed by inbound SPI); ``memo`` as for ike_rows."""
    old = memo if memo is not None else {}
    new: RowMemo = {}
    rows = {}
    rate_texts: dict[float | None, str] = {}
    for ike in snap.ike_sas:
        if ike_filter is not None and ike.unique_id != ike_filter:
            continue
        ike_name = ike.name
        for ch in ike.children:
            fixed = _CHILD_FIXED(ch)
            counters = _CHILD_COUNTERS(ch)
            spi = fixed[3]
            kept = old.get(spi)
            if kept is None or kept[0] != ike_name or kept[1] != fixed:
                kept = (ike_name, fixed, _child_cells(ike_name, *fixed), counters, _counter_cells(*counters))
            elif kept[3] != counters:
                kept = (*kept[:3], counters, _counter_cells(*counters))
            new[spi] = kept
            cells = kept[2]
            k = cells[2]
            rate = rates.get(k)
            text = rate_texts.get(rate)
            if text is None:
                text = rate_texts[rate] = fmt.rate(rate)
            rows[k] = _child_row(cells, kept[4], text, _CHILD_TIMES(ch))
    if memo is not None:
        memo.clear()
        memo.update(new)
    return rows


class _StatusTable(KeyedTable):
    snapshot: reactive[StatusSnapshot | None] = reactive(None, always_update=True, init=False, repaint=False)
    """Not repainted on its own: sync redraws the table when a row on screen changed (a poll of
    10,000 SAs whose changes are all off screen draws nothing)."""

    def __init__(self, columns, **kwargs) -> None:
        super().__init__(columns, styler=self._style, **kwargs)
        self._memo: RowMemo = {}
        """The rows of the last poll by source (ike_rows, child_rows)."""

    def _style(self, column: str, value: str):
        return state_style(self.app, value) if column == "state" else value


class ConnectionTable(_StatusTable):
    """Configured connections and their state."""

    def __init__(self, **kwargs) -> None:
        super().__init__(CONNECTION_COLUMNS, **kwargs)

    def _style(self, column: str, value: str):
        if column == "remote":
            return CellText(fit_addresses(value), no_wrap=True, end="")
        return super()._style(column, value)

    def watch_snapshot(self, snap: StatusSnapshot | None) -> None:
        if snap is not None:
            self.sync(connection_rows(snap))


class IkeSaTable(_StatusTable):
    """IKE SAs, keyed by unique id."""

    def __init__(self, **kwargs) -> None:
        super().__init__(IKE_COLUMNS, **kwargs)

    def watch_snapshot(self, snap: StatusSnapshot | None) -> None:
        if snap is not None:
            self.sync(ike_rows(snap, self._memo))


class ChildSaTable(_StatusTable):
    """CHILD SAs, keyed by inbound SPI; optionally only one IKE SA's."""

    rates: reactive[Mapping[str, float]] = reactive(dict, always_update=True, init=False)
    ike_filter: reactive[int | None] = reactive(None, init=False)

    def __init__(self, **kwargs) -> None:
        super().__init__(CHILD_COLUMNS, sort_column="name", **kwargs)

    def _style(self, column: str, value: str):
        if column == "name":
            return CellText(fit_child_name(value), no_wrap=True, end="")
        return super()._style(column, value)

    def _resync(self) -> None:
        if self.snapshot is not None:
            self.sync(child_rows(self.snapshot, self.rates, self.ike_filter, self._memo))

    def watch_snapshot(self, snap: StatusSnapshot | None) -> None:
        self._resync()

    def watch_ike_filter(self, value: int | None) -> None:
        self._resync()
