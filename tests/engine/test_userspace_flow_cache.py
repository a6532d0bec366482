"""The userspace datapath's outbound flow cache (`SaPath.lookup`) must give each packet the decision
`SaPath.decide` gives it: a malformed packet must not decide for the well-formed packets of its
address pair."""

from __future__ import annotations

import os

import pytest
from scapy.all import UDP, IPv6, raw

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
