"""Raw cost of the key exchanges of a hybrid IKE SA: ML-KEM-768/1024 and x25519.

Each operation is timed through our engine.crypto wrappers (what the IKE layer
calls) and as the bare `cryptography` call, in the same run, interleaved run by
run; the figure is the median of --runs runs of --n operations each, in
microseconds per operation, with the ratio ours/raw. Whole hybrid handshakes
(x25519 + ML-KEM, ours and charon 6.1 side by side): benchmarks/hybrid_handshake.py.

    python3 benchmarks/kem.py [--runs 7] [--n 300] [--json out.json]

Operations:
  keygen  initiator: a fresh key pair and its KE data (ek, or the x25519 public value)
  encaps  responder: from the initiator's KE data to (reply data, shared secret)
  decaps  initiator: from the responder's reply to the shared secret
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402

from engine.crypto.ke import new_key_exchange, respond  # noqa: E402
from engine.crypto.kem import mlkem_unavailable_reason  # noqa: E402
from engine.crypto.transforms import KeId  # noqa: E402

RAW = Encoding.Raw, PublicFormat.Raw


def ours(group: int):
    def keygen():
        return new_key_exchange(group).public_bytes()

    init = new_key_exchange(group)
    peer = init.public_bytes()
    reply, _ = respond(group, peer)
    return {"keygen": keygen, "encaps": lambda: respond(group, peer), "decaps": lambda: init.compute_shared(reply)}


def raw(group: int):
    if group == KeId.CURVE25519:
        a, b = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
        pa = a.public_key().public_bytes(*RAW)
        pb = b.public_key()

        def respond_raw():
            k = x25519.X25519PrivateKey.generate()
            return k.public_key().public_bytes(*RAW), k.exchange(x25519.X25519PublicKey.from_public_bytes(pa))

        return {"keygen": lambda: x25519.X25519PrivateKey.generate().public_key().public_bytes(*RAW),
                "encaps": respond_raw, "decaps": lambda: a.exchange(pb)}
    priv_cls, pub_cls = {KeId.ML_KEM_768: (mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey),
                         KeId.ML_KEM_1024: (mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey)}[group]
    key = priv_cls.generate()
    ek = key.public_key().public_bytes_raw()
    _, ct = pub_cls.from_public_bytes(ek).encapsulate()
    return {"keygen": lambda: priv_cls.generate().public_key().public_bytes_raw(),
            "encaps": lambda: pub_cls.from_public_bytes(ek).encapsulate(), "decaps": lambda: key.decapsulate(ct)}


def per_op_us(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per figure; the median is shown (default 7)")
    ap.add_argument("--n", type=int, default=300, help="operations per run (default 300)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    groups = [KeId.CURVE25519]
    for g in (KeId.ML_KEM_768, KeId.ML_KEM_1024):
        reason = mlkem_unavailable_reason(g)
        if reason:
            print(f"skipping {g.name}: {reason}")
        else:
            groups.append(g)
    results = []
    print(f"us per operation, median of {args.runs} runs x {args.n} (ours = engine.crypto, raw = cryptography)")
    print(f"{'method':<12} {'op':<7} {'ours':>9} {'raw':>9} {'ours/raw':>9}")
    for g in groups:
        fns = {"ours": ours(g), "raw": raw(g)}
        for op in ("keygen", "encaps", "decaps"):
            samples = {"ours": [], "raw": []}
            for _ in range(args.runs):
                for who in ("ours", "raw"):  # interleaved, so machine noise hits both alike
                    samples[who].append(per_op_us(fns[who][op], args.n))
            m = {who: statistics.median(v) for who, v in samples.items()}
            results.append({"method": g.name, "op": op, "ours_us": m["ours"], "raw_us": m["raw"]})
            print(f"{g.name:<12} {op:<7} {m['ours']:>9.1f} {m['raw']:>9.1f} {m['ours'] / m['raw']:>9.2f}")
    by = {(r["method"], r["op"]): r["ours_us"] for r in results}
    if ("ML_KEM_768", "keygen") in by:
        for kem_name in ("ML_KEM_768", "ML_KEM_1024"):
            if (kem_name, "keygen") not in by:
                continue
            extra_i = by[(kem_name, "keygen")] + by[(kem_name, "decaps")]
            extra_r = by[(kem_name, "encaps")]
            base_i = by[("CURVE25519", "keygen")] + by[("CURVE25519", "decaps")]
            print(f"adding {kem_name} to x25519 costs the initiator {extra_i:.0f} us "
                  f"(x25519 alone {base_i:.0f} us) and the responder {extra_r:.0f} us "
                  f"(x25519 alone {by[('CURVE25519', 'encaps')]:.0f} us) of CPU per IKE SA")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
