"""The userspace datapath reports a NAT mapping change seen in ESP-in-UDP, as the kernel does with
XFRM_MSG_MAPPING (esp4/esp6 input after authentication; XFRMA_MTIMER_THRESH's rate limit): an
authenticated packet of a UDP-encapsulated SA from another (address, port) than its peer becomes
one NatMappingChanged, once per SA per change, again only after MAPPING_HOLD if nothing moved;
a forged or replayed packet from anywhere reports nothing; after ChildSaMoved the new source is
the expected one. Without sockets: a real UserspaceDatapath around a SaPath, fed as the NAT-T
socket's reader feeds it (receive_esp_batch with the datagrams' source)."""

from __future__ import annotations

import os
import socket

import pytest
from scapy.layers.inet import IP, TCP

from engine.datapath import natmap
from engine.datapath.userspace import UserspaceDatapath
from engine.datapath.userspace_io import open_esp
from engine.datapath.userspace_path import SaPath
from engine.events import ChildSaMoved, NatMappingChanged

from tests.engine.test_lab_packet_path import installed, policy

A, B = "198.51.100.1", "198.51.100.65"
PEER = ("127.0.0.1", 4500)
"""Where b's SAs expect a's ESP-in-UDP from (the `installed` helper's addresses)."""
REBOUND = ("127.0.0.1", 31000)


class _Runtime:
    def __init__(self):
        self.t = 100.0
        self.events = []

    def now(self):
        return self.t

    def datapath_event(self, ev):
        self.events.append(ev)


class _Io:
    def __init__(self):
        self.delivered = []

    def deliver_all(self, inners):
        self.delivered.extend(bytes(i) for i in inners)

    def deliver(self, inner):
        self.delivered.append(bytes(inner))


class _Sender:
    """What move() keeps of a sender: its destination and the pairs using it."""

    def __init__(self, dest):
        self.dest = dest
        self.key = ("udp", dest)
        self.pairs = set()
        self.pmtu = 0

    def add(self, data):
        pass

    def flush(self):
        pass


class Bench:
    """a's outbound SAs (plain objects) and b's UserspaceDatapath holding the matching inbound SAs."""

    def __init__(self, *, encap: bool = True, pairs=((0xA1, 0xB1),)):
        self.dp = UserspaceDatapath(policy(swap=True))
        self.dp.runtime = self.rt = _Runtime()
        self.dp.io = self.io = _Io()
        self.out = {}
        a = SaPath(policy())
        ports = {"encap": True, "local_port": 4500, "remote_port": 4500} if encap else {}
        for spi_a, spi_b in pairs:
            k1, k2 = os.urandom(36), os.urandom(36)
            pa = a.install(installed(spi_a, spi_b, k1, k2, **ports), lambda d, dest: None, ("127.0.0.2", 0))
            ev = installed(spi_b, spi_a, k2, k1, initiator=False, swap=True, **ports)
            pb = self.dp.path.install(ev, lambda d, dest: None, ("127.0.0.1", 4500))
            pb.sender = _Sender(("127.0.0.1", 4500))
            self.out[spi_b] = pa.outbound
        self.n = 0

    def esp(self, spi_b: int, count: int = 1) -> list[bytes]:
        """``count`` fresh ESP packets of a's SA towards b's ``spi_b``."""
        grams = []
        for _ in range(count):
            self.n += 1
            seg = bytes(IP(src=A, dst=B) / TCP(sport=4000 + self.n % 1000, dport=80, flags="A") / (b"x" * 40))
            grams.append(self.out[spi_b].protect(seg, self.rt.t))
        return grams

    def receive(self, grams, source):
        self.dp.receive_esp_batch([memoryview(bytearray(g)) for g in grams], ("127.0.0.2", 4500), source)
        return [e for e in self.rt.events if isinstance(e, NatMappingChanged)]


def test_packets_from_the_peer_report_nothing():
    b = Bench()
    assert b.receive(b.esp(0xB1, 4), PEER) == []
    assert len(b.io.delivered) == 4


def test_a_rebinding_source_is_reported_once_per_change():
    b = Bench()
    b.receive(b.esp(0xB1, 2), PEER)
    got = b.receive(b.esp(0xB1, 3), REBOUND)
    assert got == [NatMappingChanged(spi_in=0xB1, remote_addr="127.0.0.1", remote_port=31000)]
    assert len(b.io.delivered) == 5, "packets from the new mapping are still delivered"
    b.rt.t += 1
    assert len(b.receive(b.esp(0xB1, 3), REBOUND)) == 1, "the same change reported again at once"
    # Another change (the NAT rebinds again) is reported at once.
    assert len(b.receive(b.esp(0xB1), ("127.0.0.1", 32000))) == 2
    # The same unfollowed change again after the hold (the kernel's mapping_maxage).
    b.rt.t += natmap.MAPPING_HOLD + 1
    assert len(b.receive(b.esp(0xB1), ("127.0.0.1", 32000))) == 3


def test_after_the_move_the_new_mapping_is_the_peer():
    b = Bench()
    b.receive(b.esp(0xB1), REBOUND)
    b.dp._sender = lambda ev: _Sender((ev.remote_addr, ev.remote_port))
    b.dp.move(ChildSaMoved(1, "c", "k", 0xB1, 0xA1, "127.0.0.2", "127.0.0.1", 4500, 31000, True))
    assert b.dp.path.pairs[0xB1].dest == REBOUND
    b.rt.t += natmap.MAPPING_HOLD + 1
    b.receive(b.esp(0xB1, 2), REBOUND)
    got = b.receive(b.esp(0xB1), PEER)  # and back again: a change too
    assert [(e.remote_addr, e.remote_port) for e in got] == [REBOUND, PEER]


def test_forged_and_replayed_packets_from_a_new_source_report_nothing():
    b = Bench()
    good = b.esp(0xB1, 2)
    b.receive(good, PEER)
    forged = bytearray(b.esp(0xB1)[0])
    forged[-1] ^= 1
    unknown = b"\x00\x00\x0c\x0c" + bytes(60)
    assert b.receive([bytes(forged), unknown] + good, REBOUND) == []
    assert len(b.io.delivered) == 2


def test_a_batch_with_two_sas_reports_each():
    b = Bench(pairs=((0xA1, 0xB1), (0xA2, 0xB2)))
    grams = [g for pair in zip(b.esp(0xB1, 3), b.esp(0xB2, 3)) for g in pair]
    got = b.receive(grams, REBOUND)
    assert sorted(e.spi_in for e in got) == [0xB1, 0xB2]


def test_an_sa_without_udp_encapsulation_is_not_watched():
    b = Bench(encap=False)
    assert b.receive(b.esp(0xB1, 2), REBOUND) == []
    assert b.dp.path.natmap.expect == {}


def test_the_single_datagram_path_reports_too():
    b = Bench()
    (g,) = b.esp(0xB1)
    b.dp.receive_esp(g, ("127.0.0.2", 4500), REBOUND, b.rt.t)
    assert [type(e) for e in b.dp.drain_events()] == [NatMappingChanged]


def test_a_removed_sa_leaves_nothing_behind():
    b = Bench()
    b.receive(b.esp(0xB1), REBOUND)
    b.dp.path.remove(0xB1, linger=True)
    assert b.dp.path.natmap.expect == {} and b.dp.path.natmap._told == {}
    b.rt.t += natmap.MAPPING_HOLD + 1
    before = len(b.rt.events)
    b.receive(b.esp(0xB1), ("127.0.0.1", 33000))  # a lingering SA's packets in flight: not followed
    assert [e for e in b.rt.events[before:] if isinstance(e, NatMappingChanged)] == []


def test_raw_esp_is_never_a_mapping():
    # open_esp without a source (the raw sockets): nothing compared, nothing reported.
    b = Bench()
    inners: list = []
    open_esp(b.dp.path, b.esp(0xB1, 2), b.rt.t, inners, False)
    assert len(inners) == 2 and b.dp.drain_events() == []


def test_ipv6_peers_compare_as_the_socket_names_them():
    w = natmap.MappingWatch()
    w.set(7, "2001:DB8:0:0::1", 4500, True)
    assert w.seen(7, ("2001:db8::1", 4500), 1.0) is None
    assert w.seen(7, ("2001:db8::2", 4500), 1.0) is not None


def test_the_rekey_responders_pending_pair_is_watched_too():
    # While a rekeyed pair waits for the peer (SaPath.pending), every datagram takes the slow path.
    b = Bench()
    k1, k2 = os.urandom(36), os.urandom(36)
    ev = installed(0xB3, 0xA3, k2, k1, initiator=False, swap=True, rekeyed_from=0xB1, encap=True,
                   local_port=4500, remote_port=4500)
    b.dp.path.install(ev, lambda d, dest: None, PEER)
    assert b.dp.path.pending
    got = b.receive(b.esp(0xB1, 2), REBOUND)
    assert [e.spi_in for e in got] == [0xB1]


@pytest.mark.parametrize("n", [1, 64])
def test_the_check_is_per_run_not_per_packet(n, monkeypatch):
    # The receive path looks the SA's expected peer up once per run of packets of one SA.
    b = Bench()
    grams = b.esp(0xB1, n)
    lookups = []

    class Counting(dict):
        def get(self, *a):
            lookups.append(a)
            return dict.get(self, *a)

    b.dp.path.natmap.expect = Counting(b.dp.path.natmap.expect)
    b.receive(grams, PEER)
    assert len(lookups) == 1


# ---------------------------------------------------------------- through the NAT-T socket

async def test_a_rebinding_peer_over_the_real_nat_t_socket():
    """The runtime's NAT-T socket (recvmmsg, runs per peer) into the datapath: a's ESP first from one
    UDP port, then from another (its NAT mapped it anew): one NatMappingChanged naming the new port."""
    import asyncio

    from engine.datapath import mmsg
    from engine.runtime.udp import UdpSockets
    from tests.loopback import addr

    if not mmsg.recv_available:
        pytest.skip("libc without recvmmsg")
    here, peer = addr(21), addr(22)
    old = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    new = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    old.bind((peer, 0))
    new.bind((peer, 0))
    b = Bench(pairs=((0xA1000, 0xB1000),))  # SPIs 1-255 are reserved: the reader takes them for IKE
    pair = b.dp.path.pairs[0xB1000]
    b.dp.path.natmap.set(0xB1000, peer, old.getsockname()[1], True)  # as if installed towards that mapping
    assert pair.ev.encap
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((here, 0))
        port = probe.getsockname()[1]  # free on this process's own loopback address
    udp = UdpSockets(lambda data, local, remote: None)
    udp.esp_sink = b.dp.receive_esp_batch
    udp.natt_port = port
    try:
        udp.open([here], [port])

        async def until(cond):
            for _ in range(300):
                if cond():
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"timed out: {udp.handler_errors} handler errors")

        for g in b.esp(0xB1000, 3):
            old.sendto(g, (here, port))
        await until(lambda: len(b.io.delivered) == 3)
        assert [e for e in b.rt.events if isinstance(e, NatMappingChanged)] == []
        for g in b.esp(0xB1000, 3):
            new.sendto(g, (here, port))
        await until(lambda: len(b.io.delivered) == 6)
        got = [e for e in b.rt.events if isinstance(e, NatMappingChanged)]
        assert got == [NatMappingChanged(spi_in=0xB1000, remote_addr=peer, remote_port=new.getsockname()[1])]
    finally:
        udp.close()
        old.close()
        new.close()


# ---------------------------------------------------------------- datapath, runtime and engine together

def test_the_gateway_follows_a_client_whose_nat_rebinds_before_its_next_ike_message():
    """A negotiated pair (client behind a NAT, sans-IO), the gateway's runtime and userspace datapath:
    the client's ESP arrives from a new NAT port; the datapath reports it, the engine moves the IKE SA
    and its CHILD SA, the datapath sends to the new port from then on. No IKE message in between."""
    from engine.events import ChildSaInstalled
    from engine.runtime.engine import EngineRuntime
    from tests.engine.test_mobike_nat_mapping_dpd import PUBLIC
    from tests.engine.test_nat_mapping_esp import natted

    p, _ = natted(False)
    (client_ev,) = p.of("a", ChildSaInstalled)
    (gw_ev,) = p.of("b", ChildSaInstalled)
    assert gw_ev.encap and (gw_ev.remote_addr, gw_ev.remote_port) == (PUBLIC, 24500)
    dp = UserspaceDatapath(p.b.policy)
    rt = EngineRuntime(p.b.policy, datapath=dp)
    rt.endpoint = p.b
    dp.runtime, dp.io = rt, _Io()
    dp._sender = lambda ev: _Sender((ev.remote_addr, ev.remote_port))
    pair = dp.path.install(gw_ev, lambda d, dest: None, (PUBLIC, 24500))
    pair.sender = _Sender((PUBLIC, 24500))
    client = SaPath(p.a.policy)
    out = client.install(client_ev, lambda d, dest: None, ("192.0.2.2", 4500)).outbound
    A_IN, B_IN = "198.51.100.1", "198.51.100.129"  # the child's selectors (tests.engine.ike_pair.child)

    def esp():
        return out.protect(bytes(IP(src=A_IN, dst=B_IN) / TCP(sport=4000, dport=80, flags="A") / (b"y" * 20)),
                           rt.now())

    dp.receive_esp_batch([esp()], (gw_ev.local_addr, 4500), (PUBLIC, 24500))
    assert dp.path.pairs[gw_ev.spi_in].dest == (PUBLIC, 24500) and len(dp.io.delivered) == 1
    dp.receive_esp_batch([esp(), esp()], (gw_ev.local_addr, 4500), (PUBLIC, 31000))
    assert len(dp.io.delivered) == 3
    assert p.b.sas[0].remote == (PUBLIC, 31000), "the gateway's IKE SA still points at the old mapping"
    assert dp.path.pairs[gw_ev.spi_in].dest == (PUBLIC, 31000), "the tunnel still sends to the old mapping"
    assert dp.path.natmap.expect[gw_ev.spi_in] == (PUBLIC, 31000)
