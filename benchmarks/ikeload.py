"""A minimal, fast IKEv2 load generator (initiator) and a null responder.

The generator drives full handshakes against any IKEv2 responder and counts
them: IKE_SA_INIT + IKE_AUTH (PSK, x25519, AES-GCM-256 with PRF
HMAC-SHA2-256, one ESP AES-GCM-256 CHILD SA), then an INFORMATIONAL that
deletes the IKE SA so no state piles up on the responder. It is not IkeSa:
it is a flat state machine over precomputed message templates, so that it
is much cheaper per handshake than any real responder (check this with the
null responder below; numbers against a responder the generator cannot
outpace mean nothing).

* Templates are encoded once with our wire codec (engine.wire); per
  handshake only the SPI, nonce, NAT-D hash, ID, AUTH and ESP SPI bytes are
  written into a copy.
* One x25519 key pair (engine.crypto.ke.KeyExchange) serves every handshake:
  acceptable for a load generator, the responder still does a full key
  generation and exchange. The exchange itself is done per handshake.
* IKE SA keys and AUTH use one-shot HMAC-SHA-256 (stdlib ``hmac.digest``,
  OpenSSL underneath); SK payloads use our AES-GCM (engine.crypto.encr).
* Every handshake uses its own FQDN identity (charon keeps a per-identity
  list of SAs and scans it on every add and remove).
* NAT-T (RFC 7296 §2.23, RFC 3948): by default the generator fakes its
  NAT_DETECTION_SOURCE_IP, as charon does with ``encap = yes``, so every
  responder sees a NAT and all take the same path: IKE_AUTH and the delete
  go to port 4500 with the non-ESP marker. (charon's kernel-libipsec backend
  fakes a NAT of its own anyway.) With ``--no-fake-nat`` the generator floats
  only when the responder's NAT-D says so.
* Many handshakes in flight (``--concurrency``), one non-blocking socket per
  port read in batches after one epoll wait, retransmission with backoff
  and a give-up count, failures counted by reason.

A handshake counts as a success when its IKE_AUTH response decrypts and
carries an AUTH payload (responder AUTH is not verified: the generator is
not the one being measured); ``child_ok`` counts those that also carry an
SA payload and no error notify (the CHILD SA was created).

    # generator (left namespace), JSON result on stdout
    python3 -m benchmarks.ikeload run --source 192.0.2.1 --target 192.0.2.2 \
        --concurrency 32 --warmup 2 --duration 15 [--cpu-pid PID] [--json]
    # null responder (right namespace): answers with cached DH, no AUTH check
    python3 -m benchmarks.ikeload null --listen 192.0.2.2

Both need the ports 500 and 4500 free on their address (a namespace of
their own). This file may use the stdlib's hmac/hashlib: it is not engine
code.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.crypto.encr import make_cipher
from engine.crypto.errors import IntegrityError, InvalidKeyExchange
from engine.crypto.ke import KeyExchange
from engine.crypto.transforms import EncrId, EsnId, KeId, PrfId, TransformType
from engine.policy.ts import parse_ts
from engine.wire.constants import (
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    AuthMethod,
    ExchangeType,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
)
from engine.wire.message import encode_message, encode_payloads
from engine.wire.payloads import (
    AuthPayload,
    DeletePayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    Transform,
    TsPayload,
    WireTs,
)

PSK = b"bench-psk-not-secret-0123456789"
MARKER = b"\0\0\0\0"
ZERO8 = b"\0" * 8
KEY_PAD = b"Key Pad for IKEv2"
NONCE = 32
ICV = 16
IV = 8
_HDR = struct.Struct("!8s8sBBBBII")
_GEN = struct.Struct("!BBH")
_U16 = struct.Struct("!H")

_INIT, _AUTH, _DELETE = 0, 1, 2
_IKE_SA_INIT, _IKE_AUTH, _INFORMATIONAL = ExchangeType.IKE_SA_INIT, ExchangeType.IKE_AUTH, ExchangeType.INFORMATIONAL
_P_SA, _P_KE, _P_AUTH, _P_NONCE, _P_N, _P_SK = (PayloadType.SA, PayloadType.KE, PayloadType.AUTH,
                                                PayloadType.NONCE, PayloadType.NOTIFY, PayloadType.SK)
_N_NATD_SRC, _N_NATD_DST, _N_COOKIE = (NotifyType.NAT_DETECTION_SOURCE_IP, NotifyType.NAT_DETECTION_DESTINATION_IP,
                                       NotifyType.COOKIE)


def prf(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def prf_plus(key: bytes, seed: bytes, length: int) -> bytes:
    out, t, n = b"", b"", 1
    while len(out) < length:
        t = hmac.digest(key, t + seed + bytes((n,)), "sha256")
        out += t
        n += 1
    return out[:length]


def ike_keys(ni: bytes, nr: bytes, shared: bytes, spi_i: bytes, spi_r: bytes, *, with_pr: bool = False):
    """(SK_ei, SK_er, SK_pi[, SK_pr]) for AES-GCM-256 + PRF_HMAC_SHA2_256 (§2.14):
    SK_d 32 | SK_ai 0 | SK_ar 0 | SK_ei 36 | SK_er 36 | SK_pi 32 | SK_pr 32."""
    skeyseed = prf(ni + nr, shared)
    s = prf_plus(skeyseed, ni + nr + spi_i + spi_r, 168 if with_pr else 136)
    if with_pr:
        return s[32:68], s[68:104], s[104:136], s[136:168]
    return s[32:68], s[68:104], s[104:136]


def _gcm(keymat: bytes):
    return make_cipher(EncrId.AES_GCM_16, 256, keymat)


def _ike_proposal() -> Proposal:
    return Proposal(1, ProtocolId.IKE, b"", (
        Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
        Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
        Transform(TransformType.KE, KeId.CURVE25519)))


def _esp_proposal(spi: bytes) -> Proposal:
    return Proposal(1, ProtocolId.ESP, spi, (
        Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
        Transform(TransformType.ESN, EsnId.NO_ESN)))


def _ts_payload(initiator: bool, text: str) -> TsPayload:
    return TsPayload(initiator, (WireTs.from_ts(parse_ts(text)),))


def _offset(buf: bytes, placeholder: bytes) -> int:
    at = buf.find(placeholder)
    if at < 0 or buf.find(placeholder, at + 1) >= 0:
        raise AssertionError(f"template placeholder {placeholder[:4].hex()} not unique")
    return at


class _Unprotected(Exception):
    """An answer that is one unencrypted error Notify (its name), not a protected message."""


def _walk(data: bytes, pos: int, end: int, first: int):
    """Yield (type, body start, body end) along a payload chain; raises ValueError when it does not fit."""
    ptype = first
    while ptype:
        if end - pos < 4:
            raise ValueError("payload header truncated")
        nxt = data[pos]
        plen = (data[pos + 2] << 8) | data[pos + 3]
        if plen < 4 or pos + plen > end:
            raise ValueError("payload length does not fit")
        yield ptype, pos + 4, pos + plen
        if ptype == _P_SK:
            return
        pos += plen
        ptype = nxt


DISTINCT_TS_PLACEHOLDER = "198.51.100.126/32[udp/48879]"
_PLACEHOLDER_TS_TAIL = b"\xbe\xef\xbe\xef" + bytes([198, 51, 100, 126]) * 2
DISTINCT_ADDRS = 126
"""Initiator-side selectors of --distinct-ts: 198.51.100.1-126 (inside the test range) times UDP ports."""


def distinct_selector(n: int) -> tuple[int, bytes]:
    """(port, address) of handshake ``n``'s own TSi: 198.51.100.1/32[udp/1024] onwards; the address
    changes first, so 10,000 handshakes use all 126 addresses with 80 ports each."""
    return 1024 + n // DISTINCT_ADDRS, bytes([198, 51, 100, 1 + n % DISTINCT_ADDRS])


def _natd(spi_i: bytes, spi_r: bytes, addr: str, port: int) -> bytes:
    return hashlib.sha1(spi_i + spi_r + socket.inet_aton(addr) + port.to_bytes(2, "big")).digest()


class _Hs:
    """One handshake in flight."""

    __slots__ = ("n", "spi_i", "ni", "init_req", "state", "msg", "natt", "sent", "tries", "t0", "dec", "enc", "spi_r",
                 "keep")

    def __init__(self, n: int, spi_i: bytes, ni: bytes, init_req: bytes, now: float) -> None:
        self.n = n
        self.spi_i = spi_i
        self.ni = ni
        self.init_req = init_req
        self.state = _INIT
        self.msg = init_req
        self.natt = False
        self.sent = now
        self.tries = 0
        self.t0 = now
        self.dec = None
        self.spi_r = ZERO8
        self.enc = None
        self.keep = False


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _core_busy(core: int) -> float:
    """Busy seconds of one CPU since boot (all processes), from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"cpu%d " % core):
                v = [int(x) for x in line.split()[1:]]
                return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    return 0.0


def _proc_rss(pid: int) -> int | None:
    """Resident memory of a process in KiB."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _udp(addr: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # SO_RCVBUFFORCE / SO_SNDBUFFORCE
        try:
            s.setsockopt(socket.SOL_SOCKET, force, 4 << 20)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
    s.bind((addr, port))
    s.setblocking(False)
    return s


# ====================================================================== generator
class LoadGenerator:
    """Full IKEv2 handshakes against ``target`` from ``source`` (ports 500/4500)."""

    def __init__(self, source: str, target: str, *, concurrency: int = 32, psk: bytes = PSK,
                 local_ts: str = "198.51.100.1/32", remote_ts: str = "198.51.100.129/32",
                 timeout: float = 2.0, retries: int = 3, fake_nat: bool = True, port: int = 500,
                 natt_port: int = 4500, hold: int = 0, distinct_ts: bool = False, curve: int = 0,
                 curve_step: int = 1000, rate: float = 0.0) -> None:
        self.source, self.target = source, target
        self.hold = hold
        self.distinct_ts = distinct_ts
        """Each handshake proposes its own TSi (see `distinct_selector`), as road-warrior clients with
        their own virtual IPs do: no two CHILD SAs share selectors on the responder."""
        self.curve = curve
        self.curve_step = curve_step
        self.curve_marks: list[tuple[int, float]] = []
        """(SAs held, monotonic time) at every curve_step-th established SA of a --curve run."""
        self.rate = rate
        """Handshakes started per second at most (0: as many as the concurrency allows)."""
        self.held = self.hold_started = self.hold_failed = 0
        self.concurrency = concurrency
        self.timeout, self.retries = timeout, retries
        self.fake_nat = fake_nat
        self.port, self.natt_port = port, natt_port
        self.ke = KeyExchange(KeId.CURVE25519)
        self.psk_pad = prf(psk, KEY_PAD)
        self.tag = os.urandom(3).hex()  # identities differ from one run to the next
        self._build_templates(local_ts, remote_ts)
        self.inflight: dict[bytes, _Hs] = {}
        self.next_n = 0
        self.started = self.ok = self.child_ok = self.deleted = 0
        self.retransmits = self.stray = self.late = 0
        self.failures: dict[str, int] = {}
        self.latencies: list[float] = []
        self.measuring = False

    # -------------------------------------------------------------- templates
    def _build_templates(self, local_ts: str, remote_ts: str) -> None:
        nonce, src, dst = b"\xa5" * NONCE, b"\xb6" * 20, b"\xc7" * 20
        init = encode_message(_IKE_SA_INIT, 0, b"\x5a" * 8, ZERO8, FLAG_INITIATOR, [
            SaPayload((_ike_proposal(),)), KePayload(KeId.CURVE25519, self.ke.public_bytes()), NoncePayload(nonce),
            NotifyPayload(_N_NATD_SRC, data=src), NotifyPayload(_N_NATD_DST, data=dst)])
        self.init_tmpl = init
        self.init_nonce_at = _offset(init, nonce)
        self.init_src_at = _offset(init, src)
        self.init_dst_at = _offset(init, dst)
        self.fake_src = os.urandom(20)
        self.dst_tail = socket.inet_aton(self.target) + self.port.to_bytes(2, "big")
        self.src_tail = socket.inet_aton(self.source) + self.port.to_bytes(2, "big")

        self.id_len = len(self._identity(0))
        idp = IdPayload(True, IdType.FQDN, b"\xd1" * self.id_len)
        auth, spi = b"\xd8" * 32, b"\xe9\xe9\xe9\xe9"
        tsi = _ts_payload(True, DISTINCT_TS_PLACEHOLDER if self.distinct_ts else local_ts)
        first, inner = encode_payloads([
            idp, AuthPayload(AuthMethod.PSK, auth), SaPayload((_esp_proposal(spi),)),
            tsi, _ts_payload(False, remote_ts)])
        self.auth_first = first
        self.auth_plain = inner + b"\0"  # pad length 0 (AEAD: no block alignment, RFC 5282 §3)
        self.auth_id_at = _offset(self.auth_plain, idp.data)
        self.auth_auth_at = _offset(self.auth_plain, auth)
        self.auth_spi_at = _offset(self.auth_plain, spi)
        # The selector's protocol byte, then length, ports and addresses (RFC 7296 §3.13.1).
        self.auth_ts_at = _offset(self.auth_plain, _PLACEHOLDER_TS_TAIL) - 4 if self.distinct_ts else -1
        self.id_body_prefix = bytes([IdType.FQDN]) + b"\0\0\0"

        first, inner = encode_payloads([DeletePayload(ProtocolId.IKE, ())])
        self.del_first, self.del_plain = first, inner + b"\0"

    def _identity(self, n: int) -> bytes:
        return f"i{self.tag}-{n:09d}.bench.example".encode()

    def _sk_message(self, hs: _Hs, exchange: int, mid: int, first: int, plain: bytes, enc) -> bytes:
        sk_len = 4 + IV + len(plain) + ICV
        aad = _HDR.pack(hs.spi_i, hs.spi_r, _P_SK, 0x20, exchange, FLAG_INITIATOR, mid, 28 + sk_len) + \
            _GEN.pack(first, 0, sk_len)
        iv = mid.to_bytes(8, "big")  # one message per MID under this SA's key: never a repeated nonce
        return aad + iv + enc.encrypt(iv, plain, aad)

    # -------------------------------------------------------------- sending
    def _send(self, hs: _Hs) -> None:
        try:
            if hs.natt:
                self.s_natt.sendto(MARKER + hs.msg, (self.target, self.natt_port))
            else:
                self.s_ike.sendto(hs.msg, (self.target, self.port))
        except (BlockingIOError, InterruptedError):
            self._count("send_buffer_full")

    def _start(self, now: float) -> None:
        rnd = os.urandom(8 + NONCE)
        spi, ni = rnd[:8], rnd[8:]
        msg = bytearray(self.init_tmpl)
        msg[0:8] = spi
        a = self.init_nonce_at
        msg[a:a + NONCE] = ni
        a = self.init_src_at
        msg[a:a + 20] = self.fake_src if self.fake_nat else hashlib.sha1(spi + ZERO8 + self.src_tail).digest()
        a = self.init_dst_at
        msg[a:a + 20] = hashlib.sha1(spi + ZERO8 + self.dst_tail).digest()
        hs = _Hs(self.next_n, spi, ni, bytes(msg), now)
        if self.hold_started < self.hold or self.curve:
            hs.keep = True
            self.hold_started += 1
        self.next_n += 1
        self.started += 1
        self.inflight[spi] = hs
        self._send(hs)

    # -------------------------------------------------------------- receiving
    def _count(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1

    def _fail(self, hs: _Hs, why: str) -> None:
        self.inflight.pop(hs.spi_i, None)
        if hs.keep:
            self.hold_failed += 1
        if self.measuring:
            self._count(why)

    def on_message(self, data: bytes, now: float) -> None:
        if len(data) < 28:
            self.stray += 1
            return
        hs = self.inflight.get(data[:8])
        if hs is None:
            self.stray += 1
            return
        exchange, flags = data[18], data[19]
        if not flags & FLAG_RESPONSE:
            self.stray += 1  # a request from the responder: not part of this benchmark
            return
        mid = int.from_bytes(data[20:24], "big")
        state = hs.state
        if state == _INIT and exchange == _IKE_SA_INIT and mid == 0:
            self._init_response(hs, data, now)
        elif state == _AUTH and exchange == _IKE_AUTH and mid == 1:
            self._auth_response(hs, data, now)
        elif state == _DELETE and exchange == _INFORMATIONAL and mid == 2:
            self._delete_response(hs, data, now)
        else:
            self.late += 1  # an answer to a retransmission we no longer wait for

    def _init_response(self, hs: _Hs, data: bytes, now: float) -> None:
        ke = nr = None
        error = None
        nat_src = []
        try:
            for ptype, a, b in _walk(data, 28, len(data), data[16]):
                if ptype == _P_KE:
                    ke = data[a + 4:b]
                elif ptype == _P_NONCE:
                    nr = data[a:b]
                elif ptype == _P_N:
                    ntype = (data[a + 2] << 8) | data[a + 3]
                    if ntype < 16384:
                        error = NotifyType(ntype).name if ntype in NotifyType._value2member_map_ else f"N({ntype})"
                    elif ntype == _N_COOKIE:
                        error = "COOKIE"
                    elif ntype == _N_NATD_SRC:
                        nat_src.append(data[a + 4 + data[a + 1]:b])
        except ValueError:
            return self._fail(hs, "malformed IKE_SA_INIT response")
        if error is not None:
            return self._fail(hs, f"IKE_SA_INIT: {error}")
        if ke is None or nr is None:
            return self._fail(hs, "IKE_SA_INIT response without KE or Nonce")
        try:
            shared = self.ke.compute_shared(ke)
        except InvalidKeyExchange:
            return self._fail(hs, "bad KE from responder")
        spi_r = data[8:16]
        hs.spi_r = spi_r
        sk_ei, sk_er, sk_pi = ike_keys(hs.ni, nr, shared, hs.spi_i, spi_r)
        hs.dec = _gcm(sk_er)
        if self.fake_nat:
            hs.natt = True
        else:
            hs.natt = bool(nat_src) and _natd(hs.spi_i, spi_r, self.target, self.port) not in nat_src
        ident = self._identity(hs.n)
        plain = bytearray(self.auth_plain)
        a = self.auth_id_at
        plain[a:a + self.id_len] = ident
        signed = hs.init_req + nr + prf(sk_pi, self.id_body_prefix + ident)
        a = self.auth_auth_at
        plain[a:a + 32] = prf(self.psk_pad, signed)
        a = self.auth_spi_at
        plain[a:a + 4] = (0x100 + (hs.n & 0x7FFFFFFF)).to_bytes(4, "big")
        if self.auth_ts_at >= 0:
            port, addr = distinct_selector(hs.n)
            a = self.auth_ts_at
            plain[a + 4:a + 16] = struct.pack("!HH4s4s", port, port, addr, addr)
        hs.init_req = b""
        hs.enc = _gcm(sk_ei)
        hs.msg = self._sk_message(hs, _IKE_AUTH, 1, self.auth_first, bytes(plain), hs.enc)
        hs.state = _AUTH
        hs.sent = now
        hs.tries = 0
        self._send(hs)

    def _open(self, hs: _Hs, data: bytes) -> tuple[bytes, int]:
        """(inner payloads, first type) of an SK response; raises ValueError/IntegrityError, or
        _Unprotected for an error Notify sent outside an IKE SA (RFC 7296 §2.21.4)."""
        notify = None
        for ptype, a, b in _walk(data, 28, len(data), data[16]):
            if ptype == _P_SK:
                if b != len(data):
                    raise ValueError("SK is not last")
                first = data[a - 4]
                plain = hs.dec.decrypt(data[a:a + IV], data[a + IV:b], data[:a])
                if not plain or plain[-1] + 1 > len(plain):
                    raise ValueError("bad padding")
                return plain[:len(plain) - 1 - plain[-1]], first
            if ptype == _P_N and notify is None and b - a >= 4:
                ntype = (data[a + 2] << 8) | data[a + 3]
                notify = NotifyType(ntype).name if ntype in NotifyType._value2member_map_ else f"N({ntype})"
        if notify is not None:
            raise _Unprotected(notify)
        raise ValueError("no SK payload")

    def _auth_response(self, hs: _Hs, data: bytes, now: float) -> None:
        try:
            inner, first = self._open(hs, data)
            has_auth = has_sa = False
            error = None
            for ptype, a, b in _walk(inner, 0, len(inner), first):
                if ptype == _P_AUTH:
                    has_auth = True
                elif ptype == _P_SA:
                    has_sa = True
                elif ptype == _P_N:
                    ntype = (inner[a + 2] << 8) | inner[a + 3]
                    if ntype < 16384 and error is None:
                        error = NotifyType(ntype).name if ntype in NotifyType._value2member_map_ else f"N({ntype})"
        except IntegrityError:
            return self._fail(hs, "IKE_AUTH response fails integrity")
        except _Unprotected as exc:
            return self._fail(hs, f"IKE_AUTH: unencrypted {exc}")
        except ValueError as exc:
            return self._fail(hs, f"malformed IKE_AUTH response ({exc})")
        if not has_auth:
            return self._fail(hs, f"IKE_AUTH: {error or 'no AUTH payload'}")
        if hs.keep:  # established and left up: the responder holds it from now on
            self.inflight.pop(hs.spi_i, None)
            self.held += 1
            if self.curve and self.held % self.curve_step == 0:
                self.curve_marks.append((self.held, now))
            return
        if self.measuring:
            self.ok += 1
            self.latencies.append(now - hs.t0)
            if has_sa and error is None:
                self.child_ok += 1
            elif error is not None:
                self._count(f"CHILD SA: {error}")
        hs.msg = self._sk_message(hs, _INFORMATIONAL, 2, self.del_first, self.del_plain, hs.enc)
        hs.state = _DELETE
        hs.sent = now
        hs.tries = 0
        self._send(hs)

    def _delete_response(self, hs: _Hs, data: bytes, now: float) -> None:
        try:
            self._open(hs, data)
        except (IntegrityError, ValueError):
            self._count("bad delete response")
        self.inflight.pop(hs.spi_i, None)
        self.deleted += 1

    def _expire(self, now: float) -> None:
        for hs in list(self.inflight.values()):
            if now - hs.sent < self.timeout * (2 ** hs.tries):
                continue
            if hs.tries >= self.retries:
                what = ("IKE_SA_INIT", "IKE_AUTH", "delete")[hs.state]
                self._fail(hs, f"{what}: no response after {hs.tries} retransmits")
                continue
            hs.tries += 1
            hs.sent = now
            self.retransmits += 1
            self._send(hs)

    # -------------------------------------------------------------- loop
    def _drain(self, sock: socket.socket, natt: bool, now: float) -> None:
        recv = sock.recv
        on_message = self.on_message
        for _ in range(512):
            try:
                data = recv(8192)
            except (BlockingIOError, InterruptedError):
                return
            if natt:
                if data[:4] != MARKER:
                    continue  # ESP-in-UDP or a NAT-T keepalive
                data = data[4:]
            on_message(data, now)

    def run(self, duration: float, warmup: float = 2.0, drain: float = 3.0, cpu_pid: int | None = None,
            core: int | None = None) -> dict:
        """Run for warmup + duration seconds; count what completes in the window.

        With ``curve``: no window; every SA stays up until ``curve`` are held or ``duration`` ran out.
        """
        self._cpu_pid = cpu_pid
        self.s_ike = _udp(self.source, self.port)
        self.s_natt = _udp(self.source, self.natt_port)
        poller = select.epoll()
        socks = {self.s_ike.fileno(): (self.s_ike, False), self.s_natt.fileno(): (self.s_natt, True)}
        for fd in socks:
            poller.register(fd, select.EPOLLIN)
        clock = time.monotonic
        t0 = clock()
        t_measure, t_end = t0 + warmup, t0 + warmup + duration
        window = None
        marks: dict[str, float] = {}
        next_scan = t0 + 0.05
        launching = True
        holding = self.hold > 0
        self.rss = dict(start=_proc_rss(cpu_pid) if cpu_pid else None)
        if self.curve:
            self.curve_marks.append((0, t0))
        try:
            while True:
                now = clock()
                if self.curve:
                    # A curve run: every handshake stays up; it ends at `curve` SAs held (or
                    # when the duration runs out), and the result is the rate per step.
                    if self.held >= self.curve or now >= t0 + duration:
                        break
                    while len(self.inflight) < self.concurrency and \
                            self.hold_started - self.hold_failed < self.curve:
                        self._start(now)
                    for fd, _ in poller.poll(0.01):
                        sock, natt = socks[fd]
                        self._drain(sock, natt, now)
                    if now >= next_scan:
                        self._expire(now)
                        next_scan = now + 0.05
                    continue
                if holding and self.held + self.hold_failed >= self.hold:
                    # The SAs to hold are up: the warm-up and the window start now.
                    holding = False
                    self.rss["held"] = _proc_rss(cpu_pid) if cpu_pid else None
                    t_measure, t_end = now + warmup, now + warmup + duration
                if not holding and not self.measuring and window is None and now >= t_measure:
                    self.measuring = True
                    marks = dict(t=now, cpu=_self_cpu(), rcpu=_proc_cpu(cpu_pid) if cpu_pid else 0.0,
                                 core=_core_busy(core) if core is not None else 0.0, started=self.started)
                if self.measuring and now >= t_end:
                    self.measuring = False
                    window = dict(t=now - marks["t"], cpu=_self_cpu() - marks["cpu"],
                                  rcpu=(_proc_cpu(cpu_pid) - marks["rcpu"]) if cpu_pid else None,
                                  core=(_core_busy(core) - marks["core"]) if core is not None else None,
                                  started=self.started - marks["started"])
                    self.rss["end"] = _proc_rss(cpu_pid) if cpu_pid else None
                    launching = False
                if launching:
                    while len(self.inflight) < self.concurrency and \
                            (not self.rate or self.started < self.rate * (now - t0) + 1):
                        self._start(now)
                elif not self.inflight or now >= t_end + drain:
                    break
                for fd, _ in poller.poll(0.01):
                    sock, natt = socks[fd]
                    self._drain(sock, natt, now)
                if now >= next_scan:
                    self._expire(now)
                    next_scan = now + 0.05
        finally:
            poller.close()
            self.s_ike.close()
            self.s_natt.close()
        return self._result(window, duration)

    def curve_result(self, cpu_pid: int | None = None) -> dict:
        """Rate of new SAs per step of held SAs (a --curve run)."""
        steps = []
        for (n0, t0), (n1, t1) in zip(self.curve_marks, self.curve_marks[1:]):
            steps.append(dict(held_from=n0, held_to=n1, rate=round((n1 - n0) / (t1 - t0), 1) if t1 > t0 else None))
        return dict(curve=steps, held=self.held, hold_failed=self.hold_failed, retransmits=self.retransmits,
                    failures=dict(sorted(self.failures.items())), step=self.curve_step,
                    responder_rss_kib=_proc_rss(cpu_pid) if cpu_pid else None)

    def _result(self, window: dict | None, duration: float) -> dict:
        if self.curve:
            return self.curve_result(self._cpu_pid)
        if window is None:
            window = dict(t=duration, cpu=0.0, rcpu=None, core=None, started=0)
        lat = sorted(self.latencies)
        ms = lambda q: round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None  # noqa: E731
        t = window["t"]
        return dict(
            rate=self.ok / t if t else 0.0, ok=self.ok, child_ok=self.child_ok, seconds=round(t, 3),
            started=window["started"], failures=dict(sorted(self.failures.items())),
            retransmits=self.retransmits, stray=self.stray, late=self.late, left_inflight=len(self.inflight),
            latency_ms=dict(p50=ms(0.5), p90=ms(0.9), p99=ms(0.99)),
            generator_cpu=round(window["cpu"] / t, 3) if t else None,
            generator_us_per_hs=round(1e6 * window["cpu"] / self.ok, 1) if self.ok else None,
            responder_cpu=round(window["rcpu"] / t, 3) if t and window["rcpu"] is not None else None,
            responder_us_per_hs=round(1e6 * window["rcpu"] / self.ok, 1)
            if self.ok and window["rcpu"] is not None else None,
            core_busy=round(window["core"] / t, 3) if t and window["core"] is not None else None,
            held=self.held, hold_failed=self.hold_failed, responder_rss_kib=self.rss,
            concurrency=self.concurrency, fake_nat=self.fake_nat)


# ====================================================================== null responder
class _RSa:
    __slots__ = ("spi_i", "dec", "enc", "cached_mid", "cached")

    def __init__(self, spi_i: bytes, dec, enc) -> None:
        self.spi_i, self.dec, self.enc = spi_i, dec, enc
        self.cached_mid, self.cached = 0, b""


class NullResponder:
    """The least a responder can do and still complete the generator's handshakes:
    one key pair, the DH result cached per peer public value (the generator
    reuses its key pair, so this is one exchange in total), no AUTH check,
    fixed response templates. Used to measure the generator's own ceiling."""

    def __init__(self, listen: str, *, port: int = 500, natt_port: int = 4500) -> None:
        self.listen, self.port, self.natt_port = listen, port, natt_port
        self.ke = KeyExchange(KeId.CURVE25519)
        self.shared: dict[bytes, bytes] = {}
        self.sas: dict[bytes, _RSa] = {}
        self.half_open: dict[bytes, tuple[bytes, bytes]] = {}
        self.counts = dict(init=0, auth=0, delete=0, bad=0)
        nonce = b"\xa5" * NONCE
        self.init_tmpl = encode_message(_IKE_SA_INIT, 0, b"\x5a" * 8, b"\x6b" * 8, FLAG_RESPONSE, [
            SaPayload((_ike_proposal(),)), KePayload(KeId.CURVE25519, self.ke.public_bytes()), NoncePayload(nonce),
            NotifyPayload(_N_NATD_SRC, data=os.urandom(20)), NotifyPayload(_N_NATD_DST, data=os.urandom(20))])
        self.init_nonce_at = _offset(self.init_tmpl, nonce)
        first, inner = encode_payloads([
            IdPayload(False, IdType.FQDN, b"null.bench.example"), AuthPayload(AuthMethod.PSK, bytes(32)),
            SaPayload((_esp_proposal(b"\x00\x00\x10\x00"),)),
            _ts_payload(True, "198.51.100.1/32"), _ts_payload(False, "198.51.100.129/32")])
        self.auth_first, self.auth_plain = first, inner + b"\0"

    def _sk(self, sa: _RSa, spi_r: bytes, exchange: int, mid: int, first: int, plain: bytes) -> bytes:
        sk_len = 4 + IV + len(plain) + ICV
        aad = _HDR.pack(sa.spi_i, spi_r, _P_SK, 0x20, exchange, FLAG_RESPONSE, mid, 28 + sk_len) + \
            _GEN.pack(first, 0, sk_len)
        iv = mid.to_bytes(8, "big")
        return aad + iv + sa.enc.encrypt(iv, plain, aad)

    def handle(self, data: bytes) -> bytes | None:
        if len(data) < 28 or data[19] & FLAG_RESPONSE:
            return None
        exchange = data[18]
        if exchange == _IKE_SA_INIT:
            return self._init(data)
        sa = self.sas.get(data[8:16])
        if sa is None:
            return None
        mid = int.from_bytes(data[20:24], "big")
        if mid == sa.cached_mid and sa.cached:
            return sa.cached
        try:
            for ptype, a, b in _walk(data, 28, len(data), data[16]):
                if ptype == _P_SK:
                    sa.dec.decrypt(data[a:a + IV], data[a + IV:b], data[:a])
        except (ValueError, IntegrityError):
            self.counts["bad"] += 1
            return None
        spi_r = data[8:16]
        if exchange == _IKE_AUTH and mid == 1:
            self.counts["auth"] += 1
            out = self._sk(sa, spi_r, _IKE_AUTH, 1, self.auth_first, self.auth_plain)
        elif exchange == _INFORMATIONAL:
            self.counts["delete"] += 1
            out = self._sk(sa, spi_r, _INFORMATIONAL, mid, 0, b"\0")
            del self.sas[spi_r]
            return out
        else:
            return None
        sa.cached_mid, sa.cached = mid, out
        return out

    def _init(self, data: bytes) -> bytes | None:
        spi_i = data[:8]
        old = self.half_open.get(spi_i)
        if old is not None and old[0] == data:
            return old[1]
        ke = ni = None
        try:
            for ptype, a, b in _walk(data, 28, len(data), data[16]):
                if ptype == _P_KE:
                    ke = data[a + 4:b]
                elif ptype == _P_NONCE:
                    ni = data[a:b]
        except ValueError:
            return None
        if ke is None or ni is None:
            return None
        shared = self.shared.get(ke)
        if shared is None:
            if len(self.shared) > 1000:
                self.shared.clear()
            shared = self.shared[ke] = self.ke.compute_shared(ke)
        rnd = os.urandom(8 + NONCE)
        spi_r, nr = rnd[:8], rnd[8:]
        out = bytearray(self.init_tmpl)
        out[0:16] = spi_i + spi_r
        a = self.init_nonce_at
        out[a:a + NONCE] = nr
        sk_ei, sk_er, _ = ike_keys(ni, nr, shared, spi_i, spi_r)
        self.sas[spi_r] = _RSa(spi_i, _gcm(sk_ei), _gcm(sk_er))
        out = bytes(out)
        if len(self.half_open) > 100000:
            self.half_open.clear()
        self.half_open[spi_i] = (data, out)
        self.counts["init"] += 1
        return out

    def serve(self, stop) -> None:
        s_ike, s_natt = _udp(self.listen, self.port), _udp(self.listen, self.natt_port)
        poller = select.epoll()
        socks = {s_ike.fileno(): (s_ike, False), s_natt.fileno(): (s_natt, True)}
        for fd in socks:
            poller.register(fd, select.EPOLLIN)
        try:
            while not stop():
                for fd, _ in poller.poll(0.2):
                    sock, natt = socks[fd]
                    for _ in range(512):
                        try:
                            data, addr = sock.recvfrom(8192)
                        except (BlockingIOError, InterruptedError):
                            break
                        if natt:
                            if data[:4] != MARKER:
                                continue
                            out = self.handle(data[4:])
                            if out is not None:
                                sock.sendto(MARKER + out, addr)
                        else:
                            out = self.handle(data)
                            if out is not None:
                                sock.sendto(out, addr)
        finally:
            poller.close()
            s_ike.close()
            s_natt.close()


# ====================================================================== CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.ikeload", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="drive handshakes against a responder")
    r.add_argument("--source", default="192.0.2.1")
    r.add_argument("--target", default="192.0.2.2")
    r.add_argument("--concurrency", type=int, default=32)
    r.add_argument("--warmup", type=float, default=2.0)
    r.add_argument("--duration", type=float, default=15.0)
    r.add_argument("--timeout", type=float, default=2.0, help="first retransmission after this many seconds")
    r.add_argument("--retries", type=int, default=3)
    r.add_argument("--hold", type=int, default=0, metavar="N",
                   help="first bring up N IKE SAs (own IDs) and leave them up, then measure with them held")
    r.add_argument("--distinct-ts", action="store_true",
                   help="every handshake proposes its own TSi (198.51.100.1-126/32, one UDP port each): no two "
                        "CHILD SAs share selectors (the responder must accept 198.51.100.0/25)")
    r.add_argument("--curve", type=int, default=0, metavar="N",
                   help="hold every SA (no delete) until N are up; report the rate of new SAs per --curve-step")
    r.add_argument("--curve-step", type=int, default=1000)
    r.add_argument("--rate", type=float, default=0.0, help="start at most this many handshakes per second")
    r.add_argument("--psk", default=PSK.decode())
    r.add_argument("--no-fake-nat", action="store_true", help="real NAT-D hashes; float only if the responder says so")
    r.add_argument("--cpu-pid", type=int, help="also report this process's CPU use over the window")
    r.add_argument("--core", type=int, help="also report how busy this CPU was over the window (all processes)")
    r.add_argument("--json", action="store_true", help="one JSON object on stdout")
    n = sub.add_parser("null", help="serve as the null responder until SIGTERM")
    n.add_argument("--listen", default="192.0.2.2")
    args = ap.parse_args(argv)
    if args.cmd == "null":
        stopped = []
        signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
        signal.signal(signal.SIGINT, lambda *_: stopped.append(1))
        nr = NullResponder(args.listen)
        print("ready", flush=True)
        nr.serve(lambda: bool(stopped))
        print(json.dumps(nr.counts), file=sys.stderr)
        return 0
    gen = LoadGenerator(args.source, args.target, concurrency=args.concurrency, psk=args.psk.encode(),
                        timeout=args.timeout, retries=args.retries, fake_nat=not args.no_fake_nat, hold=args.hold,
                        distinct_ts=args.distinct_ts, curve=args.curve, curve_step=args.curve_step, rate=args.rate)
    res = gen.run(args.duration, args.warmup, cpu_pid=args.cpu_pid, core=args.core)
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:22} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
