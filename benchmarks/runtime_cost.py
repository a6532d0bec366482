"""The daemon's responder per handshake, in-process, through the real runtime path (no root, no network).

What benchmarks/handshakes.py's `ours` daemon does per handshake (PSK, x25519, AES-GCM-256, one CHILD
SA, deleted by the initiator after), without the kernel: an EngineRuntime in a running asyncio loop
with the daemon's logging (setup_logging into /dev/null, lean records, the roomy collector), its
UdpSockets reading from and sending to a stand-in socket (`_readable`, `_on_datagram`, `_after`,
`send`, `_pick`, `_sendto`), the userspace datapath installing and removing each CHILD SA (SaPath,
SAD, the shared route, the raw-ESP sender; no TUN device or netlink: sa_install.py's stand-ins), the
replay history, the one timer re-armed. The initiator is a sans-IO IkeEndpoint (benchmarks/
handshakes.py's pair); its work is not the responder's.

    python3 benchmarks/runtime_cost.py [--handshakes 2000] [--rounds 5]   # µs per handshake (thread time)
    python3 benchmarks/runtime_cost.py --handshakes 120 --reduce           # for callgrind, see below

With ``--reduce`` each responder step runs inside ``functools.reduce``, so that callgrind counts the
responder only (the initiator's work is outside it):

    PYTHONHASHSEED=0 valgrind --tool=callgrind --dump-instr=no --toggle-collect=functools_reduce \\
        /root/.pyenv/versions/3.11.7/bin/python3 benchmarks/runtime_cost.py --handshakes 120 --reduce

and the instructions per handshake are the difference of two run lengths (120 - 20) / 100 (the
collector is off in this mode: see run()).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import engine.datapath.userspace as userspace  # noqa: E402
from benchmarks.handshakes import LEFT, PSK, RIGHT, _sansio_pair  # noqa: E402
from benchmarks.sa_install import _Addresses, _Writer  # noqa: E402
from engine.datapath.tun import RouteTable  # noqa: E402
from engine.events import IkeState  # noqa: E402
from engine.runtime.daemon import lean_log_records, roomy_collector, setup_logging  # noqa: E402
from engine.runtime.engine import EngineRuntime, _EventLogHandler  # noqa: E402
from engine.runtime.udp import UdpEndpoint  # noqa: E402


class _Socket:
    """Stands for the runtime's UDP socket on port 500 and the datapath's raw ESP socket: what is
    sent is kept for the initiator; what the initiator sent is read with ``recvmsg``."""

    family = socket.AF_INET

    def __init__(self) -> None:
        self.inbox: list[bytes] = []
        self.sent: list[bytes] = []

    def recvmsg(self, size, ancsize):
        if not self.inbox:
            raise BlockingIOError
        return self.inbox.pop(0), [], 0, (LEFT, 500)

    def sendto(self, data, addr) -> int:
        self.sent.append(data)
        return len(data)

    def sendmsg(self, bufs, anc=(), flags=0, addr=None) -> int:
        self.sent.append(bufs[0])
        return len(bufs[0])

    def fileno(self) -> int:
        return -1


def _initiator():
    """handshakes.py's initiator, with one more connection (held0, another ID) not yet up."""
    import dataclasses

    from engine.ike.endpoint import IkeEndpoint
    from engine.policy.identity import parse_identity
    from tests.engine.ike_pair import policy

    a = _sansio_pair()[0]
    conn = a.policy.connections[0]
    held = dataclasses.replace(conn, name="held0",
                               local=dataclasses.replace(conn.local, id=parse_identity("held0.example")))
    return IkeEndpoint(policy(conn, held, psk=PSK.decode(), address=LEFT))


class Bench:
    def __init__(self, loop: asyncio.AbstractEventLoop, reduce: bool) -> None:
        # The initiator also has connection held0 (another ID): one SA of it stays up while handshakes
        # come and go, as while they overlap in the daemon (its raw-ESP sender and route stay).
        self.a, b = _initiator(), _sansio_pair()[1]
        policy = b.policy
        dp = userspace.UserspaceDatapath(policy)
        dp.routes = RouteTable(_Writer(), 5)
        dp._addrs = _Addresses()
        dp.loop = loop
        self.raw = _Socket()
        dp._raw[(socket.AF_INET, socket.IPPROTO_ESP)] = self.raw
        userspace.raw_batch = lambda *a, **k: None  # one sendmsg per packet (none is sent here)
        rt = self.rt = EngineRuntime(policy, datapath=dp)
        dp.runtime = rt
        rt._loop = loop
        rt.endpoint.wall_offset = time.time() - loop.time()
        rt._log_handler = _EventLogHandler(rt)
        import logging
        logging.getLogger("engine").addHandler(rt._log_handler)
        self.sock = _Socket()
        self.ep = UdpEndpoint(self.sock, RIGHT, 500)
        rt.sockets.endpoints.append(self.ep)
        rt.sockets._loop = loop
        rt.sockets.count = lambda what: rt.endpoint.count(what)
        dp.apply_policy(policy)
        dp.path.arm_samples()
        rt.endpoint.start(rt.now())
        self.reduce = reduce
        self.step = self._responder
        self.loop = loop

    def _responder(self, _acc=None, _item=None) -> None:
        self.rt.sockets._readable(self.ep)

    def _bare(self, _acc=None, _item=None) -> None:
        """--sansio: the same datagrams to the runtime's endpoint alone (what benchmarks/handshakes.py's
        sans-IO figure measures: receive, drain events, the timer); answers into the same socket."""
        ep, sock, now = self.rt.endpoint, self.sock, self.loop.time()
        while sock.inbox:
            ep.receive_datagram(sock.inbox.pop(0), (RIGHT, 500), (LEFT, 500), now)
        while ep.next_event() is not None:
            pass
        for d in ep.datagrams_to_send():
            sock.sent.append(d.data)
        ep.get_timer()

    def _pump(self, acc: list[float]) -> None:
        a, sock, now = self.a, self.sock, self.loop.time()
        clock = time.thread_time
        while True:
            out_a = a.datagrams_to_send()
            while a.next_event() is not None:
                pass
            for d in out_a:
                data = d.data
                sock.inbox.append(data[4:] if data[:4] == b"\0\0\0\0" else data)
            while sock.inbox:
                # Again while something waits: a reader out of its time slice (a collector pass
                # inside it, READ_BATCH_SECONDS) leaves the rest for the next turn, as on a socket.
                t = clock()
                if self.reduce:
                    functools.reduce(self.step, (None,), None)
                else:
                    self.step()
                acc[0] += clock() - t
            out_b, sock.sent = sock.sent, []
            for data in out_b:
                a.receive_datagram(data, (LEFT, 500), (RIGHT, 500), now)
            if not out_a and not out_b:
                return

    def handshakes(self, n: int) -> float:
        acc = [0.0]
        a = self.a
        for _ in range(n):
            sa = a.initiate("bench", self.loop.time())
            self._pump(acc)
            if sa.state != IkeState.ESTABLISHED or not sa.children:
                raise RuntimeError(f"a handshake failed: {sa.state} {sa.outstanding} responder "
                                   f"{[(x.state, x.name) for x in self.rt.endpoint.sas]} {self.rt.endpoint.stats}")
            a.terminate("bench", self.loop.time())
            self._pump(acc)
        return acc[0] / n * 1e6


async def run(args) -> None:
    loop = asyncio.get_running_loop()
    bench = Bench(loop, args.reduce)
    if args.sansio:
        bench.step = bench._bare
    sa = bench.a.initiate("held0", loop.time())
    bench._pump([0.0])
    if sa.state != IkeState.ESTABLISHED or len(bench.rt.datapath.path.pairs) != (0 if args.sansio else 1):
        raise RuntimeError("the held SA did not come up")
    if args.reduce:
        # No collector pass inside a counted step: one young pass (~1-2M instructions, a few per
        # thousand handshakes under the daemon's roomy_collector) falling in or out of the counted
        # steps moved a run's total by as much as a small change saves.
        gc.collect()
        gc.disable()
        for _ in range(args.handshakes):
            bench.handshakes(1)
            await asyncio.sleep(0)  # a turn of the loop: the log handler writes its lines
        return
    bench.handshakes(300)
    runs = []
    for _ in range(args.rounds):
        t = 0.0
        for _ in range(args.handshakes // 10):
            t += bench.handshakes(10) * 10
            await asyncio.sleep(0)
        runs.append(t / (args.handshakes // 10 * 10))
    runs.sort()
    print(f"tree {ROOT}: responder µs per handshake (thread time) {runs[len(runs) // 2]:.1f} "
          f"(runs {' '.join(f'{r:.0f}' for r in runs)}); median {statistics.median(runs):.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--handshakes", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reduce", action="store_true", help="each responder step in functools.reduce (callgrind)")
    ap.add_argument("--sansio", action="store_true",
                    help="the runtime's endpoint alone (no sockets, datapath, events, history or log lines)")
    args = ap.parse_args(argv)
    devnull = open(os.devnull, "w")
    setup_logging(0, env={}, stream=devnull)
    lean_log_records()
    roomy_collector()
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
