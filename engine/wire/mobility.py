"""Notify payloads of MOBIKE (RFC 4555) and IKEv2 redirect (RFC 5685).

    MOBIKE_SUPPORTED (16396)          empty; IKE_AUTH, both directions
    ADDITIONAL_IP4_ADDRESS (16397)    4 octets; IKE_AUTH or INFORMATIONAL
    ADDITIONAL_IP6_ADDRESS (16398)    16 octets
    NO_ADDITIONAL_ADDRESSES (16399)   empty
    UPDATE_SA_ADDRESSES (16400)       empty; INFORMATIONAL request after a move
    COOKIE2 (16401)                   8 to 64 octets, echoed in the response (return routability)
    NO_NATS_ALLOWED (16402)           the addresses and ports the packet was sent from/to:
                                      src IP | dst IP | src port | dst port (12 or 36 octets)
    REDIRECT_SUPPORTED (16406)        empty; IKE_SA_INIT request
    REDIRECT (16407)                  GW Ident Type | GW Ident Len | New GW Identity [| Nonce Data]
                                      (the nonce, Ni, only when it answers IKE_SA_INIT)
    REDIRECTED_FROM (16408)           GW Ident Type | GW Ident Len | the GW that redirected us

Gateway identity types (RFC 5685 §10): 1 IPv4 address, 2 IPv6 address, 3 FQDN.
The codec checks ADDITIONAL_IP*_ADDRESS lengths; the others are checked here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from engine.wire.constants import NotifyType
from engine.wire.errors import MalformedMessage
from engine.wire.payloads import NotifyPayload

GW_IPV4, GW_IPV6, GW_FQDN = 1, 2, 3
COOKIE2_MIN, COOKIE2_MAX = 8, 64
_FQDN = re.compile(rb"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$")


def mobike_supported() -> NotifyPayload:
    return NotifyPayload(NotifyType.MOBIKE_SUPPORTED)


def additional_addresses(addresses) -> list[NotifyPayload]:
    """ADDITIONAL_IP4/6_ADDRESS notifies for our other addresses, or NO_ADDITIONAL_ADDRESSES."""
    out = []
    for a in addresses:
        addr = ipaddress.ip_address(a)
        kind = NotifyType.ADDITIONAL_IP4_ADDRESS if addr.version == 4 else NotifyType.ADDITIONAL_IP6_ADDRESS
        out.append(NotifyPayload(kind, data=addr.packed))
    return out or [NotifyPayload(NotifyType.NO_ADDITIONAL_ADDRESSES)]


def additional_address(notify: NotifyPayload) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address of an ADDITIONAL_IP4/6_ADDRESS notify (length checked by the codec)."""
    return ipaddress.ip_address(notify.data)


def update_sa_addresses() -> NotifyPayload:
    return NotifyPayload(NotifyType.UPDATE_SA_ADDRESSES)


def cookie2(data: bytes) -> NotifyPayload:
    """A COOKIE2 for a return routability check (RFC 4555 §3.8); the data comes from the caller's RNG."""
    if not COOKIE2_MIN <= len(data) <= COOKIE2_MAX:
        raise ValueError(f"COOKIE2 data is {COOKIE2_MIN} to {COOKIE2_MAX} bytes, got {len(data)}")
    return NotifyPayload(NotifyType.COOKIE2, data=bytes(data))


def cookie2_data(notify: NotifyPayload) -> bytes:
    """A received COOKIE2's data, checked."""
    if not COOKIE2_MIN <= len(notify.data) <= COOKIE2_MAX:
        raise MalformedMessage(f"N(COOKIE2): {len(notify.data)} bytes of data (RFC 4555: 8 to 64)", payload="N")
    return notify.data


@dataclass(frozen=True)
class PacketAddresses:
    """NO_NATS_ALLOWED data: where the packet carrying it was sent from and to."""

    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    src_port: int
    dst_port: int


def no_nats_allowed(src, dst, src_port: int, dst_port: int) -> NotifyPayload:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError("NO_NATS_ALLOWED: both addresses of one family")
    data = s.packed + d.packed + src_port.to_bytes(2, "big") + dst_port.to_bytes(2, "big")
    return NotifyPayload(NotifyType.NO_NATS_ALLOWED, data=data)


def decode_no_nats_allowed(notify: NotifyPayload) -> PacketAddresses:
    data = notify.data
    if len(data) not in (12, 36):
        raise MalformedMessage(f"N(NO_NATS): {len(data)} bytes of data (12 for IPv4, 36 for IPv6)", payload="N")
    n = 4 if len(data) == 12 else 16
    return PacketAddresses(ipaddress.ip_address(data[:n]), ipaddress.ip_address(data[n:2 * n]),
                           int.from_bytes(data[2 * n:2 * n + 2], "big"), int.from_bytes(data[2 * n + 2:], "big"))


# -- redirect (RFC 5685) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Redirect:
    """A decoded REDIRECT or REDIRECTED_FROM notify."""

    gw_type: int
    """GW_IPV4, GW_IPV6 or GW_FQDN."""
    gateway: str
    """The gateway: an address or a host name."""
    nonce: bytes = b""
    """REDIRECT in an IKE_SA_INIT response: the initiator's nonce (proves the answer is fresh)."""


def _gateway(gateway: str) -> tuple[int, bytes]:
    try:
        addr = ipaddress.ip_address(gateway)
    except ValueError:
        name = gateway.encode("ascii", "strict") if gateway.isascii() else b""
        if not name or len(name) > 255 or not _FQDN.match(name):
            raise ValueError(f"{gateway!r} is not an IP address or a host name") from None
        return GW_FQDN, name
    return (GW_IPV4 if addr.version == 4 else GW_IPV6), addr.packed


def redirect_supported() -> NotifyPayload:
    return NotifyPayload(NotifyType.REDIRECT_SUPPORTED)


def redirect(gateway: str, nonce: bytes = b"") -> NotifyPayload:
    """REDIRECT to ``gateway``; ``nonce`` (the initiator's Ni) only when answering IKE_SA_INIT."""
    gw_type, ident = _gateway(gateway)
    return NotifyPayload(NotifyType.REDIRECT, data=bytes((gw_type, len(ident))) + ident + bytes(nonce))


def redirected_from(gateway: str) -> NotifyPayload:
    """REDIRECTED_FROM (the gateway that sent us here) in the new IKE_SA_INIT request."""
    gw_type, ident = _gateway(gateway)
    return NotifyPayload(NotifyType.REDIRECTED_FROM, data=bytes((gw_type, len(ident))) + ident)


def decode_redirect(notify: NotifyPayload) -> Redirect:
    """A REDIRECT / REDIRECTED_FROM notify's content; MalformedMessage names what is wrong."""
    data = notify.data
    label = "REDIR" if notify.type == NotifyType.REDIRECT else "REDIR_FROM"
    if len(data) < 2:
        raise MalformedMessage(f"N({label}): {len(data)} bytes, need a gateway type and length", payload="N")
    gw_type, n = data[0], data[1]
    if len(data) < 2 + n:
        raise MalformedMessage(f"N({label}): gateway identity of {n} bytes overruns the notify", payload="N")
    ident, rest = data[2:2 + n], data[2 + n:]
    if notify.type == NotifyType.REDIRECTED_FROM and rest:
        raise MalformedMessage(f"N({label}): {len(rest)} bytes after the gateway identity", payload="N")
    if gw_type in (GW_IPV4, GW_IPV6):
        want = 4 if gw_type == GW_IPV4 else 16
        if n != want:
            raise MalformedMessage(f"N({label}): an IPv{4 if want == 4 else 6} gateway of {n} bytes", payload="N")
        gateway = str(ipaddress.ip_address(ident))
    elif gw_type == GW_FQDN:
        if not _FQDN.match(ident):
            raise MalformedMessage(f"N({label}): the gateway name is not a host name", payload="N")
        gateway = ident.decode("ascii")
    else:
        raise MalformedMessage(f"N({label}): unknown gateway identity type {gw_type}", payload="N")
    if rest and not 16 <= len(rest) <= 256:
        raise MalformedMessage(f"N({label}): nonce of {len(rest)} bytes (16 to 256)", payload="N")
    return Redirect(gw_type, gateway, bytes(rest))
