"""Lifetimes become rekey requests; flush_ours removes exactly what is ours,
also from a fresh instance (the restart after a crash)."""

from __future__ import annotations

import re
import time

from engine.datapath.kernel import FlushResult, KernelDatapath
from engine.events import ChildSaDeleted, RekeyRequested
from engine.policy.model import ChildConfig, RuleConfig
from engine.policy.ts import TrafficSelector, parse_ts

from .lab import GCM256, LEFT_INNER, RIGHT_INNER, by_spi, child_pair, sh, with_changes


def collect(d, want: int, within: float = 10.0) -> list:
    events: list = []
    deadline = time.monotonic() + within
    while len(events) < want and time.monotonic() < deadline:
        events += [e for e in d.read_events(timeout=0.5) if isinstance(e, RekeyRequested)]
    return events


def test_soft_then_hard_byte_limit(lab, dp):
    left, right = dp
    pair = child_pair(GCM256)
    # 84-byte pings; the kernel checks a limit before counting a packet, so
    # the 4th packet sees 252 >= 200 (soft) and the 6th 420 >= 400 (hard).
    left.install_child(with_changes(pair.left, soft_bytes=200, hard_bytes=400))
    right.install_child(pair.right)
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=3) == 3
    assert collect(left, 1, within=1.0) == []

    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=1) == 1
    soft = collect(left, 1)
    assert [(e.spi_in, e.hard) for e in soft] == [(pair.left.spi_in, False)]
    assert "soft byte limit (200 bytes)" in soft[0].reason

    # the in SA reaches its soft limit too: still one request for the CHILD SA
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=3) == 1
    hard = collect(left, 1)
    assert [(e.spi_in, e.hard) for e in hard] == [(pair.left.spi_in, True)]
    assert "hard byte limit (400 bytes)" in hard[0].reason
    assert collect(left, 1, within=1.0) == []
    # the kernel deleted the outbound SA itself; removing the child still works
    assert f"0x{pair.left.spi_out:08x}" not in lab.xfrm(lab.left)
    assert pair.left.spi_out not in by_spi(left.counters())
    left.remove_child(ChildSaDeleted(ike_sa=1, connection="lab", child="lab", unique_id=1, reqid=1,
                                     protocol="esp", spi_in=pair.left.spi_in, spi_out=pair.left.spi_out,
                                     reason="expired"))
    # What may stay is the kernel's larval ACQUIRE state (SPI 0) from the pings
    # after the hard expiry; it cannot be deleted by SPI and expires by itself.
    spis = re.findall(r"spi (0x[0-9a-f]+)", lab.xfrm(lab.left))
    assert set(spis) <= {"0x00000000"}, spis


def test_flush_ours_removes_exactly_ours(lab, dp):
    left, right = dp
    pair = child_pair(GCM256, reqid=2)
    left.install_child(pair.left)
    left.install_trap(9, ChildConfig("t", local_ts=(TrafficSelector.host("198.51.100.2"),),
                                     remote_ts=(TrafficSelector.host("198.51.100.130"),)),
                      "192.0.2.1", "192.0.2.2")
    left.install_rules([RuleConfig("dns", "bypass", remote_ts=(parse_ts("0.0.0.0/0[udp/53]"),))])
    # someone else's SA and policy in the same namespace
    sh("ip", "-n", lab.left, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
       "spi", "0x300", "reqid", "5", "mode", "tunnel", "aead", "rfc4106(gcm(aes))", "0x" + "11" * 20, "128")
    sh("ip", "-n", lab.left, "xfrm", "policy", "add", "src", "198.51.100.64/26", "dst", "198.51.100.192/26",
       "dir", "out", "priority", "1000", "tmpl", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
       "reqid", "5", "mode", "tunnel")

    # a new instance knows nothing of the first one's state: as after a crash
    fresh = KernelDatapath(netns=lab.left)
    try:
        result = fresh.flush_ours()
    finally:
        fresh.close(flush=False)
    # child: out, in, fwd in, fwd out; trap: the same 4; rule: out, in, 2 fwd
    assert result == FlushResult(policies=12, sas=2)
    state = lab.xfrm(lab.left)
    assert "spi 0x00000300 reqid 5" in state
    assert state.count("proto esp") == 1
    policies = lab.xfrm(lab.left, "policy")
    assert "src 198.51.100.64/26 dst 198.51.100.192/26" in policies and "reqid 5" in policies
    assert policies.count("dir ") == 1
    assert left.flush_ours() == FlushResult(0, 0)
