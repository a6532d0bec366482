"""One-shot hashes and HMAC for the engine's non-protocol digests, from `cryptography` like every other
primitive (DESIGN: no second crypto library, hashlib included): CERTREQ and key-ID hashes (RFC 7296
§3.7, RFC 4945), NAT detection (§2.23), the retransmission check's request digest, fingerprints of
files and secrets."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac

_SHA1 = hashes.SHA1()
_SHA256 = hashes.SHA256()


def sha1(*parts: bytes) -> bytes:
    """SHA-1 of the parts joined."""
    h = hashes.Hash(_SHA1)
    for p in parts:
        h.update(p)
    return h.finalize()


def sha256(*parts: bytes) -> bytes:
    """SHA-256 of the parts joined."""
    h = hashes.Hash(_SHA256)
    for p in parts:
        h.update(p)
    return h.finalize()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 of ``data`` under ``key`` (compare results with hmac.compare_digest)."""
    h = _hmac.HMAC(key, _SHA256)
    h.update(data)
    return h.finalize()
