"""ESP-in-UDP from a wildcard NAT-T socket leaves from the SA's local address (IP_PKTINFO /
IPV6_PKTINFO), as IKE answers do (engine.runtime.udp): on every send of the userspace datapath's
UdpSender (a single datagram, a UDP GSO batch, one by one without GSO, the slow path). A socket
bound to the SA's address sends exactly as before: no control message.

Real sockets on loopback (no root): on a wildcard socket the kernel picks 127.0.0.1 as the source
towards any 127.x.y.z, so a datagram that arrives from 127.x.y.2 was sent naming that address. The
wildcard sockets listen on every address of this machine's root namespace for a moment, on a port
the kernel just handed out."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest

from engine.datapath import userspace as userspace_module
from engine.datapath.userspace import UserspaceDatapath
from engine.datapath.userspace_io import SOL_UDP, UDP_SEGMENT, UdpSender
from engine.policy.parse import parse_policy
from engine.runtime.udp import IP_PKTINFO, IPV6_PKTINFO, UdpSockets

from tests.engine.test_udp_listen import _free_port
from tests.loopback import addr

POLICY = """
[engine]
datapath = "lab"
listen = ["127.0.0.1"]
"""


class _Io:
    def __init__(self):
        self.dirty = []
        self.failed = []

    def send_failed(self, exc, dest, n):
        self.failed.append((exc, dest, n))

    def learn_pmtu(self, sender):
        return False


class _Recording:
    """Stands in for a sender's socket: records each call and makes it on the real socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.calls: list = []

    def fileno(self):
        return self.sock.fileno()

    def sendto(self, data, dest):
        self.calls.append(("sendto", 1, None))
        return self.sock.sendto(data, dest)

    def sendmsg(self, bufs, anc, flags, dest):
        bufs = list(bufs)
        self.calls.append(("sendmsg", len(bufs), [(level, kind) for level, kind, _ in anc]))
        return self.sock.sendmsg(bufs, anc, flags, dest)


def _record(sender: UdpSender) -> _Recording:
    """Record the system calls on the sender's real socket (inside its SourcedSocket, if any)."""
    holder = sender if isinstance(sender.sock, socket.socket) else sender.sock
    rec = holder.sock = _Recording(holder.sock)
    return rec


def _datapath(udp: UdpSockets) -> UserspaceDatapath:
    dp = UserspaceDatapath(parse_policy(POLICY, load_secrets=False))
    dp.runtime = SimpleNamespace(sockets=udp)
    dp.io = _Io()
    return dp


def _sa(local: str, port: int, remote: tuple[str, int]):
    """What the datapath's sender choice reads of a ChildSaInstalled: a UDP-encapsulated tunnel SA."""
    return SimpleNamespace(protocol="esp", mode="tunnel", encap=True, local_addr=local, local_port=port,
                           remote_addr=remote[0], remote_port=remote[1])


def _packets(n: int, size: int, last: int | None = None) -> list[bytes]:
    out = [bytes([1]) + i.to_bytes(3, "big") + os.urandom(size - 4) for i in range(n)]
    if last is not None:
        out.append(bytes([1]) + n.to_bytes(3, "big") + os.urandom(last - 4))
    return out


def _send(sender: UdpSender, pkts: list[bytes]) -> None:
    for p in pkts:
        sender.add(p)
    sender.flush()


def _received(peer: socket.socket, n: int) -> list[tuple[bytes, tuple]]:
    return [(data, src[:2]) for data, src in (peer.recvfrom(65535) for _ in range(n))]


@pytest.fixture
def peer():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((addr(5), 0))
        s.settimeout(2)
        yield s


async def test_esp_on_a_wildcard_socket_leaves_from_the_sas_address_batched_or_not(peer):
    port = _free_port()
    udp = UdpSockets(lambda *a: None)
    udp.open(["0.0.0.0"], [port])
    try:
        dp = _datapath(udp)
        sender = dp._sender(_sa(addr(2), port, peer.getsockname()))
        rec = _record(sender)
        batch = _packets(20, 1400, last=700)  # one GSO run
        single = _packets(1, 300)
        _send(sender, batch)
        _send(sender, single)
        # The slow path (an SA that expired, a malformed packet) sends at once, from the SA's address too.
        userspace_module._immediate(sender)(b"\x01slow path", sender.dest)
        got = _received(peer, len(batch) + 2)
        assert got == [(p, (addr(2), port)) for p in batch + single + [b"\x01slow path"]]
        pktinfo = (socket.IPPROTO_IP, IP_PKTINFO)
        assert rec.calls[:2] == [("sendmsg", 21, [(SOL_UDP, UDP_SEGMENT), pktinfo]),  # one cmsg per batch
                                 ("sendmsg", 1, [pktinfo])]
        assert not dp.io.failed
    finally:
        udp.close()


async def test_without_gso_each_datagram_names_the_sas_address(peer, monkeypatch):
    port = _free_port()
    udp = UdpSockets(lambda *a: None)
    udp.open(["0.0.0.0"], [port])
    try:
        monkeypatch.setattr(UdpSender, "gso_works", False)
        sender = _datapath(udp)._sender(_sa(addr(2), port, peer.getsockname()))
        pkts = _packets(3, 1000)
        _send(sender, pkts)
        assert _received(peer, 3) == [(p, (addr(2), port)) for p in pkts]
        sender._one_by_one(pkts)  # what a refused GSO send falls back to
        assert _received(peer, 3) == [(p, (addr(2), port)) for p in pkts]
    finally:
        udp.close()


async def test_sas_on_two_of_our_addresses_to_one_peer_get_a_sender_each(peer):
    """A GSO batch has one source: the SAs of one peer endpoint on two local addresses never share a
    sender (they used to: one queue per socket and peer, every batch from the route's address)."""
    port = _free_port()
    udp = UdpSockets(lambda *a: None)
    udp.open(["0.0.0.0"], [port])
    try:
        dp = _datapath(udp)
        two = dp._sender(_sa(addr(2), port, peer.getsockname()))
        three = dp._sender(_sa(addr(3), port, peer.getsockname()))
        assert two is not three and two is dp._sender(_sa(addr(2), port, peer.getsockname()))
        a, b = _packets(4, 1200), _packets(4, 1200)
        for p, q in zip(a, b):
            two.add(p)
            three.add(q)
        for s in dp.io.dirty:
            s.flush()
        got = _received(peer, 8)
        assert sorted(got) == sorted([(p, (addr(2), port)) for p in a] + [(q, (addr(3), port)) for q in b])
    finally:
        udp.close()


async def test_a_socket_bound_to_the_sas_address_sends_without_a_control_message(peer):
    udp = UdpSockets(lambda *a: None)
    udp.open([addr(2)], [0])
    try:
        port = udp.endpoints[0].port
        assert udp.source_control((addr(2), port)) == []
        sender = _datapath(udp)._sender(_sa(addr(2), port, peer.getsockname()))
        assert isinstance(sender.sock, socket.socket)  # the socket itself, no wrapper
        rec = _record(sender)
        batch, single = _packets(10, 1400), _packets(1, 200)
        _send(sender, batch)
        _send(sender, single)
        assert _received(peer, 11) == [(p, (addr(2), port)) for p in batch + single]
        userspace_module._immediate(sender)(b"\x01slow path", sender.dest)
        assert _received(peer, 1) == [(b"\x01slow path", (addr(2), port))]
        assert rec.calls == [("sendmsg", 10, [(SOL_UDP, UDP_SEGMENT)]), ("sendto", 1, None), ("sendto", 1, None)]
    finally:
        udp.close()


async def test_ipv6_wildcard_names_the_source_with_ipv6_pktinfo():
    """IPv6: the control message is IPV6_PKTINFO with the SA's address, and the kernel takes it beside
    UDP_SEGMENT (on loopback ::1 is the only address, so the source itself proves nothing more)."""
    port = _free_port()
    udp = UdpSockets(lambda *a: None)
    udp.open(["::"], [port])
    try:
        [(level, kind, data)] = udp.source_control(("::1", port))
        assert (level, kind, data) == (socket.IPPROTO_IPV6, IPV6_PKTINFO,
                                       socket.inet_pton(socket.AF_INET6, "::1") + bytes(4))
        assert udp.source_control(("::", port)) == []  # no address asked: the kernel picks
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as peer6:
            peer6.bind(("::1", 0))
            peer6.settimeout(2)
            sender = _datapath(udp)._sender(_sa("::1", port, peer6.getsockname()[:2]))
            rec = _record(sender)
            pkts = _packets(5, 1200, last=100)
            _send(sender, pkts)
            assert _received(peer6, 6) == [(p, ("::1", port)) for p in pkts]
            assert rec.calls == [("sendmsg", 6, [(SOL_UDP, UDP_SEGMENT), (socket.IPPROTO_IPV6, IPV6_PKTINFO)])]
    finally:
        udp.close()
