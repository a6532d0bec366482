"""AUTH payload data, NAT detection hashes and cookies (RFC 7296 §2.15, §2.23, §2.6)."""

from __future__ import annotations

import functools
import hmac as _hmac
import ipaddress
from typing import Mapping

from cryptography.hazmat.primitives import hashes, hmac

from ..secret import Secret
from .digests import sha1
from .prf import prf_for

_KEY_PAD = b"Key Pad for IKEv2"


def _reveal(value: bytes | Secret) -> bytes:
    return value.reveal() if isinstance(value, Secret) else value


def signed_octets(
    real_message: bytes, peer_nonce: bytes, prf_id: int, sk_p: bytes | Secret, id_payload_body: bytes,
    int_auth: bytes = b"",
) -> bytes:
    """InitiatorSignedOctets / ResponderSignedOctets (§2.15):
    RealMessage | NonceData | prf(SK_p, RestOfIDPayload) [| IntAuth].

    `real_message` is our IKE_SA_INIT message as sent, `peer_nonce` the other
    side's Nonce data, `sk_p` our SK_pi/SK_pr, and `id_payload_body` our ID
    payload without its 4-byte generic header (ID type, reserved, data).
    `int_auth` is RFC 9242's IntAuth_iN | IntAuth_rN | IKE_AUTH_MID after
    IKE_INTERMEDIATE exchanges (engine.crypto.intauth.IntAuthChain.int_auth).
    With a PPK (RFC 8784) `sk_p` is SK_pi'/SK_pr' (engine.crypto.ppk).
    """
    return real_message + peer_nonce + prf_for(prf_id)(_reveal(sk_p), id_payload_body) + int_auth


def psk_auth_data(prf_id: int, psk: bytes | Secret, signed: bytes) -> bytes:
    """AUTH for shared key MIC: prf(prf(PSK, "Key Pad for IKEv2"), SignedOctets).
    Compare a received value with hmac.compare_digest."""
    prf = prf_for(prf_id)
    return prf(prf(_reveal(psk), _KEY_PAD), signed)


@functools.lru_cache(maxsize=1024)
def _packed_address(addr: str) -> bytes:
    # Cached: the same few addresses are hashed for every NAT-D payload.
    try:
        return ipaddress.ip_address(addr).packed
    except ValueError:
        raise ValueError(f"not an IP address: {addr!r}") from None


@functools.lru_cache(maxsize=1024)
def _packed_endpoint(addr: str, port: int) -> bytes:
    # IP | Port of NAT-D: the same few endpoints for every handshake (four hashes each).
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    return _packed_address(addr) + port.to_bytes(2, "big")


def nat_detection_hash(spi_i: bytes, spi_r: bytes, addr: str, port: int) -> bytes:
    """NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | Port) (§2.23).

    In IKE_SA_INIT the request has SPIr = 8 zero bytes.
    """
    return sha1(spi_i, spi_r, _packed_endpoint(addr, port))


COOKIE_SIZE = 1 + 32


def cookie_value(secret: bytes | Secret, nonce_i: bytes, addr: str, spi_i: bytes, version: int = 0) -> bytes:
    """Stateless cookie (§2.6): VersionIDofSecret | HMAC-SHA256(secret, Ni | IPi | SPIi).

    `version` (0-255) names the secret so it can be rotated while cookies
    made with the previous one are still accepted (see `verify_cookie`).
    """
    if not 0 <= version <= 255:
        raise ValueError(f"cookie secret version must fit in a byte, got {version}")
    mac = hmac.HMAC(_reveal(secret), hashes.SHA256())
    mac.update(nonce_i + _packed_address(addr) + spi_i)
    return bytes((version,)) + mac.finalize()


def verify_cookie(
    secrets: Mapping[int, bytes | Secret], cookie: bytes, nonce_i: bytes, addr: str, spi_i: bytes
) -> bool:
    """True if `cookie` was made by `cookie_value` with one of `secrets` (version -> secret)."""
    if len(cookie) != COOKIE_SIZE or cookie[0] not in secrets:
        return False
    want = cookie_value(secrets[cookie[0]], nonce_i, addr, spi_i, cookie[0])
    return _hmac.compare_digest(want, cookie)
