"""Configuration payload values (RFC 7296 §3.15, §3.15.1): virtual IPs, DNS, split subnets.

``engine.wire.codec`` reads a CP payload into (attribute type, bytes); here
those bytes become addresses and networks, with each attribute's length
checked (a wrong one is a MalformedMessage naming the attribute), and the
requests and replies a road warrior exchanges are built:

    CFG_REQUEST  INTERNAL_IP4_ADDRESS (empty, or the address it would like back)
                 INTERNAL_IP4_DNS, INTERNAL_IP6_ADDRESS, INTERNAL_IP6_DNS, ...
    CFG_REPLY    INTERNAL_IP4_ADDRESS 198.51.100.130, INTERNAL_IP4_NETMASK,
                 INTERNAL_IP4_DNS ..., INTERNAL_IP4_SUBNET (split include) ...

The summary names them as charon logs them: ``CPRQ(ADDR DNS)``, ``CPRP(ADDR DNS SUBNET)``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Union

from engine.wire.constants import CFG_ATTR_SHORT, CfgAttr, CfgType
from engine.wire.errors import MalformedMessage
from engine.wire.payloads import CpPayload

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

MAX_TEXT = 255
"""Longest APPLICATION_VERSION / INTERNAL_DNS_DOMAIN kept (bounded: the peer may be unauthenticated)."""

# Attribute -> allowed value lengths (0: a request for a value).
_LENGTHS: dict[int, tuple[int, ...]] = {
    CfgAttr.INTERNAL_IP4_ADDRESS: (0, 4),
    CfgAttr.INTERNAL_IP4_NETMASK: (0, 4),
    CfgAttr.INTERNAL_IP4_DNS: (0, 4),
    CfgAttr.INTERNAL_IP4_NBNS: (0, 4),
    CfgAttr.INTERNAL_IP4_DHCP: (0, 4),
    CfgAttr.INTERNAL_IP6_ADDRESS: (0, 17),
    CfgAttr.INTERNAL_IP6_DNS: (0, 16),
    CfgAttr.INTERNAL_IP6_DHCP: (0, 16),
    CfgAttr.INTERNAL_IP4_SUBNET: (0, 8),
    CfgAttr.INTERNAL_IP6_SUBNET: (0, 17),
}


def _bad(attr: int, reason: str) -> MalformedMessage:
    name = CFG_ATTR_SHORT.get(attr, str(attr))
    return MalformedMessage(f"CP attribute {name} ({attr}): {reason}", payload="CP")


def decode_value(attr: int, value: bytes):
    """One attribute's value: an address, an IPv6 interface (address/prefix), a network, text,
    a tuple of attribute types (SUPPORTED_ATTRIBUTES), raw bytes for others; None for an empty
    (requesting) attribute. MalformedMessage for a length the RFC does not allow."""
    allowed = _LENGTHS.get(attr)
    if allowed is not None and len(value) not in allowed:
        raise _bad(attr, f"{len(value)} bytes (allowed: {' or '.join(map(str, allowed))})")
    if not value:
        return None
    if attr in (CfgAttr.INTERNAL_IP4_ADDRESS, CfgAttr.INTERNAL_IP4_NETMASK, CfgAttr.INTERNAL_IP4_DNS,
                CfgAttr.INTERNAL_IP4_NBNS, CfgAttr.INTERNAL_IP4_DHCP, CfgAttr.INTERNAL_IP6_DNS,
                CfgAttr.INTERNAL_IP6_DHCP):
        return ipaddress.ip_address(value)
    if attr == CfgAttr.INTERNAL_IP6_ADDRESS:
        if value[16] > 128:
            raise _bad(attr, f"prefix length {value[16]}")
        return ipaddress.IPv6Interface((value[:16], value[16]))
    if attr == CfgAttr.INTERNAL_IP4_SUBNET:
        try:
            return ipaddress.IPv4Network((value[:4], str(ipaddress.IPv4Address(value[4:]))), strict=False)
        except ValueError:
            raise _bad(attr, f"{ipaddress.IPv4Address(value[4:])} is not a netmask") from None
    if attr == CfgAttr.INTERNAL_IP6_SUBNET:
        if value[16] > 128:
            raise _bad(attr, f"prefix length {value[16]}")
        return ipaddress.IPv6Network((value[:16], value[16]), strict=False)
    if attr in (CfgAttr.APPLICATION_VERSION, CfgAttr.INTERNAL_DNS_DOMAIN):
        return value[:MAX_TEXT].decode("utf-8", "replace")
    if attr == CfgAttr.SUPPORTED_ATTRIBUTES:
        if len(value) % 2:
            raise _bad(attr, "odd length (a list of 2-byte types)")
        return tuple(int.from_bytes(value[i:i + 2], "big") & 0x7FFF for i in range(0, len(value), 2))
    return bytes(value)


def encode_value(attr: int, value) -> bytes:
    """The bytes of one attribute (None: empty, a request). ValueError for a value of the wrong kind."""
    if value is None:
        return b""
    if attr == CfgAttr.INTERNAL_IP6_ADDRESS:
        iface = ipaddress.IPv6Interface(value)
        return iface.ip.packed + bytes((iface.network.prefixlen,))
    if attr == CfgAttr.INTERNAL_IP4_SUBNET:
        net = ipaddress.IPv4Network(value, strict=False)
        return net.network_address.packed + net.netmask.packed
    if attr == CfgAttr.INTERNAL_IP6_SUBNET:
        net = ipaddress.IPv6Network(value, strict=False)
        return net.network_address.packed + bytes((net.prefixlen,))
    if attr in (CfgAttr.APPLICATION_VERSION, CfgAttr.INTERNAL_DNS_DOMAIN):
        return str(value).encode("utf-8")
    if attr == CfgAttr.SUPPORTED_ATTRIBUTES:
        return b"".join(int(t).to_bytes(2, "big") for t in value)
    if attr in _LENGTHS:
        addr = ipaddress.ip_address(value)
        want = 4 if attr in (1, 2, 3, 4, 6) else 16
        if len(addr.packed) != want:
            raise ValueError(f"{CFG_ATTR_SHORT.get(attr, attr)} takes an IPv{4 if want == 4 else 6} address, "
                             f"not {addr}")
        return addr.packed
    return bytes(value)


@dataclass(frozen=True)
class Config:
    """A CP payload's meaning."""

    cfg_type: int
    """CfgType: CFG_REQUEST, CFG_REPLY, CFG_SET, CFG_ACK."""
    requested: frozenset[int] = frozenset()
    """Attribute types present without a value (a request for one)."""
    ip4: tuple[ipaddress.IPv4Address, ...] = ()
    """INTERNAL_IP4_ADDRESS values (in a request: the address the client would like back)."""
    ip4_netmask: ipaddress.IPv4Address | None = None
    ip6: tuple[ipaddress.IPv6Interface, ...] = ()
    """INTERNAL_IP6_ADDRESS values, with their prefix length."""
    dns: tuple[IPAddress, ...] = ()
    """INTERNAL_IP4_DNS and INTERNAL_IP6_DNS values."""
    subnets: tuple[IPNetwork, ...] = ()
    """INTERNAL_IP4_SUBNET and INTERNAL_IP6_SUBNET: the networks behind the gateway (split include)."""
    app_version: str | None = None
    dns_domains: tuple[str, ...] = ()
    other: tuple[tuple[int, bytes], ...] = field(default=())
    """Attributes not interpreted here, as received."""

    @property
    def wants_ip4(self) -> bool:
        return CfgAttr.INTERNAL_IP4_ADDRESS in self.requested or bool(self.ip4 and self.cfg_type == CfgType.CFG_REQUEST)

    @property
    def wants_ip6(self) -> bool:
        return CfgAttr.INTERNAL_IP6_ADDRESS in self.requested or bool(self.ip6 and self.cfg_type == CfgType.CFG_REQUEST)

    @property
    def wants_dns(self) -> bool:
        return bool(self.requested & {CfgAttr.INTERNAL_IP4_DNS, CfgAttr.INTERNAL_IP6_DNS})


_MAX_ATTRS = 64
"""Values kept per list: a request never needs more, and the peer may not be authenticated yet."""


def decode_config(payload: CpPayload) -> Config:
    """Interpret a decoded CP payload; MalformedMessage for an attribute of a wrong length."""
    requested: set[int] = set()
    ip4: list = []
    ip6: list = []
    dns: list = []
    subnets: list = []
    domains: list = []
    other: list = []
    netmask = app_version = None
    for attr, raw in payload.attributes:
        value = decode_value(attr, raw)
        if value is None:
            requested.add(attr)
        elif attr == CfgAttr.INTERNAL_IP4_ADDRESS:
            ip4.append(value)
        elif attr == CfgAttr.INTERNAL_IP6_ADDRESS:
            ip6.append(value)
        elif attr == CfgAttr.INTERNAL_IP4_NETMASK:
            netmask = value
        elif attr in (CfgAttr.INTERNAL_IP4_DNS, CfgAttr.INTERNAL_IP6_DNS):
            dns.append(value)
        elif attr in (CfgAttr.INTERNAL_IP4_SUBNET, CfgAttr.INTERNAL_IP6_SUBNET):
            subnets.append(value)
        elif attr == CfgAttr.APPLICATION_VERSION:
            app_version = value
        elif attr == CfgAttr.INTERNAL_DNS_DOMAIN:
            domains.append(value)
        else:
            other.append((attr, bytes(raw)))
    return Config(payload.cfg_type, frozenset(requested), tuple(ip4[:_MAX_ATTRS]), netmask, tuple(ip6[:_MAX_ATTRS]),
                  tuple(dns[:_MAX_ATTRS]), tuple(subnets[:_MAX_ATTRS]), app_version, tuple(domains[:_MAX_ATTRS]),
                  tuple(other[:_MAX_ATTRS]))


def config_request(*, ip4: bool = True, ip6: bool = False, dns: bool = True, ip4_hint=None,
                   app_version: str | None = None) -> CpPayload:
    """A client's CFG_REQUEST (what ``vips = ["0.0.0.0"]`` / ``["::"]`` send); ``ip4_hint``: the
    address it held before (RFC 7296 §3.15.1 allows asking for it)."""
    attrs: list[tuple[int, bytes]] = []
    if ip4:
        attrs.append((CfgAttr.INTERNAL_IP4_ADDRESS, encode_value(CfgAttr.INTERNAL_IP4_ADDRESS, ip4_hint)))
        if dns:
            attrs.append((CfgAttr.INTERNAL_IP4_DNS, b""))
    if ip6:
        attrs.append((CfgAttr.INTERNAL_IP6_ADDRESS, b""))
        if dns:
            attrs.append((CfgAttr.INTERNAL_IP6_DNS, b""))
    if app_version is not None:
        attrs.append((CfgAttr.APPLICATION_VERSION, b""))
    return CpPayload(CfgType.CFG_REQUEST, tuple(attrs))


def config_reply(*, ip4: ipaddress.IPv4Address | None = None, ip4_netmask=None,
                 ip6: ipaddress.IPv6Interface | None = None, dns=(), subnets=(),
                 app_version: str | None = None) -> CpPayload:
    """The gateway's CFG_REPLY. DNS and subnets of a family go out only with that family's address
    (a client that asked for no IPv6 address gets no IPv6 DNS either)."""
    attrs: list[tuple[int, bytes]] = []
    if ip4 is not None:
        attrs.append((CfgAttr.INTERNAL_IP4_ADDRESS, encode_value(CfgAttr.INTERNAL_IP4_ADDRESS, ip4)))
        if ip4_netmask is not None:
            attrs.append((CfgAttr.INTERNAL_IP4_NETMASK, encode_value(CfgAttr.INTERNAL_IP4_NETMASK, ip4_netmask)))
    if ip6 is not None:
        attrs.append((CfgAttr.INTERNAL_IP6_ADDRESS, encode_value(CfgAttr.INTERNAL_IP6_ADDRESS, ip6)))
    for server in dns:
        addr = ipaddress.ip_address(server)
        if (addr.version == 4 and ip4 is not None) or (addr.version == 6 and ip6 is not None):
            attr = CfgAttr.INTERNAL_IP4_DNS if addr.version == 4 else CfgAttr.INTERNAL_IP6_DNS
            attrs.append((attr, addr.packed))
    for net in subnets:
        n = ipaddress.ip_network(net, strict=False)
        if (n.version == 4 and ip4 is not None) or (n.version == 6 and ip6 is not None):
            attr = CfgAttr.INTERNAL_IP4_SUBNET if n.version == 4 else CfgAttr.INTERNAL_IP6_SUBNET
            attrs.append((attr, encode_value(attr, n)))
    if app_version is not None:
        attrs.append((CfgAttr.APPLICATION_VERSION, encode_value(CfgAttr.APPLICATION_VERSION, app_version)))
    return CpPayload(CfgType.CFG_REPLY, tuple(attrs))
