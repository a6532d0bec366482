"""The console and its embedded engine under load, both ways: how late the
engine runs its timers while the console refreshes 10,000 CHILD SAs, and how
long the console takes per frame while the engine answers 1,000 handshakes
a second.

Lab (root): the console runs headless (Textual's test driver, 120x40, the
dashboard) with the engine embedded (`console.runtime.embedded`, policy
with the userspace datapath) in the right namespace (192.0.2.2); the load
generator (benchmarks/ikeload.py) in the left one (192.0.2.1). Measured,
each over --seconds:

  held   the generator brings up --held IKE SAs (+ CHILD SAs, own IDs and
         selectors) and leaves them; the console polls status every second
         and refreshes its tables with all of them; meanwhile a second
         generator runs one handshake at a time (its latency: how long IKE
         packets wait). Reported: the engine loop's lateness (a timer armed
         every 5 ms on the engine's loop: how much later than due it ran),
         the probe handshakes' latency, the console's frame time.
  load   the generator starts --rate handshakes per second (each deleted
         after); reported: the console's frame time (a frame asked for every
         100 ms: the time until the screen was composed and written), its
         loop's lateness, the rate the engine kept up, events dropped.

Each scenario also runs with the engine alone (the same embedded runtime,
no console) as the reference for the engine's own lateness.

    sudo python3 benchmarks/console_engine.py                      # held 10000, load 1000/s, 15 s each
    sudo python3 benchmarks/console_engine.py --held 2000 --rate 500 --seconds 10 --scenarios held

The worker (``worker`` subcommand) is what runs in the namespace; it reads
"go" on stdin, measures, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.handshakes import OUR_POLICY  # noqa: E402
from benchmarks.ikeload import PSK as _PSK  # noqa: E402

LEFT, RIGHT = "192.0.2.1", "192.0.2.2"
PSK = _PSK.decode()

POLICY = OUR_POLICY
"""The responder of the handshake benchmark, as shipped (userspace datapath, no DoS limits as charon's bench)."""


def _stats(xs: list[float]) -> dict:
    if not xs:
        return dict(n=0)
    xs = sorted(xs)
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]  # noqa: E731
    return dict(n=len(xs), p50=round(1000 * q(0.5), 2), p99=round(1000 * q(0.99), 2),
                max=round(1000 * xs[-1], 2), mean=round(1000 * statistics.fmean(xs), 2))


class GcWatch:
    """Garbage collector passes (gc.callbacks): how long each generation's took, at most and in total."""

    def __init__(self) -> None:
        self.times: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.spans: list[tuple[float, float]] = []
        """(start, end) of each pass on the monotonic clock, for telling lateness caused by one."""
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            t = time.perf_counter()
            self.times[info["generation"]].append(t - self._t0)
            if t - self._t0 > 0.002:
                self.spans.append((time.monotonic() - (t - self._t0), time.monotonic()))

    def summary(self) -> dict:
        return {f"gen{g}": dict(n=len(ts), max_ms=round(1000 * max(ts), 1) if ts else 0,
                                total_ms=round(1000 * sum(ts), 1)) for g, ts in self.times.items()}


class LagProbe:
    """A timer re-armed every ``period`` on ``loop``: how late each one ran."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float) -> None:
        self.loop = loop
        self.period = period
        self.lags: list[float] = []
        self.when: list[float] = []
        self.running = False

    def start(self) -> None:
        self.loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        self.running = True
        self.due = self.loop.time() + self.period
        self.loop.call_at(self.due, self._tick)

    def _tick(self) -> None:
        if not self.running:
            return
        now = self.loop.time()
        self.lags.append(max(0.0, now - self.due))
        self.when.append(self.due)
        self.due = now + self.period
        self.loop.call_at(self.due, self._tick)

    def stop(self) -> None:
        self.running = False


# ====================================================================== worker
async def _worker(args) -> dict:
    from console.runtime.embedded import EmbeddedRuntime

    rt = EmbeddedRuntime(args.config)
    loop = asyncio.get_running_loop()
    out: dict = {}
    if args.no_app:
        await rt.start()
        try:
            await _measure(args, rt, None, None, loop, out)
        finally:
            await rt.stop()
        return out
    from textual.screen import Screen

    from console.app import ConsoleApp
    from console.widgets.sa_tables import ChildSaTable

    frames: list[float] = []
    asked: list[float] = []
    original = Screen._on_timer_update

    def timed_update(screen):
        original(screen)
        if asked:
            t = time.perf_counter()
            frames.extend(t - a for a in asked)
            asked.clear()
    Screen._on_timer_update = timed_update
    try:
        app = ConsoleApp(rt, poll_interval=1.0)
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + 60
            while app.store.snapshot is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            table = app.screen.query_one(ChildSaTable)
            await _measure(args, rt, app, (table, frames, asked), loop, out)
            await pilot.pause()
    finally:
        Screen._on_timer_update = original
    return out


async def _measure(args, rt, app, ui, loop, out) -> None:
    print("ready", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit("worker: expected 'go'")
    if args.held and app is not None:
        # The tables must hold every CHILD SA before the refreshes are measured.
        table = ui[0]
        deadline = time.monotonic() + 120
        while table.row_count < args.held and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        out["rows"] = table.row_count
    remote = hasattr(rt, "diagnostics")
    if remote:
        await rt.diagnostics(True)  # the engine process times its own loop and collector
    else:
        # An engine in this process (the console before its engine had a process of its own).
        engine = LagProbe(rt._rt._loop, 0.005)
        engine.start()
    ui_lag = LagProbe(loop, 0.010)
    ui_lag.start()
    ui_diag = None
    if app is not None and remote:
        # What holds the console's loop (the engine runs in its own process: only the UI's here).
        from console.runtime.engine_process import _Diagnostics
        ui_diag = _Diagnostics(loop)
    flow = {"frames_in": 0, "events_in": 0, "takes": 0, "events_taken": 0}
    inbox = getattr(rt, "_inbox", None)
    if inbox is not None:
        # How the engine's events reach the console: frames read, events in them, batches the app took.
        put_many, take = inbox.put_many, inbox.take

        def counted_put(batch, dropped=0):
            flow["frames_in"] += 1
            flow["events_in"] += len(batch)
            return put_many(batch, dropped)

        def counted_take(n):
            got = take(n)
            flow["takes"] += 1
            flow["events_taken"] += len(got[0])
            return got
        inbox.put_many, inbox.take = counted_put, counted_take
    polls = 0
    if app is not None:
        orig_apply = app.store.apply_status

        def counting(snapshot):
            nonlocal polls
            polls += 1
            return orig_apply(snapshot)
        app.store.apply_status = counting
    import gc

    watch = GcWatch()
    gc.callbacks.append(watch)
    t_end = time.monotonic() + args.seconds
    cpu0 = time.process_time()
    while time.monotonic() < t_end:
        if app is not None:
            ui[2].append(time.perf_counter())
            app.screen.refresh()
        await asyncio.sleep(0.1)
    cpu = time.process_time() - cpu0
    gc.callbacks.remove(watch)
    ui_lag.stop()
    if ui_diag is not None:
        d = ui_diag.finish()
        out["console_slow_callbacks"], out["console_worst_callbacks"] = d["slow"], d["worst"][:8]
    if remote:
        diag = await rt.diagnostics(False)
    else:
        engine.stop()
        diag = {"lags": list(zip(engine.when, engine.lags)), "garbage_total": None, "garbage": None,
                "gc_objects": len(gc.get_objects()),
                "gc": [(gen, a, b) for gen, ts in ((g, watch.spans) for g in (2,)) for a, b in ts]}
    out["console_gc"] = watch.summary()
    engine_gc = GcWatch()
    spans = []
    for gen, a, b in diag["gc"]:
        engine_gc.times[gen].append(b - a)
        if b - a > 0.002:
            spans.append((a, b))
    out["engine_gc"] = engine_gc.summary()
    out["engine_gc_objects"] = diag["gc_objects"]
    out["engine_slow_callbacks"] = diag.get("slow")  # (what, times, total ms, longest ms) over 5 ms
    # The 5 worst lags (when due, ms late) beside the longest callbacks (start, ms, what).
    out["engine_worst_lags"] = sorted(((round(due, 4), round(lag * 1e3, 1)) for due, lag in diag["lags"]),
                                      key=lambda x: -x[1])[:5]
    out["engine_worst_callbacks"] = (diag.get("worst") or [])[:8]
    out["engine_cyclic_garbage"] = (diag["garbage_total"], diag["garbage"])
    out["engine_lag_ms"] = _stats([lag for _due, lag in diag["lags"]])
    # Lateness of timers whose wait did not overlap one of the engine's collector passes of over 2 ms.
    out["engine_lag_outside_gc_ms"] = _stats([lag for due, lag in diag["lags"]
                                              if not any(a < due + lag and b > due for a, b in spans)])
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        import collections as _c

        kinds = _c.Counter(type(o).__qualname__ for o in gc.garbage)
        out["console_cyclic_garbage"] = (sum(kinds.values()), dict(kinds.most_common(8)))
        gc.garbage.clear()
    finally:
        gc.set_debug(0)
    objs = gc.get_objects()
    out["console_gc_objects"] = len(objs)
    if os.environ.get("CONSOLE_ENGINE_GC_TYPES"):
        import collections

        kinds = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objs)
        out["gc_top_types"] = kinds.most_common(25)
    del objs
    out.update(ui_lag_ms=_stats(ui_lag.lags), cpu=round(cpu / args.seconds, 3),
               status_polls=polls, threads=threading.active_count())
    if app is not None:
        out["frame_ms"] = _stats(ui[1])
        inbox = getattr(rt, "_inbox", None)
        out["events_dropped"] = getattr(inbox, "dropped_total", None)
        out["event_flow"] = flow
        out["rows_end"] = ui[0].row_count
    # The engine keeps answering until the generator's own window is over (the driver says
    # "stop"): shutting it down first destroys half-open SAs and answers the generator's last
    # IKE_AUTHs with INVALID_IKE_SPI, counted as failures in its window.
    await loop.run_in_executor(None, sys.stdin.readline)


def worker_main(args) -> int:
    res = asyncio.run(_worker(args))
    print(json.dumps(res), flush=True)
    return 0


# ====================================================================== driver
def _generator(lab, *extra: str) -> list[str]:
    return ["ip", "netns", "exec", lab.ns["left"], sys.executable, "-m", "benchmarks.ikeload", "run", "--json",
            "--source", LEFT, "--target", RIGHT, *extra]


def _raise_priority(pid: int) -> None:
    """nice -15 for a process, its threads and its children (the engine process), as
    benchmarks/handshakes.py does, so other work on a shared machine disturbs the figures less."""
    from benchmarks.handshakes import prioritize

    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        with contextlib.suppress(OSError, ProcessLookupError):
            prioritize(p)


def run_scenario(lab, work: Path, scenario: str, args, app: bool) -> dict:
    cmd = ["ip", "netns", "exec", lab.ns["right"], sys.executable, str(Path(__file__).resolve()), "worker",
           "--config", str(work / "policy.toml"), "--seconds", str(args.seconds)]
    if scenario == "held":
        cmd += ["--held", str(args.held)]
    if not app:
        cmd.append("--no-app")
    log = open(work / f"worker-{scenario}-{'app' if app else 'engine'}.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                            start_new_session=True)
    gens = []
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"worker did not start: {line!r} {(work / log.name).read_text()[-2000:]}")
        _raise_priority(proc.pid)
        res: dict = {}
        if scenario == "held":
            t0 = time.monotonic()
            r = subprocess.run(_generator(lab, "--concurrency", "32", "--duration", "600", "--distinct-ts",
                                          "--curve", str(args.held), "--curve-step", str(args.held)),
                               cwd=ROOT, capture_output=True, text=True, timeout=900)
            res["bring_up_s"] = round(time.monotonic() - t0, 1)
            res["held"] = json.loads(r.stdout.strip().splitlines()[-1])["held"]
            proc.stdin.write("go\n")
            proc.stdin.flush()
            time.sleep(1.0 if not app else 3.0)
            probe = subprocess.Popen(_generator(lab, "--concurrency", "1", "--rate", "20", "--warmup", "0.5",
                                                "--duration", str(args.seconds)),
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
            gens.append(probe)
            _raise_priority(probe.pid)
        else:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            probe = subprocess.Popen(_generator(lab, "--concurrency", "64", "--rate", str(args.rate), "--warmup", "0.5",
                                                "--duration", str(args.seconds)),
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
            gens.append(probe)
            _raise_priority(probe.pid)
        gen_out, _ = probe.communicate(timeout=args.seconds + 120)
        out, _ = proc.communicate("stop\n", timeout=300)
        g = json.loads(gen_out.strip().splitlines()[-1])
        res["handshakes_per_s"] = round(g["rate"], 1)
        res["handshake_latency_ms"] = g["latency_ms"]
        res["failures"] = g["failures"]
        if not out.strip():
            log.flush()
            raise RuntimeError(f"the worker said nothing: {(work / Path(log.name).name).read_text()[-3000:]}")
        res.update(json.loads(out.strip().splitlines()[-1]))
        if scenario == "held" and res.get("held") != args.held:
            print(f"  WARNING: only {res.get('held')} of {args.held} SAs came up", flush=True)
        return res
    finally:
        for p in [proc, *gens]:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        log.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("--config", required=True)
    w.add_argument("--seconds", type=float, default=15)
    w.add_argument("--held", type=int, default=0)
    w.add_argument("--no-app", action="store_true")
    ap.add_argument("--held", type=int, default=10_000, help="SAs held in the held scenario")
    ap.add_argument("--rate", type=float, default=1000, help="handshakes per second in the load scenario")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--scenarios", default="held,load")
    ap.add_argument("--no-reference", action="store_true", help="skip the engine-alone runs")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    if args.cmd == "worker":
        return worker_main(args)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("console_engine: needs root and iproute2 (network namespaces, the TUN device)", file=sys.stderr)
        return 2
    from tests.interop.lab import Lab

    results: dict = {}
    lab = Lab()
    try:
        lab.up()
        with tempfile.TemporaryDirectory(prefix="console-engine-") as tmp:
            work = Path(tmp)
            (work / "policy.toml").write_text(POLICY)
            sec = work / "secrets.toml"
            sec.write_text(f'[ike.any]\nsecret = "{PSK}"\n')
            sec.chmod(0o600)
            for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
                for app in ([True] if args.no_reference else [True, False]):
                    key = f"{scenario} {'console + engine' if app else 'engine alone'}"
                    print(f"== {key} ...", flush=True)
                    results[key] = run_scenario(lab, work, scenario, args, app)
                    print(json.dumps(results[key]), flush=True)
    finally:
        lab.down()
    print()
    print(f"console + embedded engine, userspace datapath, 120x40 dashboard, {args.seconds:.0f} s per scenario "
          f"({os.cpu_count()} CPUs)")
    for key, r in results.items():
        e, f, u = r.get("engine_lag_ms", {}), r.get("frame_ms", {}), r.get("ui_lag_ms", {})
        print(f"  {key:28} engine timer late p99 {e.get('p99')} ms, max {e.get('max')} ms | "
              f"frame p99 {f.get('p99', '-')} ms, max {f.get('max', '-')} ms | UI loop late p99 {u.get('p99')} ms | "
              f"{r.get('handshakes_per_s')} hs/s, latency p99 {r.get('handshake_latency_ms', {}).get('p99')} ms"
              + (f" | {r.get('rows')} rows, {r.get('status_polls')} polls" if "rows" in r else "")
              + (f" | events dropped {r.get('events_dropped')}" if r.get("events_dropped") else ""))
        worst = r.get("console_worst_callbacks") or []
        if worst:
            # CPU close to the wall time: the console worked; far below it: it waited for a CPU.
            print(f"  {'':28} longest console callbacks (wall / CPU ms): "
                  + ", ".join(f"{w[1]} / {w[3]}" for w in worst[:4] if len(w) > 3))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
