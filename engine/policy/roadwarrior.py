"""Road-warrior policy rules (issue 10): what a policy may ask for before engine.ike negotiates it.

Configuration payloads (engine.ike.config_payload), EAP in IKE_AUTH
(engine.ike.exchanges.eap_auth) and redirects in IKE_AUTH
(engine.ike.exchanges.redirect) are negotiated: all three are in ``NEGOTIATED``.
The gate stays for what a future engine change may take out again: a
connection that asks for a feature not in ``NEGOTIATED`` is refused with an
error saying so, never loaded into a tunnel that would behave otherwise (a
client refused its address, an EAP client answered with AUTHENTICATION_FAILED).
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.policy.model import ConnectionConfig

NEGOTIATED: frozenset[str] = frozenset({"cp", "eap", "redirect"})
"""Road-warrior features engine.ike negotiates: "cp" (pools on a responder, vips on an
initiator: RFC 7296 §3.15), "eap" (RFC 7296 §2.16), "redirect" (RFC 5685)."""

FEATURES = frozenset({"cp", "eap", "redirect"})


def connection_problems(c: ConnectionConfig, negotiated: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(key under the connection, message) for every road-warrior setting this engine cannot honour yet."""
    features = NEGOTIATED if negotiated is None else frozenset(negotiated)
    out: list[tuple[str, str]] = []
    if c.pools and "cp" not in features:
        out.append(("pools", "virtual IPs from pools need configuration payloads in IKE_AUTH (RFC 7296 §3.15), "
                             "which this engine does not negotiate yet: clients asking for an address would be "
                             "refused; remove pools for now"))
    if c.vips and "cp" not in features:
        out.append(("vips", "requesting a virtual IP needs configuration payloads in IKE_AUTH (RFC 7296 §3.15), "
                            "which this engine does not negotiate yet; remove vips for now"))
    if "eap" not in features:
        for side in ("local", "remote"):
            auth = getattr(c, side)
            if auth.is_eap:
                out.append((f"{side}.auth", f'"{auth.auth}": EAP inside IKE_AUTH (RFC 7296 §2.16) is not '
                                            "negotiated by this engine yet; use \"pubkey\" for now"))
    if c.redirect_to is not None and "redirect" not in features:
        out.append(("redirect_to", "IKE redirect (RFC 5685) is not negotiated by this engine yet; remove "
                                   "redirect_to for now"))
    return out


def eap_id_matches(pattern: str | None, identity: str | bytes) -> bool:
    """Whether a client's EAP identity is allowed by a remote ``eap_id``: None or ``%any`` allow any,
    ``*`` matches any run of characters, otherwise equal without regard to case."""
    text = identity.decode("utf-8", "replace") if isinstance(identity, bytes) else identity
    if pattern is None or pattern == "%any":
        return True
    parts = pattern.lower().split("*")
    value = text.lower()
    if len(parts) == 1:
        return value == parts[0]
    if not value.startswith(parts[0]) or not value.endswith(parts[-1]) or len(value) < len(parts[0]) + len(parts[-1]):
        return False
    pos = len(parts[0])
    end = len(value) - len(parts[-1])
    for middle in parts[1:-1]:
        found = value.find(middle, pos, end)
        if found < 0:
            return False
        pos = found + len(middle)
    return True
