"""What the IKE wire codec costs per responder handshake, in-process (no root, no network).

The six messages a responder handles in benchmarks/handshakes.py's handshake (PSK, x25519,
AES-GCM-256, one CHILD SA, then a Delete of the IKE SA) are captured from real sans-IO
handshakes between two IkeEndpoints (that benchmark's pair), --handshakes of them, so sizes,
payloads and the objects' sharing are what the responder really sees (fresh nonces, keys, SPIs
and payload objects in every handshake; the cached chosen proposal shared as in the engine):

  decode  IKE_SA_INIT request     decode_message(datagram)
  encode  IKE_SA_INIT response    encode_message(...)
  decode  IKE_AUTH request        decode_message(datagram) + decode_payloads(SK plaintext)
  encode  IKE_AUTH response       encode_payloads(inner) + encode_sk_message(prefix)
  decode  INFORMATIONAL Delete    decode_message(datagram) + decode_payloads(SK plaintext)
  encode  its empty response      encode_payloads(()) + encode_sk_message(prefix)

Decryption and encryption are not the codec's and are left out. Beside each figure, two
references measured in the same round on the same bytes, so the ratios mean something on a
busy machine: the raw `cryptography` AES-GCM seal of the message's bytes (a preset AESGCM
object, 12-byte nonce) and one struct.pack of an IKE header. Printed: medians of --rounds
rounds, µs per message and per handshake, and the codec's cost in AES-GCM seals and header
packs. Run from the tree to measure, e.g. a `git archive` of main in /tmp beside the worktree,
one after the other in the same minute:

    python3 benchmarks/wire_codec.py --rounds 9
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import struct
import sys
import time

sys.path.insert(0, os.getcwd())

import engine.ike.front_door as front_door  # noqa: E402
import engine.ike.protection as protection  # noqa: E402
import engine.ike.sa as ike_sa  # noqa: E402
from benchmarks.handshakes import _sansio_handshakes, _sansio_pair, _Clock  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from engine.wire.constants import FLAG_RESPONSE, ExchangeType  # noqa: E402
from engine.wire.message import (  # noqa: E402
    decode_message,
    decode_payloads,
    encode_message,
    encode_payloads,
    encode_sk_message,
)

_HEADER = struct.Struct("!8s8sBBBBII")
_IV, _ICV = 8, 16  # AES-GCM in IKE (RFC 5282): what seal() adds around the padded plaintext
NAMES = ("decode IKE_SA_INIT request", "encode IKE_SA_INIT response", "decode IKE_AUTH request",
         "encode IKE_AUTH response", "decode INFORMATIONAL Delete", "encode INFORMATIONAL response")


class Capture:
    """Records what the responder decodes and encodes, by wrapping the codec where the IKE layer
    looks it up (both endpoints share the modules: requests are what the responder receives)."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, tuple[int, bytes] | None]] = []  # (datagram, SK plaintext)
        self.responses: list[tuple] = []  # ("plain", args) or ("sk", args)
        self._saved: list[tuple[object, str, object]] = []

    def _patch(self, owner, name, wrapper) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, wrapper)

    def __enter__(self) -> "Capture":
        orig_open, orig_seal = protection.SkCodec.open, protection.SkCodec.seal
        orig_fd, orig_sa = front_door.encode_message, ike_sa.encode_message
        cap = self

        def open_(codec, message):
            first, inner = orig_open(codec, message)
            if not message.header.response:
                cap.requests.append((message.raw, (first, inner)))
            return first, inner

        def seal(codec, exchange, mid, spi_i, spi_r, flags, payloads, *args, **kw):
            if flags & FLAG_RESPONSE:
                cap.responses.append(("sk", (exchange, mid, spi_i, spi_r, flags, list(payloads))))
            return orig_seal(codec, exchange, mid, spi_i, spi_r, flags, payloads, *args, **kw)

        def plain(orig):
            def encode(exchange, mid, spi_i, spi_r, flags, payloads):
                if flags & FLAG_RESPONSE:
                    cap.responses.append(("plain", (exchange, mid, spi_i, spi_r, flags, list(payloads))))
                return orig(exchange, mid, spi_i, spi_r, flags, payloads)
            return encode

        orig_decode = front_door.decode_message

        def decode(data):
            message = orig_decode(data)
            if message.header.exchange == ExchangeType.IKE_SA_INIT and not message.header.response:
                cap.requests.append((bytes(data), None))
            return message

        self._patch(protection.SkCodec, "open", open_)
        self._patch(protection.SkCodec, "seal", seal)
        self._patch(front_door, "encode_message", plain(orig_fd))
        self._patch(ike_sa, "encode_message", plain(orig_sa))
        self._patch(front_door, "decode_message", decode)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, value in reversed(self._saved):
            setattr(owner, name, value)


def capture(n: int) -> list[list[tuple]]:
    """n handshakes' six messages, each as (kind, args) in NAMES order."""
    a, b = _sansio_pair()
    _sansio_handshakes(a, b, 20, _Clock())  # warm the engine's caches, as a running daemon has them
    with Capture() as cap:
        ok = _sansio_handshakes(a, b, n, _Clock())
    if ok != n or len(cap.requests) != 3 * n or len(cap.responses) != 3 * n:
        raise RuntimeError(f"captured {len(cap.requests)} requests and {len(cap.responses)} responses "
                           f"of {ok} handshakes, expected {3 * n} each")
    out = []
    for i in range(n):
        reqs, resps = cap.requests[3 * i:3 * i + 3], cap.responses[3 * i:3 * i + 3]
        exchanges = [decode_message(r[0]).header.exchange for r in reqs] + [r[1][0] for r in resps]
        if exchanges != [ExchangeType.IKE_SA_INIT, ExchangeType.IKE_AUTH, ExchangeType.INFORMATIONAL] * 2:
            raise RuntimeError(f"handshake {i}: unexpected exchanges {exchanges}")
        out.append([("decode", reqs[0]), resps[0], ("decode", reqs[1]), resps[1], ("decode", reqs[2]), resps[2]])
    return out


def run_one(kind: str, args) -> bytes:
    """The codec's work for one message; returns the bytes the reference is sized on."""
    if kind == "decode":
        data, sk = args
        decode_message(data)
        if sk is not None:
            decode_payloads(sk[0], sk[1])
        return data
    exchange, mid, spi_i, spi_r, flags, payloads = args
    if kind == "plain":
        return encode_message(exchange, mid, spi_i, spi_r, flags, payloads)
    first, inner = encode_payloads(payloads)
    body_len = _IV + len(inner) + 1 + _ICV
    return encode_sk_message(exchange, mid, spi_i, spi_r, flags, first, body_len=body_len) + inner


def measure(handshakes: list[list[tuple]], rounds: int) -> dict:
    sizes = [len(run_one(*m)) for m in handshakes[0]]
    aead = AESGCM(bytes(32))
    nonce = bytes(12)
    blobs = [[run_one(*m) for m in hs] for hs in handshakes]
    per: dict[str, list[float]] = {name: [] for name in NAMES}
    per_hs: list[float] = []
    ref_seal: list[float] = []
    ref_pack: list[float] = []
    clock = time.perf_counter_ns
    n = len(handshakes)
    pack = _HEADER.pack
    spi = bytes(8)
    gc.disable()
    try:
        for _ in range(rounds):
            total = 0
            for j, name in enumerate(NAMES):
                kind_args = [hs[j] for hs in handshakes]
                t = clock()
                for kind, args in kind_args:
                    run_one(kind, args)
                dt = clock() - t
                per[name].append(dt / n / 1000)
                total += dt
            per_hs.append(total / n / 1000)
            # The references on the same six messages' bytes: one seal each, one header pack each.
            t = clock()
            for hs in blobs:
                for blob in hs:
                    aead.encrypt(nonce, blob, None)
            ref_seal.append((clock() - t) / n / 1000)
            t = clock()
            for hs in blobs:
                for blob in hs:
                    pack(spi, spi, 33, 0x20, 34, 0x20, 1, len(blob))
            ref_pack.append((clock() - t) / n / 1000)
            gc.collect()
    finally:
        gc.enable()
    med = statistics.median
    return dict(sizes=sizes, per={k: med(v) for k, v in per.items()}, handshake=med(per_hs),
                seal=med(ref_seal), pack=med(ref_pack), rounds=rounds, n=n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--handshakes", type=int, default=300, help="distinct handshakes captured (default 300)")
    ap.add_argument("--rounds", type=int, default=9, help="rounds over them; medians are printed (default 9)")
    opts = ap.parse_args()
    handshakes = capture(opts.handshakes)
    r = measure(handshakes, opts.rounds)
    print(f"wire codec per responder handshake: {r['n']} captured handshakes, median of {r['rounds']} rounds")
    print(f"{'message':32} {'bytes':>6} {'µs':>8}")
    for name, size in zip(NAMES, r["sizes"]):
        print(f"{name:32} {size:6d} {r['per'][name]:8.2f}")
    print(f"{'codec, per handshake':32} {sum(r['sizes']):6d} {r['handshake']:8.2f}")
    print(f"{'ref: AES-GCM seal of the 6':32} {'':6} {r['seal']:8.2f}   codec / seal = {r['handshake'] / r['seal']:.2f}")
    print(f"{'ref: 6 IKE header packs':32} {'':6} {r['pack']:8.2f}   codec / pack = {r['handshake'] / r['pack']:.1f}")


if __name__ == "__main__":
    main()
