"""Our daemon with the userspace (TUN) datapath against strongSwan's charon
(kernel-libipsec: always ESP-in-UDP here) and against itself, in two network
namespaces (tests/interop/lab.py). Needs root, strongSwan, iperf3, tcpdump.

Addresses: 192.0.2.1/.2 on the veth, 198.51.100.1 and .129 inside the tunnel.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.interop.lab import ROOT, SIDES, lab
from tests.interop.lab_esp import (
    SUITES,
    Stopper,
    background_ping,
    capture_esp,
    capturing_wire,
    charon_counters,
    diagnose,
    esp_spi,
    finish_ping,
    inject,
    installed,
    iperf,
    our_counters,
    our_policy,
    read_pcap,
    wait_child,
    wait_for,
    wire_sizes,
)

pytestmark = pytest.mark.interop

LEFT_IN, RIGHT_IN = SIDES["left"]["inner"], SIDES["right"]["inner"]


def _counters_settled(ours, expect_packets: int):
    """Our counters once the 1 s counters loop caught up with ``expect_packets`` each way."""
    def ready():
        kids = installed(ours)
        return kids and kids[0]["packets_in"] >= expect_packets and kids[0]["packets_out"] >= expect_packets \
            and kids[0]
    return wait_for(ready, 5, 0.2, f"{expect_packets} packets each way in our counters")


@pytest.mark.parametrize("suite", list(SUITES))
def test_ping_both_ways_and_counters_match_charon(suite, tmp_path):
    ike, esp = SUITES[suite]
    with lab() as net, Stopper() as st:
        charon = st.charon(net, "right", tmp_path, proposals=ike, esp_proposals=esp)
        ours = st.ours(net, "left", tmp_path, our_policy("left", proposals=(ike,), esp=(esp,),
                                                         start_action="start"))
        child = wait_child(ours)
        assert child["encap"]  # charon's libipsec fakes a NAT: ESP-in-UDP
        events = st.popen(sys.executable, "-m", "console", "events", "--plaintext", "--control",
                          str(ours.control), cwd=ROOT, stdout=subprocess.PIPE, text=True)
        # Subscribed once the first event (a counters snapshot, every second) comes through.
        assert select.select([events.stdout], [], [], 15)[0], "no event from 'ipsec-console events'"
        first = events.stdout.readline()
        net.ping("left", RIGHT_IN, count=3, interval=0.1)
        net.ping("right", LEFT_IN, count=3, interval=0.1)
        time.sleep(0.6)
        events.terminate()
        samples = [e for e in map(json.loads, [first, *events.communicate(timeout=10)[0].splitlines()])
                   if e["type"] == "PacketSample"]
        # The Packets screen's food: ESP on the wire beside the ICMP it carried, both ways.
        assert {(e["direction"], e["spi"]) for e in samples} >= {("out", child["spi_out"]), ("in", child["spi_in"])}
        for e in samples:
            inner, outer = bytes.fromhex(e["inner"]), bytes.fromhex(e["outer"])
            assert inner[9] == 1 and int.from_bytes(outer[:4], "big") == e["spi"] and inner not in outer
        child = _counters_settled(ours, 6)
        theirs = charon_counters(charon.list_sas())
        mine = our_counters(ours)
        assert mine[("out", child["spi_out"])] == theirs[("in", child["spi_out"])] == (6 * 84, 6)
        assert mine[("in", child["spi_in"])] == theirs[("out", child["spi_in"])] == (6 * 84, 6)
        assert not child["drops"]
        routes = net.exec("left", "ip", "route", "show", "table", "4533").stdout
        assert f"{RIGHT_IN} dev ipsecc0 proto static src {LEFT_IN}" in routes


def test_iperf3_tcp_through_the_tunnel(tmp_path):
    with lab() as net, Stopper() as st:
        st.charon(net, "right", tmp_path)
        ours = st.ours(net, "left", tmp_path, our_policy("left", start_action="start"))
        wait_child(ours)
        result = iperf(st, net, 10)
        end = result["end"]
        assert end["sum_received"]["bytes"] > 1_000_000
        assert end["sum_sent"]["seconds"] >= 9.5
        child = installed(ours)[0]
        assert not child["drops"]


@pytest.mark.parametrize("by", ["ours", "charon"])
def test_child_rekey_under_ping_loses_nothing(by, tmp_path):
    with lab() as net, Stopper() as st:
        charon = st.charon(net, "right", tmp_path)
        ours = st.ours(net, "left", tmp_path, our_policy("left", start_action="start"))
        old = wait_child(ours)
        ping = background_ping(st, net, "left", RIGHT_IN, count=600)
        time.sleep(1.0)
        if by == "ours":
            ours.cli("rekey", "psk-tunnel")
        else:
            charon.swanctl("--rekey", "--child", "psk-tunnel")
        new = wait_for(lambda: (k := installed(ours)) and len(k) == 1 and k[0]["spi_in"] != old["spi_in"] and k[0],
                       15, 0.1, "the rekeyed CHILD SA alone")
        assert ping.poll() is None, "the rekey took longer than the pings"
        sent, received = finish_ping(ping)
        assert sent == 600 and received == sent, f"lost {sent - received} of {sent} pings\n{diagnose(ours)}"
        old_spis = {old["spi_in"], old["spi_out"]}
        wait_for(lambda: not {spi for _d, spi in charon_counters(charon.list_sas())} & old_spis, 10, 0.2,
                 "the old SA gone from charon")
        assert not {c["spi_in"] for c in installed(ours)} & old_spis
        assert {spi for _d, spi in charon_counters(charon.list_sas())} == {new["spi_in"], new["spi_out"]}
        child = _counters_settled(ours, 1)
        assert not child["drops"]


def test_replayed_esp_packet_is_dropped_and_counted(tmp_path):
    with lab() as net, Stopper() as st:
        st.charon(net, "right", tmp_path)
        ours = st.ours(net, "left", tmp_path, our_policy("left", start_action="start"))
        child = wait_child(ours)
        pcap = tmp_path / "esp.pcap"
        dump = capture_esp(st, net, "left", pcap)
        net.ping("left", RIGHT_IN, count=3, interval=0.1)
        time.sleep(0.3)
        os.killpg(dump.pid, signal.SIGTERM)
        dump.wait(5)
        theirs = [p for p in read_pcap(pcap) if p[12:16] == bytes([192, 0, 2, 2])]
        assert len(theirs) == 3 and {esp_spi(p) for p in theirs} == {child["spi_in"]}
        inject(net, "right", theirs[1])
        inject(net, "right", theirs[1])
        wait_for(lambda: dict(map(tuple, installed(ours)[0]["drops"])).get("replay") == 2, 5, 0.2,
                 "two replay drops in sas --json")
        kid = installed(ours)[0]
        assert kid["packets_in"] == 3  # the copies were not delivered
        net.ping("left", RIGHT_IN, count=2, interval=0.1)  # the SA still works


@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "esp-in-udp"])
def test_ours_against_ours(encap, tmp_path):
    with lab() as net, Stopper() as st:
        right = st.ours(net, "right", tmp_path, our_policy("right", encap=encap))
        left = st.ours(net, "left", tmp_path, our_policy("left", start_action="start", encap=encap))
        old = wait_child(left)
        assert old["encap"] is encap
        net.ping("left", RIGHT_IN, count=3, interval=0.1)
        net.ping("right", LEFT_IN, count=3, interval=0.1)
        lc = _counters_settled(left, 6)
        rc = _counters_settled(right, 6)
        assert (lc["bytes_out"], lc["packets_out"]) == (rc["bytes_in"], rc["packets_in"]) == (6 * 84, 6)
        assert (lc["bytes_in"], lc["packets_in"]) == (rc["bytes_out"], rc["packets_out"]) == (6 * 84, 6)
        # A rekey by the responder under load loses nothing either.
        ping = background_ping(st, net, "left", RIGHT_IN, count=300)
        time.sleep(0.5)
        right.cli("rekey", "psk-tunnel")
        wait_for(lambda: (k := installed(left)) and len(k) == 1 and k[0]["spi_in"] != old["spi_in"], 15, 0.1,
                 "the rekeyed CHILD SA")
        assert ping.poll() is None, "the rekey took longer than the pings"
        sent, received = finish_ping(ping)
        assert sent == 300 and received == sent, \
            f"lost {sent - received} of {sent} pings\n{diagnose(left, right)}"


def test_stale_routing_after_a_crash_is_removed_on_next_start(tmp_path):
    with lab() as net, Stopper() as st:
        st.charon(net, "right", tmp_path)
        ours = st.ours(net, "left", tmp_path, our_policy("left", start_action="start"))
        wait_child(ours)
        assert "lookup 4533" in net.exec("left", "ip", "rule").stdout
        os.kill(ours.proc.pid, signal.SIGKILL)
        ours.proc.wait(5)
        assert "lookup 4533" in net.exec("left", "ip", "rule").stdout  # left behind by the crash
        ours.control.unlink(missing_ok=True)
        ours.start()
        wait_child(ours)
        rules = [r for r in net.exec("left", "ip", "rule").stdout.splitlines() if "lookup 4533" in r]
        assert rules == ["4533:\tnot from all fwmark 0x4533 lookup 4533"]
        net.ping("left", RIGHT_IN, count=2, interval=0.1)
        assert ours.stop() == 0
        assert "4533" not in net.exec("left", "ip", "rule").stdout
        assert net.exec("left", "ip", "route", "show", "table", "4533").stdout.strip() == ""
        assert "ipsecc0" not in net.exec("left", "ip", "link").stdout


def test_iperf3_with_charon_sends_standard_sized_esp_only(tmp_path):
    """The shipped configuration (TUN offloads on) against charon, under iperf3 both ways: TCP
    super-packets from the kernel leave as standard packets, one ESP packet each; the capture on both
    veth ends shows no ESP packet above the path MTU (1500) and no IP fragment."""
    with lab() as net, Stopper() as st:
        st.charon(net, "right", tmp_path)
        ours = st.ours(net, "left", tmp_path, our_policy("left", start_action="start"))
        wait_child(ours)
        assert "super-packets cut into standard ESP packets" in ours.log()
        with capturing_wire(net, [("left", "veth0"), ("right", "veth0")], tmp_path) as pcaps:
            up = iperf(st, net, 3)
            down = iperf(st, net, 3, client="right", server="left")
            net.exec("left", "ping", "-n", "-q", "-c", "2", "-i", "0.1", "-s", "3000", "-I", LEFT_IN, RIGHT_IN)
        for result in (up, down):
            assert result["end"]["sum_received"]["bytes"] > 1_000_000
        n, largest, fragments = wire_sizes(pcaps)
        assert n > 1000 and largest <= 1500 and fragments == 0, (n, largest, fragments)
        child = _counters_settled(ours, 2)
        assert not child["drops"]
        assert child["bytes_out"] / child["packets_out"] <= 1400  # per ESP packet: standard packets only


@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "esp-in-udp"])
def test_ours_against_ours_under_iperf3_standard_sized_and_counted_alike(encap, tmp_path):
    """Both ends ours (offloads on): segmented on the way out, joined again for the TUN write on the
    way in; every ESP packet on the wire is a standard one, and both ends count the same packets.
    The policies still say tun_offload = "auto", the old super-packet mode (whole 64 KiB ESP packets
    between two ipsec-console): it loads, and now means the same as "on"."""
    old_mode = 'tun_offload = "auto"'
    with lab() as net, Stopper() as st:
        right = st.ours(net, "right", tmp_path, our_policy("right", encap=encap, extra_engine=old_mode))
        left = st.ours(net, "left", tmp_path, our_policy("left", start_action="start", encap=encap,
                                                         extra_engine=old_mode))
        wait_child(left)
        assert "super-packets cut into standard ESP packets" in left.log()
        with capturing_wire(net, [("left", "veth0")], tmp_path) as pcaps:
            result = iperf(st, net, 3)
        assert result["end"]["sum_received"]["bytes"] > 1_000_000
        n, largest, fragments = wire_sizes(pcaps)
        assert n > 1000 and largest <= 1500 and fragments == 0, (n, largest, fragments)

        def both():
            lc, rc = installed(left)[0], installed(right)[0]
            return (lc["bytes_out"], lc["packets_out"]) == (rc["bytes_in"], rc["packets_in"]) and (lc, rc)
        lc, rc = wait_for(both, 5, 0.3, "equal counters on both ends")  # each side reads them once a second
        assert lc["bytes_out"] / lc["packets_out"] <= 1400
        assert not lc["drops"] and not rc["drops"]


def _variant(side: str, *, transport: bool = False, ah: bool = False, encap: bool = False, **kw) -> str:
    text = our_policy(side, mode="transport" if transport else "tunnel", encap=encap, **kw)
    if transport:  # host to host: the selectors are the IKE addresses
        me, peer = SIDES[side], SIDES["right" if side == "left" else "left"]
        text = text.replace(f'local_ts = ["{me["inner"]}/32"]', f'local_ts = ["{me["addr"]}/32"]')
        text = text.replace(f'remote_ts = ["{peer["inner"]}/32"]', f'remote_ts = ["{peer["addr"]}/32"]')
    if ah:
        text = text.replace('esp_proposals = ["aes256gcm16"]', 'protocol = "ah"\nah_proposals = ["sha256"]')
    return text


@pytest.mark.parametrize("variant", ["transport", "transport-udp", "ah-tunnel", "ah-transport"])
def test_ours_against_ours_transport_mode_and_ah(variant, tmp_path):
    """What charon's libipsec cannot do here (tunnel-mode ESP only): transport mode and AH, ours on both ends."""
    kw = {"transport": "transport" in variant,
          "ah": variant.startswith("ah"), "encap": variant == "transport-udp"}
    with lab() as net, Stopper() as st:
        right = st.ours(net, "right", tmp_path, _variant("right", **kw))
        left = st.ours(net, "left", tmp_path, _variant("left", start_action="start", **kw))
        child = wait_child(left)
        assert (child["mode"], child["protocol"], child["encap"]) == (
            "transport" if kw["transport"] else "tunnel", "ah" if kw["ah"] else "esp", kw["encap"])
        if kw["transport"]:
            src, dst = SIDES["left"]["addr"], SIDES["right"]["addr"]
        else:
            src, dst = LEFT_IN, RIGHT_IN
        net.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.1", "-W", "2", "-I", src, dst)
        lc = _counters_settled(left, 3)
        rc = _counters_settled(right, 3)
        assert (lc["packets_out"], lc["bytes_out"]) == (rc["packets_in"], rc["bytes_in"]) == (3, 3 * 84)
        assert not lc["drops"] and not rc["drops"]


def test_bypass_and_discard_rules(tmp_path):
    """A discard rule's traffic is routed into the TUN device, dropped and counted (discard_rule); a
    bypass rule gets a throw route, so its traffic never reaches the TUN device."""
    rules = (
        '[rules.block-printer]\naction = "discard"\nremote_ts = ["198.51.100.200/32"]\n\n'
        '[rules.lan-in-clear]\naction = "bypass"\nremote_ts = ["198.51.100.160/27"]\npriority = 10\n'
    )
    with lab() as net, Stopper() as st:
        st.charon(net, "right", tmp_path)
        ours = st.ours(net, "left", tmp_path, our_policy("left", start_action="start") + "\n" + rules)
        wait_child(ours)
        routes = net.exec("left", "ip", "route", "show", "table", "4533").stdout
        assert "198.51.100.200 dev ipsecc0" in routes and "throw 198.51.100.160/27" in routes
        events = st.popen(sys.executable, "-m", "console", "events", "--control", str(ours.control),
                          cwd=ROOT, stdout=subprocess.PIPE, text=True)
        r = net.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.1", "-W", "1", "198.51.100.200", check=False)
        assert " 0 received" in r.stdout

        def discarded():
            line = events.stdout.readline()
            e = json.loads(line) if line else {}
            return e.get("type") == "CountersSnapshot" and dict(map(tuple, e["drops"])).get("discard_rule") == 3
        wait_for(discarded, 10, 0, "discard_rule 3 in a counters snapshot")
        net.ping("left", RIGHT_IN, count=2, interval=0.1)  # the tunnel is unaffected
