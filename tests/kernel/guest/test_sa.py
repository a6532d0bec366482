"""CHILD SAs installed by KernelDatapath carry real traffic (ESP, AH, tunnel,
transport, ESP-in-UDP), show the keys we gave, and count what they carried."""

from __future__ import annotations

import socket

import pytest

from engine.datapath.kernel import enable_udp_encap
from engine.events import ChildSaDeleted

from .lab import (
    AH_SHA256,
    CBC128_SHA256,
    CHACHA20,
    GCM256,
    LEFT_INNER,
    LEFT_OUTER,
    RIGHT_INNER,
    RIGHT_OUTER,
    by_spi,
    child_pair,
)


def install(dp, pair):
    left, right = dp
    left.install_child(pair.left)
    right.install_child(pair.right)


def assert_counted(d, ev, packets: int):
    """Both SAs of ``ev`` (as seen by its own side) carried ``packets`` pings.

    The kernel counts what the SA protects: the whole 84-byte IP packet in
    tunnel mode, the 64-byte ICMP message in transport mode."""
    size = 84 if ev.mode == "tunnel" else 64
    counters = by_spi(d.counters())
    inbound, outbound = counters[ev.spi_in], counters[ev.spi_out]
    assert (inbound.direction, outbound.direction) == ("in", "out")
    assert (inbound.packets, outbound.packets) == (packets, packets)
    assert (inbound.bytes, outbound.bytes) == (packets * size, packets * size)
    assert dict(inbound.drops) == {"replay": 0, "icv": 0}
    assert outbound.last_used is not None


@pytest.mark.parametrize("suite, algo_lines", [
    (GCM256, ["aead rfc4106(gcm(aes)) 0x{lr} 128"]),
    (CBC128_SHA256, ["enc cbc(aes) 0x{lr}", "auth-trunc hmac(sha256) 0x{ilr} 128"]),
    (CHACHA20, ["aead rfc7539esp(chacha20,poly1305) 0x{lr} 128"]),
], ids=["aes256gcm16", "aes128-sha256", "chacha20poly1305"])
def test_esp_tunnel_carries_ping(lab, dp, suite, algo_lines):
    pair = child_pair(suite)
    install(dp, pair)
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER) == 3

    state = lab.xfrm(lab.left)
    assert f"proto esp spi 0x{pair.left.spi_out:08x} reqid {0x15E00001} mode tunnel" in state
    assert f"proto esp spi 0x{pair.left.spi_in:08x}" in state
    ilr = pair.left.keys.integ_out.reveal().hex()
    for line in algo_lines:
        assert line.format(lr=pair.key_lr.hex(), ilr=ilr) in state, state
    assert "0x" + pair.key_rl.hex() in state
    assert_counted(dp[0], pair.left, 3)
    assert_counted(dp[1], pair.right, 3)


def test_esn_and_wide_replay_window_use_the_esn_bitmap(lab, dp):
    pair = child_pair(GCM256, esn=True, replay_window=128)
    install(dp, pair)
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER) == 3
    state = lab.xfrm(lab.left)
    assert "flag af-unspec esn" in state
    assert "replay_window 128, bitmap-length 4" in state  # inbound
    assert "replay_window 1, bitmap-length 1" in state    # outbound: ESN needs a window > 0
    assert_counted(dp[0], pair.left, 3)


def test_esp_transport_mode(lab, dp):
    pair = child_pair(GCM256, mode="transport")
    install(dp, pair)
    assert lab.ping(lab.left, RIGHT_OUTER) == 3
    state = lab.xfrm(lab.left)
    assert f"proto esp spi 0x{pair.left.spi_out:08x} reqid {0x15E00001} mode transport" in state
    assert_counted(dp[0], pair.left, 3)
    policies = lab.xfrm(lab.left, "policy")
    assert "dir fwd" not in policies  # transport mode: this host only
    assert f"src {LEFT_OUTER}/32 dst {RIGHT_OUTER}/32" in policies


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_ah(lab, dp, mode):
    pair = child_pair(AH_SHA256, mode=mode)
    install(dp, pair)
    dst, src = (RIGHT_INNER, LEFT_INNER) if mode == "tunnel" else (RIGHT_OUTER, None)
    assert lab.ping(lab.left, dst, src=src) == 3
    state = lab.xfrm(lab.left)
    assert f"proto ah spi 0x{pair.left.spi_out:08x}" in state
    assert f"auth-trunc hmac(sha256) 0x{pair.key_lr.hex()} 128" in state
    assert f"auth-trunc hmac(sha256) 0x{pair.key_rl.hex()} 128" in state
    assert_counted(dp[0], pair.left, 3)


def test_esp_in_udp(lab, dp):
    from pyroute2 import netns

    pair = child_pair(GCM256, encap=True, local_port=4500, remote_port=4500)
    install(dp, pair)
    assert "encap type espinudp sport 4500 dport 4500" in lab.xfrm(lab.left)
    sockets = []
    try:
        for ns in (lab.left, lab.right):
            s = netns.create_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(s)
            enable_udp_encap(s)
            s.bind(("0.0.0.0", 4500))
        assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER) == 3
        assert_counted(dp[0], pair.left, 3)
        # Without the decapsulating socket on the right, the same packets are
        # just UDP to a closed port: proof they really travel in UDP.
        sockets.pop().close()
        assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=2) == 0
    finally:
        for s in sockets:
            s.close()


def test_rekey_is_make_before_break(lab, dp):
    left, right = dp
    old = child_pair(GCM256, reqid=4, spi_l=0xA0000001, spi_r=0xA0001001, unique_id=1)
    new = child_pair(GCM256, reqid=4, spi_l=0xA0000002, spi_r=0xA0001002, unique_id=2,
                     rekeyed_from=0xA0000001)
    install(dp, old)
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=2) == 2
    policies_before = lab.xfrm(lab.left, "policy")

    install(dp, new)  # both generations installed, policies shared
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=2) == 2
    assert lab.xfrm(lab.left, "policy") == policies_before

    for d, ev in ((left, old.left), (right, old.right)):
        d.remove_child(ChildSaDeleted(ike_sa=1, connection="lab", child="lab", unique_id=1, reqid=4,
                                      protocol="esp", spi_in=ev.spi_in, spi_out=ev.spi_out,
                                      local_addr=ev.local_addr, remote_addr=ev.remote_addr, reason="rekeyed"))
    assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER, count=2) == 2
    state = lab.xfrm(lab.left)
    assert "0xa0000001" not in state and "0xa0001001" not in state
    assert "0xa0000002" in state and "0xa0001002" in state
    assert lab.xfrm(lab.left, "policy") == policies_before
    counters = by_spi(left.counters())
    assert set(counters) == {0xA0000002, 0xA0001002}
    assert counters[0xA0001002].packets >= 2  # the last pings used the new SA

    for d, ev in ((left, new.left), (right, new.right)):
        d.remove_child(ChildSaDeleted(ike_sa=1, connection="lab", child="lab", unique_id=2, reqid=4,
                                      protocol="esp", spi_in=ev.spi_in, spi_out=ev.spi_out))
    assert lab.xfrm(lab.left) == "" and lab.xfrm(lab.left, "policy") == ""
