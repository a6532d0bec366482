"""SPD entries: bypass and discard rules, traps and ACQUIRE, IKE socket bypass,
and refusing (with rollback) a policy that is not ours."""

from __future__ import annotations

import socket

import pytest

from engine.datapath.kernel import KernelDatapathError, socket_bypass
from engine.events import AcquireRequested, ChildSaDeleted
from engine.policy.model import ChildConfig, RuleConfig
from engine.policy.ts import TrafficSelector, parse_ts

from .lab import (
    GCM256,
    LEFT_INNER,
    LEFT_OUTER,
    RIGHT_INNER,
    RIGHT_OUTER,
    by_spi,
    child_pair,
    sh,
)


def rules_for(local: str, remote: str, bypass_icmp: bool) -> list[RuleConfig]:
    rules = [RuleConfig("drop-rest", "discard")]
    if bypass_icmp:
        rules.insert(0, RuleConfig("ping", "bypass", local_ts=(parse_ts(f"{local}/32[icmp]"),),
                                   remote_ts=(parse_ts(f"{remote}/32[icmp]"),)))
    return rules


def test_discard_and_bypass_rules(lab, dp):
    left, right = dp
    for d, local, remote in ((left, LEFT_INNER, RIGHT_INNER), (right, RIGHT_INNER, LEFT_INNER)):
        d.install_rules(rules_for(local, remote, bypass_icmp=False))
    # discard everything: the ping gets no reply
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=2) == 0
    assert "action block" in lab.xfrm(lab.left, "policy")

    # a more specific bypass passes the ping in clear (there is no SA at all)
    for d, local, remote in ((left, LEFT_INNER, RIGHT_INNER), (right, RIGHT_INNER, LEFT_INNER)):
        d.install_rules(rules_for(local, remote, bypass_icmp=True))
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=2) == 2
    assert lab.xfrm(lab.left) == ""

    # a tunnel for the same hosts, any protocol: ICMP still bypasses (more
    # specific), so the SAs count nothing ...
    pair = child_pair(GCM256)
    left.install_child(pair.left)
    right.install_child(pair.right)
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=2) == 2
    assert by_spi(left.counters())[pair.left.spi_out].packets == 0
    # ... and once the bypass rule is gone the tunnel beats discard-all
    for d, local, remote in ((left, LEFT_INNER, RIGHT_INNER), (right, RIGHT_INNER, LEFT_INNER)):
        d.install_rules(rules_for(local, remote, bypass_icmp=False))
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=2) == 2
    assert by_spi(left.counters())[pair.left.spi_out].packets == 2
    # other traffic is still discarded
    assert lab.ping(lab.left, RIGHT_OUTER, count=1) == 0

    left.install_rules([])
    right.install_rules([])
    assert "action block" not in lab.xfrm(lab.left, "policy")


def test_trap_policy_raises_acquire(lab, dp):
    left, right = dp
    child = ChildConfig("trapped", local_ts=(TrafficSelector.host(LEFT_INNER),),
                        remote_ts=(TrafficSelector.host(RIGHT_INNER),), start_action="trap")
    left.install_trap(7, child, LEFT_OUTER, RIGHT_OUTER)
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=1) == 0
    events = left.read_events(timeout=10)
    assert AcquireRequested(reqid=7, local_addr=LEFT_OUTER, remote_addr=RIGHT_OUTER) in events

    # the negotiated CHILD SA shares the trap's policies, and leaves them behind
    pair = child_pair(GCM256, reqid=7)
    policies = lab.xfrm(lab.left, "policy")
    left.install_child(pair.left)
    right.install_child(pair.right)
    assert lab.xfrm(lab.left, "policy") == policies
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=2) == 2
    left.remove_child(ChildSaDeleted(ike_sa=1, connection="lab", child="lab", unique_id=1, reqid=7,
                                     protocol="esp", spi_in=pair.left.spi_in, spi_out=pair.left.spi_out))
    assert lab.xfrm(lab.left, "policy") == policies
    left.remove_trap(7)
    assert lab.xfrm(lab.left, "policy") == ""


def _udp(ns: str, addr: str, port: int, bypass: bool) -> socket.socket:
    from pyroute2 import netns

    s = netns.create_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
    if bypass:
        socket_bypass(s)
    s.bind((addr, port))
    s.settimeout(2)
    return s


def test_socket_bypass_lets_ike_past_a_transport_policy(lab, dp):
    left, right = dp
    pair = child_pair(GCM256, mode="transport")  # 192.0.2.1 <-> 192.0.2.2, every protocol
    left.install_child(pair.left)
    right.install_child(pair.right)
    socks = []
    try:
        ike_l = _udp(lab.left, LEFT_OUTER, 500, bypass=True)
        ike_r = _udp(lab.right, RIGHT_OUTER, 500, bypass=True)
        plain_l = _udp(lab.left, LEFT_OUTER, 5001, bypass=False)
        plain_r = _udp(lab.right, RIGHT_OUTER, 5002, bypass=False)
        socks = [ike_l, ike_r, plain_l, plain_r]

        ike_l.sendto(b"IKE_SA_INIT", (RIGHT_OUTER, 500))
        assert ike_r.recvfrom(100)[0] == b"IKE_SA_INIT"
        assert by_spi(left.counters())[pair.left.spi_out].packets == 0  # in clear

        plain_l.sendto(b"protected", (RIGHT_OUTER, 500))
        assert ike_r.recvfrom(100)[0] == b"protected"
        assert by_spi(left.counters())[pair.left.spi_out].packets == 1  # through ESP

        # clear traffic to a socket without the bypass meets the inbound policy
        ike_l.sendto(b"clear", (RIGHT_OUTER, 5002))
        with pytest.raises(socket.timeout):
            plain_r.recvfrom(100)
    finally:
        for s in socks:
            s.close()


def test_install_child_refuses_a_foreign_policy_and_rolls_back(lab, dp):
    left, _ = dp
    sh("ip", "-n", lab.left, "xfrm", "policy", "add", "src", f"{LEFT_INNER}/32", "dst", f"{RIGHT_INNER}/32",
       "dir", "out", "priority", "100")
    pair = child_pair(GCM256)
    with pytest.raises(KernelDatapathError, match="did not install"):
        left.install_child(pair.left)
    assert lab.xfrm(lab.left) == ""  # both SAs removed again
    policies = lab.xfrm(lab.left, "policy")
    assert "priority 100" in policies
    assert "0x15e" not in policies and "priority 3670" not in policies and "priority 3671" not in policies
