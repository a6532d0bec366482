"""Dashboard refresh at scale: 10,000 CHILD SAs on the FakeRuntime, headless.

Measures, for the console's keyed-diff tables and for a baseline that
rebuilds the same table with clear() + add_row() on every refresh:

* time to first rows on screen (the table fills 1,000 rows per frame) and
  until the dashboard holds every CHILD SA;
* CPU time per refresh (median over N refreshes): folding a new status
  snapshot into the store, diffing the tables and rendering the frame.

Snapshots are built before timing (that is the runtime's cost, not the UI's);
10 % of the SAs carry traffic in each interval, as on a busy gateway where most
tunnels are idle at any one second.

    python3 benchmarks/console_refresh.py [--children 10000] [--refreshes 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from console.app import ConsoleApp  # noqa: E402
from console.runtime.fake import FakeRuntime  # noqa: E402
from console.widgets.keyed_table import KeyedTable  # noqa: E402
from console.widgets.sa_tables import ChildSaTable  # noqa: E402


def clear_and_refill(self: KeyedTable, rows) -> None:
    """The baseline: what a naive live table does on every refresh."""
    if not self.columns:
        self._add_columns()
    self.clear()
    keys = self._column_keys
    for k, row in rows.items():
        self.add_row(*(self._cell(c, v) for c, v in zip(keys, row)), key=k)
    self._cache = dict(rows)
    self.sync_stats = (len(rows), len(rows), 0)


async def measure(children: int, refreshes: int, baseline: bool) -> tuple[tuple[float, float], list[float], tuple]:
    rt = FakeRuntime(scale_children=children, active_fraction=0.1, counters_events=False, packet_samples=False)
    snaps = []
    for _ in range(refreshes + 1):
        rt.advance(1.0)
        snaps.append(rt.status_now())
    original = KeyedTable.sync
    if baseline:
        KeyedTable.sync = clear_and_refill
    try:
        t0 = time.perf_counter()
        app = ConsoleApp(rt, poll_interval=1e6)  # the benchmark feeds snapshots itself
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(ChildSaTable)
            while table.row_count == 0:
                await asyncio.sleep(0.005)
            first_rows = time.perf_counter() - t0
            while table.row_count < children:
                await asyncio.sleep(0.005)
            await pilot.pause()
            first_frame = time.perf_counter() - t0
            cpu = []
            stats = None
            for snap in snaps:
                c0 = time.process_time()
                app.store.apply_status(snap)
                app.screen.sync(frozenset({"status"}))
                app.screen.refresh()
                await pilot.pause()
                cpu.append(time.process_time() - c0)
                stats = table.sync_stats
            assert table.row_count == children
    finally:
        KeyedTable.sync = original
    return (first_rows, first_frame), cpu[1:], stats  # the first refresh also sees the rates appear


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--children", type=int, default=10_000)
    ap.add_argument("--refreshes", type=int, default=15)
    args = ap.parse_args()
    keyed_first, keyed_cpu, keyed_stats = asyncio.run(measure(args.children, args.refreshes, baseline=False))
    base_first, base_cpu, _ = asyncio.run(measure(args.children, max(5, args.refreshes // 3), baseline=True))
    k, b = statistics.median(keyed_cpu), statistics.median(base_cpu)
    print(f"console refresh, {args.children} CHILD SAs, 120x40, headless (CPU time per refresh, median)")
    print(f"{'':28}{'keyed diff':>14}{'clear+refill':>16}{'ratio':>9}")
    for label, i in (("time to first rows on screen", 0), ("time until all rows are in", 1)):
        print(f"{label:28}{keyed_first[i] * 1000:>11.0f} ms{base_first[i] * 1000:>13.0f} ms"
              f"{base_first[i] / keyed_first[i]:>8.1f}x")
    print(f"{'CPU per refresh':28}{k * 1000:>11.1f} ms{b * 1000:>13.1f} ms{b / k:>8.1f}x")
    print(f"keyed: last refresh added {keyed_stats[0]}, removed {keyed_stats[1]}, updated {keyed_stats[2]} cells "
          f"(n={len(keyed_cpu)} keyed, {len(base_cpu)} baseline refreshes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
