"""The hostile peers of benchmarks/hostile_input.py (issue 15), one function per
case. Each runs inside the attacker's namespace, sends what the issue
describes to our daemon, and prints one JSON object of what it did.

    python3 benchmarks/hostile_attacks.py CASE --target 192.0.2.1 --sources A,B,... [--rate N] [--duration S]

Messages are built with our own wire codec (engine.wire); the attacker
never completes a handshake except in ``identity`` (our engine as the
initiator, with an identity no parser would accept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ikeload import ike_keys  # noqa: E402
from engine.crypto.encr import make_cipher  # noqa: E402
from engine.crypto.ke import KeyExchange  # noqa: E402
from engine.crypto.transforms import EncrId, IntegId, KeId, PrfId, TransformType  # noqa: E402
from engine.datapath.base import NullDatapath  # noqa: E402
from engine.policy.model import (  # noqa: E402
    AuthConfig,
    ChildConfig,
    ConnectionConfig,
    EngineConfig,
    Identity,
    IkeSecret,
    Policy,
    Secrets,
)
from engine.policy.proposals import parse_proposal  # noqa: E402
from engine.policy.ts import parse_ts  # noqa: E402
from engine.runtime.engine import EngineRuntime  # noqa: E402
from engine.secret import Secret  # noqa: E402
from engine.wire.constants import FLAG_INITIATOR, ExchangeType, NotifyType, PayloadType, ProtocolId  # noqa: E402
from engine.wire.message import decode_message, encode_message, encode_skf_prefix  # noqa: E402
from engine.wire.payloads import (  # noqa: E402
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    Transform,
    VendorIdPayload,
)

ZERO8 = b"\0" * 8
HOSTILE_ID = "evil\n2026-01-01 00:00:00,000 ERROR   engine.ike: forged line\x1b[31m red\x00 nul\rend"


def _good_proposal() -> Proposal:
    return Proposal(1, ProtocolId.IKE, b"", (
        Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
        Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
        Transform(TransformType.KE, KeId.CURVE25519)))


def _bad_proposals(n: int = 255) -> tuple[Proposal, ...]:
    """n proposals of 30 transforms each that no sane responder accepts (DES, MD5, MODP-768)."""
    ts = [Transform(TransformType.ENCR, EncrId.DES)] * 10 + \
        [Transform(TransformType.INTEG, IntegId.HMAC_MD5_96)] * 10 + \
        [Transform(TransformType.PRF, PrfId.HMAC_MD5)] * 5 + [Transform(TransformType.KE, KeId.MODP_768)] * 5
    return tuple(Proposal(i + 1, ProtocolId.IKE, b"", tuple(ts)) for i in range(n))


def init_request(spi_i: bytes, *, vids: int = 0, proposals: tuple[Proposal, ...] | None = None,
                 cookie: bytes | None = None, fragmentation: bool = False, nonce: bytes | None = None,
                 ke: bytes | None = None) -> bytes:
    """An IKE_SA_INIT request; the same ``nonce`` again when echoing a COOKIE (the cookie covers it)."""
    payloads: list = []
    if cookie is not None:
        payloads.append(NotifyPayload(NotifyType.COOKIE, data=cookie))
    payloads += [SaPayload(proposals or (_good_proposal(),)), KePayload(KeId.CURVE25519, ke or os.urandom(32)),
                 NoncePayload(nonce or os.urandom(32))]
    if fragmentation:
        payloads.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
    payloads += [VendorIdPayload(b"")] * vids
    return encode_message(ExchangeType.IKE_SA_INIT, 0, spi_i, ZERO8, FLAG_INITIATOR, payloads)


def _sockets(sources: list[str]) -> list[socket.socket]:
    out = []
    for a in sources:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((a, 0))
        s.setblocking(False)
        out.append(s)
    return out


def _send(s: socket.socket, data: bytes, target) -> bool:
    try:
        s.sendto(data, target)
        return True
    except (BlockingIOError, OSError):
        return False


def _paced(rate: float, duration: float):
    """Yield the index of each send, ``rate`` per second for ``duration`` seconds."""
    start = time.monotonic()
    i = 0
    while True:
        now = time.monotonic()
        if now - start >= duration:
            return
        due = int((now - start) * rate)
        while i < due:
            yield i
            i += 1
        time.sleep(min(0.002, max(0.0, (i + 1) / rate - (now - start))))


def flood(args, make) -> dict:
    """Datagrams from ``make(i)`` at args.rate from the spoofed sources, round robin."""
    socks = _sockets(args.sources)
    target = (args.target, 500)
    sent = failed = size = 0
    for i in _paced(args.rate, args.duration):
        data = make(i)
        size = len(data)
        if _send(socks[i % len(socks)], data, target):
            sent += 1
        else:
            failed += 1
        if i % 64 == 0:
            for s in socks:  # drain answers so the receive buffers never fill
                _drain(s)
    return {"sent": sent, "send_failed": failed, "datagram_bytes": size, "attack_bytes": sent * size}


def _drain(s: socket.socket) -> list[tuple[bytes, tuple]]:
    out = []
    while True:
        try:
            out.append(s.recvfrom(70000))
        except (BlockingIOError, OSError):
            return out


def case_vids(args) -> dict:
    """64 KB IKE_SA_INITs of 16,200 empty Vendor IDs (issue 15 item 1)."""
    return flood(args, lambda i: init_request(os.urandom(8), vids=16_200))


def case_proposals(args) -> dict:
    """IKE_SA_INITs of 255 unacceptable proposals: NO_PROPOSAL_CHOSEN and its description (item 3)."""
    props = _bad_proposals()
    return flood(args, lambda i: init_request(os.urandom(8), proposals=props))


def case_spi_zero(args) -> dict:
    """IKE_SA_INITs with SPIi = 0 (RFC 7296 §3.1 forbids it; item 7)."""
    return flood(args, lambda i: init_request(ZERO8))


def _cookie_of(data: bytes) -> bytes | None:
    try:
        msg = decode_message(data)
    except Exception:  # noqa: BLE001  (whatever comes back, the attacker moves on)
        return None
    for p in msg.payloads:
        if isinstance(p, NotifyPayload) and p.type == NotifyType.COOKIE:
            return p.data
    return None


def echo_cookies(args, *, keyed: bool = False, stop_after: int | None = None) -> tuple[dict, dict]:
    """IKE_SA_INITs from one address as fast as answers come, every COOKIE echoed (item 2).
    Returns (stats, {spi_i: (spi_r, cipher or None)} of the half-open SAs the responder created);
    ``keyed``: a real key exchange, so that the attacker holds the SA's keys (as any peer does
    after IKE_SA_INIT) and can send fragments that decrypt."""
    s = _sockets(args.sources[:1])[0]
    target = (args.target, 500)
    kex = KeyExchange(KeId.CURVE25519) if keyed else None
    pending: dict[bytes, list] = {}  # spi_i -> [cookie rounds, nonce, sent at]
    opened: dict[bytes, tuple] = {}
    stats = {"requests": 0, "cookies_echoed": 0, "half_open": 0}
    end = time.monotonic() + args.duration
    window = 64

    def request(spi: bytes, nonce: bytes, cookie: bytes | None = None) -> bytes:
        return init_request(spi, cookie=cookie, fragmentation=keyed, nonce=nonce,
                            ke=kex.public_bytes() if kex else None)

    while time.monotonic() < end and (stop_after is None or len(opened) < stop_after):
        while len(pending) < window:
            spi, nonce = os.urandom(8), os.urandom(32)
            pending[spi] = [0, nonce, time.monotonic()]
            _send(s, request(spi, nonce), target)
            stats["requests"] += 1
        select.select([s], [], [], 0.05)
        for data, _ in _drain(s):
            if len(data) < 28 or data[:8] not in pending:
                continue
            spi_i, spi_r = data[:8], data[8:16]
            cookie = _cookie_of(data)
            if cookie is not None and pending[spi_i][0] < 2:
                pending[spi_i][0] += 1
                _send(s, request(spi_i, pending[spi_i][1], cookie), target)
                stats["cookies_echoed"] += 1
                continue
            _, nonce, _ = pending.pop(spi_i)
            if spi_r != ZERO8:
                opened[spi_i] = (spi_r, _cipher(kex, nonce, data) if kex else None)
        stale = time.monotonic() - 2.0
        for spi in [k for k, v in pending.items() if v[2] < stale]:  # unanswered for 2 s: give up
            del pending[spi]
    stats["half_open"] = len(opened)
    return stats, opened


def _cipher(kex: KeyExchange, ni: bytes, response: bytes):
    """The initiator's SK_e cipher of the IKE SA an IKE_SA_INIT response set up."""
    msg = decode_message(response)
    ke = next(p for p in msg.payloads if isinstance(p, KePayload))
    nr = next(p for p in msg.payloads if isinstance(p, NoncePayload))
    sk_ei = ike_keys(ni, nr.data, kex.compute_shared(ke.data), response[:8], response[8:16])[0]
    return make_cipher(EncrId.AES_GCM_16, 256, sk_ei)


def case_cookies(args) -> dict:
    return echo_cookies(args)[0]


def case_fragments(args) -> dict:
    """100 half-open SAs, each sent 63 of 64 fragments of 64 KB that decrypt (the attacker did the key
    exchange, as any peer does): buffered until the SA times out (item 2)."""
    stats, opened = echo_cookies(argparse.Namespace(**{**vars(args), "duration": 20.0}), keyed=True,
                                 stop_after=args.sas)
    s = _sockets(args.sources[:1])[0]
    target = (args.target, 500)
    plain = os.urandom(64_000)
    body = 8 + len(plain) + 16  # IV, ciphertext, ICV (AES-GCM-16)
    sent = 0
    for spi_i, (spi_r, enc) in opened.items():
        for n in range(1, 64):
            aad = encode_skf_prefix(ExchangeType.IKE_AUTH, 1, spi_i, spi_r, FLAG_INITIATOR, n, 64,
                                    PayloadType.IDi, body)
            iv = n.to_bytes(8, "big")  # one fragment per number under this key: never a repeated nonce
            data = aad + iv + enc.encrypt(iv, plain, aad)
            while not _send(s, data, target):
                time.sleep(0.001)
            sent += 1
            if n % 8 == 0:
                time.sleep(0.002)  # let the kernel and the responder keep up: fragments must arrive
        _drain(s)
    stats.update(fragments_sent=sent, fragment_bytes=sent * len(data) if sent else 0)
    return stats


def case_identity(args) -> dict:
    """Full handshakes with an identity holding a newline, an ANSI escape and a NUL (item 3): our
    engine as the initiator, its policy built in code (no parser would accept that identity)."""
    src = args.sources[0]
    conns = tuple(ConnectionConfig(
        name=f"evil{i}", local_addrs=(src,), remote_addrs=(args.target,),
        proposals=(parse_proposal("aes256gcm16-prfsha256-x25519", "ike"),),
        local=AuthConfig("psk", Identity("fqdn", HOSTILE_ID)), remote=AuthConfig("psk", None),
        children=(ChildConfig(name="c", local_ts=(parse_ts("198.51.100.201/32"),),
                              remote_ts=(parse_ts("198.51.100.1/32"),),
                              proposals=(parse_proposal("aes256gcm16", "esp"),)),))
        for i in range(args.count))
    policy = Policy(engine=EngineConfig(datapath="lab", listen=(src,)), connections=conns,
                    secrets=Secrets(ike=(IkeSecret("all", (), Secret(args.psk.encode())),)))

    async def run() -> dict:
        rt = EngineRuntime(policy, datapath=NullDatapath())
        await rt.start()
        try:
            for c in conns:
                rt.initiate(c.name)
                await asyncio.sleep(0.05)
            await asyncio.sleep(5)
            return {"initiated": len(conns), "ike": dict(rt.endpoint.stats)}
        finally:
            await rt.stop(delete=False)

    return asyncio.run(run())


CASES = {"vids": case_vids, "proposals": case_proposals, "spi-zero": case_spi_zero, "cookies": case_cookies,
         "fragments": case_fragments, "identity": case_identity}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=sorted(CASES))
    ap.add_argument("--target", required=True)
    ap.add_argument("--sources", required=True, type=lambda s: s.split(","))
    ap.add_argument("--rate", type=float, default=80.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--sas", type=int, default=100, help="fragments: half-open SAs to fill")
    ap.add_argument("--count", type=int, default=20, help="identity: handshakes")
    ap.add_argument("--psk", default="")
    args = ap.parse_args(argv)
    result = CASES[args.case](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
