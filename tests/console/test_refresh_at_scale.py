"""A status poll with thousands of SAs held costs what changed plus what is on screen.

- The SA tables' rows are remade only from what changed since the last poll (times are
  formatted each poll, the rest only when its source fields differ): the rows are the same
  as the full formatting (the reference below is sa_tables.py before the memo).
- Cells are shared by (column, text); writing changed cells neither moves DataTable's update
  counter (its row order and line offsets are rebuilt over every row after it moves) nor
  redraws the table when no changed row is on screen; a row changed off screen shows its new
  cells when scrolled to, and the cursor stays where it was.
"""

from __future__ import annotations

import dataclasses
import random

from rich.text import Text
from textual.app import App

from console import fmt
from console.widgets import sa_tables
from console.widgets.keyed_table import KeyedTable
from console.widgets.sa_tables import ChildSaTable, IkeSaTable, child_rows, ike_rows, pq_mark
from engine.status import ChildSaInfo, IkeSaInfo, StatusSnapshot


# ---------------------------------------------------------------- the reference (before the memo)
def ref_ike_row(ike: IkeSaInfo) -> tuple[str, ...]:
    nat = "peer" if ike.nat_remote else ("us" if ike.nat_local else "no")
    if ike.nat_local and ike.nat_remote:
        nat = "both"
    return (
        str(ike.unique_id), ike.name, ike.state,
        f"{ike.local_addr}:{ike.local_port}", f"{ike.remote_addr}:{ike.remote_port}",
        ike.local_id, ike.remote_id, "init" if ike.initiator else "resp", nat,
        f"{fmt.spi64(ike.spi_i)} {fmt.spi64(ike.spi_r)}",
        fmt.algorithms(ike.encr, ike.integ, ike.ke, ike.prf) + pq_mark(ike.quantum_safe),
        fmt.duration(ike.established_ago), fmt.duration(ike.rekey_in), fmt.duration(ike.expire_in),
    )


def ref_child_row(ike: IkeSaInfo, ch: ChildSaInfo, rate: float | None) -> tuple[str, ...]:
    drops = ",".join(f"{r} {n}" for r, n in ch.drops if n)
    return (
        f"{ike.name}/{ch.name} {{{ch.unique_id}}}", ch.state, f"{ch.spi_in:08x}", f"{ch.spi_out:08x}",
        ch.mode + ("+udp" if ch.encap else ""), fmt.rate(rate),
        fmt.size(ch.bytes_in), fmt.size(ch.bytes_out), fmt.count(ch.packets_in), fmt.count(ch.packets_out),
        fmt.duration(ch.rekey_in), fmt.duration(ch.expire_in),
        fmt.algorithms(ch.encr, ch.integ, ch.ke) + pq_mark(ch.quantum_safe), " ".join(ch.local_ts),
        " ".join(ch.remote_ts), drops or "–",
    )


def ref_child_rows(snap, rates, ike_filter=None):
    return {f"{ch.spi_in:08x}": ref_child_row(ike, ch, rates.get(f"{ch.spi_in:08x}"))
            for ike in snap.ike_sas if ike_filter is None or ike.unique_id == ike_filter for ch in ike.children}


# ---------------------------------------------------------------- snapshots that change at random
def _child(i: int, **kw) -> ChildSaInfo:
    base = dict(name=f"net{i % 3}", unique_id=i, reqid=1, state="INSTALLED", protocol="esp", mode="tunnel",
                encap=False, spi_in=0xC0000000 + i, spi_out=0x80000000 + i, encr="AES_GCM_16_256",
                local_ts=("10.1.0.0/16",), remote_ts=(f"10.2.{i % 256}.0/24",), rekey_in=3000.0 + i,
                expire_in=3400.0 + i)
    base.update(kw)
    return ChildSaInfo(**base)


def _ike(i: int, children: tuple, **kw) -> IkeSaInfo:
    base = dict(name=f"conn{i % 4}", unique_id=i, state="ESTABLISHED", initiator=bool(i % 2), spi_i=i * 7919,
                spi_r=i * 104729, local_addr="192.0.2.2", local_port=500, remote_addr="192.0.2.1",
                remote_port=500, local_id="right.example", remote_id=f"client{i}.example", encr="AES_GCM_16_256",
                prf="PRF_HMAC_SHA2_256", ke="CURVE_25519", established_ago=30.0 + i, rekey_in=14000.0 - i,
                expire_in=15000.0 - i, children=children)
    base.update(kw)
    return IkeSaInfo(**base)


def _mutate(rng: random.Random, ike: IkeSaInfo, dt: float) -> IkeSaInfo:
    """One poll later: times move; now and then anything a row shows changes."""
    def tick(v, by=-dt):
        return None if v is None else v + by

    children = []
    for ch in ike.children:
        ch = dataclasses.replace(ch, rekey_in=tick(ch.rekey_in), expire_in=tick(ch.expire_in))
        roll = rng.random()
        if roll < 0.2:
            ch = dataclasses.replace(ch, bytes_in=ch.bytes_in + rng.randrange(1, 10**7),
                                     packets_in=ch.packets_in + rng.randrange(1, 20000))
        elif roll < 0.25:
            ch = dataclasses.replace(ch, state=rng.choice(["REKEYING", "INSTALLED", "DELETING"]))
        elif roll < 0.3:
            ch = dataclasses.replace(ch, drops=(("replay", rng.randrange(0, 3)), ("icv", rng.randrange(0, 2))))
        elif roll < 0.33:
            ch = dataclasses.replace(ch, quantum_safe=not ch.quantum_safe, encap=not ch.encap)
        elif roll < 0.36:
            ch = dataclasses.replace(ch, spi_out=ch.spi_out + 1, rekey_in=None)
        elif roll < 0.38:
            ch = dataclasses.replace(ch, rekey_in=rng.choice([-3.0, 0.4, 59.9, 600.0, 86400.0 * 3]))
        children.append(ch)
    ike = dataclasses.replace(ike, established_ago=tick(ike.established_ago, dt), rekey_in=tick(ike.rekey_in),
                              expire_in=tick(ike.expire_in), children=tuple(children))
    roll = rng.random()
    if roll < 0.05:
        ike = dataclasses.replace(ike, remote_port=4500, nat_remote=True)
    elif roll < 0.08:
        ike = dataclasses.replace(ike, state="REKEYING", spi_r=ike.spi_r + 1)
    elif roll < 0.1:
        ike = dataclasses.replace(ike, name="renamed", quantum_safe=True, integ="HMAC_SHA2_256_128")
    elif roll < 0.12:
        ike = dataclasses.replace(ike, established_ago=None, rekey_in=None, expire_in=None)
    return ike


def _polls(n_ike: int, polls: int, seed: int):
    rng = random.Random(seed)
    ikes = [_ike(i, tuple(_child(i * 10 + j) for j in range(1 + i % 3))) for i in range(1, n_ike + 1)]
    now = 1_800_000_000.0
    for _ in range(polls):
        yield StatusSnapshot(time=now, ike_sas=tuple(ikes))
        now += 1.0
        ikes = [_mutate(rng, ike, rng.choice([1.0, 0.3, 1.7])) for ike in ikes]
        if rng.random() < 0.5:
            del ikes[rng.randrange(len(ikes))]
        if rng.random() < 0.5:
            i = n_ike + rng.randrange(1000)
            ikes.append(_ike(i, (_child(i * 10),)))


def test_rows_from_the_memo_are_the_full_rows():
    for seed in range(6):
        ike_memo, child_memo, filtered_memo = {}, {}, {}
        for snap in _polls(40, 25, seed):
            assert ike_rows(snap, ike_memo) == {str(i.unique_id): ref_ike_row(i) for i in snap.ike_sas}
            rates = {f"{ch.spi_in:08x}": random.Random(ch.unique_id).choice([0.0, 1.5, 2e6, 0.0])
                     for i in snap.ike_sas for ch in i.children if ch.unique_id % 4}
            assert child_rows(snap, rates, None, child_memo) == ref_child_rows(snap, rates)
            target = snap.ike_sas[0].unique_id
            assert child_rows(snap, rates, target, filtered_memo) == ref_child_rows(snap, rates, target)
            # Rows keep the types the tables compare.
            assert all(type(c) is str for row in ike_rows(snap).values() for c in row)


def test_durations_read_as_before():
    for v in (None, -5.0, -0.5, 0.0, 0.99, 59.999, 60.0, 599.9, 600.0, 3599.0, 3600.0, 86399.5, 86400.0, 1e7):
        assert sa_tables.duration(v) == fmt.duration(v)
        assert sa_tables.duration(v) == fmt.duration(v)  # kept the second time


# ---------------------------------------------------------------- the tables in an app
class _Tables(App):
    def compose(self):
        yield IkeSaTable(id="ike")
        yield ChildSaTable(id="child")


async def test_a_poll_that_only_moves_times_formats_no_fixed_cell(monkeypatch):
    """10,000 SAs held: their algorithms, addresses, IDs and SPIs are formatted once, not per poll."""
    snaps = list(_polls(30, 3, seed=1))
    app = _Tables()
    async with app.run_test(size=(120, 30)) as pilot:
        ike, child = app.query_one(IkeSaTable), app.query_one(ChildSaTable)
        ike.snapshot = child.snapshot = snaps[0]
        await pilot.pause()
        formatted = []
        real = fmt.algorithms
        monkeypatch.setattr(fmt, "algorithms", lambda *a, **k: formatted.append(a) or real(*a, **k))
        later = StatusSnapshot(time=snaps[0].time + 1, ike_sas=tuple(
            dataclasses.replace(i, established_ago=i.established_ago + 1, children=tuple(
                dataclasses.replace(c, rekey_in=c.rekey_in - 1) for c in i.children)) for i in snaps[0].ike_sas))
        ike.snapshot = child.snapshot = later
        await pilot.pause()
        assert formatted == []
        assert ike.sync_stats[2] > 0 and child.sync_stats[2] > 0  # the times did change
        assert {k: ike.get_row(k) and tuple(ike.cell_text(k, c) for c in ike._column_keys) for k in ike.row_keys} \
            == {str(i.unique_id): ref_ike_row(i) for i in later.ike_sas}


COLUMNS = (("name", "Name", 10), ("age", "Age", 6), ("state", "State", 8))


class _One(App):
    def compose(self):
        yield KeyedTable(COLUMNS, id="t")


def _rows(tick: int, n: int = 60) -> dict[str, tuple[str, ...]]:
    return {f"k{i:02d}": (f"row-{i}", f"{tick}s", "up") for i in range(n)}


def _screen_text(table: KeyedTable) -> list[str]:
    return ["".join(s.text for s in table.render_line(y)) for y in range(table.size.height)]


async def test_same_text_same_cell():
    app = _One()
    async with app.run_test(size=(40, 12)):
        table = app.query_one(KeyedTable)
        assert table._cell("age", "5s") is table._cell("age", "5s")
        assert table._cell("age", "5s") is not table._cell("name", "5s")


async def test_changed_cells_keep_the_row_order_and_offsets():
    """Rebuilt over every row after DataTable's update counter moves: 20-30 ms a 10,000-row table."""
    app = _One()
    async with app.run_test(size=(40, 12)) as pilot:
        table = app.query_one(KeyedTable)
        table.sync(_rows(0))
        await pilot.pause()
        count = table._update_count
        table.sync(_rows(1))
        assert table.sync_stats == (0, 0, 60)
        assert table._update_count == count
        await pilot.pause()
        assert "row-3" in _screen_text(table)[4] and "1s" in _screen_text(table)[4]


async def test_a_row_changed_off_screen_is_drawn_new_when_scrolled_to(monkeypatch):
    app = _One()
    async with app.run_test(size=(40, 12)) as pilot:
        table = app.query_one(KeyedTable)
        table.sync(_rows(0))
        await pilot.pause()
        table.move_cursor(row=2)
        await pilot.pause()
        before = _screen_text(table)
        refreshed = []
        real = KeyedTable.refresh
        monkeypatch.setattr(KeyedTable, "refresh", lambda self, *a, **k: refreshed.append(a) or real(self, *a, **k))
        rows = dict(_rows(0))
        rows["k50"] = ("row-50", "9s", "down")
        rows["k55"] = ("row-55", "7s", "up")
        table.sync(rows)
        assert table.sync_stats == (0, 0, 3)
        assert refreshed == []  # nothing on screen changed: nothing drawn again
        await pilot.pause()
        assert _screen_text(table) == before
        assert table.selected_key == "k02"
        table.move_cursor(row=50)
        await pilot.pause()
        shown = "\n".join(_screen_text(table))
        assert "row-50" in shown and "9s" in shown and "down" in shown
        table.move_cursor(row=55)
        await pilot.pause()
        assert "7s" in "\n".join(_screen_text(table))
        # A change on screen is drawn at once.
        rows["k50"] = ("row-50", "10s", "down")
        table.sync(rows)
        assert refreshed
        await pilot.pause()
        assert "10s" in "\n".join(_screen_text(table))
        assert table.selected_key == "k55"


class _Themed(App):
    def compose(self):
        yield KeyedTable(COLUMNS, id="t", styler=lambda c, v: Text(v, style="bold red" if self.theme == "textual-dark"
                                                                    else "bold blue") if c == "state" else v)


async def test_cells_made_under_another_theme_are_not_reused():
    """restyle reaches the tables of the screens on the stack only: another screen's table makes
    its new cells in the new theme's colours, as before cells were shared."""
    app = _Themed()
    async with app.run_test(size=(40, 12)) as pilot:
        app.theme = "textual-dark"
        table = app.query_one(KeyedTable)
        table.sync({"a": ("a", "1s", "up")})
        await pilot.pause()
        app.theme = "textual-light"
        await pilot.pause()
        table.sync({"a": ("a", "1s", "up"), "b": ("b", "1s", "up")})
        assert table.get_row("b")[2].style == "bold blue"
        # Its older cells too (revcon17): the app's restyle had not reached this table.
        assert table.get_row("a")[2].style == "bold blue"


async def test_a_poll_changing_only_rows_off_screen_draws_no_line(monkeypatch):
    snaps = list(_polls(60, 1, seed=3))
    app = _Tables()
    async with app.run_test(size=(120, 30)) as pilot:
        ike = app.query_one(IkeSaTable)
        ike.snapshot = snaps[0]
        await pilot.pause()
        await pilot.pause(0.3)  # focus and styles settled (they draw the table too)
        drawn = []
        real = IkeSaTable._render_line
        monkeypatch.setattr(IkeSaTable, "_render_line", lambda self, y, *a: drawn.append(y) or real(self, y, *a))
        last = snaps[0].ike_sas[-1]
        ike.snapshot = dataclasses.replace(snaps[0], ike_sas=(*snaps[0].ike_sas[:-1],
                                                              dataclasses.replace(last, state="REKEYING")))
        await pilot.pause()
        assert ike.sync_stats == (0, 0, 1)
        assert drawn == []
        ike.move_cursor(row=59)
        await pilot.pause()
        assert "REKEYING" in "\n".join(_screen_text(ike))


async def test_a_status_poll_with_nothing_new_updates_no_label(monkeypatch):
    """Every Static.update lays the screen out again (and draws every table's visible lines)."""
    from textual.widgets import Static

    from tests.console.conftest import make_app, ready

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        updated = []
        real = Static.update
        monkeypatch.setattr(Static, "update", lambda self, *a, **k: updated.append(self.id) or real(self, *a, **k))
        app.screen.sync(frozenset({"status"}))
        await pilot.pause()
        assert [i for i in updated if i and (i.startswith("spark") or i == "dash-detail")] == []
