"""Datagrams above the TUN MTU (1400) through an IPv4 transport-mode SA, ours on both ends in two
network namespaces (tests/interop/lab.py): the kernel fragments them before the TUN device, we
reassemble and protect each datagram whole, and the ESP/AH packet crosses the veth as outer IPv4
fragments, which the peer's kernel reassembles before its raw or UDP socket sees them. Protected
fragment by fragment, the peer's reassembly found overlaps and dropped every such datagram.
Tunnel mode carries the fragments as inner packets, as before."""

from __future__ import annotations

import pytest

from tests.interop.lab import SIDES, lab
from tests.interop.lab_esp import Stopper, installed, wait_child, wait_for
from tests.interop.test_userspace_datapath import _variant

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("variant", ["transport", "transport-udp", "ah-transport", "tunnel"])
def test_big_pings_through_transport_mode(variant, tmp_path):
    kw = {"transport": variant != "tunnel", "ah": variant.startswith("ah"), "encap": variant == "transport-udp"}
    with lab() as net, Stopper() as st:
        right = st.ours(net, "right", tmp_path, _variant("right", **kw))
        left = st.ours(net, "left", tmp_path, _variant("left", start_action="start", **kw))
        wait_child(left)
        side = "addr" if kw["transport"] else "inner"
        src, dst = SIDES["left"][side], SIDES["right"][side]
        # 3028-byte echo requests and replies: three fragments each on both TUN devices.
        r = net.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-s", "3000", "-M", "dont",
                     "-I", src, dst, check=False)
        assert " 3 received" in r.stdout, r.stdout + r.stderr

        each = (3, 3 * 3028) if kw["transport"] else (9, 3 * (1396 + 1396 + 276))

        def counted():
            lc, rc = installed(left)[0], installed(right)[0]
            return min(lc["packets_out"], lc["packets_in"], rc["packets_out"], rc["packets_in"]) >= each[0] \
                and (lc, rc)
        lc, rc = wait_for(counted, 5, 0.2, "3 datagrams each way, counted at both ends")
        # Transport mode: one ESP/AH packet per datagram, the same count at both ends. Tunnel mode
        # (unchanged): one per fragment of 1396, 1396 and 276 bytes.
        assert (lc["packets_out"], lc["bytes_out"]) == (rc["packets_in"], rc["bytes_in"]) == each
        assert (rc["packets_out"], rc["bytes_out"]) == (lc["packets_in"], lc["bytes_in"]) == each
        assert not lc["drops"] and not rc["drops"]
