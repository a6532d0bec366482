"""The userspace datapath's outbound flow cache (`SaPath.lookup`) must give each packet the decision
`SaPath.decide` gives it: a malformed packet must not decide for the well-formed packets of its
address pair, and IPv6 packets whose ports sit behind extension headers (first fragments,
destination options) must be keyed by those ports when some selector looks at ports."""

from __future__ import annotations

import os

import pytest
from scapy.all import UDP, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, raw

from engine.datapath.userspace_path import Pair, SaPath
from engine.events import ChildKeys, ChildSaInstalled
from engine.policy.parse import parse_policy
from engine.policy.ts import parse_ts
from engine.secret import Secret

POLICY = """
[engine]
datapath = "userspace"
listen = ["192.0.2.2"]

[connections.gw]
local_addrs = ["192.0.2.2"]
remote_addrs = ["192.0.2.1"]
local = {{ auth = "psk", id = "gw.example" }}
remote = {{ auth = "psk" }}

[connections.gw.children.lan]
local_ts = ["2001:db8:1::/64"]
remote_ts = ["{remote}"]
"""
A, B = "2001:db8:1::5", "2001:db8:2::7"


def _path(remote: str) -> SaPath:
    path = SaPath(parse_policy(POLICY.format(remote=remote), load_secrets=False))
    keys = ChildKeys(Secret(os.urandom(36)), Secret(b""), Secret(os.urandom(36)), Secret(b""))
    path.install(ChildSaInstalled(
        ike_sa=1, connection="gw", child="lan", unique_id=1, reqid=1, protocol="esp", mode="tunnel",
        spi_in=0x1001, spi_out=0x9001, local_addr="192.0.2.2", remote_addr="192.0.2.1",
        local_ts=(parse_ts("2001:db8:1::/64"),), remote_ts=(parse_ts(remote),), encr_id=20,
        encr_key_length=256, integ_id=None, esn=False, keys=keys, encap=True, local_port=4500,
        remote_port=4500, initiator=False), lambda data, dest: None, ("192.0.2.1", 4500))
    return path


@pytest.mark.parametrize("remote", ["2001:db8:2::/64", "2001:db8:2::/64[udp]"], ids=["addresses", "ports"])
def test_a_malformed_packet_does_not_decide_for_its_address_pair(remote):
    # An IPv6 packet announcing a destination options header it does not carry (forwarded as it is
    # by a router, or written by a local raw socket): dropped as malformed, but the hosts' good
    # traffic keeps its SA (main cached "malformed" under the address pair).
    path = _path(remote)
    bad = raw(IPv6(src=A, dst=B, nh=60))
    good = raw(IPv6(src=A, dst=B) / UDP(sport=1000, dport=53) / b"q")
    assert path.lookup(bad) == "malformed"
    assert path.lookup(good).__class__ is Pair


@pytest.mark.parametrize("ext", [IPv6ExtHdrFragment(offset=0, m=1, id=5), IPv6ExtHdrDestOpt(), IPv6ExtHdrHopByHop()],
                         ids=["first-fragment", "destination-options", "hop-by-hop"])
def test_ipv6_ports_behind_extension_headers_key_the_flow(ext):
    # The child protects udp/53 only: a datagram to another port has no SA, whichever came first.
    for first, second in ((53, 9999), (9999, 53)):
        path = _path("2001:db8:2::/64[udp/53]")
        assert not path.addr_only
        for port in (first, second, first, second):
            pkt = raw(IPv6(src=A, dst=B) / ext.copy() / UDP(sport=1000, dport=port) / b"q")
            want = path.decide(pkt)
            assert (want.__class__ is Pair) == (port == 53)
            assert path.lookup(pkt) is want if port == 53 else path.lookup(pkt) == want


def test_icmpv6_is_keyed_by_type_and_code_not_its_checksum():
    # Each echo request has its own checksum where ports would be: keyed by it, every ping was a
    # cache miss (RFC 4301 §4.4.1.1: type and code are what selectors see).
    from scapy.all import ICMPv6EchoRequest
    path = _path("2001:db8:2::/64[udp]")
    assert not path.addr_only
    for seq in range(20):
        path.lookup(raw(IPv6(src=A, dst=B) / ICMPv6EchoRequest(id=7, seq=seq) / b"ping"))
    assert len(path.flows) == 1


def test_icmp_is_keyed_by_type_and_code_not_its_checksum():
    from scapy.all import ICMP, IP
    path = _path("2001:db8:2::/64[udp]")
    for seq in range(20):
        path.lookup(raw(IP(src="192.0.2.10", dst="192.0.2.20") / ICMP(id=7, seq=seq) / b"ping"))
    assert len(path.flows) == 1
    # Type and code still tell flows apart (a port-like selector on ICMP may name them).
    path.lookup(raw(IP(src="192.0.2.10", dst="192.0.2.20") / ICMP(type=13) / b"t"))
    assert len(path.flows) == 2
