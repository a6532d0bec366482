"""iperf3 TCP through an IPsec tunnel with standard-sized ESP: our userspace
datapath as shipped against strongSwan's kernel-libipsec, both ends each and
each with the other, in the same lab and the same run; plain veth as the
reference. A capture checks that no ESP packet on the wire exceeds the path
MTU and that none is an IP fragment.

Two network namespaces joined by veth (tests/interop/lab.py: 192.0.2.1/.2
outside, 198.51.100.1/.129 inside the tunnel, path MTU 1500). Each
configuration brings up its tunnel, runs one iperf3 TCP stream from left to
right for --seconds, and tears down; configurations take turns round after
round (in a rotating order), so a busy machine slows them alike, and the
table shows medians.

    sudo python3 benchmarks/tunnel_throughput.py                 # 5 rounds of 5 s
    sudo python3 benchmarks/tunnel_throughput.py --rounds 3 --seconds 10 --suite aes128-sha256
    sudo python3 benchmarks/tunnel_throughput.py --configs ours,strongswan --no-capture
    sudo python3 benchmarks/tunnel_throughput.py --profile       # py-spy of both daemons
    sudo python3 benchmarks/tunnel_throughput.py --profile --configs strongswan-ours  # our end only

Configurations (the shipped one first):
  ours             our daemon on both ends as shipped: userspace datapath, TUN offloads on
                   (super-packets cut into standard packets), no NAT between them, so raw ESP
                   (IP protocol 50): one send per ESP packet (raw sockets have no GSO)
  ours-udp         the same with encap = true (what a NAT between them, or charon's libipsec,
                   gives): ESP-in-UDP in UDP GSO batches, received with UDP GRO
  strongswan       charon on both ends, kernel-libipsec (ESP in charon, ESP-in-UDP), bench-charon.conf
  ours-strongswan  ours on the left (the iperf3 sender), charon on the right
  strongswan-ours  charon on the left (the sender), ours on the right
  ours-off         diagnostic: ours with tun_offload = "off" (packet by packet)
  veth             reference: iperf3 between the veth addresses, no tunnel

The capture (after the timed rounds, one extra run per tunnel configuration,
not timed): tcpdump on both veth ends of ESP, ESP-in-UDP and every IP
fragment, with the veths told to hand over no GSO batches (``ip link set
veth0 gso_max_segs 1``: a veth otherwise carries a GSO batch as one "packet",
which a real NIC would cut before the wire), then the largest IP packet and
the count of fragments per configuration.

Needs root, strongSwan (charon, swanctl), iperf3, tcpdump and, for --profile, py-spy.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.interop.lab import CHARON, SIDES, Lab, our_policy, wait_for
from tests.interop.lab_esp import (
    BENCH_CHARON,
    SUITES,
    Stopper,
    capturing_wire,
    installed,
    pcap_ip_packets,
    wire_sizes,
)

CONFIGS = ("ours", "ours-udp", "strongswan", "ours-strongswan", "strongswan-ours")
ALL_CONFIGS = CONFIGS + ("ours-off", "veth")
PATH_MTU = 1500
"""The veth's MTU: the path MTU between the two ends."""
RETRANSMITS: list[int] = []
"""TCP retransmissions the iperf3 sender reported, run by run."""
DAEMONS: dict[str, int] = {}
"""The tunnel's daemons (ours or charon), side -> pid, while a tunnel is up."""
CPU: list[dict[str, float]] = []
"""Run by run: CPU seconds (user + system, all threads) each side's daemon used per Gbit carried.
The throughput of one stream swings with the machine's load; the CPU its packets cost swings less."""
_TICK = os.sysconf("SC_CLK_TCK")


def bench_extra() -> str:
    if BENCH_CHARON.is_file():
        return BENCH_CHARON.read_text()
    # The shared snippet's content, for a checkout without ../shared.
    return ("charon {\n  load = aesni aes sha2 sha1 md5 rdrand random nonce x509 revocation constraints pubkey "
            "pkcs1 pem openssl pkcs8 gmp curve25519 chapoly xcbc cmac hmac kdf ctr gcm drbg kernel-libipsec "
            "kernel-netlink socket-default vici\n  dos_protection = no\n"
            "  filelog { charon-log { default = 0\n ike = 0\n enc = 0\n net = 0\n cfg = 0\n knl = 0 } }\n}\n")


def _ours(config: str, side: str, ike: str, esp: str, **kw) -> str:
    extra = 'tun_offload = "off"' if config == "ours-off" else ""
    return our_policy(side, proposals=(ike,), esp=(esp,), encap=config == "ours-udp", extra_engine=extra, **kw)


@contextlib.contextmanager
def tunnel(config: str, lab: Lab, work: Path, suite: str):
    """Bring up ``config``'s tunnel; yields (source, destination, daemon pids for profiling)."""
    ike, esp = SUITES[suite]
    DAEMONS.clear()
    with Stopper() as st:
        if config == "veth":
            yield SIDES["left"]["addr"], SIDES["right"]["addr"], {}
            return
        left_kind, right_kind = {"strongswan": ("charon", "charon"), "ours-strongswan": ("ours", "charon"),
                                 "strongswan-ours": ("charon", "ours")}.get(config, ("ours", "ours"))
        pids = {}
        if right_kind == "charon":
            right = st.charon(lab, "right", work, proposals=ike, esp_proposals=esp, extra=bench_extra())
        else:
            right = st.ours(lab, "right", work, _ours(config, "right", ike, esp))
        pids["right"] = right.proc.pid
        if left_kind == "charon":
            left = st.charon(lab, "left", work, proposals=ike, esp_proposals=esp, extra=bench_extra(),
                             start_action="start")
            wait_for(lambda: "INSTALLED" in left.list_sas(), 20, 0.1, "charon's CHILD SA")
            if right_kind == "ours":
                wait_for(lambda: installed(right), 20, 0.1, "our CHILD SA")
        else:
            left = st.ours(lab, "left", work, _ours(config, "left", ike, esp, start_action="start"))
            wait_for(lambda: installed(left), 20, 0.1, "our CHILD SA")
        pids["left"] = left.proc.pid
        for pid in pids.values():
            _raise(pid)
        DAEMONS.clear()
        DAEMONS.update(pids)
        time.sleep(0.3)
        # Only our daemons are profiled (py-spy reads Python stacks; charon's threads are in `top`).
        ours = {side: pid for side, pid in pids.items() if (left_kind, right_kind)[side == "right"] == "ours"}
        yield SIDES["left"]["inner"], SIDES["right"]["inner"], ours


def _raise(pid: int) -> None:
    """nice (--nice) for a process and its threads, as benchmarks/handshakes.py does: other work on a
    shared machine then disturbs every configuration less (and alike)."""
    from benchmarks import handshakes

    with contextlib.suppress(OSError, ProcessLookupError):
        handshakes.prioritize(pid)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads so far (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK


def iperf_once(lab: Lab, src: str, dst: str, seconds: int, profile: dict | None = None,
               tag: str = "") -> float:
    """One iperf3 TCP stream; received Mbit/s."""
    server = subprocess.Popen(["ip", "netns", "exec", lab.ns["right"], "iperf3", "-s", "-1", "-B", dst],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _raise(server.pid)
    spies = []
    try:
        wait_for(lambda: ":5201" in lab.exec("right", "ss", "-ltn").stdout, 10, 0.05, "iperf3 server")
        for side, pid in (profile or {}).items():
            out = Path(tempfile.gettempdir()) / f"tunnel-profile-{tag}-{side}.txt"
            spies.append((side, out, subprocess.Popen(
                ["py-spy", "record", "-p", str(pid), "-d", str(seconds), "-r", "250", "-f", "raw", "-o", str(out),
                 "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        daemons = dict(DAEMONS)
        before = {side: cpu_seconds(pid) for side, pid in daemons.items()}
        client = subprocess.Popen(["ip", "netns", "exec", lab.ns["left"], "iperf3", "-c", dst, "-B", src, "-t",
                                   str(seconds), "-J"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  start_new_session=True)
        _raise(client.pid)
        out, _ = client.communicate(timeout=seconds + 30)
        data = json.loads(out)
        if "error" in data:
            raise RuntimeError(f"iperf3: {data['error']}")
        RETRANSMITS.append(data["end"]["sum_sent"].get("retransmits", 0))
        gbit = data["end"]["sum_received"]["bytes"] * 8 / 1e9
        CPU.append({side: (cpu_seconds(pid) - before[side]) / gbit if gbit else float("nan")
                    for side, pid in daemons.items()})
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        for _side, _out, spy in spies:
            spy.wait(30)
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        server.wait(5)
        for side, out, _spy in spies:
            print_profile(f"{tag} {side}", out)


def print_profile(title: str, path: Path, top: int = 14) -> None:
    """Where the daemon's time went: share of samples per innermost frame (py-spy raw format)."""
    if not path.is_file():
        print(f"  (no profile for {title})")
        return
    leaf: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, n = line.rsplit(" ", 1)
        total += int(n)
        leaf[stack.split(";")[-1]] += int(n)
    print(f"  profile {title}: {total} samples (wall clock; select = idle)")
    for frame, n in leaf.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {frame[:110]}")


# ------------------------------------------------------------------ the capture check


def capture_check(lab: Lab, work: Path, config: str, suite: str, seconds: int) -> dict:
    """One more run with tcpdump on both veth ends (tests/interop/lab_esp.capturing_wire)."""
    with tunnel(config, lab, work / f"capture-{config}", suite) as (src, dst, _pids):
        with capturing_wire(lab, [("left", "veth0"), ("right", "veth0")], work, config) as pcaps:
            mbit = iperf_once(lab, src, dst, seconds)
            time.sleep(0.5)
    over = sum(1 for pcap in pcaps for total, _frag in pcap_ip_packets(pcap) if total > PATH_MTU)
    n, largest, frags = wire_sizes(pcaps)
    return dict(packets=n, largest=largest, fragments=frags, over_mtu=over, mbit=mbit)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5, help="iperf3 duration per run (default 5)")
    ap.add_argument("--rounds", type=int, default=5, help="runs per configuration; medians shown (default 5)")
    ap.add_argument("--suite", choices=list(SUITES), default="aes256gcm16", help="ESP suite (default aes256gcm16)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated, from {', '.join(ALL_CONFIGS)} (default: {','.join(CONFIGS)})")
    ap.add_argument("--no-capture", action="store_true", help="skip the capture check of ESP packet sizes")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy our daemons of ours and ours-udp (or of the --configs given), one run each")
    ap.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    ap.add_argument("--nice", type=int, default=-15,
                    help="nice value of daemons, charons and iperf3 (default -15, each thread and its session's "
                         "autogroup: other work on a shared machine disturbs them less; 0 leaves them alone)")
    args = ap.parse_args(argv)
    from benchmarks import handshakes

    handshakes.NICE = args.nice
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in ALL_CONFIGS]
    if bad:
        ap.error(f"unknown configuration(s): {', '.join(bad)}")
    if os.geteuid() != 0:
        print("tunnel_throughput: needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("iperf3", "swanctl", "ip", "tcpdump") + (("py-spy",) if args.profile else ()):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            print(f"tunnel_throughput: '{tool}' is missing", file=sys.stderr)
            return 2
    if not os.path.exists(CHARON) and any("strongswan" in c for c in configs):
        print(f"tunnel_throughput: {CHARON} is missing (strongSwan)", file=sys.stderr)
        return 2
    results: dict[str, list[float]] = {c: [] for c in configs}
    cpu: dict[str, list[dict]] = {c: [] for c in configs}
    captures: dict[str, dict] = {}
    lab = Lab().up()
    try:
        with tempfile.TemporaryDirectory(prefix="tunnel-bench-") as tmp:
            if args.profile:
                explicit = any(a == "--configs" or a.startswith("--configs=") for a in (argv or sys.argv[1:]))
                profiled = [c for c in configs if c not in ("strongswan", "veth")] if explicit else ["ours", "ours-udp"]
                for config in profiled:
                    with tunnel(config, lab, Path(tmp) / f"p-{config}", args.suite) as (src, dst, pids):
                        mbit = iperf_once(lab, src, dst, args.seconds, pids, config)
                        print(f"  {config}: {mbit:.0f} Mbit/s while profiled")
                return 0
            for r in range(args.rounds):
                order = configs[r % len(configs):] + configs[:r % len(configs)]
                for config in order:
                    with tunnel(config, lab, Path(tmp) / f"{r}-{config}", args.suite) as (src, dst, _pids):
                        mbit = iperf_once(lab, src, dst, args.seconds)
                    results[config].append(mbit)
                    cpu[config].append(CPU[-1] if CPU else {})
                    print(f"round {r + 1}/{args.rounds}  {config:<16} {mbit:9.1f} Mbit/s  "
                          f"({RETRANSMITS[-1]} TCP retransmissions)", flush=True)
            if not args.no_capture:
                for config in configs:
                    if config == "veth":
                        continue
                    captures[config] = capture_check(lab, Path(tmp), config, args.suite, min(args.seconds, 3))
    finally:
        lab.down()
    print()
    print(f"iperf3 TCP, 1 stream, {args.seconds} s, ESP {args.suite}, median of {args.rounds} "
          f"(2 namespaces, veth, path MTU {PATH_MTU}; {os.cpu_count()} CPUs)")
    base = statistics.median(results["strongswan"]) if results.get("strongswan") else None
    print(f"{'configuration':<18}{'median Mbit/s':>14}{'min':>9}{'max':>9}{'vs strongswan':>15}")
    for config in configs:
        xs = results[config]
        med = statistics.median(xs)
        ratio = f"{med / base:14.2f}x" if base else f"{'':>15}"
        print(f"{config:<18}{med:>14.1f}{min(xs):>9.1f}{max(xs):>9.1f}{ratio}")
    print()
    print("CPU seconds per Gbit carried (user + system of each daemon, all threads, during the iperf3 run; "
          "median; the sender's includes the veth delivery into the receiver's namespace)")
    print(f"{'configuration':<18}{'sender (left)':>15}{'receiver (right)':>18}{'both':>8}")
    for config in configs:
        runs = [c for c in cpu[config] if c]
        if not runs:
            continue
        med = {side: statistics.median(c[side] for c in runs) for side in ("left", "right")}
        both = statistics.median(c["left"] + c["right"] for c in runs)
        print(f"{config:<18}{med['left']:>15.3f}{med['right']:>18.3f}{both:>8.3f}")
    if captures:
        print()
        print(f"capture (one more run per configuration, veth GSO off, both ends): ESP packets, largest IP "
              f"packet, above the path MTU ({PATH_MTU}), IP fragments")
        for config, c in captures.items():
            verdict = "ok" if c["over_mtu"] == 0 and c["fragments"] == 0 and c["packets"] else "FAILED"
            print(f"  {config:<18}{c['packets']:>9} packets  largest {c['largest']:>5}  above MTU {c['over_mtu']:>4}  "
                  f"fragments {c['fragments']:>4}  {verdict}  ({c['mbit']:.0f} Mbit/s while captured)")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(results=results, cpu=cpu, captures=captures), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
