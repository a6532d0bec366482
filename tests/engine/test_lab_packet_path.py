"""The per-packet pieces under the lab and userspace datapaths, without sockets:
SaPath (SPD + SA selection, drops, make-before-break rekey), the lab's packet
builders and host stack (checked with scapy). The TUN super-packet helpers
(segmentation, coalescing) are tested in test_offload.py."""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from engine.crypto.transforms import EncrId
from engine.datapath.lab import (
    HostStack,
    TrafficGenerator,
    icmp_echo,
    tcp_packet,
    udp_packet,
)
from engine.datapath.userspace_path import SaPath
from engine.esp import ip
from engine.events import ChildKeys, ChildSaInstalled, PacketSample, RekeyRequested
from engine.policy.parse import parse_policy
from engine.policy.ts import parse_ts
from engine.secret import Secret

A = bytes([198, 51, 100, 1])
B = bytes([198, 51, 100, 65])

POLICY = """
[engine]
datapath = "lab"
listen = ["127.0.0.1"]

[connections.c]
local_addrs = ["127.0.0.1"]
remote_addrs = ["127.0.0.2"]
local = { auth = "psk", id = "a.example" }
remote = { auth = "psk", id = "b.example" }

[connections.c.children.k]
local_ts = ["198.51.100.0/26"]
remote_ts = ["198.51.100.64/26"]

[rules.no-printers]
action = "discard"
local_ts = ["198.51.100.0/26"]
remote_ts = ["198.51.100.96/27"]   # more specific than the child: wins
"""


def policy(text: str = POLICY, swap: bool = False):
    if swap:
        text = text.replace("198.51.100.0/26", "X").replace("198.51.100.64/26", "198.51.100.0/26") \
            .replace("X", "198.51.100.64/26")
    return parse_policy(text, load_secrets=False)


def installed(spi_in, spi_out, keys_in, keys_out, *, initiator=True, rekeyed_from=None, swap=False, **kw):
    lts, rts = ("198.51.100.0/26", "198.51.100.64/26")[::-1 if swap else 1]
    keys = ChildKeys(Secret(keys_in), Secret(b""), Secret(keys_out), Secret(b""))
    return ChildSaInstalled(
        ike_sa=1, connection="c", child="k", unique_id=spi_in, reqid=1, protocol="esp", mode="tunnel",
        spi_in=spi_in, spi_out=spi_out, local_addr="127.0.0.2" if swap else "127.0.0.1",
        remote_addr="127.0.0.1" if swap else "127.0.0.2", local_ts=(parse_ts(lts),), remote_ts=(parse_ts(rts),),
        encr_id=EncrId.AES_GCM_16, encr_key_length=256, integ_id=None, esn=False, keys=keys,
        rekeyed_from=rekeyed_from, initiator=initiator, **kw)


class Link:
    """Two SaPaths (a: 198.51.100.0/26, b: 198.51.100.64/26) wired back to back."""

    def __init__(self) -> None:
        self.a = SaPath(policy())
        self.b = SaPath(policy(swap=True))
        self.wire: list[tuple[str, bytes]] = []
        self.pairs = []

    def sender(self, name):
        return lambda data, dest: self.wire.append((name, data))

    def install(self, spi_a, spi_b, *, a_initiator=True, rekeyed_from=None, **kw):
        k1, k2 = os.urandom(36), os.urandom(36)
        old_a, old_b = rekeyed_from if rekeyed_from else (None, None)
        pa = self.a.install(installed(spi_a, spi_b, k1, k2, initiator=a_initiator, rekeyed_from=old_a, **kw),
                            self.sender("a"), ("127.0.0.2", 0))
        pb = self.b.install(installed(spi_b, spi_a, k2, k1, initiator=not a_initiator, rekeyed_from=old_b,
                                      swap=True, **kw), self.sender("b"), ("127.0.0.1", 0))
        return pa, pb

    def deliver(self):
        got = []
        while self.wire:
            name, data = self.wire.pop(0)
            got.append((name, int.from_bytes(data[:4], "big"),
                        (self.b if name == "a" else self.a).input(data, 1.0)))
        return got


def test_protect_and_deliver_both_ways():
    link = Link()
    link.install(0xA1, 0xB1)
    p = icmp_echo(A, B, 1, 1, b"x" * 56)
    assert link.a.output(p, 1.0)
    [(who, spi, inner)] = link.deliver()
    assert (who, spi, inner) == ("a", 0xB1, p)
    r = icmp_echo(B, A, 1, 1, b"x" * 56, reply=True)
    assert link.b.output(r, 1.0)
    assert link.deliver() == [("b", 0xA1, r)]
    sas, drops = link.a.counters()
    assert {(c.direction, c.packets, c.bytes) for c in sas} == {("out", 1, len(p)), ("in", 1, len(r))}
    assert drops == {}


def test_outbound_drops_are_counted_by_reason():
    link = Link()
    link.install(0xA1, 0xB1)
    printer = bytes([198, 51, 100, 100])
    assert not link.a.output(icmp_echo(A, printer, 1, 1, b""), 1.0)  # discard rule
    assert not link.a.output(icmp_echo(A, bytes([203, 0, 113, 9]), 1, 1, b""), 1.0)  # nothing protects it
    assert not link.a.output(b"\x45" + bytes(5), 1.0)
    assert link.a.counters()[1] == {"discard_rule": 1, "no_sa": 1, "malformed": 1}
    assert link.wire == []
    assert [e.verdict for e in link.a.drain()] == []  # sampling is off by default


@pytest.mark.parametrize("linger", [False, True])
def test_a_removed_sas_drops_stay_in_the_datapaths_drops(linger):
    # A rekeyed SA lingers, then goes: the packets it dropped must still be counted somewhere.
    link = Link()
    link.install(0xA1, 0xB1)
    assert link.a.output(icmp_echo(A, B, 1, 1, b"x"), 1.0)
    name, data = link.wire.pop(0)
    assert link.b.input(data, 1.0) is not None and link.b.input(data, 1.0) is None  # replayed
    assert link.b.counters()[1] == {} and sum(n for c in link.b.counters()[0] for _r, n in c.drops) == 1
    link.b.remove(0xB1, linger=linger)
    if linger:
        assert link.b.input(data, 1.0) is None  # still checked while it lingers
        link.b.forget(0xB1)
    assert link.b.counters() == ([], {"replay": 2 if linger else 1})


def test_inbound_outside_the_selectors_is_a_policy_mismatch():
    link = Link()
    pa, _pb = link.install(0xA1, 0xB1)
    # b forges a packet from outside its selectors on the real SA: a refuses it after decryption.
    spoof = icmp_echo(bytes([198, 51, 100, 200]), A, 1, 1, b"")
    wire = _pb.outbound.protect(spoof, 1.0)
    assert link.a.input(wire, 1.0) is None
    assert dict(pa.inbound.counters().drops) == {"policy_mismatch": 1}
    assert link.a.input(wire, 1.0) is None  # and a copy is a replay
    assert dict(pa.inbound.counters().drops) == {"policy_mismatch": 1, "replay": 1}
    assert link.a.input(b"\x00\x00\x00\x99" + bytes(40), 1.0) is None
    assert link.a.counters()[1] == {"no_sa": 1}


def test_rekey_responder_keeps_the_old_outbound_sa_until_the_peer_switches():
    link = Link()
    link.install(0xA1, 0xB1)
    # a answers b's rekey: a installs first (as responder), b only when the response arrives.
    k1, k2 = os.urandom(36), os.urandom(36)
    link.a.install(installed(0xA2, 0xB2, k1, k2, initiator=False, rekeyed_from=0xA1), link.sender("a"), None)
    p = icmp_echo(A, B, 1, 2, b"")
    link.a.output(p, 1.0)
    assert [(w, spi) for w, spi, _ in link.deliver()] == [("a", 0xB1)]  # still the old SA: b lacks the new one
    link.b.install(installed(0xB2, 0xA2, k2, k1, initiator=True, rekeyed_from=0xB1, swap=True),
                   link.sender("b"), None)
    link.b.output(icmp_echo(B, A, 1, 2, b"", reply=True), 1.0)
    assert [(w, spi) for w, spi, inner in link.deliver() if inner] == [("b", 0xA2)]  # b switched at once
    link.a.output(p, 1.0)
    assert [(w, spi) for w, spi, inner in link.deliver() if inner] == [("a", 0xB2)]  # a followed b's first packet
    # The old pair goes; its inbound half lingers for packets in flight, then is forgotten.
    stale = link.b.pairs[0xB1].outbound.protect(icmp_echo(B, A, 1, 3, b"", reply=True), 1.0)
    link.a.remove(0xA1, linger=True)
    assert link.a.input(stale, 1.0) is not None
    link.a.forget(0xA1)
    assert link.a.input(stale, 1.0) is None and link.a.counters()[1] == {"no_sa": 1}


def test_rekey_responder_switches_when_the_old_sa_is_deleted():
    link = Link()
    link.install(0xA1, 0xB1)
    k1, k2 = os.urandom(36), os.urandom(36)
    link.a.install(installed(0xA2, 0xB2, k1, k2, initiator=False, rekeyed_from=0xA1), link.sender("a"), None)
    link.a.remove(0xA1)
    link.a.output(icmp_echo(A, B, 1, 2, b""), 1.0)
    assert [spi for _w, spi, _inner in link.deliver()] == [0xB2]


def test_soft_packet_lifetime_raises_one_rekey_request():
    link = Link()
    link.install(0xA1, 0xB1, soft_packets=3)
    for i in range(5):
        link.a.output(icmp_echo(A, B, 1, i, b""), 1.0)
    events = [e for e in link.a.drain() if isinstance(e, RekeyRequested)]
    assert [(e.spi_in, e.hard) for e in events] == [(0xA1, False)]


def test_lab_packets_are_valid_for_scapy():
    p = IP(icmp_echo(A, B, 7, 9, b"hello"))
    assert p[ICMP].type == 8 and p[ICMP].id == 7 and p[ICMP].seq == 9
    for pkt in (p, IP(udp_packet(A, B, 4000, 53, b"q" * 33)), IP(tcp_packet(A, B, 4000, 443, 5, 6, 0x18, b"d" * 99))):
        raw = bytes(pkt)
        clean = pkt.copy()
        del clean[IP].chksum
        for layer in (ICMP, UDP, TCP):
            if layer in clean:
                del clean[layer].chksum
        assert bytes(clean) == raw  # scapy computes the same checksums
    a6, b6 = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02")
    q = IPv6(icmp_echo(a6, b6, 1, 2, b"six"))
    raw = bytes(q)
    del q[ICMPv6EchoRequest].cksum
    assert bytes(q) == raw


def test_host_stack_answers_requests_only():
    out = []
    host = HostStack(lambda pkt, now: out.append(pkt))
    host.receive(icmp_echo(A, B, 1, 1, b"ping"), 0.0)
    host.receive(udp_packet(A, B, 40000, 53, b"query"), 0.0)
    host.receive(tcp_packet(A, B, 33000, 443, 0, 0, 0x02), 0.0)
    host.receive(tcp_packet(A, B, 33000, 443, 1, 1001, 0x18, b"x" * 10), 0.0)
    host.receive(icmp_echo(A, B, 1, 1, b"pong", reply=True), 0.0)
    host.receive(tcp_packet(A, B, 443, 33000, 0, 11, 0x10), 0.0)
    replies = [IP(p) for p in out]
    assert [r.src for r in replies] == ["198.51.100.65"] * 4
    assert replies[0][ICMP].type == 0 and replies[1][UDP].sport == 53
    assert replies[2][TCP].flags == "SA" and replies[2][TCP].ack == 1
    assert replies[3][TCP].flags == "A" and replies[3][TCP].ack == 11


def test_generator_spreads_packets_over_flow_kinds():
    link = Link()
    link.install(0xA1, 0xB1)
    gen = TrafficGenerator(link.a, link.a.output, rate=90, flows=("icmp", "udp", "tcp"))
    assert sum(gen.tick(0.2, 1.0 + i * 0.2) for i in range(5)) == 90
    assert gen.tick(10.0, 12.0) == 18  # after a stall: at most 0.2 s of traffic at once
    link.deliver()
    gen.stats.clear()
    assert sum(gen.tick(0.2, 13.0 + i * 0.2) for i in range(5)) == 90
    assert gen.stats["sent_icmp"] == gen.stats["sent_udp"] == gen.stats["sent_tcp"] == 30
    inner = [IP(x) for _w, _s, x in link.deliver()]
    assert {p.dst for p in inner} == {"198.51.100.65", "198.51.100.66", "198.51.100.67"}
    assert len(inner) == 90 and all(p.src == "198.51.100.1" and p.dst.startswith("198.51.100.6") for p in inner)


def test_time_based_sampling_takes_one_packet_per_arming():
    link = Link()
    link.install(0xA1, 0xB1)
    for _round in range(2):
        link.a.arm_samples()
        for i in range(20):
            link.a.output(icmp_echo(A, B, 1, i, b""), 1.0)
        samples = [e for e in link.a.drain() if isinstance(e, PacketSample)]
        assert [(s.direction, s.spi) for s in samples] == [("out", 0xB1)]
        assert samples[0].inner[20] == 8 and int.from_bytes(samples[0].outer[:4], "big") == 0xB1
    link.a.arm_samples()
    link.a.output(icmp_echo(A, bytes([203, 0, 113, 1]), 1, 1, b""), 2.0)
    link.a.output(icmp_echo(A, bytes([203, 0, 113, 1]), 1, 1, b""), 2.0)
    assert [(e.direction, e.verdict) for e in link.a.drain()] == [("drop", "no_sa")]
