"""Instructions per segment of the userspace datapath's Python loops, for A/B of two trees on a shared
machine (wall-clock and thread time swing with the load; instruction counts do not): runs
datapath_cpu.py's send and receive loops for ``--rounds`` rounds inside one `functools.reduce` call,
so callgrind can count those rounds alone:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \
        --callgrind-out-file=/tmp/a.out /root/.pyenv/versions/3.11.7/bin/python3 \
        benchmarks/datapath_instr.py --rounds 3 --only send
    (the "totals" line of /tmp/a.out over rounds x 720 segments: instructions per segment)

``--only send`` runs the send loop alone (each round's ESP packets captured, then dropped), the
default runs both: receive = both - send.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.datapath_cpu import OUTER, rig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--segments", type=int, default=45)
    ap.add_argument("--mss", type=int, default=1348)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--only", choices=("send", "both"), default="both")
    args = ap.parse_args(argv)
    send_round, receive_round, wire = rig(args)
    # One untimed round first: caches, first-packet paths, the selector memo.
    send_round(True)
    receive_round([OUTER + w for w in wire])

    def one(_acc, _i) -> None:
        wire.clear()
        send_round(True)
        if args.only == "both":
            receive_round([OUTER + w for w in wire])

    functools.reduce(one, range(args.rounds), None)
    print(f"{args.rounds} rounds of {args.batch * args.segments} segments ({args.only})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
