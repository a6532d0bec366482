"""KernelDatapath against this machine's kernel, in a throw-away namespace.

Policies need only XFRM, which every Linux build with IPsec has; SAs need
ESP/AH, which this (Firecracker) kernel lacks: there the install must fail
cleanly, leaving nothing behind. The full datapath runs in the qemu guest
(test_kernel_vm.py).
"""

from __future__ import annotations

import os
import socket

import pytest

from engine.datapath.kernel import (
    FlushResult,
    KernelDatapath,
    KernelDatapathError,
    enable_udp_encap,
    socket_bypass,
)
from engine.datapath.kernel_policy import PRIORITY_BASE
from engine.events import ChildKeys, ChildSaInstalled
from engine.policy.model import ChildConfig, RuleConfig
from engine.policy.ts import TrafficSelector, parse_ts
from engine.secret import Secret

from .hostns import ip, our_policies


@pytest.fixture
def dp(netns):
    d = KernelDatapath(netns=netns)
    yield d
    d.close()


RULES = [
    RuleConfig("dns", "bypass", remote_ts=(parse_ts("0.0.0.0/0[udp/53]"),)),
    RuleConfig("ssh", "bypass", local_ts=(parse_ts("198.51.100.0/25[tcp/22]"),)),
    RuleConfig("rest", "discard"),
]


def test_rules_install_replace_and_flush(netns, dp):
    ip("-n", netns, "xfrm", "policy", "add", "src", "198.51.100.64/26", "dst", "198.51.100.192/26",
        "dir", "out", "priority", "1000")
    dp.install_rules(RULES)
    # dns: out, in, 2 fwd; ssh: the same; rest: out, in, one fwd (both ways are one selector)
    assert len(our_policies(netns)) == 11
    policies = ip("-n", netns, "xfrm", "policy")
    assert "proto udp dport 53" in policies and "proto tcp sport 22" in policies and "action block" in policies

    dp.install_rules(RULES[1:])  # dns gone
    assert len(our_policies(netns)) == 7
    assert "dport 53" not in ip("-n", netns, "xfrm", "policy")

    # changing an action in place keeps the entry count and flips the kernel's action
    dp.install_rules([RULES[1], RuleConfig("rest", "bypass")])
    assert len(our_policies(netns)) == 7
    assert "action block" not in ip("-n", netns, "xfrm", "policy")

    # an explicit priority lands at the start of our band
    dp.install_rules([RuleConfig("first", "discard", local_ts=(parse_ts("198.51.100.7"),), priority=3)])
    assert f"priority {PRIORITY_BASE + 3}" in ip("-n", netns, "xfrm", "policy")

    assert dp.flush_ours() == FlushResult(policies=4, sas=0)
    remaining = ip("-n", netns, "xfrm", "policy")
    assert "src 198.51.100.64/26 dst 198.51.100.192/26" in remaining and "priority 1000" in remaining
    assert our_policies(netns) == []


def test_flush_after_a_crash_finds_our_policies_by_their_tag(netns, dp):
    dp.install_rules(RULES)
    child = ChildConfig("trap", local_ts=(parse_ts("198.51.100.1"),), remote_ts=(parse_ts("198.51.100.129"),))
    dp.install_trap(3, child, "192.0.2.1", "192.0.2.2")
    assert "reqid 367001603" in ip("-n", netns, "xfrm", "policy")
    fresh = KernelDatapath(netns=netns)  # knows nothing of dp's memory
    try:
        assert fresh.flush_ours() == FlushResult(policies=11 + 4, sas=0)
    finally:
        fresh.close(flush=False)
    assert our_policies(netns) == []


def test_trap_and_rule_conflicts_are_refused(netns, dp):
    child = ChildConfig("trap", local_ts=(TrafficSelector.any(),), remote_ts=(TrafficSelector.any(),))
    dp.install_rules([RuleConfig("rest", "discard")])
    before = ip("-n", netns, "xfrm", "policy")
    with pytest.raises(KernelDatapathError, match="conflicts with .* of rule 'rest'"):
        dp.install_trap(3, child, "192.0.2.1", "192.0.2.2")
    assert ip("-n", netns, "xfrm", "policy") == before  # the trap's other policies were rolled back

    # a policy someone else owns is never replaced
    ip("-n", netns, "xfrm", "policy", "add", "src", "198.51.100.129/32", "dst", "198.51.100.1/32",
        "dir", "in", "priority", "50")
    narrow = ChildConfig("t2", local_ts=(parse_ts("198.51.100.1"),), remote_ts=(parse_ts("198.51.100.129"),))
    with pytest.raises(KernelDatapathError, match="did not install .priority 50."):
        dp.install_trap(4, narrow, "192.0.2.1", "192.0.2.2")
    assert "reqid 367001604" not in ip("-n", netns, "xfrm", "policy")


def test_install_child_without_kernel_esp_leaves_nothing(netns, dp):
    ev = ChildSaInstalled(
        ike_sa=1, connection="c", child="net", unique_id=1, reqid=1, protocol="esp", mode="tunnel",
        spi_in=0xC0DE0001, spi_out=0xC0DE1001, local_addr="192.0.2.1", remote_addr="192.0.2.2",
        local_ts=(parse_ts("198.51.100.1"),), remote_ts=(parse_ts("198.51.100.129"),),
        encr_id=20, encr_key_length=256, integ_id=None, esn=False,
        keys=ChildKeys(Secret(b"\x01" * 36), Secret(b""), Secret(b"\x02" * 36), Secret(b"")))
    try:
        dp.install_child(ev)
    except KernelDatapathError as exc:
        # this kernel has no ESP (or no GCM): a clear error, and nothing half-installed
        assert "NEWSA esp spi 0xc0de0001 dst 192.0.2.1" in str(exc)
        assert "lacks ESP/AH or the algorithm" in str(exc)
        assert ip("-n", netns, "xfrm", "state") == ""
        assert our_policies(netns) == []
    else:
        # a kernel with ESP: both SAs and the policies are there, and go with flush
        assert "spi 0xc0de1001" in ip("-n", netns, "xfrm", "state")
        assert len(our_policies(netns)) == 4
        assert dp.flush_ours() == FlushResult(policies=4, sas=2)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_socket_bypass_and_udp_encap_are_accepted(family):
    if os.geteuid() != 0:
        pytest.skip("IP_XFRM_POLICY needs CAP_NET_ADMIN: run pytest as root")
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        socket_bypass(s)
        enable_udp_encap(s)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as u, pytest.raises(ValueError):
        socket_bypass(u)
