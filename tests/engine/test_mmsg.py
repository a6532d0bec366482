"""engine.datapath.mmsg: sendmmsg through ctypes, checked on loopback UDP sockets (the same
call the raw ESP socket makes): every datagram arrives, in order, with its own size and the
source address the control message asked for; a refused datagram is reported by its index
and the others still leave; fewer calls than datagrams."""

from __future__ import annotations

import errno
import socket

import pytest

from engine.datapath import mmsg
from engine.datapath.mmsg import MmsgSender, control_message, sockaddr
from engine.datapath.userspace_io import RawSender

IP_PKTINFO = 8
pytestmark = pytest.mark.skipif(not mmsg.available, reason="libc without sendmmsg")


@pytest.fixture
def pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.settimeout(2)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    yield tx, rx
    tx.close()
    rx.close()


def _received(rx, n):
    return [rx.recvfrom(70000) for _ in range(n)]


def test_datagrams_arrive_in_order_with_their_sizes(pair):
    tx, rx = pair
    pkts = [bytes([i % 251]) * (1 + (i * 37) % 1500) for i in range(300)]
    sender = MmsgSender(tx, sockaddr(socket.AF_INET, "127.0.0.1", rx.getsockname()[1]))
    refused = []
    sender.send(pkts, lambda i, e: refused.append((i, e)))
    assert refused == []
    got = [d for d, _ in _received(rx, len(pkts))]
    assert got == pkts
    assert sender.calls == -(-len(pkts) // sender.slots)  # one call per slot-full, not per datagram


def test_a_refused_datagram_is_reported_and_the_rest_still_leave(pair):
    tx, rx = pair
    pkts = [b"a" * 100, b"b" * 200, bytes(66000), b"c" * 300, bytes(66000), b"d"]
    sender = MmsgSender(tx, sockaddr(socket.AF_INET, "127.0.0.1", rx.getsockname()[1]))
    refused = []
    sender.send(pkts, lambda i, e: refused.append((i, e)))
    assert refused == [(2, errno.EMSGSIZE), (4, errno.EMSGSIZE)]
    assert [d for d, _ in _received(rx, 4)] == [pkts[0], pkts[1], pkts[3], pkts[5]]


def test_the_control_message_sets_the_source_address(pair):
    tx, rx = pair
    info = socket.inet_aton("0.0.0.0") + socket.inet_aton("127.0.0.9") + socket.inet_aton("127.0.0.9")
    info = bytes(4) + info[4:]  # ifindex 0, spec_dst, addr
    sender = MmsgSender(tx, sockaddr(socket.AF_INET, "127.0.0.1", rx.getsockname()[1]),
                        control_message(socket.IPPROTO_IP, IP_PKTINFO, info))
    sender.send([b"x", b"y"], lambda i, e: pytest.fail(f"datagram {i} refused: {e}"))
    assert [(d, a[0]) for d, a in _received(rx, 2)] == [(b"x", "127.0.0.9"), (b"y", "127.0.0.9")]


def test_control_message_matches_pythons_encoding():
    # What socket.sendmsg builds for the same ancillary data: CMSG_LEN in the header, CMSG_SPACE long.
    data = bytes(range(12))
    out = control_message(socket.IPPROTO_IP, IP_PKTINFO, data)
    assert len(out) == socket.CMSG_SPACE(12)
    assert int.from_bytes(out[:8], "little") == socket.CMSG_LEN(12)
    assert out[socket.CMSG_LEN(0):socket.CMSG_LEN(12)] == data


def test_ipv6_address():
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        rx.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    rx.settimeout(2)
    with tx, rx:
        sender = MmsgSender(tx, sockaddr(socket.AF_INET6, "::1", rx.getsockname()[1]))
        sender.send([b"six"] * 3, lambda i, e: pytest.fail(f"datagram {i} refused: {e}"))
        assert [rx.recv(10) for _ in range(3)] == [b"six"] * 3


class _Io:
    def __init__(self):
        self.dirty = []
        self.learned = []
        self.failed = []

    def learn_pmtu(self, sender):
        self.learned.append(sender)
        return True

    def send_failed(self, exc, dest, n):
        self.failed.append((exc.errno, n))


def test_raw_sender_batches_until_flush_and_handles_errors_per_packet(pair):
    tx, rx = pair
    io = _Io()
    port = rx.getsockname()[1]
    batch = MmsgSender(tx, sockaddr(socket.AF_INET, "127.0.0.1", port))
    sender = RawSender(io, None, ("127.0.0.1", port), batch)
    for p in (b"1", bytes(66000), b"3"):
        sender.add(p)
    assert io.dirty == [sender]  # queued once for the flush after the read batch
    assert batch.calls == 0
    sender.flush()
    assert io.failed == [(errno.EMSGSIZE, 1)] and io.learned == [sender]
    assert [rx.recv(10) for _ in range(2)] == [b"1", b"3"]
    calls = batch.calls
    for i in range(batch.slots):  # a full set of slots leaves at once
        sender.add(b"%d" % i)
    assert sender.pending == [] and batch.calls == calls + 1


def test_a_closed_socket_refuses_every_datagram_instead_of_writing_to_its_old_fd(pair):
    tx, rx = pair
    sender = MmsgSender(tx, sockaddr(socket.AF_INET, "127.0.0.1", rx.getsockname()[1]))
    tx.close()
    refused = []
    sender.send([b"a", b"b"], lambda i, e: refused.append((i, e)))
    assert refused == [(0, errno.EBADF), (1, errno.EBADF)] and sender.calls == 0


def test_add_all_queues_a_batch_and_flushes_where_add_would(pair):
    # A cut super-packet's ESP packets are queued in one step; a batch crossing the flush point
    # leaves exactly where one add() per packet would have flushed (the same sendmmsg/GSO batches).
    from engine.datapath.userspace_io import GSO_MAX_SEGMENTS, UdpSender

    tx, rx = pair
    port = rx.getsockname()[1]
    io = _Io()
    batch = MmsgSender(tx, sockaddr(socket.AF_INET, "127.0.0.1", port))
    raw = RawSender(io, None, ("127.0.0.1", port), batch)
    raw.add_all([b"a"] * (batch.slots - 1))
    assert io.dirty == [raw] and batch.calls == 0 and len(raw.pending) == batch.slots - 1
    raw.add_all([b"b"] * 3)  # the first of these fills the slots: they leave, two stay queued
    assert batch.calls == 1 and raw.pending == [b"b", b"b"]
    assert [rx.recv(10) for _ in range(batch.slots)] == [b"a"] * (batch.slots - 1) + [b"b"]
    udp = UdpSender(io, tx, ("127.0.0.1", port))
    limit = 2 * GSO_MAX_SEGMENTS
    udp.add_all([b"u" * 100] * (limit - 5))
    assert udp.pending and io.dirty[-1] is udp
    udp.add_all([b"v" * 100] * 10)
    assert len(udp.pending) == 5 and all(p == b"v" * 100 for p in udp.pending)
    got = [rx.recv(200) for _ in range(limit)]
    assert got == [b"u" * 100] * (limit - 5) + [b"v" * 100] * 5
