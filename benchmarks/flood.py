"""IKE_SA_INIT flood and hostile datagrams: our daemon against charon as
responder, side by side (issue 9). A measurement, not a test.

Lab (root, strongSwan): two namespaces joined by veth (tests/interop/lab.py).
The responder runs in the right one (192.0.2.2, pinned to CPU 1 with all its
threads); in the left one, besides 192.0.2.1, the generator owns 192.0.2.10 -
192.0.2.254 (many bound addresses, so the responder's answers are routable but
nobody reads them: a botnet that never returns a COOKIE) and 192.0.2.3 (a
hostile peer that completes IKE_SA_INIT to get keys). Both responders accept
any peer address (remote_addrs %any, as a road-warrior gateway does).

Generator sockets use free ports (as peers behind NATs do): the legitimate
charon in the same namespace holds 500 and 4500.

  ours    our daemon as shipped (`python -m console daemon CONFIG --datapath
          none`, INFO log to a file), default half_open_threshold (10)
  charon  charon 5.9.8 with its default DoS settings (dos_protection yes,
          cookie_threshold 10, block_threshold 5, init_limit_half_open 0),
          every log subsystem at level 1, the counters plugin loaded

Phase 1, flood: the generator (CPU 0) sends IKE_SA_INIT requests with fresh
SPIs from the 245 addresses as fast as it can for --duration seconds, while a
legitimate charon at 192.0.2.1 (default retransmission: 4 s, then 7.2 s)
connects every --interval seconds (`swanctl --initiate`, then `--terminate`).
Printed per legitimate attempt: whether it came up and the most
retransmissions of any one of its requests ("ok" = up, no request sent more
than twice), plus the responder's
resident memory (/proc/PID/status VmRSS, sampled every second) and its
counters (ours: the control socket's `counters`; charon: `swanctl --counters`
and `--stats`).

Phase 2, hostile, once the flood's half-open SAs have timed out: --hostile
datagrams (default 100,000) of three kinds, paced so that the responder reads
every one (the generator waits for the responder's UDP receive queues, read in
/proc/PID/net/udp, to drain every 4 datagrams: nothing is lost in the kernel,
the responder's own UDP counters are printed), then a wait past the 30 s
half-open timeout:
  proposals  IKE_SA_INIT offering 255 proposals none of which is acceptable
             (from the 245 addresses)
  payloads   IKE_SA_INIT (4 unacceptable proposals) with 2,000 empty Vendor ID
             payloads (8 KB)
  fragments  from 192.0.2.3, which first completes 4 IKE_SA_INITs (half-open
             SAs it holds the keys of): per SA, 63 valid encrypted fragments
             of 60 KB announcing 64 (never the last: reassembly buffers), then
             correctly encrypted fragments with absurd numbers (0/0,
             65535/65535, 70/64, 1/65535) for the rest
Printed: the longest log line written during the phase, the log bytes, the
responder's CPU seconds, and the retained state: resident memory before, right after and after the half-open
timeout, and the IKE SAs the responder still holds.

    sudo python3 benchmarks/flood.py                        # both responders, 60 s, 100,000 hostile
    sudo python3 benchmarks/flood.py --responders ours --duration 20 --hostile 20000 --json out.json --keep

Exit status 2 when root, strongSwan, taskset or two CPUs are missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.handshakes import engine_version, missing_requirements, pin, stop_process  # noqa: E402
from benchmarks.ikeload import (  # noqa: E402
    _GEN, _HDR, MARKER, _gcm, _ike_proposal, _natd, _proc_cpu, _proc_rss, _walk, ike_keys)
from engine.crypto.ke import KeyExchange  # noqa: E402
from engine.crypto.transforms import EncrId, IntegId, KeId, PrfId, TransformType  # noqa: E402
from engine.wire.constants import FLAG_INITIATOR, ExchangeType, NotifyType, PayloadType, ProtocolId  # noqa: E402
from engine.wire.message import encode_message  # noqa: E402
from engine.wire.payloads import KePayload, NoncePayload, NotifyPayload, Proposal, SaPayload, Transform  # noqa: E402

LEFT, RIGHT, ATTACKER = "192.0.2.1", "192.0.2.2", "192.0.2.3"
SOURCES = [f"192.0.2.{n}" for n in range(10, 255)]
PSK = "flood-psk-not-secret-0123456789"
GEN_CPU, RESP_CPU = 0, 1
ZERO8 = b"\0" * 8
HALF_OPEN_WAIT = 35.0  # both responders drop half-open SAs after 30 s

OUR_POLICY = f"""\
[engine]
datapath = "userspace"   # the daemon runs with --datapath none
listen = ["{RIGHT}"]
secrets = "secrets.toml"

[connections.gw]
local_addrs = ["{RIGHT}"]
remote_addrs = ["%any"]
proposals = ["aes256gcm16-prfsha256-x25519"]
local = {{ auth = "psk", id = "right.example" }}
remote = {{ auth = "psk", id = "left.example" }}

[connections.gw.children.lan]
local_ts = ["198.51.100.129/32"]
remote_ts = ["198.51.100.1/32"]
esp_proposals = ["aes256gcm16"]
"""
OUR_SECRETS = f'[ike.lab]\nids = ["left.example", "right.example"]\nsecret = "{PSK}"\n'


def swanctl_conf(me: str, peer: str, my_id: str, peer_id: str) -> str:
    return f"""\
connections {{
  t {{
    version = 2
    local_addrs = {me}
    remote_addrs = {peer}
    proposals = aes256gcm16-prfsha256-x25519
    local {{
      auth = psk
      id = {my_id}
    }}
    remote {{
      auth = psk
      id = {peer_id}
    }}
    children {{
      t {{
        local_ts = {"198.51.100.1/32" if me == LEFT else "198.51.100.129/32"}
        remote_ts = {"198.51.100.129/32" if me == LEFT else "198.51.100.1/32"}
        esp_proposals = aes256gcm16
      }}
    }}
  }}
}}
secrets {{
  ike-lab {{
    id-a = left.example
    id-b = right.example
    secret = "{PSK}"
  }}
}}
"""


# charon as shipped: log level 1 everywhere (the lab's default raises ike/cfg to 2), stock
# retransmission and DoS settings; the counters plugin for `swanctl --counters`.
CHARON_AS_SHIPPED = """\
charon {
  filelog {
    charon-log {
      default = 1
      ike = 1
      cfg = 1
    }
  }
}
"""


# ====================================================================== datagrams
def raw_message(spi_i: bytes, spi_r: bytes, exchange: int, flags: int, mid: int,
                payloads: list[tuple[int, bytes]]) -> bytes:
    """An IKE message built by hand from (payload type, body) pairs: shapes the codec refuses to make."""
    body = bytearray()
    for i, (_, data) in enumerate(payloads):
        nxt = payloads[i + 1][0] if i + 1 < len(payloads) else 0
        body += struct.pack("!BBH", nxt, 0, 4 + len(data)) + data
    first = payloads[0][0] if payloads else 0
    return _HDR.pack(spi_i, spi_r, first, 0x20, exchange, flags, mid, 28 + len(body)) + bytes(body)


def init_request(ke: KeyExchange, *, proposals: tuple[Proposal, ...] | None = None, frag: bool = False,
                 nat_src: bytes | None = None, spi: bytes = b"\x5a" * 8, nonce: bytes = b"\xa5" * 32,
                 target: str = RIGHT, cookie: bytes | None = None) -> bytes:
    """An IKE_SA_INIT request (x25519, AES-GCM-256/PRF-SHA256 unless ``proposals``)."""
    payloads = [NotifyPayload(NotifyType.COOKIE, data=cookie)] if cookie else []
    payloads += [SaPayload(proposals or (_ike_proposal(),)), KePayload(KeId.CURVE25519, ke.public_bytes()),
                NoncePayload(nonce),
                NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, data=nat_src or os.urandom(20)),
                NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP,
                              data=_natd(spi, ZERO8, target, 500))]
    if frag:
        payloads.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
    return encode_message(ExchangeType.IKE_SA_INIT, 0, spi, ZERO8, FLAG_INITIATOR, payloads)


def unacceptable_proposals(n: int = 255) -> tuple[Proposal, ...]:
    """n distinct proposals, none of which either responder accepts (no AES-GCM, no x25519)."""
    encrs = [(EncrId.AES_CBC, 128), (EncrId.AES_CBC, 192), (EncrId.AES_CBC, 256), (EncrId.AES_CTR, 128)]
    integs = [IntegId.HMAC_SHA1_96, IntegId.HMAC_SHA2_256_128, IntegId.HMAC_SHA2_384_192, IntegId.HMAC_SHA2_512_256]
    prfs = [PrfId.HMAC_SHA1, PrfId.HMAC_SHA2_256, PrfId.HMAC_SHA2_384, PrfId.HMAC_SHA2_512]
    groups = [KeId.MODP_1024, KeId.MODP_1536, KeId.MODP_3072, KeId.MODP_4096]
    out = []
    for i in range(n):
        e, k = encrs[i % 4]
        out.append(Proposal(i + 1, ProtocolId.IKE, b"", (
            Transform(TransformType.ENCR, e, k), Transform(TransformType.INTEG, integs[(i // 4) % 4]),
            Transform(TransformType.PRF, prfs[(i // 16) % 4]), Transform(TransformType.KE, groups[(i // 64) % 4]))))
    return tuple(out)


def many_payloads(ke: KeyExchange, count: int = 2000, proposals: tuple[Proposal, ...] | None = None) -> bytes:
    """A well-formed IKE_SA_INIT followed by ``count`` empty Vendor ID payloads."""
    base = init_request(ke, proposals=proposals)
    first, body = base[16], base[28:]
    # Re-chain: the same payloads by hand, then the Vendor IDs.
    payloads = [(ptype, body[a:b]) for ptype, a, b in _walk(body, 0, len(body), first)]
    payloads += [(PayloadType.VENDOR, b"")] * count
    return raw_message(b"\x5a" * 8, ZERO8, ExchangeType.IKE_SA_INIT, FLAG_INITIATOR, 0, payloads)


def skf(spi_i: bytes, spi_r: bytes, enc, mid: int, number: int, total: int, plain: bytes, first: int) -> bytes:
    """An Encrypted Fragment payload message (RFC 7383 §2.5), AES-GCM, the AAD ending after Total Fragments."""
    body_len = 4 + IV_LEN + len(plain) + 1 + 16
    aad = _HDR.pack(spi_i, spi_r, PayloadType.SKF, 0x20, ExchangeType.IKE_AUTH, FLAG_INITIATOR, mid,
                    28 + body_len + 4) + _GEN.pack(first if number == 1 else 0, 0, body_len + 4) + \
        struct.pack("!HH", number, total)
    iv = ((number << 16) | (total & 0xFFFF)).to_bytes(IV_LEN, "big")  # one (number, total) per key: no nonce reuse
    return aad + iv + enc.encrypt(iv, plain + b"\0", aad)


IV_LEN = 8


# ====================================================================== generators (left namespace)
def bound_sockets(addrs: list[str], port: int) -> list[socket.socket]:
    """UDP sockets on ``addrs`` (port 0: any free one; charon, the legitimate initiator, holds 500
    and 4500 on every address of the namespace, and a peer behind a NAT sends from any port)."""
    out = []
    for a in addrs:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers are never read
        s.bind((a, port))
        s.setblocking(False)
        out.append(s)
    return out


def gen_flood(target: str, duration: float) -> dict:
    """IKE_SA_INIT with a fresh SPI each, round robin over SOURCES, as fast as this loop goes."""
    ke = KeyExchange(KeId.CURVE25519)
    socks = bound_sockets(SOURCES, 0)
    template = bytearray(init_request(ke, target=target))
    dest = (target, 500)
    sent = full = 0
    rnd, at = os.urandom(8 * 8192), 0
    t0 = time.monotonic()
    end = t0 + duration
    n = len(socks)
    while True:
        for i in range(1024):
            if at == len(rnd):
                rnd, at = os.urandom(8 * 8192), 0
            template[0:8] = rnd[at:at + 8]
            at += 8
            try:
                socks[(sent + i) % n].sendto(template, dest)
            except (BlockingIOError, InterruptedError):
                full += 1
        sent += 1024
        if time.monotonic() >= end:
            break
    t = time.monotonic() - t0
    return dict(sent=sent - full, send_buffer_full=full, seconds=round(t, 2), rate=round((sent - full) / t))


def keyed_half_open(target: str, count: int, ke: KeyExchange) -> list[tuple[bytes, bytes, object]]:
    """From ATTACKER: complete ``count`` IKE_SA_INITs (fragmentation offered, NAT faked so the SA
    floats to 4500; a COOKIE is returned as any real peer does); (SPIi, SPIr, initiator's AES-GCM)
    of those that got keys."""
    s = bound_sockets([ATTACKER], 0)[0]
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.setblocking(True)
    s.settimeout(2.0)
    nat_src = os.urandom(20)
    out = []
    for _ in range(count):
        spi, ni = os.urandom(8), os.urandom(32)
        cookie = None
        for _try in range(3):
            s.sendto(init_request(ke, frag=True, spi=spi, nonce=ni, target=target, cookie=cookie, nat_src=nat_src),
                     (target, 500))
            try:
                while True:
                    data = s.recv(65535)
                    if data[:8] == spi:
                        break
            except socket.timeout:
                break
            kex = nr = cookie = None
            for ptype, a, b in _walk(data, 28, len(data), data[16]):
                if ptype == PayloadType.KE:
                    kex = data[a + 4:b]
                elif ptype == PayloadType.NONCE:
                    nr = data[a:b]
                elif ptype == PayloadType.NOTIFY and (data[a + 2] << 8 | data[a + 3]) == NotifyType.COOKIE:
                    cookie = data[a + 4 + data[a + 1]:b]
            if kex is not None and nr is not None:
                sk_ei, _, _ = ike_keys(ni, nr, ke.compute_shared(kex), spi, data[8:16])
                out.append((spi, data[8:16], _gcm(sk_ei)))
                break
            if cookie is None:
                break  # an error: no keys
    s.close()
    return out


def udp_queued(pid: int, ports: tuple[int, ...] = (500, 4500)) -> int:
    """Bytes waiting in the receive queues of ``pid``'s network namespace's UDP sockets on ``ports``
    (/proc/PID/net/udp shows the namespace of PID)."""
    queued = 0
    with open(f"/proc/{pid}/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) in ports:
                queued += int(fields[4].split(":")[1], 16)
    return queued


def udp_snmp(pid: int) -> dict[str, int]:
    """The Udp: line of /proc/PID/net/snmp (datagrams delivered, dropped for a full buffer...)."""
    with open(f"/proc/{pid}/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}


def drained(pid: int | None, limit: float = 10.0) -> None:
    """Wait until the responder has read what was sent (so that every datagram is processed, not
    dropped by the kernel), at most ``limit`` seconds."""
    if pid is None:
        return
    end = time.monotonic() + limit
    while udp_queued(pid) and time.monotonic() < end:
        time.sleep(0.001)


def gen_hostile(target: str, count: int, pid: int | None = None, batch: int = 4) -> dict:
    ke = KeyExchange(KeId.CURVE25519)
    sent = dict(proposals=0, payloads=0, fragments_buffered=0, fragments_absurd=0)
    t0 = time.monotonic()
    snmp0 = udp_snmp(pid) if pid else {}
    rss = dict(before=_proc_rss(pid) if pid else None)
    sas = keyed_half_open(target, 4, ke)
    natt = bound_sockets([ATTACKER], 0)[0]
    natt.setblocking(True)
    chunk = os.urandom(60_000)
    for spi_i, spi_r, enc in sas:
        for number in range(1, 64):  # 63 of 64: never complete, all buffered
            natt.sendto(MARKER + skf(spi_i, spi_r, enc, 1, number, 64, chunk, PayloadType.IDi), (target, 4500))
            sent["fragments_buffered"] += 1
            drained(pid)
    rss["after_buffered_fragments"] = _proc_rss(pid) if pid else None
    absurd = [skf(spi_i, spi_r, enc, 1, n, t, b"\0" * 64, PayloadType.IDi)
              for spi_i, spi_r, enc in sas for n, t in ((0, 0), (65535, 65535), (70, 64), (1, 65535))]
    absurd = absurd or [raw_message(os.urandom(8), os.urandom(8), ExchangeType.IKE_AUTH, FLAG_INITIATOR, 1,
                                    [(PayloadType.SKF, struct.pack("!HH", 65535, 65535) + os.urandom(64))])]
    big = bytearray(init_request(ke, proposals=unacceptable_proposals(), target=target))
    many = bytearray(many_payloads(ke, proposals=unacceptable_proposals(4)))
    socks = bound_sockets(SOURCES, 0)
    for s in socks:
        s.setblocking(True)
    i = sum(sent.values())
    while i < count:
        if i % batch == 0:
            drained(pid)
        kind = i % 5  # 2/5 proposals, 2/5 payloads, 1/5 absurd fragments
        if kind in (0, 1):
            big[0:8] = os.urandom(8)
            socks[i % len(socks)].sendto(big, (target, 500))
            sent["proposals"] += 1
        elif kind in (2, 3):
            many[0:8] = os.urandom(8)
            socks[i % len(socks)].sendto(many, (target, 500))
            sent["payloads"] += 1
        else:
            natt.sendto(MARKER + absurd[i % len(absurd)], (target, 4500))
            sent["fragments_absurd"] += 1
        i += 1
    drained(pid, 60)
    t = time.monotonic() - t0
    snmp = {k: v - snmp0[k] for k, v in udp_snmp(pid).items() if v - snmp0.get(k, 0)} if pid else {}
    return dict(sent=sent, keyed_half_open=len(sas), seconds=round(t, 2), responder_udp=snmp, responder_rss=rss,
                sizes=dict(proposals=len(big), payloads=len(many), fragment=len(chunk)))


# ====================================================================== responders (right namespace)
class Ours:
    kind = "ours"

    def __init__(self, lab, workdir: Path) -> None:
        self.lab, self.dir = lab, workdir / "ours"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "daemon.log"

    def start(self) -> "Ours":
        (self.dir / "policy.toml").write_text(OUR_POLICY)
        secrets = self.dir / "secrets.toml"
        secrets.write_text(OUR_SECRETS)
        secrets.chmod(0o600)
        self.control = self.dir / "control.sock"
        self.control.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns["right"], sys.executable, "-m", "console", "daemon",
             str(self.dir / "policy.toml"), "--control", str(self.control), "--datapath", "none"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        for _ in range(300):
            if self.control.exists():
                pin(self.proc.pid, RESP_CPU)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"our daemon exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("our daemon never opened its control socket")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def counters(self) -> dict:
        from engine.runtime.client import ControlClient

        async def call():
            client = ControlClient(str(self.control))
            try:
                c = await asyncio.wait_for(client.call("counters"), 5)
                sas = await asyncio.wait_for(client.call("list-sas"), 5)
            finally:
                await client.close()
            states = [sa["state"] for sa in sas["ike_sas"]]
            return {**c["ike"], "ike_sas": len(states), "half_open": states.count("CONNECTING")}
        try:
            return asyncio.run(call())
        except (asyncio.TimeoutError, OSError) as exc:
            return {"no answer": type(exc).__name__}

    def stop(self) -> None:
        stop_process(self.proc)


class Charon:
    kind = "charon"

    def __init__(self, lab, workdir: Path) -> None:
        from tests.interop.lab import Charon as LabCharon

        self.c = LabCharon(lab, "right", workdir / "charon", extra=CHARON_AS_SHIPPED)
        self.c.conf = swanctl_conf(RIGHT, "%any", "right.example", "left.example")
        self.c.strongswan_conf = re.sub(r"(\n\s*load = [^\n]*vici)", r"\1 counters", self.c.strongswan_conf, count=1)
        self.log_path = self.c.dir / "charon.log"

    def start(self) -> "Charon":
        self.c.start()
        pin(self.pid, RESP_CPU)
        return self

    @property
    def pid(self) -> int:
        return self.c.proc.pid

    def counters(self) -> dict:
        out: dict = {}
        try:
            stats = self.c.swanctl("--stats", timeout=10).stdout
            m = re.search(r"IKE_SAs: (\d+) total, (\d+) half-open", stats)
            if m:
                out.update(ike_sas=int(m[1]), half_open=int(m[2]))
            for name, value in re.findall(r"^\s*([a-z-]+)\s*:\s*(\d+)", self.c.swanctl("--counters", timeout=10).stdout,
                                          re.MULTILINE):
                if int(value):
                    out[name] = int(value)
        except subprocess.SubprocessError as exc:
            out["no answer"] = type(exc).__name__
        return out

    def stop(self) -> None:
        self.c.stop()


# ====================================================================== the measurement
class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.stopped = pid, [], threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stopped.wait(1.0):
            self.samples.append((round(time.monotonic() - t0), _proc_rss(self.pid)))


def left_addresses(lab) -> None:
    batch = "".join(f"address add {a}/24 dev veth0\n" for a in [ATTACKER, *SOURCES])
    subprocess.run(["ip", "-n", lab.ns["left"], "-batch", "-"], input=batch, text=True, check=True)


def legit_attempt(c, timeout: float = 12.0) -> dict:
    """One `swanctl --initiate` from the legitimate charon: up or not, and how many retransmissions."""
    t0 = time.monotonic()
    r = c.swanctl("--initiate", "--child", "t", "--timeout", str(int(timeout)), check=False, timeout=timeout + 10)
    took = time.monotonic() - t0
    out = r.stdout + r.stderr
    # "retransmit N of request with message ID M": the highest N of any one request
    retransmits = max((int(n) for n in re.findall(r"retransmit (\d+) of request", out)), default=0)
    up = r.returncode == 0
    c.swanctl("--terminate", "--ike", "t", "--timeout", "5", check=False, timeout=15)
    return dict(up=up, ok=up and retransmits <= 1, retransmits=retransmits, seconds=round(took, 2),
                cookie="N(COOKIE)" in out)


def longest_line(path: Path, offset: int) -> tuple[int, int, str]:
    """(longest line length, bytes written, its first 120 characters) since ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    lines = data.splitlines() or [b""]
    longest = max(lines, key=len)
    return len(longest), len(data), longest[:120].decode(errors="replace")


def run_generator(lab, *args: str, timeout: float) -> dict:
    proc = subprocess.Popen(["taskset", "-c", str(GEN_CPU), "ip", "netns", "exec", lab.ns["left"], sys.executable,
                             str(Path(__file__).resolve()), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop_process(proc, grace=2)
    if proc.returncode != 0:
        raise RuntimeError(f"generator failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def measure(kind: str, args, workdir: Path) -> dict:
    from tests.interop.lab import Charon as LabCharon
    from tests.interop.lab import Lab

    lab = Lab().up()
    responder = None
    legit = None
    try:
        left_addresses(lab)
        lab.exec("right", "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        responder = (Ours if kind == "ours" else Charon)(lab, workdir).start()
        legit = LabCharon(lab, "left", workdir / "legit")
        legit.conf = swanctl_conf(LEFT, RIGHT, "left.example", "right.example")
        legit.start()
        res: dict = dict(baseline=legit_attempt(legit), rss_start=_proc_rss(responder.pid))
        print(f"[{kind}] without flood: {res['baseline']}", flush=True)
        sampler = RssSampler(responder.pid)
        sampler.start()
        box: dict = {}
        gen = threading.Thread(target=lambda: box.update(run_generator(
            lab, "gen-flood", "--target", RIGHT, "--duration", str(args.duration), timeout=args.duration + 60)))
        t0 = time.monotonic()
        gen.start()
        attempts = []
        while gen.is_alive():
            due = t0 + args.interval * (len(attempts) + 1)
            time.sleep(max(0.0, due - time.monotonic()))
            if not gen.is_alive():
                break
            started = round(time.monotonic() - t0)
            a = legit_attempt(legit)
            a.update(at=started, rss_kib=_proc_rss(responder.pid), counters=responder.counters())
            attempts.append(a)
            print(f"[{kind}] t={a['at']:3d}s legit attempt {len(attempts)}: "
                  f"{'ok' if a['ok'] else 'UP LATE' if a['up'] else 'FAILED'} in {a['seconds']} s "
                  f"({a['retransmits']} retransmits{', COOKIE' if a['cookie'] else ''}) | RSS "
                  f"{(a['rss_kib'] or 0) / 1024:.1f} MiB | {a['counters']}", flush=True)
        gen.join()
        sampler.stopped.set()
        res.update(flood=box, attempts=attempts, rss_series=sampler.samples, rss_after_flood=_proc_rss(responder.pid),
                   counters_after_flood=responder.counters())
        print(f"[{kind}] flood: {box}", flush=True)
        # ---------------------------------------------------------------- hostile
        # The flood's half-open SAs go first: the hostile datagrams meet a responder at rest.
        time.sleep(HALF_OPEN_WAIT)
        offset = responder.log_path.stat().st_size
        before, cpu0 = _proc_rss(responder.pid), _proc_cpu(responder.pid)
        hostile = run_generator(lab, "gen-hostile", "--target", RIGHT, "--count", str(args.hostile),
                                "--responder-pid", str(responder.pid), timeout=args.hostile / 20 + 600)
        cpu = _proc_cpu(responder.pid) - cpu0
        right_after, counters_after = _proc_rss(responder.pid), responder.counters()
        time.sleep(HALF_OPEN_WAIT)
        length, written, head = longest_line(responder.log_path, offset)
        res["hostile"] = dict(generator=hostile, responder_cpu_s=round(cpu, 2), rss_before=before,
                              rss_after=right_after,
                              rss_settled=_proc_rss(responder.pid), counters_after=counters_after,
                              counters_settled=responder.counters(), longest_line=length, log_bytes=written,
                              longest_line_head=head)
        print(f"[{kind}] hostile: {res['hostile']}", flush=True)
        return res
    finally:
        for x in (legit, responder):
            if x is not None:
                x.stop()
        lab.down()


def mib(kib) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def print_table(results: dict[str, dict]) -> None:
    kinds = list(results)
    rows: list[tuple[str, list[str]]] = []

    def row(name, fn):
        cells = []
        for k in kinds:
            try:
                cells.append(str(fn(results[k])))
            except (KeyError, TypeError, ValueError, statistics.StatisticsError):
                cells.append("-")
        rows.append((name, cells))

    row("flood: IKE_SA_INIT sent", lambda r: f"{r['flood']['sent']:,} in {r['flood']['seconds']} s")
    row("flood: generator rate /s", lambda r: f"{r['flood']['rate']:,}")
    row("legit attempts ok within 1 retransmission", lambda r: f"{sum(a['ok'] for a in r['attempts'])}"
        f"/{len(r['attempts'])}")
    row("legit attempts up at all", lambda r: f"{sum(a['up'] for a in r['attempts'])}/{len(r['attempts'])}")
    row("legit median / max seconds", lambda r: f"{statistics.median(a['seconds'] for a in r['attempts']):.2f} / "
        f"{max(a['seconds'] for a in r['attempts'])}")
    row("RSS MiB start / max / after flood", lambda r: f"{mib(r['rss_start'])} / "
        f"{mib(max(v for _, v in r['rss_series'] if v))} / {mib(r['rss_after_flood'])}")
    row("counters after flood", lambda r: json.dumps(r["counters_after_flood"]))
    h = "hostile"
    row("hostile: datagrams", lambda r: json.dumps(r[h]["generator"]["sent"]))
    row("hostile: keyed half-open SAs", lambda r: r[h]["generator"]["keyed_half_open"])
    row("hostile: RSS MiB before / after 4 SAs x 63 fragments",
        lambda r: " / ".join(mib(r[h]["generator"]["responder_rss"][k])
                             for k in ("before", "after_buffered_fragments")))
    row("hostile: responder's UDP counters", lambda r: json.dumps(r[h]["generator"]["responder_udp"]))
    row("hostile: seconds / responder CPU s", lambda r: f"{r[h]['generator']['seconds']} / {r[h]['responder_cpu_s']}")
    row("hostile: longest log line (bytes)", lambda r: f"{r[h]['longest_line']:,}")
    row("hostile: log bytes written", lambda r: f"{r[h]['log_bytes']:,}")
    row("hostile: RSS MiB before / after / +35 s", lambda r: f"{mib(r[h]['rss_before'])} / "
        f"{mib(r[h]['rss_after'])} / {mib(r[h]['rss_settled'])}")
    row("hostile: counters right after", lambda r: json.dumps(r[h]["counters_after"]))
    row("hostile: counters +35 s", lambda r: json.dumps(r[h]["counters_settled"]))
    width = max(len(n) for n, _ in rows)
    print(f"\n{'':{width}} | " + " | ".join(kinds))
    for name, cells in rows:
        print(f"{name:{width}} | " + " | ".join(cells))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    g = sub.add_parser("gen-flood", help="(inside the left namespace) the IKE_SA_INIT flood")
    g.add_argument("--target", default=RIGHT)
    g.add_argument("--duration", type=float, default=60)
    h = sub.add_parser("gen-hostile", help="(inside the left namespace) the hostile datagrams")
    h.add_argument("--target", default=RIGHT)
    h.add_argument("--count", type=int, default=100_000)
    h.add_argument("--responder-pid", type=int, help="pace the datagrams so that this process reads them all")
    ap.add_argument("--responders", default="ours,charon")
    ap.add_argument("--duration", type=float, default=60.0, help="flood seconds (default 60)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between legitimate attempts (default 5)")
    ap.add_argument("--hostile", type=int, default=100_000, help="hostile datagrams (default 100,000)")
    ap.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    ap.add_argument("--workdir", default="/tmp/ipsec-console-flood")
    ap.add_argument("--keep", action="store_true", help="keep the logs and configs (ours writes hundreds of MB)")
    args = ap.parse_args(argv)
    if args.cmd == "gen-flood":
        print(json.dumps(gen_flood(args.target, args.duration)))
        return 0
    if args.cmd == "gen-hostile":
        print(json.dumps(gen_hostile(args.target, args.count, args.responder_pid)))
        return 0
    missing = missing_requirements()
    if missing:
        print("flood.py needs: " + "; ".join(missing), file=sys.stderr)
        return 2
    print(f"flood benchmark, engine {engine_version()}: {args.duration:.0f} s flood, "
          f"legit every {args.interval:.0f} s, "
          f"{args.hostile:,} hostile datagrams", flush=True)
    results = {}
    for kind in args.responders.split(","):
        workdir = Path(args.workdir) / kind
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            results[kind] = measure(kind, args, workdir)
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
