"""The kernel raises XFRM_MSG_MAPPING when authenticated ESP-in-UDP of an SA arrives from another
source port than the SA's encap template names (esp4 input, km_new_mapping), once for every
packet unless the SA carries XFRMA_MTIMER_THRESH (ours do, inbound): KernelDatapath subscribes to XFRMNLGRP_MAPPING and turns them
into one NatMappingChanged per change; once the SA is moved to the new mapping the kernel is quiet.
The left's NAT rebinding is played by moving its outbound SA to source port 4501."""

from __future__ import annotations

import socket

from engine.datapath.kernel import enable_udp_encap
from engine.events import ChildSaMoved, NatMappingChanged

from .lab import GCM256, LEFT_INNER, LEFT_OUTER, RIGHT_INNER, RIGHT_OUTER, child_pair


def _mappings(d, timeout: float = 1.0) -> list:
    return [e for e in d.read_events(timeout) if isinstance(e, NatMappingChanged)]


def test_a_rebound_source_port_becomes_one_mapping_event_until_the_sa_follows(lab, dp):
    from pyroute2 import netns

    from engine.datapath.kernel_socket import XfrmSocket
    from engine.datapath.xfrm_netlink import XFRM_MSG_MAPPING, XFRMNLGRP_MAPPING

    left, right = dp
    raw = XfrmSocket(lab.right, groups=1 << (XFRMNLGRP_MAPPING - 1))  # what the kernel itself sends
    pair = child_pair(GCM256, encap=True, local_port=4500, remote_port=4500, spi_l=0xC0DE0201, spi_r=0xC0DE1201)
    left.install_child(pair.left)
    right.install_child(pair.right)
    sockets = []
    try:
        for ns, port in ((lab.left, 4500), (lab.left, 4501), (lab.right, 4500)):
            s = netns.create_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(s)
            enable_udp_encap(s)
            s.bind(("0.0.0.0", port))
        assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER) == 3
        assert _mappings(right, 0.2) == []
        # The left's NAT maps it anew: its ESP now leaves from port 4501.
        left.move_child(ChildSaMoved(1, "lab", "lab", pair.left.spi_in, pair.left.spi_out, LEFT_OUTER, RIGHT_OUTER,
                                     4501, 4500, True))
        assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER) == 3
        assert _mappings(right) == [NatMappingChanged(spi_in=pair.right.spi_in, remote_addr=LEFT_OUTER,
                                                      remote_port=4501)], "one event for three packets"
        replies, _ = raw.read(0.5)
        # XFRMA_MTIMER_THRESH on the inbound SA: the kernel itself sends one, not one per packet.
        assert [r.type for r in replies] == [XFRM_MSG_MAPPING]
        # The gateway follows (what the engine's ChildSaMoved does): the kernel stops raising them.
        right.move_child(ChildSaMoved(1, "lab", "lab", pair.right.spi_in, pair.right.spi_out, RIGHT_OUTER, LEFT_OUTER,
                                      4500, 4501, True))
        assert "encap type espinudp sport 4501 dport 4500" in lab.xfrm(lab.right)
        assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER) == 3
        assert _mappings(right, 0.5) == []
        assert _mappings(left, 0.1) == [], "the left's inbound SA still sees the right's own port"
    finally:
        raw.close()
        for s in sockets:
            s.close()
