"""The runtime's UDP sockets own their address and port: a second engine (another
process's lab, a test run next to ours) that asks for them gets a clear error
instead of silently taking every datagram sent there."""

from __future__ import annotations

import socket

import pytest

from engine.runtime.udp import UdpSockets

LO = "127.0.0.1"


async def test_a_second_listener_on_the_same_address_and_port_is_refused_and_the_first_keeps_its_datagrams():
    got: list[bytes] = []
    first = UdpSockets(lambda data, local, remote: got.append(data))
    first.open([LO], [0])
    second = UdpSockets(lambda data, local, remote: None)
    try:
        port = first.endpoints[0].port
        with pytest.raises(OSError, match=f"cannot listen on {LO} port {port}"):
            second.open([LO], [port])
        assert not second.endpoints
        # The kernel still delivers to the first socket (with a shared bind it went to the second).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"to the first", (LO, port))
        data, _anc, _flags, _src = first.endpoints[0].sock.recvmsg(100, 96)
        assert data == b"to the first"
    finally:
        second.close()
        first.close()
