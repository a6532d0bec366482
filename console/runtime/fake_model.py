"""The fake runtime's simulated gateway (console/runtime/fake.py): its SAs, the proposals of its
scripted peers, and the packets of its samples."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

LOCAL_ADDR = "192.0.2.1"
DEFAULT_START = 1_700_000_000.0
DROP_REASONS = ("replay", "icv", "no_sa", "policy_mismatch", "discard_rule", "malformed")

LOCAL_IKE_PROPOSALS = (
    "IKE:AES_GCM_16_256/PRF_HMAC_SHA2_384/CURVE_25519",
    "IKE:AES_CBC_256/HMAC_SHA2_384_192/PRF_HMAC_SHA2_384/ECP_384",
)
LEGACY_IKE_PROPOSALS = (
    "IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024",
    "IKE:3DES_CBC/HMAC_MD5_96/PRF_HMAC_MD5/MODP_1024",
)


@dataclass
class _Child:
    connection: str
    config: str
    unique_id: int
    reqid: int
    spi_in: int
    spi_out: int
    installed: float
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    mode: str = "tunnel"
    encap: bool = False
    state: str = "INSTALLED"
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    last_in: float | None = None
    last_out: float | None = None
    drops: dict[str, int] = field(default_factory=dict)
    rekey_after: float = 3600.0
    life: float = 3960.0


@dataclass
class _Ike:
    connection: str
    unique_id: int
    state: str
    initiator: bool
    spi_i: int
    spi_r: int
    remote_addr: str
    remote_port: int = 500
    local_port: int = 500
    local_id: str = ""
    remote_id: str = ""
    established: float | None = None
    nat_remote: bool = False
    children: list[_Child] = field(default_factory=list)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ipv4_packet(src: str, dst: str, proto: int, payload: bytes, ident: int = 1) -> bytes:
    """A well-formed IPv4 packet (header checksum computed), for samples."""
    s = bytes(int(x) for x in src.split("."))
    d = bytes(int(x) for x in dst.split("."))
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, 64, proto, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + payload


def tcp_segment(sport: int, dport: int, seq: int, payload: bytes) -> bytes:
    # Checksum left 0: samples are for reading, not for a stack.
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, 0x18, 64240, 0, 0) + payload


def udp_datagram(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
