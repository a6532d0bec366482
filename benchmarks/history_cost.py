"""What the runtime's replay history costs per handshake, in-process (no root, no network).

Two sans-IO IkeEndpoints (benchmarks/handshakes.py's pair: PSK, x25519, AES-GCM-256, one CHILD
SA, deleted after each handshake); the responder's events go into an EventHistory of --keep
events, as EngineRuntime.publish puts them (the daemon's collector thresholds, roomy_collector).
Printed: the responder's CPU per handshake (thread time: receive_datagram, events, history
append) for each --keep, medians of --rounds rounds of 500 handshakes, and the bytes that one
handshake's kept events hold (tracemalloc). Run from the tree to measure, e.g. a `git archive`
of main in /tmp beside the worktree, alternating:

    python3 benchmarks/history_cost.py --keep 1000,1 --rounds 7
    python3 benchmarks/history_cost.py --only summaries --keep 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.getcwd())

from benchmarks.handshakes import _sansio_pair  # noqa: E402
from engine.events import ExchangeReceived, ExchangeSent, IkeState  # noqa: E402
from engine.runtime.daemon import roomy_collector  # noqa: E402
from engine.runtime.engine import EngineRuntime  # noqa: E402
from engine.runtime.retention import EventHistory  # noqa: E402

_SUMMARIES = (ExchangeReceived, ExchangeSent)


def _wanted(only: str | None):
    if only == "summaries":
        return lambda e: isinstance(e, _SUMMARIES)
    if only == "others":
        return lambda e: not isinstance(e, _SUMMARIES)
    return lambda e: True


class _Kept:
    """The responder's events into a history, as EventHistory.append alone takes them."""

    def __init__(self, history: EventHistory, wanted) -> None:
        self.history = history
        self.wanted = wanted

    def __call__(self, event) -> None:
        if self.wanted(event):
            self.history.append(event)


class Bench:
    def __init__(self, keep: int, only: str | None, runtime: bool = False) -> None:
        self.a, self.b = _sansio_pair()
        self.history = EventHistory(max_events=keep, max_bytes=1 << 40)
        self.take = _Kept(self.history, _wanted(only))
        if runtime:
            # The whole per-event path of the daemon (EngineRuntime._dispatch and publish: a null
            # datapath, wall-clock times, sizes, the history), the runtime not started.
            rt = EngineRuntime(self.b.policy)
            rt.history = self.history
            self.take = rt._dispatch
        self.now = 1000.0

    def _pump(self, acc: list[float]) -> None:
        a, b, now, clock = self.a, self.b, self.now, time.thread_time
        while True:
            out_a = a.datagrams_to_send()
            while a.next_event() is not None:
                pass
            t = clock()
            for d in out_a:
                data = d.data
                b.receive_datagram(data[4:] if data[:4] == b"\0\0\0\0" else data, d.remote, d.local, now)
            out_b = b.datagrams_to_send()
            take = self.take
            while (e := b.next_event()) is not None:
                take(e)
            b.get_timer()
            acc[0] += clock() - t
            for d in out_b:
                data = d.data
                a.receive_datagram(data[4:] if data[:4] == b"\0\0\0\0" else data, d.remote, d.local, now)
            if not out_a and not out_b:
                return

    def handshakes(self, n: int) -> float:
        """The responder's µs per handshake over ``n`` handshakes."""
        acc = [0.0]
        for _ in range(n):
            sa = self.a.initiate("bench", self.now)
            self._pump(acc)
            if sa.state != IkeState.ESTABLISHED:
                raise RuntimeError("a handshake failed")
            self.a.terminate("bench", self.now)
            self._pump(acc)
            self.now += 0.001
        return acc[0] / n * 1e6


def kept_bytes(only: str | None, n: int = 200) -> float:
    """Bytes one handshake's kept events hold, beyond what the endpoints keep anyway."""
    def grown(keep: int) -> float:
        bench = Bench(keep, only)
        bench.handshakes(50)
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            bench.handshakes(n)
            gc.collect()
            return (tracemalloc.get_traced_memory()[0] - base) / n
        finally:
            tracemalloc.stop()
    return grown(10 ** 6) - grown(1)


def per_event_costs() -> tuple[float, float]:
    """(µs to publish one handshake's responder events again and again through EngineRuntime.publish,
    the history keeping them, no subscriber; µs per INFO line through the daemon's log handler to a
    file, a turn of the loop every 8 lines), medians of 15 rounds of 200."""
    from engine.datapath.base import NullDatapath
    from engine.runtime.daemon import lean_log_records, setup_logging
    from tests.engine.ike_pair import connection, handshake_events, mirror, policy

    events = handshake_events()
    rt = EngineRuntime(policy(mirror(connection())), datapath=NullDatapath())

    def publish_round() -> float:
        t = time.perf_counter()
        for _ in range(200):
            for e in events:
                rt.publish(e)
        return (time.perf_counter() - t) / 200 * 1e6

    for _ in range(5):
        publish_round()
    publish = statistics.median(publish_round() for _ in range(15))
    lean_log_records()
    log = logging.getLogger("engine.ike")
    with open("/tmp/history_cost.log", "w") as out:  # a file, as a daemon's redirected stderr
        handler = setup_logging(0, env={}, stream=out)

        async def lines() -> float:
            rounds = []
            for _ in range(15):
                t = time.perf_counter()
                for i in range(200):
                    log.info("%s[%d]: CHILD_SA %s{%d} established with SPIs %s_i %s_o", "bench", i, "lan", i,
                             "c1a2b3c4", "d5e6f7a8")
                    if i % 8 == 7:
                        await asyncio.sleep(0)
                await asyncio.sleep(0)
                rounds.append((time.perf_counter() - t) / 200 * 1e6)
            return statistics.median(rounds)

        try:
            line = asyncio.run(lines())
        finally:
            handler.flush()
            for name in ("engine", "asyncio"):
                logging.getLogger(name).removeHandler(handler)
    return publish, line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", default="1000,1", help="history sizes in events, comma-separated")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--only", choices=("summaries", "others"), help="keep only these events")
    ap.add_argument("--runtime", action="store_true",
                    help="the events through EngineRuntime._dispatch/publish (null datapath), not only the history")
    ap.add_argument("--per-event", action="store_true",
                    help="only the publish cost of one handshake's events and the cost of one log line")
    args = ap.parse_args()
    roomy_collector()
    if args.per_event:
        publish, line = per_event_costs()
        print(f"tree {os.getcwd()}: publish of one handshake's responder events {publish:.1f} µs; "
              f"one INFO line through the daemon's handler {line:.2f} µs")
        return
    print(f"tree {os.getcwd()}; responder CPU µs per handshake (thread time), medians of {args.rounds} x 500")
    for keep in (int(k) for k in args.keep.split(",")):
        bench = Bench(keep, args.only, args.runtime)
        bench.handshakes(300)  # warm up, and fill the history
        runs = sorted(bench.handshakes(500) for _ in range(args.rounds))
        print(f"  history of {keep:>5} events: {runs[len(runs) // 2]:6.1f}   (runs {' '.join(f'{r:.0f}' for r in runs)})")
    print(f"  bytes held by one handshake's kept events: {kept_bytes(args.only):,.0f}")


if __name__ == "__main__":
    main()
