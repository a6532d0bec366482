"""In-process cost of installing and removing one CHILD SA pair in the userspace datapath.

What the daemon does per handshake of benchmarks/handshakes.py (one ESP AES-GCM-256 tunnel pair,
198.51.100.129/32 <-> 198.51.100.0/25, UDP-encapsulated, time-based packet sampling armed, another
SA holding the same route), without sockets, TUN device or netlink: `sa_pair_from_event`, then
`UserspaceDatapath.install` + `remove`. Beside it, the raw `cryptography` reference: keying the two
AES-GCM contexts of a pair and sealing one packet with each (what building both ciphers at install
costs at least). No root needed.

    python3 benchmarks/sa_install.py [--pairs 2000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402  (the raw reference)

import engine.datapath.userspace as userspace  # noqa: E402
from engine.datapath.tun import RouteTable, ranges_to_networks  # noqa: E402
from engine.esp.sad import sa_pair_from_event  # noqa: E402
from engine.events import ChildKeys, ChildSaDeleted, ChildSaInstalled  # noqa: E402
from engine.policy.parse import parse_policy  # noqa: E402
from engine.policy.ts import parse_ts  # noqa: E402
from engine.secret import Secret  # noqa: E402

POLICY = """
[engine]
datapath = "userspace"
listen = ["192.0.2.2"]

[connections.bench]
local_addrs = ["192.0.2.2"]
remote_addrs = ["192.0.2.1"]
proposals = ["aes256gcm16-prfsha256-x25519"]
local = { auth = "psk", id = "right.example" }
remote = { auth = "psk", id = "%any" }

[connections.bench.children.lan]
mode = "tunnel"
local_ts = ["198.51.100.129/32"]
remote_ts = ["198.51.100.0/25"]
esp_proposals = ["aes256gcm16"]
"""
LOCAL_TS = (parse_ts("198.51.100.129/32"),)
REMOTE_TS = (parse_ts("198.51.100.0/25"),)


def installed(n: int) -> ChildSaInstalled:
    keys = ChildKeys(Secret(os.urandom(36)), Secret(b""), Secret(os.urandom(36)), Secret(b""))
    return ChildSaInstalled(
        ike_sa=n, connection="bench", child="lan", unique_id=n, reqid=n, protocol="esp", mode="tunnel",
        spi_in=0x1000 + n, spi_out=0x9000 + n, local_addr="192.0.2.2", remote_addr="192.0.2.1",
        local_ts=LOCAL_TS, remote_ts=REMOTE_TS, encr_id=20, encr_key_length=256, integ_id=None, esn=False,
        keys=keys, encap=True, local_port=4500, remote_port=4500, initiator=False)


def deleted(ev: ChildSaInstalled) -> ChildSaDeleted:
    return ChildSaDeleted(ike_sa=ev.ike_sa, connection=ev.connection, child=ev.child, unique_id=ev.unique_id,
                          reqid=ev.reqid, protocol="esp", spi_in=ev.spi_in, spi_out=ev.spi_out,
                          reason="deleted by peer")


class _Sender:
    """Stands for the NAT-T socket's batching sender (nothing is sent: no packet flows)."""

    dest = ("192.0.2.1", 4500)
    pmtu = 0
    key = "bench"

    def __init__(self) -> None:
        self.pairs: set = set()


class _Writer:
    def route(self, *args, **kw) -> None:
        pass


class _Addresses:
    def address_in(self, networks):
        return None


def datapath():
    dp = userspace.UserspaceDatapath(parse_policy(POLICY, load_secrets=False))
    sender = _Sender()
    dp._sender = lambda ev: sender
    dp.routes = RouteTable(_Writer(), 5)
    dp._addrs = _Addresses()
    dp.path.arm_samples()  # time-based sampling, as a started datapath runs it
    dp.routes.add(ranges_to_networks(REMOTE_TS[0].start, REMOTE_TS[0].end), None)  # 32 in flight share it
    return dp


def hold_one(dp, n: int) -> None:
    """Another installed CHILD SA of the same child, as the daemon holds while handshakes come and
    go (the SAs of one child share their route)."""
    dp.install(installed(n + 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    n = args.pairs
    evs = [installed(i) for i in range(1, n + 1)]
    dels = [deleted(ev) for ev in evs]
    dp = datapath()
    userspace._immediate = lambda sender: None
    hold_one(dp, n)
    keys = [(ev.keys.encr_in.reveal(), ev.keys.encr_out.reveal()) for ev in evs]
    nonce, packet, aad = bytes(12), bytes(100), bytes(8)

    def pair_only() -> float:
        t = time.perf_counter()
        for ev in evs:
            sa_pair_from_event(ev)
        return time.perf_counter() - t

    def install_remove() -> float:
        t = time.perf_counter()
        for ev, gone in zip(evs, dels):
            dp.install(ev)
            dp.remove(gone)
        return time.perf_counter() - t

    def raw_contexts() -> float:
        t = time.perf_counter()
        for k_in, k_out in keys:
            AESGCM(k_in[:32]).encrypt(nonce, packet, aad)
            AESGCM(k_out[:32]).encrypt(nonce, packet, aad)
        return time.perf_counter() - t

    gc.disable()  # the daemon's collector rarely runs under this load (engine/runtime/daemon.py)
    rows = [("sa_pair_from_event (both SAs)", pair_only), ("userspace datapath install + remove", install_remove),
            ("raw: key 2 AES-GCM contexts + seal 1 packet each", raw_contexts)]
    for label, fn in rows:
        times = [fn() / n * 1e6 for _ in range(args.rounds)]
        print(f"{label:52s} {statistics.median(times):7.2f} µs per pair  (median of {args.rounds} x {n})")
    gc.enable()
    return 0


if __name__ == "__main__":
    sys.exit(main())
