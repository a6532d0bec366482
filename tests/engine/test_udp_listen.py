"""A `listen` list with a wildcard and addresses it covers (engine.runtime.udp.bind_addresses): the
engine's sockets are exclusive (no SO_REUSEADDR), so 0.0.0.0 and 127.x.y.1 on one port cannot both be
bound; the wildcard alone is bound for its family, says so once at INFO, and receives for the address
it covers. IPv6 sockets are IPV6_V6ONLY: :: covers IPv6 only.

The wildcard sockets listen on every address of this machine's root namespace for a moment, on a port
the kernel just handed out; every datagram here goes over loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket

import pytest

from engine.datapath.base import NullDatapath
from engine.runtime.engine import EngineRuntime
from engine.runtime.udp import UdpSockets, bind_addresses

from tests.engine.ike_pair import connection, mirror, policy
from tests.loopback import addr


def _free_port() -> int:
    """A port free on both wildcards (so the sockets under test can take it on either family)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s4:
            s4.bind(("0.0.0.0", 0))
            port = s4.getsockname()[1]
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6:
                s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    s6.bind(("::", port))
                except OSError:
                    continue
        return port
    raise AssertionError("no UDP port free on both 0.0.0.0 and ::")


async def _receive(udp: UdpSockets, got: list, dest: tuple[str, int]) -> None:
    family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"hello " + dest[0].encode(), dest)
    for _ in range(200):
        if got:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"nothing arrived for {dest}")


def _bound(udp: UdpSockets) -> list[tuple[str, int]]:
    return [(ep.addr, ep.port) for ep in udp.endpoints]


async def test_the_ipv4_wildcard_with_an_address_it_covers_binds_the_wildcard_only_and_says_so_once(caplog):
    port = _free_port()
    got = []
    udp = UdpSockets(lambda data, local, remote: got.append((data, local)))
    with caplog.at_level(logging.INFO, logger="engine.runtime"):
        udp.open(["0.0.0.0", addr(1), addr(2)], [port])
    try:
        assert _bound(udp) == [("0.0.0.0", port)]
        said = [r.getMessage() for r in caplog.records if "already receives" in r.getMessage()]
        assert said == [f"listen: 0.0.0.0 already receives what is sent to {addr(1)}, {addr(2)}; "
                        f"binding 0.0.0.0 only for IPv4"]
        await _receive(udp, got, (addr(2), port))
        assert got == [(b"hello " + addr(2).encode(), (addr(2), port))]  # its address, from IP_PKTINFO
    finally:
        udp.close()


async def test_ipv6_wildcard_covers_ipv6_only_v6only():
    """:: and ::1 on one port: :: only. An IPv4 address next to :: is bound on its own (IPV6_V6ONLY:
    the IPv6 wildcard never receives IPv4), and its datagrams reach its own socket."""
    port = _free_port()
    got = []
    udp = UdpSockets(lambda data, local, remote: got.append((data, local)))
    udp.open(["::", "::1", addr(1)], [port])
    try:
        assert _bound(udp) == [("::", port), (addr(1), port)]
        await _receive(udp, got, ("::1", port))
        assert got == [(b"hello ::1", ("::1", port))]
        got.clear()
        await _receive(udp, got, (addr(1), port))
        assert got == [(b"hello " + addr(1).encode(), (addr(1), port))]
        v6 = udp.endpoints[0].sock
        assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as peer:  # an answer names ::1 (IPV6_PKTINFO)
            peer.bind(("::1", 0))
            peer.settimeout(2)
            udp.send(b"answer", ("::1", port), peer.getsockname()[:2])
            data, src = peer.recvfrom(100)
            assert (data, src[:2]) == (b"answer", ("::1", port))
    finally:
        udp.close()


async def test_an_address_listed_twice_is_bound_once():
    port = _free_port()
    udp = UdpSockets(lambda *a: None)
    udp.open([addr(1), addr(1), "::1", "0:0::1"], [port])
    try:
        assert _bound(udp) == [(addr(1), port), ("::1", port)]
    finally:
        udp.close()


async def test_an_answer_on_the_wildcard_leaves_from_the_address_the_request_came_to():
    """Bound as 0.0.0.0 only, the engine still answers from 127.x.y.2 what came to 127.x.y.2 (before,
    that address had a socket of its own); left to the route the source would be 127.0.0.1."""
    port = _free_port()
    got = []
    udp = UdpSockets(lambda data, local, remote: got.append((local, remote)))
    udp.open(["0.0.0.0", addr(2)], [port])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind((addr(5), 0))
            peer.settimeout(2)
            peer.sendto(b"request", (addr(2), port))
            for _ in range(200):
                if got:
                    break
                await asyncio.sleep(0.005)
            [(local, remote)] = got
            assert local == (addr(2), port) and remote == peer.getsockname()
            udp.send(b"answer", local, remote)
            data, src = peer.recvfrom(100)
            assert (data, src) == (b"answer", (addr(2), port))
            udp.send(b"from the route", ("0.0.0.0", port), remote)  # no address asked: the kernel picks
            assert peer.recvfrom(100) == (b"from the route", ("127.0.0.1", port))
    finally:
        udp.close()


async def test_a_peer_negotiates_with_a_gateway_whose_listen_has_the_wildcard_and_its_address():
    """listen = ["0.0.0.0", "127.x.y.1"] (worked with SO_REUSEADDR, then failed to start): the gateway
    starts, the peer's requests to 127.x.y.1 are answered from 127.x.y.1, and neither side sees a NAT."""
    ike = natt = _free_port()
    while natt == ike:  # the first is not held while the second is drawn
        natt = _free_port()
    peer_conn = connection(local=addr(2), remote=addr(1), local_port=25731, remote_port=ike, remote_natt_port=natt)
    gw_conn = mirror(peer_conn, local_port=ike, remote_port=25731, remote_natt_port=25732)
    gw_policy = policy(gw_conn, address=addr(1), ike_port=ike, natt_port=natt)
    gw_policy = dataclasses.replace(gw_policy, engine=dataclasses.replace(gw_policy.engine,
                                                                          listen=("0.0.0.0", addr(1))))
    gw = EngineRuntime(gw_policy, datapath=NullDatapath())
    peer = EngineRuntime(policy(peer_conn, address=addr(2), ike_port=25731, natt_port=25732),
                         datapath=NullDatapath())
    heard_from = []
    receive = peer.sockets.on_datagram
    peer.sockets.on_datagram = lambda data, local, remote: (heard_from.append(remote), receive(data, local, remote))
    await gw.start()
    await peer.start()
    try:
        assert [(ep.addr, ep.port) for ep in gw.sockets.endpoints] == [("0.0.0.0", min(ike, natt)),
                                                                      ("0.0.0.0", max(ike, natt))]
        peer.initiate("tun")
        for _ in range(400):
            if [sa for sa in peer.endpoint.sas if sa.state.name == "ESTABLISHED"]:
                break
            await asyncio.sleep(0.01)
        [sa] = peer.endpoint.sas
        [gw_sa] = gw.endpoint.sas
        assert sa.state.name == gw_sa.state.name == "ESTABLISHED"
        assert sa.remote == (addr(1), ike) and gw_sa.local == (addr(1), ike)
        assert not sa.nat.any and not gw_sa.nat.any
        assert heard_from and set(heard_from) <= {(addr(1), ike), (addr(1), natt)}  # never the route's 127.0.0.1
    finally:
        await peer.stop(delete=False)
        await gw.stop(delete=False)


@pytest.mark.parametrize(("given", "bound"), [
    (["0.0.0.0", "192.0.2.1", "::", "2001:db8::1"], ["0.0.0.0", "::"]),
    (["192.0.2.1", "::0", "0.0.0.0"], ["::", "0.0.0.0"]),  # a wildcard later in the list covers earlier ones
    (["::", "192.0.2.1", "198.51.100.1"], ["::", "192.0.2.1", "198.51.100.1"]),
    (["0.0.0.0", "::1"], ["0.0.0.0", "::1"]),
    (["0.0.0.0", "0.0.0.0"], ["0.0.0.0"]),
])
def test_bind_addresses(given, bound):
    assert bind_addresses(given) == bound


async def test_an_address_the_machine_lacks_beside_the_wildcard_is_refused():
    """Alone it fails to bind (EADDRNOTAVAIL); beside 0.0.0.0 it is not bound, but the engine must not
    start saying the wildcard receives for it and then fail every answer from it."""
    udp = UdpSockets(lambda *a: None)
    with pytest.raises(OSError, match="cannot listen on 192.0.2.77"):
        udp.open(["0.0.0.0", "192.0.2.77"], [_free_port()])
    assert udp.endpoints == []


async def test_the_source_of_an_answer_is_kept_per_family():
    """One address asked on the IPv6 wildcard (no IPv6 source to name: the kernel picks) must not stop
    the IPv4 wildcard from naming it."""
    port = _free_port()
    udp = UdpSockets(lambda *a: None)
    udp.open(["0.0.0.0", "::"], [port])
    try:
        ep4, ep6 = (next(ep for ep in udp.endpoints if ep.family == f) for f in (socket.AF_INET, socket.AF_INET6))
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sink6, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            sink6.bind(("::1", 0))
            udp._sendto(ep6, b"v6", addr(2), sink6.getsockname()[:2])
            peer.bind((addr(5), 0))
            peer.settimeout(2)
            udp._sendto(ep4, b"v4", addr(2), peer.getsockname())
            assert peer.recvfrom(100) == (b"v4", (addr(2), port))
    finally:
        udp.close()
