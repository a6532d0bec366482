"""Certificate (public key) authentication in IKE_AUTH: RFC 7427 signatures,
CERT and CERTREQ payloads. Wired to engine.pki and engine.crypto.signature."""

from __future__ import annotations

from engine.ike.errors import LocalError


def certreq_payloads(ep, connections) -> list:
    """CERTREQ payloads naming the CAs we trust for these connections."""
    if not any(c.remote.auth == "pubkey" for c in connections):
        return []
    raise LocalError("certificate authentication is not wired yet")


def sign_auth(ep, sa, conn, signed: bytes):
    raise LocalError(f"connection '{conn.name}': certificate authentication is not wired yet")


def verify_auth(ep, sa, conn, auth, signed: bytes, payloads, peer):
    return False, f"connection '{conn.name}': certificate authentication is not wired yet"
