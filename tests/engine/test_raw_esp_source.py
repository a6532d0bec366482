"""Raw ESP (no UDP) from the userspace datapath leaves from the SA's local address, whatever the
routing table would pick: IP_PKTINFO on IPv4, IPV6_PKTINFO on IPv6 (a host with several IPv6
addresses, temporary ones among them, would otherwise send from the one the route picks, and the
peer drops ESP from an address that is not its SA's). Both the sendmmsg batch and the one-by-one
path carry it.

Real raw sockets on loopback (root): on IPv4 the kernel would pick 127.0.0.1 towards any 127.x.y.z,
so a packet that arrives from 127.x.y.2 was sent naming that address. On IPv6 ::1 is loopback's only
address: the packet arriving proves the kernel takes the control message, the recorded call what
it names."""

from __future__ import annotations

import os
import select
import socket
from types import SimpleNamespace

import pytest

from engine.datapath import mmsg
from engine.datapath.userspace import UserspaceDatapath
from engine.datapath.userspace_io import RawSender
from engine.policy.parse import parse_policy

from tests.loopback import addr

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ESP sockets need root: run pytest as root")

POLICY = """
[engine]
datapath = "lab"
listen = ["127.0.0.1"]
"""


class _Io:
    def __init__(self) -> None:
        self.dirty: list = []
        self.failed: list = []

    def send_failed(self, exc, dest, n) -> None:
        self.failed.append((exc, dest, n))

    def learn_pmtu(self, sender) -> bool:
        return False


class _Recording:
    """The raw socket, its sends recorded (the control messages' level and type and data)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.family = sock.family
        self.calls: list = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def sendto(self, data, dest):
        self.calls.append(("sendto", None))
        return self.sock.sendto(data, dest)

    def sendmsg(self, bufs, anc, flags, dest):
        self.calls.append(("sendmsg", list(anc)))
        return self.sock.sendmsg(bufs, anc, flags, dest)


def _sender(family: int, local: str, remote: str, batch: bool):
    raw = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ESP)
    rec = _Recording(raw)
    dp = UserspaceDatapath(parse_policy(POLICY, load_secrets=False))
    dp.io = _Io()
    dp._raw[(family, socket.IPPROTO_ESP)] = rec
    sa = SimpleNamespace(protocol="esp", mode="tunnel", encap=False, local_addr=local, local_port=0,
                         remote_addr=remote, remote_port=0)
    sender = dp._sender(sa)
    assert isinstance(sender, RawSender)
    if batch:
        assert sender.batch is not None or not mmsg.available
    else:
        sender.batch = None
    return sender, rec, raw


def _receive(family: int, bind: str, spi: bytes, n: int) -> tuple[socket.socket, callable]:
    rx = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ESP)
    rx.bind((bind, 0))

    def got() -> list[str]:
        sources = []
        while len(sources) < n:
            if not select.select([rx], [], [], 2)[0]:
                break
            data, src = rx.recvfrom(65535)
            if family == socket.AF_INET:
                data = data[(data[0] & 15) * 4:]  # IPv4 raw sockets read the IP header too
            if data[:4] == spi:  # another run's ESP on loopback is not ours
                sources.append(src[0])
        return sources
    return rx, got


@pytest.mark.parametrize("batch", [True, False], ids=["sendmmsg", "one-by-one"])
def test_ipv4_raw_esp_leaves_from_the_sas_address(batch):
    spi = os.urandom(4)
    rx, got = _receive(socket.AF_INET, addr(5), spi, 3)
    sender, rec, raw = _sender(socket.AF_INET, addr(2), addr(5), batch)
    try:
        for i in range(3):
            sender.add(spi + bytes(4) + bytes([i]) * 60)
        if sender.batch is not None:
            sender.flush()
        assert got() == [addr(2)] * 3
        if sender.batch is None:
            assert {c[0] for c in rec.calls} == {"sendmsg"}
            assert all(level == socket.IPPROTO_IP and kind == mmsg.IP_PKTINFO
                       and data[4:8] == socket.inet_aton(addr(2)) for _, anc in rec.calls for level, kind, data in anc)
    finally:
        rx.close()
        raw.close()


@pytest.mark.parametrize("batch", [True, False], ids=["sendmmsg", "one-by-one"])
def test_ipv6_raw_esp_names_the_sas_address_with_ipv6_pktinfo(batch):
    spi = os.urandom(4)
    rx, got = _receive(socket.AF_INET6, "::1", spi, 3)
    sender, rec, raw = _sender(socket.AF_INET6, "::1", "::1", batch)
    try:
        # the control message the batch carries, or each sendmsg's
        want = [(socket.IPPROTO_IPV6, mmsg.IPV6_PKTINFO, socket.inet_pton(socket.AF_INET6, "::1") + bytes(4))]
        if sender.batch is not None:
            assert sender.batch._control.raw == mmsg.control_message(*want[0])
        for i in range(3):
            sender.add(spi + bytes(4) + bytes([i]) * 60)
        if sender.batch is not None:
            sender.flush()
        else:
            assert rec.calls == [("sendmsg", want)] * 3
        assert got() == ["::1"] * 3
    finally:
        rx.close()
        raw.close()
