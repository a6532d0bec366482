"""UDP GSO out and UDP GRO in, against real sockets on loopback (no root):
the datapath's UdpSender hands a run of ESP packets to the kernel in one
sendmsg (UDP_SEGMENT), the runtime's UdpSockets reads them back in one
recvmsg (UDP_GRO) and still handles each datagram on its own, in order; a
receiver without GRO (any peer) gets ordinary datagrams."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from engine.datapath.userspace_io import GSO_MAX_SEGMENTS, UdpSender
from engine.runtime.udp import UdpSockets

LO = "127.0.0.1"


class _Io:
    def __init__(self):
        self.dirty = []
        self.failed = []

    def send_failed(self, exc, dest, n):
        self.failed.append((exc, n))

    def learn_pmtu(self, sender):
        return False


class _Counting(socket.socket):
    """A UDP socket counting its sendmsg/sendto calls."""

    def __init__(self):
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.sendmsgs = 0
        self.sendtos = 0

    def sendmsg(self, *a):
        self.sendmsgs += 1
        return super().sendmsg(*a)

    def sendto(self, *a):
        self.sendtos += 1
        return super().sendto(*a)


def _packets(n: int, size: int, last: int | None = None) -> list[bytes]:
    out = [i.to_bytes(4, "big") + os.urandom(size - 4) for i in range(n)]
    if last is not None:
        out.append(n.to_bytes(4, "big") + os.urandom(last - 4))
    return out


async def test_a_run_goes_out_in_one_send_and_comes_in_batched_but_one_by_one():
    got: list[bytes] = []
    reads = []
    udp = UdpSockets(lambda data, local, remote: got.append(data))
    udp.open([LO], [0])
    ep = udp.endpoints[0]
    real = udp._readable

    def counting(e):
        reads.append(1)
        real(e)
    udp._readable = counting
    loop = asyncio.get_running_loop()
    loop.remove_reader(ep.sock.fileno())
    loop.add_reader(ep.sock.fileno(), udp._readable, ep)
    sent = _packets(20, 1400, last=700)
    with _Counting() as s:
        s.bind((LO, 0))
        sender = UdpSender(_Io(), s, (LO, ep.port))
        for p in sent:
            sender.add(p)
        sender.flush()
        assert (s.sendmsgs, s.sendtos) == (1, 0)  # 21 datagrams, one system call
        for _ in range(200):
            if len(got) == len(sent):
                break
            await asyncio.sleep(0.01)
    udp.close()
    assert got == sent
    assert len(reads) < len(sent)  # read in a batch (UDP_GRO), handled one by one


def test_a_peer_without_gro_gets_ordinary_datagrams():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, _Counting() as tx:
        rx.bind((LO, 0))
        rx.settimeout(2)
        tx.bind((LO, 0))
        sent = _packets(10, 1200, last=300) + _packets(3, 900)
        sender = UdpSender(_Io(), tx, rx.getsockname())
        for p in sent:
            sender.add(p)
        sender.flush()
        assert tx.sendmsgs == 2  # a run of 1200s ended by the 300; then the 900s (a larger size starts a run)
        assert [rx.recv(65535) for _ in sent] == sent


@pytest.mark.parametrize("n", [GSO_MAX_SEGMENTS + 5, 3])
def test_runs_are_cut_to_what_one_send_may_carry(n):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, _Counting() as tx:
        rx.bind((LO, 0))
        rx.settimeout(2)
        tx.bind((LO, 0))
        sent = _packets(n, 1400)
        sender = UdpSender(_Io(), tx, rx.getsockname())
        for p in sent:
            sender.add(p)
        sender.flush()
        # 64 segments and ~65,000 bytes at most per send: 46 of 1400 bytes.
        assert tx.sendmsgs + tx.sendtos == -(-n // 46)
        assert [rx.recv(65535) for _ in sent] == sent


async def test_a_readable_socket_yields_to_the_loop_once_its_time_is_up(monkeypatch):
    """A burst of IKE messages is read for READ_BATCH_SECONDS per turn of the loop, not 64 messages
    (tens of milliseconds that every timer waited for); the rest comes on the next turns, in order."""
    import engine.runtime.udp as udp_module

    class Clock:  # each reading is one millisecond later: a datagram that costs 1 ms to handle
        t = 0.0

        def perf_counter(self):
            self.t += 0.001
            return self.t

    monkeypatch.setattr(udp_module, "_clock", Clock().perf_counter)
    got: list[bytes] = []
    udp = UdpSockets(lambda data, local, remote: got.append(data))
    udp.open([LO], [0])
    ep = udp.endpoints[0]
    asyncio.get_running_loop().remove_reader(ep.sock.fileno())  # this test turns the loop itself
    sent = [bytes([i]) * 100 for i in range(20)]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for p in sent:
                tx.sendto(p, (LO, ep.port))
        udp._readable(ep)
        first = len(got)
        assert 0 < first <= round(getattr(udp_module, "READ_BATCH_SECONDS", 0.004) * 1000) + 1
        for _ in range(40):
            if len(got) == len(sent):
                break
            udp._readable(ep)
    finally:
        udp.close()
    assert got == sent
