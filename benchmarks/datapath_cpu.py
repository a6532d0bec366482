"""CPU per packet of the userspace datapath's Python loops, without the kernel's share: the thread
time (user + system of this thread) of one TUN read batch of TCP super-packets cut into standard
segments, sealed and queued on a raw-ESP sender (engine.datapath.userspace_io, sendmmsg stubbed
out), and of the peer's raw-ESP receive loop opening those packets, coalescing them and writing
them into its "TUN" (a SOCK_SEQPACKET socket pair, as tests/engine/test_userspace_io.py uses).

tunnel_throughput.py measures the whole path, kernel and scheduling included, which swings by
+-15 % with the load of a shared machine; this measures only the Python work per packet, so two
trees can be compared: run it from each (`git archive` snapshot for the older one), alternating.

    python3 benchmarks/datapath_cpu.py                # 9 rounds, minimum per packet
    python3 benchmarks/datapath_cpu.py --rounds 15 --segments 45 --mss 1348

The numbers are per standard-sized segment (1348 bytes of TCP payload by default: an MSS through
a 1400-byte TUN MTU with TCP timestamps), AES-GCM-256, IPv4, one flow.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scapy.layers.inet import IP, TCP  # noqa: E402

from engine.datapath import mmsg  # noqa: E402
from engine.datapath.offload import GSO_TCPV4, NEEDS_CSUM, VNET, fold  # noqa: E402
from engine.datapath.userspace_io import RawReader, RawSender, TunIO, raw_batch  # noqa: E402
from engine.esp import ip  # noqa: E402
from tests.engine.test_lab_packet_path import Link  # noqa: E402
from tests.engine.test_userspace_io import _Dp  # noqa: E402

A, B = "198.51.100.1", "198.51.100.65"
OUTER = bytes(IP(src="127.0.0.2", dst="127.0.0.1", proto=50, flags="DF"))[:20]


class _Loop:
    def call_soon(self, fn):  # the flush is called by hand, once per receive batch
        pass


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    b.setblocking(False)
    return a, b


def _super_packet(payload: bytes, seq: int, mss: int) -> bytes:
    p = bytearray(bytes(IP(src=A, dst=B, flags="DF", id=5)
                        / TCP(sport=40000, dport=5201, flags="A", seq=seq,
                              options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / payload))
    s = ip.pseudo_header_sum(bytes(p[12:16]), bytes(p[16:20]), 6, len(p) - 20)
    p[36:38] = fold(s).to_bytes(2, "big")  # partial checksum, as the kernel hands it over
    return VNET.pack(NEEDS_CSUM, GSO_TCPV4, 52, mss, 20, 16) + bytes(p)


def rig(args) -> tuple:
    """The two loops of one tunnel end each: ``send_round(capture)`` reads one batch of super-packets
    from the "TUN" and seals them (the ESP packets kept in ``wire`` when ``capture``), and
    ``receive_round(datagrams)`` opens, coalesces and writes them on the other end. Both return the
    thread time they took."""
    mmsg._sendmmsg = lambda fd, at, n, flags: n  # the kernel's share is not measured here
    link = Link()
    pa, _pb = link.install(0xA1, 0xB1)
    kernel, ours = _pair()
    dp = _Dp(link.a)
    io = TunIO(dp, ours.fileno(), vnet=True, udp_gro=False, local={bytes([198, 51, 100, 1])})
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50) if os.geteuid() == 0 else socket.socket()
    sender = RawSender(io, None, ("127.0.0.2", 0), raw_batch(raw, "127.0.0.2", b""))
    pa.sender = sender
    payload = os.urandom(args.mss * args.segments)
    step = len(payload)
    seq = [1000]
    wire: list[bytes] = []
    real_send = sender.batch.send
    template = _super_packet(payload, 0, args.mss)

    def send_round(capture: bool) -> float:
        batch = []
        for _ in range(args.batch):
            # The template with this round's sequence number (the partial checksum covers only the
            # pseudo-header): no scapy per round, so instruction counts see the datapath alone.
            batch.append(template[:34] + seq[0].to_bytes(4, "big") + template[38:])
            seq[0] = (seq[0] + step) & 0xFFFFFFFF
        for p in batch:
            kernel.send(p)
        sender.batch.send = (lambda pkts, failed: wire.extend(bytes(x) for x in pkts)) if capture else real_send
        t = time.thread_time()
        io.readable()
        return time.thread_time() - t

    # The receiving end: b's path, its TUN a socket pair, its raw reader fed IPv4 datagrams.
    dpb = _Dp(link.b)
    kb, ob = _pair()
    kb.setblocking(False)
    iob = TunIO(dpb, ob.fileno(), vnet=True, udp_gro=False, local={bytes([198, 51, 100, 65])})
    dpb.io = iob
    dpb.loop = _Loop()
    reader = RawReader.__new__(RawReader)
    reader.dp, reader.sock, reader.v4, reader.batch = dpb, None, True, None

    def receive_round(datagrams: list) -> float:
        t = time.thread_time()
        for i in range(0, len(datagrams), 64):
            reader._handle(datagrams[i:i + 64], 1.0)
            iob.flush_inbound()
        spent = time.thread_time() - t
        try:
            while True:
                kb.recv(70000)
        except BlockingIOError:
            pass
        return spent

    send_round.keep = (link, ours, raw, ob)  # sockets close when collected
    return send_round, receive_round, wire


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9, help="timed rounds; the minimum is shown (default 9)")
    ap.add_argument("--segments", type=int, default=45, help="segments per super-packet (default 45)")
    ap.add_argument("--mss", type=int, default=1348, help="TCP payload bytes per segment (default 1348)")
    ap.add_argument("--batch", type=int, default=16, help="super-packets per TUN read batch (default 16)")
    args = ap.parse_args(argv)
    send_round, receive_round, wire = rig(args)
    per = args.batch * args.segments
    send_times, recv_times = [], []
    for _ in range(args.rounds):
        send_times.append(send_round(False) / per)
        wire.clear()
        send_round(True)
        recv_times.append(receive_round([OUTER + w for w in wire]) / len(wire))
    print(f"userspace datapath, Python CPU per segment (thread time, min of {args.rounds}; {args.batch} super-packets "
          f"of {args.segments} x {args.mss} bytes per round, AES-GCM-256, IPv4)")
    print(f"  send (TUN read, cut, seal, queue; sendmmsg stubbed): {1e6 * min(send_times):6.3f} us "
          f"(median {1e6 * sorted(send_times)[len(send_times) // 2]:.3f})")
    print(f"  receive (raw ESP open, coalesce, TUN write):          {1e6 * min(recv_times):6.3f} us "
          f"(median {1e6 * sorted(recv_times)[len(recv_times) // 2]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
