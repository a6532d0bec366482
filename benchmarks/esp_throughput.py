"""ESP per-packet cost against the bare `cryptography` calls it wraps.

For each suite, one "round" is protect + unprotect of one 1400-byte IPv4
packet through a tunnel-mode SA pair (engine.esp), timed per packet; the
baseline is the bare primitive doing the same cryptographic work on the
same bytes (AEAD: encrypt + decrypt; CBC+HMAC: encrypt, MAC, verify MAC,
decrypt). Each figure is the median of several runs of many packets.

    python3 benchmarks/esp_throughput.py            # table, then iperf3 through tunnels (root)
    python3 benchmarks/esp_throughput.py --no-tunnel
    python3 benchmarks/esp_throughput.py --profile  # cProfile of the AES-GCM-256 path

The goals (issue 4): within 5x of the bare call per packet; through a
tunnel, at least 5x strongSwan's kernel-libipsec (the second table, from
benchmarks/tunnel_throughput.py, needs root and strongSwan). This script may
import `cryptography` directly: it is not engine code.
"""

from __future__ import annotations

import argparse
import cProfile
import hmac
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as chmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from engine.crypto.encr import encr_keymat_size, make_cipher
from engine.crypto.integ import Integ, integ_key_size
from engine.crypto.transforms import EncrId, IntegId
from engine.esp import EspInboundSa, EspOutboundSa
from engine.esp import ip as ipmod

PACKET_SIZE = 1400
SUITES = [
    ("AES-GCM-256", EncrId.AES_GCM_16, 256, None),
    ("AES-CBC-128/HMAC-SHA2-256", EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128),
    ("AES-CBC-256/HMAC-SHA2-256", EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_256_128),
    ("ChaCha20-Poly1305", EncrId.CHACHA20_POLY1305, None, None),
]


def make_packet(size: int = PACKET_SIZE) -> bytes:
    """An IPv4 UDP packet of ``size`` bytes, 198.51.100.1 -> 198.51.100.129."""
    payload = os.urandom(size - 28)
    udp = ipmod.UDP_HEADER.pack(40000, 9, 8 + len(payload), 0) + payload
    src, dst = bytes([198, 51, 100, 1]), bytes([198, 51, 100, 129])
    return ipmod.ipv4_header(src, dst, ipmod.IPPROTO_UDP, len(udp)) + udp


def sa_pair(encr: int, bits: int | None, integ: int | None):
    ekey = os.urandom(encr_keymat_size(encr, bits))
    ikey = os.urandom(integ_key_size(integ)) if integ else b""
    kw = dict(mode="tunnel")
    out = EspOutboundSa(0x1000, cipher=make_cipher(encr, bits, ekey), integ=Integ(integ, ikey) if integ else None,
                        local_addr="192.0.2.1", remote_addr="192.0.2.2", **kw)
    inb = EspInboundSa(0x1000, cipher=make_cipher(encr, bits, ekey), integ=Integ(integ, ikey) if integ else None,
                       local_addr="192.0.2.2", remote_addr="192.0.2.1", replay_window=64, **kw)
    return out, inb, ekey, ikey


def bare_round(encr: int, bits: int | None, integ: int | None, ekey: bytes, ikey: bytes, data: bytes):
    """A function doing the bare cryptographic work of one protect + unprotect."""
    aad = os.urandom(8)
    if encr in (EncrId.AES_GCM_16, EncrId.CHACHA20_POLY1305):
        aead = AESGCM(ekey[:-4]) if encr == EncrId.AES_GCM_16 else ChaCha20Poly1305(ekey[:-4])
        nonce = os.urandom(12)

        def run():
            aead.decrypt(nonce, aead.encrypt(nonce, data, aad), aad)
        return run
    algo = algorithms.AES(ekey)
    iv = os.urandom(16)
    mac = chmac.HMAC(ikey, hashes.SHA256())
    padded = data + bytes(-len(data) % 16)

    def run():
        enc = Cipher(algo, modes.CBC(iv)).encryptor()
        ct = enc.update(padded) + enc.finalize()
        m = mac.copy()
        m.update(ct)
        tag = m.finalize()[:16]
        m = mac.copy()
        m.update(ct)
        hmac.compare_digest(m.finalize()[:16], tag)
        dec = Cipher(algo, modes.CBC(iv)).decryptor()
        dec.update(ct) + dec.finalize()
    return run


def per_packet_us(fns, packets: int, runs: int) -> list[float]:
    """Median over ``runs`` of the mean time per call of each of ``fns``, in microseconds.

    The functions take turns within each run, so a busy machine slows them alike
    and the ratio stays meaningful even when the absolute figures do not.
    """
    for fn in fns:
        for _ in range(min(packets, 1000)):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, out in zip(fns, samples):
            t0 = time.perf_counter()
            for _ in range(packets):
                fn()
            out.append((time.perf_counter() - t0) / packets * 1e6)
    return [statistics.median(s) for s in samples]


def measure(name, encr, bits, integ, packets, runs):
    out, inb, ekey, ikey = sa_pair(encr, bits, integ)
    pkt = make_packet()
    protect, unprotect = out.protect, inb.unprotect

    def ours():
        unprotect(protect(pkt, 0.0), 0.0)

    # Sanity before timing: the round trip returns the packet.
    assert unprotect(protect(pkt, 0.0), 0.0) == pkt
    bare = bare_round(encr, bits, integ, ekey, ikey, pkt)
    t_ours, t_bare = per_packet_us([ours, bare], packets, runs)
    return name, t_ours, t_bare


def profile(packets: int) -> None:
    out, inb, _, _ = sa_pair(EncrId.AES_GCM_16, 256, None)
    pkt = make_packet()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(packets):
        inb.unprotect(out.protect(pkt, 0.0), 0.0)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=20_000, help="packets per run (default 20000)")
    ap.add_argument("--runs", type=int, default=5, help="runs per figure; the median is shown (default 5)")
    ap.add_argument("--profile", action="store_true", help="cProfile the AES-GCM-256 path instead")
    ap.add_argument("--no-tunnel", action="store_true", help="skip the iperf3 part")
    ap.add_argument("--tunnel-rounds", type=int, default=3, help="iperf3 runs per configuration (default 3)")
    ap.add_argument("--tunnel-seconds", type=int, default=5, help="iperf3 seconds per run (default 5)")
    args = ap.parse_args(argv)
    if args.profile:
        profile(args.packets)
        return 0
    print(f"ESP tunnel mode, IPv4, {PACKET_SIZE}-byte packets: protect + unprotect per packet "
          f"(median of {args.runs} x {args.packets})")
    print(f"{'suite':<28}{'engine.esp us':>14}{'bare us':>10}{'ratio':>8}{'Mbit/s':>9}")
    worst = 0.0
    for suite in SUITES:
        name, ours, bare = measure(*suite, args.packets, args.runs)
        ratio = ours / bare
        worst = max(worst, ratio)
        # One protect + unprotect moves the packet once through both ends.
        mbit = PACKET_SIZE * 8 / ours
        print(f"{name:<28}{ours:>14.2f}{bare:>10.2f}{ratio:>7.2f}x{mbit:>9.0f}")
    print(f"worst ratio {worst:.2f}x (goal: within 5x of the bare call)")
    if args.no_tunnel:
        return 0
    print()
    import os

    from benchmarks.tunnel_throughput import CHARON
    from benchmarks.tunnel_throughput import main as tunnel_main

    if os.geteuid() != 0 or not os.path.exists(CHARON):
        print("iperf3 through tunnels: skipped (needs root and strongSwan: see benchmarks/tunnel_throughput.py)")
        return 0
    return tunnel_main(["--rounds", str(args.tunnel_rounds), "--seconds", str(args.tunnel_seconds)])


if __name__ == "__main__":
    raise SystemExit(main())
