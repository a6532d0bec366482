"""engine.datapath.userspace_io.RawReader: raw ESP in batches of recvmmsg, checked on a loopback UDP
socket of this process's own address (tests/loopback.py) standing in for the raw socket: an IPv4
raw socket hands over the IP header with each ESP packet (as sent here), an IPv6 one the ESP packet
alone. Every datagram is still checked on its own: the good ones are delivered in order, a forged
or cut one is dropped and counted, and the reader takes many datagrams per system call."""

from __future__ import annotations

import socket

import pytest

from engine.datapath import mmsg
from engine.datapath.userspace_io import RAW_CALLS, RAW_SLOTS, RawReader
from engine.esp import ip
from tests.engine.test_lab_packet_path import Link
from tests.loopback import addr

A, B = "198.51.100.1", "198.51.100.65"
pytestmark = pytest.mark.skipif(not mmsg.recv_available, reason="libc without recvmmsg")


class _Runtime:
    def now(self):
        return 1.0


class _Io:
    def __init__(self):
        self.delivered = []

    def deliver_all(self, inners):
        self.delivered.extend(bytes(inner) for inner in inners)


class _Dp:
    """What RawReader needs of a UserspaceDatapath: the SaPath, the clock, the TUN side."""

    def __init__(self, path):
        self.path = path
        self.runtime = _Runtime()
        self.io = _Io()
        self.flushes = 0

    def flush_events(self):
        self.flushes += 1
        self.path.drain()


@pytest.fixture
def wire():
    """(link, a's pair, receiving socket, sending socket): a's ESP to b, through loopback UDP."""
    link = Link()
    pa, _pb = link.install(0xA1, 0xB1)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((addr(7), 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield link, pa, rx, tx
    rx.close()
    tx.close()


def _inner(i: int) -> bytes:
    return ip.ip_header(socket.inet_aton(A), socket.inet_aton(B), 17, 8 + 100) + bytes(8) + bytes([i % 256]) * 100


def _sa_drops(path) -> dict:
    out: dict = {}
    for c in path.counters()[0]:
        for reason, n in c.drops:
            out[reason] = out.get(reason, 0) + n
    return out


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["with-ip-header", "esp-only"])
def test_a_burst_is_read_in_batches_and_each_datagram_checked_on_its_own(wire, family):
    link, pa, rx, tx = wire
    sent = []
    for i in range(150):
        esp = pa.outbound.protect(_inner(i), 1.0)
        if i == 40:
            esp = esp[:-1] + bytes([esp[-1] ^ 1])  # forged: its ICV fails
        elif i == 90:
            esp = esp[:12]  # cut short
        else:
            sent.append(_inner(i))
        tx.sendto(pa.outbound.build_outer_ip(esp) if family == socket.AF_INET else esp, rx.getsockname())
    dp = _Dp(link.b)
    reader = RawReader(dp, rx, family)
    reader.readable()
    assert reader.batch.calls == RAW_CALLS  # the budget of one callback: RAW_CALLS x RAW_SLOTS datagrams
    assert len(dp.io.delivered) == RAW_CALLS * RAW_SLOTS - 2
    reader.readable()
    assert dp.io.delivered == sent  # in order, the forged and the short one left out
    assert reader.batch.calls == RAW_CALLS + 1  # what was left came in one call
    assert _sa_drops(link.b) == {"icv": 1, "malformed": 1}  # on the SA its SPI names
    reader.readable()  # nothing waiting: no error, nothing delivered
    assert len(dp.io.delivered) == len(sent) and dp.flushes == 3


def test_a_datagram_of_the_largest_size_arrives_whole(wire):
    _link, _pa, rx, tx = wire
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    big = bytes(range(256)) * 255
    tx.sendto(b"small", rx.getsockname())
    tx.sendto(big, rx.getsockname())
    r = mmsg.MmsgReceiver(rx, 4)
    n = r.recv()
    assert [bytes(r.data(i, size)) for i, size in enumerate(r.lengths(n))] == [b"small", big]
    assert not r.truncated(1)
