"""Where the memory of a held client goes: an in-process breakdown of what one established IKE SA
with its CHILD SA keeps on the responder (issue 10, "memory per held client"). A diagnosis, not
the figure to compare: that one is the daemon's resident memory beside charon's, from

    sudo python3 benchmarks/handshakes.py --hold 10000 --distinct-ts --runs 1 --responders ours,charon

This script brings up --clients PSK clients between two sans-IO endpoints (benchmarks/handshakes.py's
pair, each client its own identity), drops the initiating endpoint, and reports the responder's
Python allocations per held SA by source line (tracemalloc), plus the C memory of the AEAD
contexts that tracemalloc cannot see, measured as resident memory per cryptography AESGCM object
(the userspace datapath keeps two per CHILD SA; the IKE SA keeps none since its SK contexts are
keyed per message).

    python3 benchmarks/held_clients.py --clients 2000 --top 15
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from benchmarks.handshakes import _sansio_pair  # noqa: E402


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def aead_context_bytes(n: int = 5000) -> float:
    """Resident bytes one keyed AESGCM object holds (its C contexts)."""
    gc.collect()
    before = _rss()
    keep = [AESGCM(os.urandom(32)) for _ in range(n)]
    grown = _rss() - before
    del keep
    return grown / n


def breakdown(clients: int, top: int) -> None:
    tracemalloc.start(1)
    a, b = _sansio_pair(0)
    del a
    gc.collect()
    before = tracemalloc.take_snapshot()
    a, b = _sansio_pair(clients)
    del a
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(sa.established for sa in b.sas)
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"responder holding {held} IKE SAs (+ {sum(len(sa.children) for sa in b.sas)} CHILD SAs): "
          f"{total / held:.0f} B of Python objects per held client (tracemalloc)")
    print(f"{'B/client':>9} {'objects':>8}  where")
    root = str(Path(__file__).resolve().parents[1]) + os.sep
    for s in stats[:top]:
        frame = s.traceback[0]
        print(f"{s.size_diff / held:9.0f} {s.count_diff / held:8.1f}  {frame.filename.replace(root, '')}:{frame.lineno}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    aead = aead_context_bytes()  # first: memory freed by the breakdown would be reused and hide it
    breakdown(args.clients, args.top)
    print(f"\nC memory tracemalloc does not see: {aead:.0f} B per keyed AESGCM object "
          "(the userspace datapath keys two per CHILD SA)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
