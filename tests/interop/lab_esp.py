"""Helpers for ESP datapath tests in the interop lab (tests/interop/lab.py):
counters from both implementations, background pings, ESP capture and
re-injection, and a context that always stops what a test started."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import struct
import subprocess
import time
from pathlib import Path

from tests.interop.lab import SIDES, Charon, Lab, Ours, our_policy, wait_for

SUITES = {
    # name: (IKE proposal, ESP proposal as strongSwan and our policy spell it)
    "aes256gcm16": ("aes256gcm16-prfsha256-x25519", "aes256gcm16"),
    "aes128-sha256": ("aes128-sha256-x25519", "aes128-sha256"),
    "chacha20poly1305": ("chacha20poly1305-prfsha256-x25519", "chacha20poly1305"),
}
BENCH_CHARON = Path(__file__).resolve().parents[3] / "shared" / "interop" / "bench-charon.conf"

_SA_LINE = re.compile(r"^\s+(in|out)\s+([0-9a-f]{8})(?:\s*\(-\|0x[0-9a-f]+\))?,\s+(\d+) bytes,\s+(\d+) packets", re.MULTILINE)


def charon_counters(list_sas: str) -> dict[tuple[str, int], tuple[int, int]]:
    """(direction, SPI) -> (bytes, packets) from ``swanctl --list-sas``."""
    return {(d, int(spi, 16)): (int(b), int(p)) for d, spi, b, p in _SA_LINE.findall(list_sas)}


def our_children(ours: Ours) -> list[dict]:
    return [c for sa in ours.sas() for c in sa["children"]]


def our_counters(ours: Ours) -> dict[tuple[str, int], tuple[int, int]]:
    out = {}
    for c in our_children(ours):
        out[("in", c["spi_in"])] = (c["bytes_in"], c["packets_in"])
        out[("out", c["spi_out"])] = (c["bytes_out"], c["packets_out"])
    return out


def installed(ours: Ours) -> list[dict]:
    return [c for c in our_children(ours) if c["state"] == "INSTALLED"]


def wait_child(ours: Ours, timeout: float = 20) -> dict:
    return wait_for(lambda: (k := installed(ours)) and k[0], timeout, what="our CHILD SA")


def diagnose(*daemons: Ours) -> str:
    """What to print when a datapath test fails: each daemon's warnings and counters."""
    out = []
    for d in daemons:
        lines = [line for line in d.log().splitlines() if " WARNING " in line or " ERROR " in line]
        out.append(f"--- {d.side}: " + "\n".join(lines[-20:]))
        try:
            out.append(json.dumps([{k: c[k] for k in ("spi_in", "spi_out", "packets_in", "packets_out", "drops")}
                                   for c in our_children(d)]))
        except Exception as exc:  # noqa: BLE001  (the daemon may be gone)
            out.append(f"(no counters: {exc})")
    return "\n".join(out)


@contextlib.contextmanager
def environ(**values: str):
    """Set environment variables for the processes started inside (our daemon reads IPSEC_CONSOLE_*)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Stopper(contextlib.ExitStack):
    """Stops every daemon, charon and helper process registered, in reverse order, even on failure."""

    def ours(self, lab: Lab, side: str, workdir: Path, policy: str, *args: str) -> Ours:
        o = Ours(lab, side, workdir, policy)
        self.callback(o.stop)
        return o.start(*args)

    def charon(self, lab: Lab, side: str, workdir: Path, **kw) -> Charon:
        c = Charon(lab, side, workdir, **kw)
        self.callback(c.stop)
        return c.start()

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        p = subprocess.Popen(args, start_new_session=True, **kw)
        self.callback(_kill, p)
        return p


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def ping_stats(output: str) -> tuple[int, int]:
    """(transmitted, received) from ping's summary line."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    if not m:
        raise AssertionError(f"no ping summary in: {output!r}")
    return int(m.group(1)), int(m.group(2))


def background_ping(stop: Stopper, lab: Lab, side: str, dst: str, *, count: int, interval: float = 0.01
                    ) -> subprocess.Popen:
    """``ping -c COUNT -i INTERVAL`` in the background; `finish_ping` waits for it and reads the summary.

    A fixed count, not a SIGINT, ends it: ping waits for the last reply (up to -W), so a packet in
    flight when the test ends is not counted as lost.
    """
    src = SIDES[side]["inner"]
    return stop.popen("ip", "netns", "exec", lab.ns[side], "ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                      "-W", "2", "-I", src, dst, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_ping(p: subprocess.Popen, timeout: float = 60) -> tuple[int, int]:
    """Wait for a background ping to end; (transmitted, received)."""
    out, _ = p.communicate(timeout=timeout)
    return ping_stats(out)


def capture_esp(stop: Stopper, lab: Lab, side: str, pcap: Path) -> subprocess.Popen:
    """tcpdump of ESP-in-UDP on port 4500 (not IKE: the first four payload bytes, the SPI, are non-zero)
    and raw ESP on veth0 of ``side``."""
    p = stop.popen("ip", "netns", "exec", lab.ns[side], "tcpdump", "-Z", "root", "-U", "--immediate-mode", "-n",
                   "-i", "veth0", "-w", str(pcap), "(udp port 4500 and udp[8:4] != 0) or ip proto 50",
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # tcpdump says "listening on" once the capture runs.
    deadline = time.monotonic() + 10
    line = ""
    while time.monotonic() < deadline and "listening" not in line:
        line = p.stderr.readline()
        if not line and p.poll() is not None:
            raise RuntimeError("tcpdump exited")
    return p


CAPTURE_ESP_AND_FRAGMENTS = "ip proto 50 or (udp port 4500 and udp[8:4] != 0) or (ip[6:2] & 0x3fff != 0)"
"""ESP, ESP-in-UDP (not IKE: its non-ESP marker is four zero bytes) and every IP fragment."""


def pcap_ip_packets(pcap: Path):
    """(IP total length, is a fragment) of each IPv4 packet of an Ethernet pcap, any snap length
    (read with struct: a run of iperf3 is too many packets for scapy)."""
    data = pcap.read_bytes()
    if len(data) < 24:
        return
    magic = int.from_bytes(data[:4], "little")
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    rec = struct.Struct(endian + "IIII")
    off = 24
    while off + 16 <= len(data):
        _s, _us, incl, _orig = rec.unpack_from(data, off)
        off += 16
        frame = data[off:off + incl]
        off += incl
        if len(frame) >= 34 and frame[12:14] == b"\x08\x00":
            ip = frame[14:]
            yield (ip[2] << 8) | ip[3], ((ip[6] & 0x3F) << 8 | ip[7]) != 0


@contextlib.contextmanager
def capturing_wire(lab: Lab, where: list[tuple[str, str]], work: Path, tag: str = "wire",
                   senders: list[tuple[str, str]] = ()):
    """tcpdump (headers only) of ESP, ESP-in-UDP and IP fragments on each (side, device); yields the
    pcap paths. The devices, and the ``senders`` that feed them, hand over no GSO batches meanwhile
    (``gso_max_segs 1``): a veth otherwise carries a UDP GSO batch as one "packet", which a real NIC
    cuts into datagrams before the wire."""
    pcaps, procs = [], []
    cut = list(where) + list(senders)
    try:
        for side, dev in cut:
            lab.exec(side, "ip", "link", "set", dev, "gso_max_segs", "1")
        for side, dev in where:
            pcap = work / f"{tag}-{side}-{dev}.pcap"
            pcaps.append(pcap)
            p = subprocess.Popen(["ip", "netns", "exec", lab.ns[side], "tcpdump", "-Z", "root", "-n", "-s", "64",
                                  "-B", "16384", "-i", dev, "-w", str(pcap), CAPTURE_ESP_AND_FRAGMENTS],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
            procs.append(p)
            deadline = time.monotonic() + 10
            line = ""
            while time.monotonic() < deadline and "listening" not in line:
                line = p.stderr.readline()
                if not line and p.poll() is not None:
                    raise RuntimeError("tcpdump exited")
        yield pcaps
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGINT)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    _kill(p)
        for side, dev in cut:
            lab.exec(side, "ip", "link", "set", dev, "gso_max_segs", "65535", check=False)


def wire_sizes(pcaps: list[Path]) -> tuple[int, int, int]:
    """(packets, largest IP packet, IP fragments) over captures of `capturing_wire`."""
    n = largest = frags = 0
    for pcap in pcaps:
        for total, frag in pcap_ip_packets(pcap):
            n += 1
            largest = max(largest, total)
            frags += frag
    return n, largest, frags


def read_pcap(pcap: Path) -> list[bytes]:
    """The IP packets of a pcap (Ethernet link type), with scapy."""
    from scapy.layers.inet import IP
    from scapy.utils import rdpcap

    return [bytes(pkt[IP]) for pkt in rdpcap(str(pcap)) if IP in pkt]


def inject(lab: Lab, side: str, packet: bytes) -> None:
    """Send a complete IPv4 packet (header included) from ``side``, byte for byte except the UDP checksum.

    A packet captured on a veth may carry a partial UDP checksum (offloaded by the sender), so a UDP
    packet goes out with checksum 0 ("none", which RFC 3948 allows); the ESP bytes are untouched.
    """
    if packet[9] == 17:
        ihl = (packet[0] & 15) * 4
        packet = packet[:ihl + 6] + b"\0\0" + packet[ihl + 8:]
    code = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW); "
            "p=bytes.fromhex(sys.argv[1]); s.sendto(p, (socket.inet_ntoa(p[16:20]), 0))")
    lab.exec(side, "python3", "-c", code, packet.hex())


def esp_spi(packet: bytes) -> int:
    """SPI of a captured ESP (raw or in UDP) IPv4 packet."""
    ihl = (packet[0] & 15) * 4
    off = ihl + 8 if packet[9] == 17 else ihl
    return int.from_bytes(packet[off:off + 4], "big")


def iperf(stop: Stopper, lab: Lab, seconds: int, *, client: str = "left", server: str = "right",
          extra: tuple[str, ...] = ()) -> dict:
    """iperf3 TCP from ``client``'s inner address to ``server``'s; the JSON result."""
    dst = SIDES[server]["inner"]
    srv = stop.popen("ip", "netns", "exec", lab.ns[server], "iperf3", "-s", "-1", "-B", dst,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: "LISTEN" in lab.exec(server, "ss", "-ltn").stdout and ":5201" in
             lab.exec(server, "ss", "-ltn").stdout, 10, 0.05, "iperf3 server")
    res = lab.exec(client, "iperf3", "-c", dst, "-B", SIDES[client]["inner"], "-t", str(seconds), "-J", *extra,
                   check=False, timeout=seconds + 30)
    srv.wait(10)
    data = json.loads(res.stdout)
    if "error" in data:
        raise AssertionError(f"iperf3: {data['error']}")
    return data


__all__ = [
    "BENCH_CHARON",
    "CAPTURE_ESP_AND_FRAGMENTS",
    "SUITES",
    "Stopper",
    "background_ping",
    "capture_esp",
    "capturing_wire",
    "charon_counters",
    "diagnose",
    "environ",
    "esp_spi",
    "finish_ping",
    "inject",
    "installed",
    "iperf",
    "our_counters",
    "our_policy",
    "pcap_ip_packets",
    "ping_stats",
    "read_pcap",
    "wait_child",
    "wait_for",
    "wire_sizes",
]
