"""Traffic selectors: an address range, an IP protocol and a port range.

The value type shared by the policy, the IKE narrowing (RFC 7296 §2.9), the
SPD and the datapaths' inbound check. Text uses strongSwan's syntax:
``198.51.100.0/25``, ``192.0.2.1-192.0.2.9``, ``0.0.0.0/0[udp/53]``,
``10.0.0.0/8[tcp/1024-65535]``, ``dynamic`` (the IKE address at run time).

Protocol and port names come from the system's protocols and services
databases (``/etc/protocols``, ``/etc/services`` through libc), as swanctl's
do: ``[tcp/smtp]``, ``[udp/ntp]``, ``[ospf]``. A port name is looked up for the
selector's protocol, then for any protocol (swanctl asks for any). Names the
system does not know, or every name when those files are missing (minimal
containers), are looked up in the small built-in tables below (IANA numbers
of the common names), so policies that use them load anywhere. Found names
are cached for the life of the process; a miss is asked again next time, so
a name added to /etc/services is seen at the next policy load. Names are
resolved while a policy is parsed: selectors hold numbers, and the IKE and
ESP code never looks a name up.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Built-in protocol names (IANA numbers), for printing and when the system database lacks a name.
PROTOCOL_NAMES = {
    "icmp": socket.IPPROTO_ICMP,
    "igmp": 2,
    "ipencap": 4,
    "tcp": socket.IPPROTO_TCP,
    "udp": socket.IPPROTO_UDP,
    "dccp": 33,
    "ipv6": 41,
    "rsvp": 46,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "ipv6-icmp": 58,
    "icmpv6": 58,
    "ospf": 89,
    "pim": 103,
    "vrrp": 112,
    "l2tp": 115,
    "sctp": 132,
    "udplite": 136,
}
PROTOCOL_NUMBERS = {
    1: "icmp",
    2: "igmp",
    4: "ipencap",
    6: "tcp",
    17: "udp",
    33: "dccp",
    41: "ipv6",
    46: "rsvp",
    47: "gre",
    50: "esp",
    51: "ah",
    58: "ipv6-icmp",
    89: "ospf",
    103: "pim",
    112: "vrrp",
    115: "l2tp",
    132: "sctp",
    136: "udplite",
}
# Built-in service names (IANA ports, as Debian's /etc/services names them), used only when the
# system database does not know a name; "dns" is an alias swanctl users write.
PORT_NAMES = {
    "ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "dns": 53, "bootps": 67,
    "bootpc": 68, "tftp": 69, "http": 80, "www": 80, "kerberos": 88, "pop3": 110, "sunrpc": 111, "ntp": 123,
    "netbios-ns": 137, "netbios-dgm": 138, "netbios-ssn": 139, "imap2": 143, "imap": 143, "snmp": 161,
    "snmp-trap": 162, "bgp": 179, "ldap": 389, "https": 443, "microsoft-ds": 445, "isakmp": 500, "syslog": 514,
    "submission": 587, "ldaps": 636, "imaps": 993, "pop3s": 995, "openvpn": 1194, "l2tp": 1701, "radius": 1812,
    "radius-acct": 1813, "nfs": 2049, "mysql": 3306, "ms-wbt-server": 3389, "ipsec-nat-t": 4500, "sip": 5060,
    "sip-tls": 5061, "postgresql": 5432,
}
# Protocols whose ports /etc/services lists per protocol.
_SERVICE_PROTOCOLS = ("tcp", "udp", "sctp", "dccp")
# What a protocol or service name can look like (ipv6-icmp, ax.25, x11-ssh-offset); anything else is
# not looked up, so odd text never reaches libc and a long one costs nothing.
_DB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._+-]{0,63}")

ANY_V4 = (ipaddress.IPv4Address("0.0.0.0"), ipaddress.IPv4Address("255.255.255.255"))
ANY_V6 = (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))


class TsSyntaxError(ValueError):
    """A traffic selector string that cannot be read; the message says why."""


@dataclass(frozen=True, order=True)
class TrafficSelector:
    """One traffic selector (RFC 7296 §3.13.1)."""

    start: IPAddress
    """First address of the range."""
    end: IPAddress
    """Last address of the range (inclusive)."""
    protocol: int = 0
    """IP protocol number; 0 means any."""
    start_port: int = 0
    """First port (for ICMP: type << 8 | code, RFC 4301 §4.4.1.1)."""
    end_port: int = 65535
    """Last port, inclusive."""
    dynamic: bool = False
    """strongSwan's ``dynamic``: stands for the IKE address of that side until resolved."""

    # Hashed once: selectors (alone and in tuples) key the caches of narrowing, SA construction and the
    # datapath's install, and the generated hash would hash both addresses at every lookup.
    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.start, self.end, self.protocol, self.start_port, self.end_port, self.dynamic))
            self.__dict__["_hash"] = h
        return h

    def __getstate__(self) -> dict:
        # Not the cached hash: an address hashes as a string, differently in another process.
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    # -- construction -------------------------------------------------
    @classmethod
    def from_network(cls, network: str | ipaddress.IPv4Network | ipaddress.IPv6Network,
                     protocol: int = 0, start_port: int = 0, end_port: int = 65535) -> "TrafficSelector":
        net = ipaddress.ip_network(network, strict=False) if isinstance(network, str) else network
        return cls(net.network_address, net.broadcast_address, protocol, start_port, end_port)

    @classmethod
    def host(cls, addr: str | IPAddress, protocol: int = 0, start_port: int = 0, end_port: int = 65535) -> "TrafficSelector":
        a = ipaddress.ip_address(addr)
        return cls(a, a, protocol, start_port, end_port)

    @classmethod
    def any(cls, version: int = 4) -> "TrafficSelector":
        lo, hi = ANY_V4 if version == 4 else ANY_V6
        return cls(lo, hi)

    @classmethod
    def dynamic_placeholder(cls, protocol: int = 0, start_port: int = 0, end_port: int = 65535) -> "TrafficSelector":
        lo, hi = ANY_V4
        return cls(lo, hi, protocol, start_port, end_port, dynamic=True)

    def resolve(self, addr: IPAddress) -> "TrafficSelector":
        """Replace ``dynamic`` by a concrete host address."""
        if not self.dynamic:
            return self
        return TrafficSelector(addr, addr, self.protocol, self.start_port, self.end_port)

    # -- properties ----------------------------------------------------
    @property
    def version(self) -> int:
        return self.start.version

    @property
    def any_protocol(self) -> bool:
        return self.protocol == 0

    @property
    def any_port(self) -> bool:
        return self.start_port == 0 and self.end_port == 65535

    @property
    def opaque_ports(self) -> bool:
        """RFC 4301 OPAQUE: start 65535, end 0."""
        return self.start_port == 65535 and self.end_port == 0

    @property
    def is_catch_all(self) -> bool:
        lo, hi = ANY_V4 if self.version == 4 else ANY_V6
        return (not self.dynamic and self.start == lo and self.end == hi
                and self.any_protocol and self.any_port)

    @property
    def address_count(self) -> int:
        return int(self.end) - int(self.start) + 1

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return list(ipaddress.summarize_address_range(self.start, self.end))

    # -- set operations -------------------------------------------------
    def contains_packet(self, addr: IPAddress, protocol: int, port: int | None) -> bool:
        """Whether one side of a packet (its address, protocol and port) matches."""
        if addr.version != self.start.version or not (self.start <= addr <= self.end):
            return False
        if self.protocol and protocol != self.protocol:
            return False
        if self.any_port or port is None and self.protocol in (0,):
            return True
        if port is None:
            # A protocol without ports (e.g. GRE) only matches port-agnostic selectors.
            return self.any_port
        return self.start_port <= port <= self.end_port

    def covers(self, other: "TrafficSelector") -> bool:
        """True when every packet matching ``other`` matches this selector."""
        if self.version != other.version:
            return False
        if not (self.start <= other.start and other.end <= self.end):
            return False
        if self.protocol and self.protocol != other.protocol:
            return False
        return self.start_port <= other.start_port and other.end_port <= self.end_port

    def intersect(self, other: "TrafficSelector") -> "TrafficSelector | None":
        """The largest selector inside both, or None (the narrowing step of §2.9)."""
        if self.version != other.version:
            return None
        start = max(self.start, other.start)
        end = min(self.end, other.end)
        if start > end:
            return None
        if self.protocol and other.protocol and self.protocol != other.protocol:
            return None
        protocol = self.protocol or other.protocol
        sp = max(self.start_port, other.start_port)
        ep = min(self.end_port, other.end_port)
        if sp > ep:
            return None
        return TrafficSelector(start, end, protocol, sp, ep)

    # -- text -----------------------------------------------------------
    def address_text(self) -> str:
        if self.dynamic:
            return "dynamic"
        nets = self.networks()
        if len(nets) == 1:
            return str(nets[0])
        return f"{self.start}-{self.end}"

    def __str__(self) -> str:
        return _ts_text(self)

    def _text(self) -> str:
        text = self.address_text()
        if self.any_protocol and self.any_port:
            return text
        proto = PROTOCOL_NUMBERS.get(self.protocol, str(self.protocol)) if self.protocol else "%any"
        if self.any_port:
            return f"{text}[{proto}]"
        icmp = _format_icmp(self.start_port, self.end_port) if self.protocol in (1, 58) else None
        if self.opaque_ports:
            port = "%opaque"
        elif icmp is not None:
            port = icmp
        elif self.start_port == self.end_port:
            port = str(self.start_port)
        else:
            port = f"{self.start_port}-{self.end_port}"
        return f"{text}[{proto}/{port}]"


@functools.lru_cache(maxsize=4096)
def _ts_text(ts: TrafficSelector) -> str:
    # Cached: logs, events and status snapshots format the same selectors again and again.
    return ts._text()


def clear_name_cache() -> None:
    """Forget the names looked up so far (tests, or after /etc/services changed)."""
    _system_port.cache_clear()
    _system_protocol.cache_clear()


@functools.lru_cache(maxsize=512)
def _system_port(name: str, protocol: str | None) -> int:
    # KeyError is not cached: a name the system lacks today is asked again at the next load.
    try:
        return socket.getservbyname(name, protocol) if protocol else socket.getservbyname(name)
    except OSError:  # not in the database, or no database at all
        raise KeyError(name) from None


@functools.lru_cache(maxsize=256)
def _system_protocol(name: str) -> int:
    try:
        return socket.getprotobyname(name)
    except OSError:
        raise KeyError(name) from None


def _service(text: str, protocol: int) -> int | None:
    """A service name's port: the system database for this protocol, then for any
    protocol (as swanctl asks), then PORT_NAMES; None if nobody knows it."""
    if not _DB_NAME.fullmatch(text):
        return None
    proto = PROTOCOL_NUMBERS.get(protocol)
    protocols = (proto, None) if proto in _SERVICE_PROTOCOLS else (None,)
    for name in dict.fromkeys((text, text.lower())):  # the database is case-sensitive; try as written first
        for p in protocols:
            try:
                return _system_port(name, p)
            except KeyError:
                pass
    return PORT_NAMES.get(text.lower())


def port_number(text: str, protocol: int) -> int | None:
    """A port from a number or a service name; None for an unknown name."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        p = int(text)
        if not 0 <= p <= 65535:
            raise TsSyntaxError(f"port {p} is outside 0-65535")
        return p
    return _service(text, protocol) if text else None


def _parse_port(text: str, protocol: int) -> tuple[int, int]:
    text = text.strip()
    if text.lower() in ("", "%any", "any"):
        return 0, 65535
    if text.lower() in ("%opaque", "opaque"):
        return 65535, 0
    single = port_number(text, protocol)
    if single is not None:
        return single, single
    # A range: the dash that leaves a port on both sides (names may hold dashes: ipsec-nat-t).
    for i in (i for i, ch in enumerate(text) if ch == "-"):
        lo, hi = port_number(text[:i], protocol), port_number(text[i + 1:], protocol)
        if lo is not None and hi is not None:
            if lo > hi:
                raise TsSyntaxError(f"port range {text!r} runs backwards")
            return lo, hi
    proto = PROTOCOL_NUMBERS.get(protocol, str(protocol))
    raise TsSyntaxError(f"unknown service {text!r} for {proto}: not in the services database (/etc/services), "
                        "not a port number 0-65535 or a range like 1024-65535")


def parse_protocol(text: str) -> int:
    """An IP protocol from a number 0-255, a name (/etc/protocols, as charon reads it) or any/%any (0).
    Raises TsSyntaxError saying what is wrong."""
    text = text.strip()
    if text.lower() in ("", "%any", "any"):
        return 0
    if text.isascii() and text.isdigit():
        p = int(text)
        if not 0 <= p <= 255:
            raise TsSyntaxError(f"protocol {p} is outside 0-255")
        return p
    for name in dict.fromkeys((text, text.lower())) if _DB_NAME.fullmatch(text) else ():
        try:
            return _system_protocol(name)
        except KeyError:
            pass
    if text.lower() in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[text.lower()]
    raise TsSyntaxError(f"unknown protocol {text!r}: not in the protocols database (/etc/protocols) "
                        "and not a number 0-255 (e.g. tcp, udp, icmp, ospf)")


def _icmp_type(text: str, raw: str) -> int:
    try:
        t = int(text)
    except ValueError:
        raise TsSyntaxError(f"{raw!r}: ICMP type {text.strip()!r} is not a number") from None
    if not 0 <= t <= 255:
        raise TsSyntaxError(f"{raw!r}: ICMP type/code {t} is outside 0-255")
    return t


def _parse_icmp(text: str, raw: str) -> tuple[int, int]:
    """ICMP "ports" (RFC 7296 §3.13.1): type in the high byte, code in the low byte.
    ``8`` is type 8 with any code, ``3/4`` type 3 code 4, ``3-5`` types 3 to 5."""
    text = text.strip().lower()
    if text in ("", "%any", "any"):
        return 0, 65535
    if text == "%opaque":
        return 65535, 0
    if "/" in text:
        t, c = text.split("/", 1)
        v = _icmp_type(t, raw) << 8 | _icmp_type(c, raw)
        return v, v
    if "-" in text:
        lo, hi = text.split("-", 1)
        a, b = _icmp_type(lo, raw), _icmp_type(hi, raw)
        if a > b:
            raise TsSyntaxError(f"{raw!r}: ICMP type range runs backwards")
        return a << 8, b << 8 | 0xFF
    t = _icmp_type(text, raw)
    return t << 8, t << 8 | 0xFF


def _format_icmp(start: int, end: int) -> str | None:
    if start == end:
        return f"{start >> 8}/{start & 0xFF}"
    if start & 0xFF == 0 and end & 0xFF == 0xFF:
        return str(start >> 8) if start >> 8 == end >> 8 else f"{start >> 8}-{end >> 8}"
    return None


def parse_ts(text: str) -> TrafficSelector:
    """Parse strongSwan traffic selector syntax; raises TsSyntaxError naming the text."""
    try:
        return _parse_ts(text)
    except TsSyntaxError as exc:
        if repr(text) in str(exc):
            raise
        raise TsSyntaxError(f"{text!r}: {exc}") from None


def _parse_ts(text: str) -> TrafficSelector:
    raw = text
    text = text.strip()
    proto, sport, eport = 0, 0, 65535
    if "[" in text:
        if not text.endswith("]"):
            raise TsSyntaxError(f"{raw!r}: missing closing ']'")
        text, spec = text[:-1].split("[", 1)
        if "/" in spec:
            p, port = spec.split("/", 1)
        else:
            p, port = spec, ""
        proto = parse_protocol(p)
        if proto in (1, 58):
            sport, eport = _parse_icmp(port, raw)
        else:
            sport, eport = _parse_port(port, proto)
        if (sport, eport) != (0, 65535) and proto == 0:
            raise TsSyntaxError(f"{raw!r}: a port needs a protocol, e.g. [tcp/{port}]")
        text = text.strip()
    if text in ("", "%any"):
        lo, hi = ANY_V4
        return TrafficSelector(lo, hi, proto, sport, eport)
    if text == "%any6":
        lo, hi = ANY_V6
        return TrafficSelector(lo, hi, proto, sport, eport)
    if text == "dynamic":
        return TrafficSelector.dynamic_placeholder(proto, sport, eport)
    try:
        if "-" in text and "/" not in text:
            a, b = text.split("-", 1)
            start, end = ipaddress.ip_address(a.strip()), ipaddress.ip_address(b.strip())
            if start.version != end.version:
                raise TsSyntaxError(f"{raw!r}: range mixes IPv4 and IPv6")
            if start > end:
                raise TsSyntaxError(f"{raw!r}: address range runs backwards")
            return TrafficSelector(start, end, proto, sport, eport)
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        if isinstance(exc, TsSyntaxError):
            raise
        raise TsSyntaxError(f"{raw!r}: not an address, network or range") from None
    return TrafficSelector(net.network_address, net.broadcast_address, proto, sport, eport)


def narrow(proposed: tuple[TrafficSelector, ...] | list[TrafficSelector],
           configured: tuple[TrafficSelector, ...] | list[TrafficSelector]) -> list[TrafficSelector]:
    """See _narrow; cached, as the same selectors come back with every negotiation."""
    return list(_narrow(tuple(proposed), tuple(configured)))


@functools.lru_cache(maxsize=4096)
def _narrow(proposed: tuple[TrafficSelector, ...],
            configured: tuple[TrafficSelector, ...]) -> tuple[TrafficSelector, ...]:
    """Responder-side narrowing (RFC 7296 §2.9): every non-empty intersection of
    what the peer proposed with what we allow, without duplicates or selectors
    already covered by another result."""
    out: list[TrafficSelector] = []
    for c in configured:
        for p in proposed:
            i = c.intersect(p)
            if i is not None and i not in out:
                out.append(i)
    return tuple(t for t in out if not any(o is not t and o != t and o.covers(t) for o in out))
