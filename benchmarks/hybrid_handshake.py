"""Hybrid post-quantum handshakes (issue 11): the responder's CPU time per IKE SA,
ours and strongSwan 6.1's charon side by side in one run, classic and hybrid.

charon 6.1 (the chroot .ci/strongswan6-root builds) initiates from 192.0.2.1 in
one namespace; the responder in the other (192.0.2.2) is, in turn, our daemon
(userspace datapath) and charon 6.1 (kernel-libipsec). Each handshake is
`swanctl --initiate` (IKE_SA_INIT, IKE_INTERMEDIATE per additional KE, IKE_AUTH
with one CHILD SA) then `swanctl --terminate`. Measured over --n handshakes per
run, --runs runs interleaved responder by responder:

  cpu ms/SA  the responder process's on-CPU time per handshake, all its threads
             (/proc/PID/task/*/schedstat), the steadiest figure on a shared machine;
  ms/SA      wall time of `swanctl --initiate` (both ends plus swanctl itself).

Proposals: classic aes256gcm16-prfsha384-x25519 and hybrid
aes256gcm16-prfsha384-x25519-ke1_mlkem768 (and --ke1024 adds ecp384 +
ML-KEM-1024). The cost of the KEM is the hybrid row minus the classic row,
per responder; benchmarks/kem.py gives the bare ML-KEM operations.

    sudo python3 benchmarks/hybrid_handshake.py [--runs 3] [--n 30] [--ke1024]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.interop.lab import Charon, Ours, lab, our_policy, require_strongswan6, wait_for  # noqa: E402

CLASSIC = "aes256gcm16-prfsha384-x25519"
HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
HYBRID_1024 = "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024"


def cpu_seconds(pid: int) -> float:
    """On-CPU time of every thread of ``pid`` (schedstat, nanoseconds: /proc/PID/stat counts
    clock ticks, too coarse for charon's few milliseconds per SA)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e9


def run_once(root: Path, responder: str, proposal: str, n: int, workdir: Path) -> dict:
    with lab() as L:
        init = Charon(L, "left", workdir, root=root, proposals=proposal).start()
        if responder == "charon-6.1":
            resp = Charon(L, "right", workdir, root=root, proposals=proposal).start()
            pid = resp.proc.pid
        else:
            resp = Ours(L, "right", workdir, our_policy("right", proposals=(proposal,))).start()
            pid = resp.proc.pid
        try:
            def handshake() -> float:
                t = time.perf_counter()
                r = init.swanctl("--initiate", "--child", "psk-tunnel", "--timeout", "20", check=False)
                took = time.perf_counter() - t
                if r.returncode != 0:
                    raise RuntimeError(f"{responder} {proposal}: initiate failed: {r.stdout[-1500:]}")
                init.swanctl("--terminate", "--ike", "psk-tunnel", "--timeout", "20", check=False)
                return took

            for _ in range(3):  # warm up (imports, caches)
                handshake()
            wait_for(lambda: "ESTABLISHED" not in init.list_sas(), what="the warm-up SAs gone")
            cpu0 = cpu_seconds(pid)
            walls = [handshake() for _ in range(n)]
            cpu = cpu_seconds(pid) - cpu0
            if proposal != CLASSIC:
                log = init.log()
                assert "IKE_INTERMEDIATE" in log, "no IKE_INTERMEDIATE seen: not a hybrid handshake"
        finally:
            resp.stop()
            init.stop()
    return {"cpu_ms": 1000 * cpu / n, "wall_ms": 1000 * statistics.median(walls)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=30, help="handshakes per run")
    ap.add_argument("--ke1024", action="store_true", help="also ecp384 + ML-KEM-1024")
    args = ap.parse_args()
    root = require_strongswan6()
    proposals = [CLASSIC, HYBRID] + ([HYBRID_1024] if args.ke1024 else [])
    responders = ["ours", "charon-6.1"]
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for proposal in proposals:
                for responder in responders:
                    work = Path(tmp) / f"{run}-{responder}-{len(proposal)}"
                    work.mkdir()
                    try:
                        result = run_once(root, responder, proposal, args.n, work)
                    except subprocess.CalledProcessError:
                        # swanctl can reach a fresh charon's vici socket before it listens: once more.
                        work = work.with_name(work.name + "-again")
                        work.mkdir()
                        result = run_once(root, responder, proposal, args.n, work)
                    results.setdefault((responder, proposal), []).append(result)
    med = {k: (statistics.median(r["cpu_ms"] for r in v), statistics.median(r["wall_ms"] for r in v))
           for k, v in results.items()}
    print(f"responder CPU per IKE SA (median of {args.runs} runs x {args.n} handshakes), initiator charon 6.1")
    print(f"{'proposal':46} {'ours cpu ms':>11} {'charon cpu ms':>13} {'ratio':>6} {'ours ms':>8} {'charon ms':>9}")
    for p in proposals:
        (oc, ow), (cc, cw) = med[("ours", p)], med[("charon-6.1", p)]
        print(f"{p:46} {oc:11.2f} {cc:13.2f} {oc / cc:6.2f} {ow:8.1f} {cw:9.1f}")
    for p in proposals[1:]:
        what = p.split("-", 2)[2].replace("-ke1_", " + ")
        print(f"{what} instead of x25519 alone: ours +{med[('ours', p)][0] - med[('ours', CLASSIC)][0]:.2f} cpu ms/SA, "
              f"charon 6.1 +{med[('charon-6.1', p)][0] - med[('charon-6.1', CLASSIC)][0]:.2f} cpu ms/SA")


if __name__ == "__main__":
    main()
