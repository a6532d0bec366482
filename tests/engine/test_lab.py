"""The lab (engine.runtime.lab): three endpoints in one process on loopback,
real IKEv2, real ESP SAs, a traffic generator. No root needed.

Each test runs its own copy of the shipped lab policies with the addresses
and ports moved (127.0.0.1-3 -> three addresses of a 127.x.y.0/24 of this
process, 155xx -> 256xx), so a lab someone runs at the same time on this
machine (another test run, the shipped lab) cannot interfere: when two runs
shared 127.0.0.61-63, the kernel handed one run's ESP to the other's sockets
(the packets vanished from one, arrived as no_sa at the other).
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from engine.events import (
    ChildSaDeleted,
    ChildSaInstalled,
    NegotiationFailed,
    PacketSample,
)
from engine.policy.samples import sample_dir, sample_path
from engine.runtime.lab import LabRuntime

from tests.loopback import NET

SHIPPED = ("lab.toml", "lab-branch.toml", "lab-roadwarrior.toml", "lab.secrets.toml")
HQ = NET + "1"


@pytest.fixture
def lab_config(tmp_path):
    for name in SHIPPED:
        text = (sample_dir() / name).read_text()
        text = re.sub(r"127\.0\.0\.([123])\b", lambda m: NET + m.group(1), text)
        text = re.sub(r"\b155(\d\d)\b", r"256\1", text)
        (tmp_path / name).write_text(text)
    return tmp_path / "lab.toml"


async def wait_until(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def child(runtime, connection: str):
    """The one installed CHILD SA of a connection in a runtime's status (None if not exactly one)."""
    kids = [c for sa in runtime.status().ike_sas if sa.name == connection and sa.state == "ESTABLISHED"
            for c in sa.children if c.state == "INSTALLED"]
    return kids[0] if len(kids) == 1 else None


def all_drops(lab: LabRuntime) -> dict[str, int]:
    total: dict[str, int] = {}
    for ep in lab.endpoints:
        sas, drops = ep.datapath.counters()
        for reason, n in drops.items():
            total[reason] = total.get(reason, 0) + n
        for c in sas:
            for reason, n in c.drops:
                total[reason] = total.get(reason, 0) + n
    return total


def live(lab: LabRuntime) -> list:
    """Every endpoint's datapath counters and host/generator stats, read now (not the runtimes' snapshots)."""
    out = []
    for ep in lab.endpoints:
        sas, drops = ep.datapath.counters()
        out.append((sorted((c.spi, c.direction, c.packets, c.bytes, c.drops) for c in sas), sorted(drops.items()),
                    sorted(ep.datapath.host.stats.items()), sorted(ep.datapath.generator.stats.items())))
    return out


def snapshots_current(lab: LabRuntime) -> bool:
    """Whether every runtime's status shows its datapath's counters as they are now."""
    for ep in lab.endpoints:
        sas, _drops = ep.datapath.counters()
        now = {(c.spi, c.direction): (c.packets, c.bytes) for c in sas}
        for sa in ep.runtime.status().ike_sas:
            for c in sa.children:
                for key, shown in (((c.spi_in, "in"), (c.packets_in, c.bytes_in)),
                                   ((c.spi_out, "out"), (c.packets_out, c.bytes_out))):
                    if key in now and now[key] != shown:
                        return False
    return True


async def quiesce(lab: LabRuntime) -> None:
    """Stop generating, wait until nothing moves any more, then until the runtimes' counter
    snapshots (read once a second) show that. Fixed sleeps were not enough on a loaded machine:
    a late loop left packets in flight or a snapshot from before they landed."""
    lab.pause_traffic()
    deadline = time.monotonic() + 15
    before = None
    # Settled: nothing changed between two looks (a socket with datagrams waiting is read on
    # every turn of the loop, and these looks are turns of the same loop).
    while (now := live(lab)) != before:
        assert time.monotonic() < deadline, "the lab's traffic never settled"
        before = now
        await asyncio.sleep(0.2)
    await wait_until(lambda: snapshots_current(lab), timeout=5, what="counter snapshots of the settled lab")


@pytest.fixture
async def lab(lab_config):
    lab = LabRuntime(lab_config)
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()


def test_default_is_the_shipped_lab():
    assert LabRuntime().config == sample_path("lab.toml")
    assert LabRuntime.kind == "lab" and "LAB" in LabRuntime.label


async def test_live_within_two_seconds(lab_config):
    t0 = time.monotonic()
    lab = LabRuntime(lab_config)
    await lab.start()
    try:
        c = await wait_until(lambda: (k := child(lab, "branch")) and k.packets_in and k.packets_out and k,
                             timeout=2.0 - (time.monotonic() - t0), what="SA with traffic")
        assert c.name == "hq-branch" and c.protocol == "esp" and c.mode == "tunnel"
        assert lab.status().ike_sas[0].local_addr == HQ
        assert [x.state for x in lab.connections() if x.name == "branch"] == ["up"]
    finally:
        await lab.stop()
    assert lab.local is None and not lab.endpoints


async def test_traffic_both_ways_counters_equal(lab):
    lab.set_rate(100)
    await wait_until(lambda: (k := child(lab, "branch")) and k.packets_out > 20, what="traffic")
    await quiesce(lab)
    hq = child(lab, "branch")
    branch = child(lab.endpoint("lab-branch").runtime, "hq")
    assert hq.spi_out == branch.spi_in and hq.spi_in == branch.spi_out
    assert hq.packets_out > 0 and hq.packets_in > 0
    assert (hq.packets_out, hq.bytes_out) == (branch.packets_in, branch.bytes_in)
    assert (hq.packets_in, hq.bytes_in) == (branch.packets_out, branch.bytes_out)
    # Every generated packet was answered: each side sent what the other received.
    gen_hq = lab.datapath.generator.stats
    host_branch = lab.endpoint("lab-branch").datapath.host.stats
    assert gen_hq["sent"] == host_branch["received_icmp_request"] + host_branch["received_udp_request"] \
        + host_branch["received_tcp"]
    assert {k for k in gen_hq if k.startswith("sent_")} == {"sent_icmp", "sent_udp", "sent_tcp"}
    assert all_drops(lab) == {}


async def test_packet_samples_show_outer_and_inner(lab):
    q = lab.subscribe()
    lab.set_rate(100)
    samples = []

    async def collect():
        while len({s.direction for s in samples}) < 2:
            ev = await q.get()
            if isinstance(ev, PacketSample):
                samples.append(ev)
    await asyncio.wait_for(collect(), 5)
    c = child(lab, "branch")
    for s in samples:
        spi = int.from_bytes(s.outer[:4], "big")
        assert spi == (c.spi_out if s.direction == "out" else c.spi_in)
        assert int.from_bytes(s.outer[4:8], "big") == s.seq > 0
        assert s.inner[0] >> 4 == 4 and s.inner not in s.outer  # encrypted on the wire
        assert s.inner[12:14] == bytes([198, 51]) and s.inner[16:18] == bytes([198, 51])


async def test_misconfigured_peer_fails_with_no_proposal_chosen(lab):
    fails = await wait_until(lambda: [e for e in lab.recent_events() if isinstance(e, NegotiationFailed)],
                             what="NegotiationFailed")
    f = fails[0]
    assert (f.connection, f.exchange, f.notify, f.sent_by_peer) == ("roadwarrior", "IKE_SA_INIT",
                                                                    "NO_PROPOSAL_CHOSEN", False)
    assert any("AES_CBC" in p for p in f.remote_proposals)
    assert any("AES_GCM" in p for p in f.local_proposals)
    assert not [sa for sa in lab.status().ike_sas if sa.name == "roadwarrior"]
    # It keeps trying (keyingtries = 0): a second failure follows within seconds.
    await wait_until(lambda: len([e for e in lab.recent_events() if isinstance(e, NegotiationFailed)]) >= 2,
                     timeout=6, what="a second NO_PROPOSAL_CHOSEN")


@pytest.mark.parametrize("by", ["hq", "peer"])
async def test_rekey_keeps_traffic_flowing_without_loss(lab, by):
    q = lab.subscribe()
    lab.set_rate(300)
    old = await wait_until(lambda: (k := child(lab, "branch")) and k.packets_out > 10 and k, what="traffic")
    peer = lab.endpoint("lab-branch")
    if by == "hq":
        assert lab.rekey("branch") == 1
    else:
        assert peer.runtime.rekey("hq") == 1
    installed = deleted = None
    while installed is None or deleted is None:
        ev = await asyncio.wait_for(q.get(), 5)
        if isinstance(ev, ChildSaInstalled) and ev.rekeyed_from == old.spi_in:
            installed = ev
        elif isinstance(ev, ChildSaDeleted) and ev.spi_in == old.spi_in:
            deleted = ev
    assert installed.spi_in != old.spi_in
    await asyncio.sleep(0.3)  # traffic on the new SA
    await quiesce(lab)
    new = child(lab, "branch")
    assert new is not None and new.spi_in == installed.spi_in and new.packets_in > 0 and new.packets_out > 0
    assert old.spi_in not in [c.spi_in for sa in lab.status().ike_sas for c in sa.children]
    # Zero loss: every generated packet reached the other side's host and every answer came back.
    for a, b in ((lab.endpoints[0], peer), (peer, lab.endpoints[0])):
        sent = a.datapath.generator.stats["sent"]
        got = b.datapath.host.stats
        assert sent == got["received_icmp_request"] + got["received_udp_request"] + got["received_tcp"], \
            f"{a.name} -> {b.name}: {dict(got)}; drops {all_drops(lab)}"
        replies = got["replied_icmp"] + got["replied_udp"] + got["replied_tcp"]
        back = a.datapath.host.stats
        assert replies == back["received_icmp_reply"] + back["received_udp_response"] + back["received_tcp_ack"]
        assert sent > 50
    assert all_drops(lab) == {}


async def test_soft_packet_lifetime_rekeys_through_the_datapath(lab_config):
    # The datapath counts packets; at rekey_packets it asks the engine (RekeyRequested) for a new SA.
    text = lab_config.read_text().replace('esp_proposals = ["aes256gcm16-x25519", "aes128gcm16"]',
                                          'esp_proposals = ["aes256gcm16-x25519", "aes128gcm16"]\nrekey_packets = 60')
    assert "rekey_packets = 60" in text
    lab_config.write_text(text)
    lab = LabRuntime(lab_config, rate=200)
    q = None
    await lab.start()
    try:
        q = lab.subscribe()
        first = await wait_until(lambda: child(lab, "branch"), what="first SA")
        seen = []

        async def rekeyed():
            while True:
                ev = await q.get()
                seen.append(ev)
                if isinstance(ev, ChildSaInstalled) and ev.rekeyed_from == first.spi_in:
                    return ev
        new = await asyncio.wait_for(rekeyed(), 5)
        req = [e for e in seen if type(e).__name__ == "RekeyRequested"]
        assert req and req[0].spi_in == first.spi_in and not req[0].hard and "soft packets" in req[0].reason
        assert new.spi_in != first.spi_in  # (hq or branch, whichever counted 60 first, rekeyed)
    finally:
        await lab.stop()
