"""Our daemon listening on the wildcard (``listen = ["0.0.0.0"]``) on a host with two addresses,
charon (kernel-libipsec: always ESP-in-UDP here) talking to the second one: IKE and every
ESP-in-UDP packet our userspace datapath sends leave from that address and port 4500, whatever
source the route would pick (192.0.2.2, the first address of the subnet), and traffic passes both
ways, in single datagrams (ping) and in UDP GSO batches (iperf3). Before, the ESP left from the
route's address: a peer behind NAT, matching ESP-in-UDP to its SA by address and port, dropped it.

Two network namespaces (tests/interop/lab.py): 192.0.2.1 (charon) and 192.0.2.2 + 192.0.2.12
(ours) on the veth, 198.51.100.1/.129 inside the tunnel. Needs root, strongSwan, iperf3, tcpdump.
"""

from __future__ import annotations

import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.interop.lab import SIDES, Charon, lab
from tests.interop.lab_esp import (
    Stopper,
    diagnose,
    installed,
    iperf,
    our_policy,
    wait_child,
)

pytestmark = pytest.mark.interop

SECOND = "192.0.2.12"
"""Our second address on the veth; the route to the peer picks 192.0.2.2 (the subnet's first)."""
LEFT_IN, RIGHT_IN = SIDES["left"]["inner"], SIDES["right"]["inner"]


def _esp_in_udp_sources(pcap: Path) -> dict[tuple[str, int], int]:
    """(source address, source port) -> count of the ESP-in-UDP datagrams (UDP, a non-zero SPI where
    IKE has its zero marker) in an Ethernet pcap taken with a short snap length."""
    data = pcap.read_bytes()
    endian = "<" if int.from_bytes(data[:4], "little") in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    rec = struct.Struct(endian + "IIII")
    out: dict[tuple[str, int], int] = {}
    off = 24
    while off + 16 <= len(data):
        incl = rec.unpack_from(data, off)[2]
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) < 14 + 20 + 12 or frame[12:14] != b"\x08\x00" or frame[14 + 9] != 17:
            continue
        ip = frame[14:]
        udp = ip[(ip[0] & 15) * 4:]
        if udp[8:12] == bytes(4):
            continue  # IKE on port 4500
        key = (".".join(map(str, ip[12:16])), int.from_bytes(udp[0:2], "big"))
        out[key] = out.get(key, 0) + 1
    return out


def test_esp_in_udp_from_a_wildcard_socket_leaves_from_the_address_the_peer_talks_to(tmp_path):
    with lab() as net, Stopper() as st:
        net.exec("right", "ip", "addr", "add", f"{SECOND}/24", "dev", "veth0")
        route = net.exec("right", "ip", "route", "get", SIDES["left"]["addr"]).stdout
        assert f"src {SIDES['right']['addr']}" in route  # left to the route, ESP would not leave from SECOND
        policy = our_policy("right").replace(f'listen = ["{SIDES["right"]["addr"]}"]', 'listen = ["0.0.0.0"]')
        policy = policy.replace(f'local_addrs = ["{SIDES["right"]["addr"]}"]\n', "")
        assert 'listen = ["0.0.0.0"]' in policy and "local_addrs" not in policy
        ours = st.ours(net, "right", tmp_path, policy)
        charon = Charon(net, "left", tmp_path)
        charon.conf = charon.conf.replace(f"remote_addrs = {SIDES['right']['addr']}", f"remote_addrs = {SECOND}")
        assert f"remote_addrs = {SECOND}" in charon.conf
        st.callback(charon.stop)
        charon.start()
        pcap = tmp_path / "esp.pcap"
        dump = st.popen("ip", "netns", "exec", net.ns["right"], "tcpdump", "-Z", "root", "-U", "--immediate-mode",
                        "-n", "-s", "64", "-i", "veth0", "-w", str(pcap), "udp port 4500",
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        line = ""
        while "listening" not in line:  # tcpdump says so once the capture runs
            assert time.monotonic() < deadline, "tcpdump never started capturing"
            line = dump.stderr.readline()
            assert line or dump.poll() is None, "tcpdump exited"
        charon.swanctl("--initiate", "--child", "psk-tunnel", "--timeout", "20")
        child = wait_child(ours)
        assert child["encap"]  # charon's libipsec fakes a NAT: ESP-in-UDP
        [sa] = ours.sas()
        assert (sa["local_addr"], sa["local_port"]) == (SECOND, 4500), sa  # the IKE SA is on the second address
        net.ping("left", RIGHT_IN, count=5, interval=0.1)
        net.ping("right", LEFT_IN, count=5, interval=0.1)
        down = iperf(st, net, 2, client="right", server="left")  # ours sends: UDP GSO batches
        up = iperf(st, net, 2)
        net.ping("left", RIGHT_IN, count=3, interval=0.1)
        dump.terminate()
        dump.wait(10)
        for result in (down, up):
            assert result["end"]["sum_received"]["bytes"] > 1_000_000, diagnose(ours)
        sources = _esp_in_udp_sources(pcap)
        ours_sent = {k: n for k, n in sources.items() if k[0] != SIDES["left"]["addr"]}
        assert set(ours_sent) == {(SECOND, 4500)}, (sources, diagnose(ours))
        assert ours_sent[(SECOND, 4500)] > 100  # every ESP-in-UDP packet we sent, GSO batches among them
        assert not installed(ours)[0]["drops"]
