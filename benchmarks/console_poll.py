"""The console's side of one status poll with 10,000 SAs held, in-process, no root.

Models `console_engine.py`'s held scenario: one connection, --held IKE SAs of one
CHILD SA each (own IDs, own selectors, idle), established over the last ~30 s,
so their "Up" ages are shown to the second and change every poll. Each poll's
status crosses as `console.runtime.engine_link` frames of 100 IKE SAs (built
before timing: the engine's work), then the console

  decode   unpickles the frames (what `EmbeddedRuntime._read` does),
  apply    runs `ConsoleApp.on_status_updated` (store, the dashboard's tables'
           sync, gc.freeze),
  render   draws the next frame (`pilot.pause()`: Textual renders the visible rows).

Reported: thread CPU per part, median over --polls (after --warmup polls).
``--profile FILE`` writes a cProfile of the apply+render of the measured polls.

    python3 benchmarks/console_poll.py [--held 10000] [--polls 9] [--profile /tmp/poll.prof]
    python3 benchmarks/console_poll.py --changed 100   # 100 SAs also moved bytes each poll
    python3 benchmarks/console_poll.py --age 3600      # ages shown by the minute: few cells change
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pickle
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from console.app import ConsoleApp  # noqa: E402
from console.messages import StatusUpdated  # noqa: E402
from console.runtime.engine_link import frame  # noqa: E402
from console.runtime.fake import FakeRuntime  # noqa: E402
from console.widgets.sa_tables import ChildSaTable  # noqa: E402
from engine.status import ChildSaInfo, ConnectionInfo, IkeSaInfo, StatusSnapshot  # noqa: E402

T0 = 1_800_000_000.0
SLICE = 100


def held_status(n: int, now: float, changed: int = 0, poll: int = 0, age: float = 30.0) -> StatusSnapshot:
    """``n`` IKE SAs of one CHILD SA each at ``now``; ``changed`` of them carried traffic this poll."""
    ikes = []
    for i in range(n):
        est = T0 - age + i * 0.003  # the generator brought them up within 30 s
        jitter = (i * 7919) % 360
        traffic = (poll * 1000 * 1400) if i < changed else 0
        child = ChildSaInfo(
            name="lan", unique_id=i + 1, reqid=1, state="INSTALLED", protocol="esp", mode="tunnel", encap=False,
            spi_in=0xC0000000 + i, spi_out=0x80000000 + i, encr="AES_GCM_16_256",
            local_ts=("10.1.0.0/16",), remote_ts=(f"10.{128 + i // 65536}.{i // 256 % 256}.{i % 256}/32",),
            bytes_in=traffic, packets_in=traffic // 1400, bytes_out=traffic // 2, packets_out=traffic // 2800,
            installed_ago=now - est, rekey_in=est + 3600 - jitter - now, expire_in=est + 3960 - now,
        )
        ikes.append(IkeSaInfo(
            name="bench", unique_id=i + 1, state="ESTABLISHED", initiator=False,
            spi_i=0x1000000000000000 + i * 7919, spi_r=0x2000000000000000 + i * 104729,
            local_addr="192.0.2.2", local_port=500, remote_addr="192.0.2.1", remote_port=500,
            local_id="right.example", remote_id=f"client{i}.example",
            encr="AES_GCM_16_256", prf="PRF_HMAC_SHA2_256", ke="CURVE_25519",
            established_ago=now - est, rekey_in=est + 14400 - 4 * jitter - now,
            expire_in=est + 14400 + 1440 - now, children=(child,),
        ))
    conn = ConnectionInfo(name="bench", local_addrs=("192.0.2.2",), remote_addrs=("192.0.2.1",),
                          local_auth="psk", remote_auth="psk", local_id="right.example", remote_id="%any",
                          proposals=("aes256gcm16-prfsha256-x25519",), state="up")
    return StatusSnapshot(time=now, ike_sas=tuple(ikes), connections=(conn,), pools=())


def frames_of(snap: StatusSnapshot) -> list[bytes]:
    """What the engine process sends for one poll: slices of IKE SAs, then the reply."""
    sas = list(snap.ike_sas)
    out = [frame(("status_part", 1, sas[i:i + SLICE]))[4:] for i in range(0, len(sas), SLICE)]
    out.append(frame(("reply", 1, True, (snap.time, snap.connections, snap.pools)))[4:])
    return out


def decode(frames: list[bytes]) -> StatusSnapshot:
    parts = []
    for data in frames[:-1]:
        parts.extend(pickle.loads(data)[2])
    when, connections, pools = pickle.loads(frames[-1])[3]
    return StatusSnapshot(when, tuple(parts), connections, pools)


class _Held(FakeRuntime):
    def __init__(self, first: StatusSnapshot) -> None:
        super().__init__(scenario="none", counters_events=False, packet_samples=False)
        self._first = first

    def status_now(self) -> StatusSnapshot:
        return self._first


async def run(args) -> dict:
    polls = args.warmup + args.polls
    wire = [frames_of(held_status(args.held, T0 + p + 1, args.changed, p, args.age)) for p in range(polls)]
    app = ConsoleApp(_Held(held_status(args.held, T0, args.changed, 0, args.age)), poll_interval=1e6)
    res: dict[str, list[float]] = {"decode": [], "apply": [], "render": []}
    prof = cProfile.Profile() if args.profile else None
    clock = time.thread_time
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one(ChildSaTable)
        while table.row_count < args.held:
            await asyncio.sleep(0.01)
        await pilot.pause()
        if args.focus_child:
            table.focus()
            await pilot.pause()
        for p, frames in enumerate(wire):
            c0 = clock()
            snap = decode(frames)
            c1 = clock()
            measured = p >= args.warmup
            if prof is not None and measured:
                prof.enable()
            app.on_status_updated(StatusUpdated(snap))
            c2 = clock()
            await pilot.pause()
            c3 = clock()
            if prof is not None and measured:
                prof.disable()
            del snap
            if measured:
                res["decode"].append(c1 - c0)
                res["apply"].append(c2 - c1)
                res["render"].append(c3 - c2)
        res["stats"] = [table.sync_stats, app.screen.query_one("#ike-sas").sync_stats]
    if prof is not None:
        prof.dump_stats(args.profile)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--held", type=int, default=10_000)
    ap.add_argument("--polls", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--changed", type=int, default=0, help="SAs whose counters move each poll")
    ap.add_argument("--age", type=float, default=30.0,
                    help="seconds since the SAs came up (under 600 their ages change every poll)")
    ap.add_argument("--focus-child", action="store_true", help="the CHILD SA table has the focus")
    ap.add_argument("--profile", default="")
    args = ap.parse_args()
    res = asyncio.run(run(args))
    med = {k: 1000 * statistics.median(res[k]) for k in ("decode", "apply", "render")}
    print(f"console poll, {args.held} IKE + CHILD SAs held {args.age:.0f} s, {args.changed} with traffic, 120x40, "
          f"thread CPU ms, median of {args.polls}: decode {med['decode']:.1f}  apply {med['apply']:.1f}  "
          f"render {med['render']:.1f}  total {sum(med.values()):.1f}")
    print("  apply per poll:", " ".join(f"{1000 * x:.0f}" for x in res["apply"]),
          " | last sync (added, removed, cells) child/ike:", res["stats"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
