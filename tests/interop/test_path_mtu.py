"""Path MTU and DF with the userspace datapath, ours on both ends, across a
router whose link towards the right carries only 1300 bytes:

    left  veth0 192.0.2.1  ---  192.0.2.254 router 192.0.2.253 (MTU 1300)  ---  192.0.2.2 veth0  right

The outer ESP packets carry DF, so the router answers the first too-large
one with "fragmentation needed"; from then on our datapath sizes each SA to
the path: an inner packet that may not be fragmented (DF, or any TCP
super-packet) gets an ICMP "too big" from us (TCP then sends smaller
segments), one that may be is fragmented before encryption. No ESP packet
larger than 1300 bytes, and no IP fragment, ever crosses the router.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.interop.lab import SIDES, Lab, require_lab, sh
from tests.interop.lab_esp import (
    Stopper,
    capturing_wire,
    installed,
    iperf,
    our_policy,
    ping_stats,
    wait_child,
    wire_sizes,
)

pytestmark = pytest.mark.interop

PATH_MTU = 1300
LEFT_IN, RIGHT_IN = SIDES["left"]["inner"], SIDES["right"]["inner"]


class RoutedLab(Lab):
    """Three namespaces: left, a router, right (see the module docstring); removed even on failure."""

    def __init__(self, mtu: int = PATH_MTU) -> None:
        super().__init__()
        self.ns["router"] = f"{self.name}-m"
        self.mtu = mtu

    def up(self) -> "RoutedLab":
        l, r, m = self.ns["left"], self.ns["right"], self.ns["router"]
        try:
            for ns in (l, r, m):
                sh("ip", "netns", "add", ns)
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                   "net.ipv6.conf.default.disable_ipv6=1")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", l, "link", "add", "veth0", "type", "veth", "peer", "name", "vl", "netns", m)
            sh("ip", "-n", r, "link", "add", "veth0", "type", "veth", "peer", "name", "vr", "netns", m)
            sh("ip", "-n", r, "link", "set", "veth0", "mtu", str(self.mtu))
            sh("ip", "-n", m, "link", "set", "vr", "mtu", str(self.mtu))
            sh("ip", "netns", "exec", m, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            for ns, dev, addr, peer, via in ((l, "veth0", "192.0.2.1", "192.0.2.254", "192.0.2.2"),
                                             (r, "veth0", "192.0.2.2", "192.0.2.253", "192.0.2.1"),
                                             (m, "vl", "192.0.2.254", "192.0.2.1", None),
                                             (m, "vr", "192.0.2.253", "192.0.2.2", None)):
                sh("ip", "-n", ns, "addr", "add", f"{addr}/32", "dev", dev)
                sh("ip", "-n", ns, "link", "set", dev, "up")
                sh("ip", "-n", ns, "route", "add", f"{peer}/32", "dev", dev)
                if via:
                    sh("ip", "-n", ns, "route", "add", f"{via}/32", "via", peer)
            for side, ns in (("left", l), ("right", r)):
                sh("ip", "-n", ns, "addr", "add", f"{SIDES[side]['inner']}/32", "dev", "lo")
        except BaseException:
            self.down()
            raise
        return self


@pytest.fixture
def routed():
    require_lab()
    net = RoutedLab().up()
    try:
        yield net
    finally:
        net.down()


def _ping(net, *args: str) -> str:
    return net.exec("left", "ping", "-n", "-c", "3", "-i", "0.3", "-W", "2", "-I", LEFT_IN, *args, RIGHT_IN,
                    check=False, timeout=30).stdout


@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "esp-in-udp"])
def test_the_path_mtu_is_learned_and_honoured(encap, routed, tmp_path):
    net = routed
    with Stopper() as st:
        right = st.ours(net, "right", tmp_path, our_policy("right", encap=encap))
        left = st.ours(net, "left", tmp_path, our_policy("left", start_action="start", encap=encap))
        wait_child(left)
        where = [("router", "vr"), ("router", "vl")]
        with capturing_wire(net, where, tmp_path, senders=[("left", "veth0"), ("right", "veth0")]) as pcaps:
            # Full-sized packets with DF: the router's ICMP teaches our datapath the path; the packets
            # after that are answered by us with "fragmentation needed" and the MTU that fits.
            out = ""
            for _ in range(5):
                out += _ping(net, "-M", "do", "-s", "1372")
                if re.search(r"mtu ?= ?\d+", out):
                    break
                time.sleep(0.5)
            m = re.search(r"mtu ?= ?(\d+)", out)
            assert m, f"no ICMP too-big reached ping:\n{out}\n{left.log()[-2000:]}"
            inner_mtu = int(m.group(1))
            assert 1200 <= inner_mtu <= PATH_MTU - 20 - (8 if encap else 0) - 8 - 8 - 16 - 2
            assert "path MTU to 192.0.2.2 is 1300" in left.log()
            # The same size without DF: fragmented before encryption, delivered whole.
            sent, got = ping_stats(_ping(net, "-M", "dont", "-s", "1372"))
            assert sent == got == 3
            # DF packets that fit pass, and TCP finds its way (its MSS follows our ICMP).
            sent, got = ping_stats(_ping(net, "-M", "do", "-s", str(inner_mtu - 28)))
            assert sent == got == 3
            result = iperf(st, net, 3)
            assert result["end"]["sum_received"]["bytes"] > 500_000
        across, largest, fragments = wire_sizes(pcaps[:1])
        assert across > 300 and largest <= PATH_MTU and fragments == 0, (across, largest, fragments)
        _n, largest_in, fragments_in = wire_sizes(pcaps[1:])
        assert largest_in <= 1500 and fragments_in == 0  # never fragmented on our side either
        kids_l, kids_r = installed(left), installed(right)
        assert kids_l and kids_r and not kids_r[0]["drops"]
