"""Just enough IPv4/IPv6 for ESP and AH: header parse/build, checksums, the
transport-mode insertion point, and the selector fields of a packet.

Addresses stay as raw network-order bytes: equal-length big-endian byte
strings compare like the integers they encode, so selector checks need no
``ipaddress`` objects on the per-packet path.
"""

from __future__ import annotations

import functools
import ipaddress
import struct

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_SCTP = 132

IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
"""ver_ihl, tos, total_length, ident, flags_frag, ttl, proto, checksum, src, dst."""
IPV6_HEADER = struct.Struct("!IHBB16s16s")
"""ver_tc_flow, payload_length, next_header, hop_limit, src, dst."""
UDP_HEADER = struct.Struct("!HHHH")
_PORTS = struct.Struct("!HH")
_U16 = struct.Struct("!H")

_PORT_PROTOS = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, 33, 136})  # + DCCP, UDP-Lite
_ICMP_PROTOS = frozenset({IPPROTO_ICMP, IPPROTO_ICMPV6})
SELECTOR_BYTES = bytes(4 if p in _PORT_PROTOS else 2 if p in _ICMP_PROTOS else 0 for p in range(256))
"""By protocol: bytes at the start of the transport header that `flow` reads (ports, ICMP type and
code), for flow keys that hold what decides and nothing else."""
# Extension headers a transport-mode ESP/AH header goes after, and that the
# selector walk skips over (RFC 8200 §4.1 order).
_IPV6_EXT = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS})
IPV6_WALKED = _IPV6_EXT | {IPPROTO_AH}
"""IPv6 next headers `flow` walks past to reach the protocol and ports."""


class IpError(ValueError):
    """A packet whose IP header cannot be read; the message says what is wrong."""


# --------------------------------------------------------------- checksums


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """Internet checksum (RFC 1071) of ``data``, plus an ``initial`` partial sum.

    Uses that 2**16 == 1 (mod 0xFFFF): the one's-complement sum of the 16-bit
    words is the whole buffer read as one big integer, modulo 0xFFFF. One
    C-level int conversion instead of a Python loop over words.
    """
    n = len(data)
    value = int.from_bytes(data, "big")
    if n & 1:
        value <<= 8  # pad the odd byte on the right
    total = value + initial
    if total == 0:
        return 0xFFFF
    s = total % 0xFFFF
    if s == 0:
        s = 0xFFFF  # a non-zero sum congruent to 0 is 0xFFFF in one's complement
    return (~s) & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Partial sum (not complemented) of the TCP/UDP pseudo-header, IPv4 or IPv6."""
    return int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length


# ------------------------------------------------------------------ headers


def ipv4_header(src: bytes, dst: bytes, proto: int, payload_length: int, *, ttl: int = 64,
                tos: int = 0, ident: int = 0, dont_fragment: bool = False) -> bytes:
    """A 20-byte IPv4 header (no options) with its checksum filled in."""
    total = 20 + payload_length
    if total > 0xFFFF:
        raise IpError(f"IPv4 packet of {total} bytes exceeds 65535")
    hdr = bytearray(IPV4_HEADER.pack(0x45, tos, total, ident & 0xFFFF,
                                     0x4000 if dont_fragment else 0, ttl, proto, 0, src, dst))
    _U16.pack_into(hdr, 10, checksum(hdr))
    return bytes(hdr)


def ipv6_header(src: bytes, dst: bytes, next_header: int, payload_length: int, *,
                hop_limit: int = 64, traffic_class: int = 0, flow_label: int = 0) -> bytes:
    """A 40-byte IPv6 header."""
    if payload_length > 0xFFFF:
        raise IpError(f"IPv6 payload of {payload_length} bytes needs a jumbogram")
    first = (6 << 28) | (traffic_class << 20) | (flow_label & 0xFFFFF)
    return IPV6_HEADER.pack(first, payload_length, next_header, hop_limit, src, dst)


def ip_header(src: bytes, dst: bytes, proto: int, payload_length: int, *, ttl: int = 64,
              tos: int = 0, ident: int = 0) -> bytes:
    """IPv4 or IPv6 header, chosen by the address length (4 or 16 bytes).

    ``ttl`` is the IPv6 hop limit and ``tos`` the traffic class; ``ident`` is IPv4 only.
    """
    if len(src) == 4:
        return ipv4_header(src, dst, proto, payload_length, ttl=ttl, tos=tos, ident=ident)
    return ipv6_header(src, dst, proto, payload_length, hop_limit=ttl, traffic_class=tos)


def address_bytes(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address | bytes) -> bytes:
    """Network-order bytes of an address given as text, ``ipaddress`` object or bytes."""
    if isinstance(addr, (bytes, bytearray)):
        if len(addr) not in (4, 16):
            raise IpError(f"an address is 4 or 16 bytes, got {len(addr)}")
        return bytes(addr)
    if isinstance(addr, str):
        return _text_address(addr)
    return addr.packed


@functools.lru_cache(maxsize=4096)
def _text_address(text: str) -> bytes:
    # Every SA names its two addresses as text: parsed once per address, not per SA.
    return ipaddress.ip_address(text).packed


def ip_version(packet: bytes | bytearray | memoryview) -> int:
    """4 or 6, or raise IpError."""
    if not packet:
        raise IpError("empty packet")
    v = packet[0] >> 4
    if v == 4 and len(packet) >= 20 or v == 6 and len(packet) >= 40:
        return v
    raise IpError(f"not an IPv4/IPv6 packet (version {v}, {len(packet)} bytes)")


def ipv4_header_length(packet: bytes | bytearray | memoryview) -> int:
    """IHL in bytes after checking the header fits; raises IpError."""
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl:
        raise IpError(f"IPv4 header length {ihl} does not fit in {len(packet)} bytes")
    return ihl


def packet_length(packet: bytes | bytearray | memoryview) -> int:
    """The length the IP header claims (IPv4 total length, IPv6 40 + payload length).

    Raises IpError when it exceeds the bytes present or is too small to
    hold its own header; trailing bytes (tunnel-mode TFC padding) are allowed.
    """
    v = ip_version(packet)
    if v == 4:
        ihl = ipv4_header_length(packet)
        total = (packet[2] << 8) | packet[3]
        if total < ihl or total > len(packet):
            raise IpError(f"IPv4 total length {total} but {len(packet)} bytes present (IHL {ihl})")
        return total
    total = 40 + ((packet[4] << 8) | packet[5])
    if total > len(packet):
        raise IpError(f"IPv6 length {total} but {len(packet)} bytes present")
    return total


def _ext_length(nh: int, packet, off: int) -> int:
    """Length in bytes of the IPv6 extension header (or AH) at ``off``."""
    if off + 8 > len(packet):
        raise IpError(f"IPv6 extension header {nh} at {off} is truncated")
    if nh == IPPROTO_FRAGMENT:
        return 8
    if nh == IPPROTO_AH:
        return (packet[off + 1] + 2) * 4
    return (packet[off + 1] + 1) * 8


def ipv6_transport_split(packet: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """Where a transport-mode ESP/AH header goes in an IPv6 packet.

    Returns ``(offset, nh_offset, next_header)``: the header goes at
    ``offset``, after hop-by-hop options, routing headers and destination
    options not preceded by a routing header (as Linux's
    ip6_find_1stfragopt and scapy place it; RFC 4303 §3.1.1 lets
    destination options go either side); ``nh_offset`` is the byte holding
    the next-header value to patch, ``next_header`` its current value.
    """
    nh = packet[6]
    nh_off = 6
    off = 40
    end = len(packet)
    seen_routing = False
    while nh in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS):
        if nh == IPPROTO_DSTOPTS and seen_routing:
            break
        if nh == IPPROTO_ROUTING:
            seen_routing = True
        length = _ext_length(nh, packet, off)
        if off + length > end:
            raise IpError(f"IPv6 extension header {nh} at {off} runs past the packet")
        nh_off = off
        nh = packet[off]
        off += length
    return off, nh_off, nh


# ---------------------------------------------------------------- selectors


def flow(packet: bytes | bytearray | memoryview) -> tuple[bytes, bytes, int, int | None, int | None]:
    """``(src, dst, proto, sport, dport)`` of an IP packet, for selector checks.

    Addresses are raw bytes. Ports are None when the protocol has none or the
    packet is a non-first fragment (RFC 4301 §4.4.1: OPAQUE); for ICMP both
    are ``type << 8 | code`` (RFC 4301 §4.4.1.1). Raises IpError.
    """
    v = ip_version(packet)
    if v == 4:
        ihl = ipv4_header_length(packet)
        proto = packet[9]
        src = bytes(packet[12:16])
        dst = bytes(packet[16:20])
        if (packet[6] & 0x1F) or packet[7]:  # fragment offset != 0
            return src, dst, proto, None, None
        off = ihl
    else:
        src = bytes(packet[8:24])
        dst = bytes(packet[24:40])
        proto = packet[6]
        off = 40
        end = len(packet)
        while proto in IPV6_WALKED:
            length = _ext_length(proto, packet, off)
            if proto == IPPROTO_FRAGMENT and ((packet[off + 2] << 8 | packet[off + 3]) & 0xFFF8):
                return src, dst, packet[off], None, None
            proto = packet[off]
            off += length
            if off > end:
                raise IpError("IPv6 extension headers run past the packet")
    if proto in _PORT_PROTOS:
        if off + 4 > len(packet):
            return src, dst, proto, None, None
        sport, dport = _PORTS.unpack_from(packet, off)
        return src, dst, proto, sport, dport
    if proto in _ICMP_PROTOS:
        if off + 2 > len(packet):
            return src, dst, proto, None, None
        tc = (packet[off] << 8) | packet[off + 1]
        return src, dst, proto, tc, tc
    return src, dst, proto, None, None


def ipv6_fragment(packet) -> tuple[bytes, bool] | None:
    """``(src + dst + identification, is the first fragment)`` of an IPv6 fragment, None for a
    packet that is not one (an atomic fragment, offset 0 without M, is whole: RFC 6946). Raises
    IpError when the extension headers before it do not fit."""
    nh = packet[6]
    off = 40
    end = len(packet)
    while nh in IPV6_WALKED:
        if nh == IPPROTO_FRAGMENT:
            if off + 8 > end:
                raise IpError("IPv6 fragment header is truncated")
            frag = packet[off + 2] << 8 | packet[off + 3]
            if not frag & 0xFFF9:
                return None
            return bytes(packet[8:40]) + bytes(packet[off + 4:off + 8]), not frag & 0xFFF8
        length = _ext_length(nh, packet, off)
        nh = packet[off]
        off += length
        if off > end:
            raise IpError("IPv6 extension headers run past the packet")
    return None


def ipv4_later_fragment_header(hdr: bytes) -> bytes:
    """``hdr`` for a fragment after the first: options without the copied flag (record route,
    timestamp) overwritten with NOPs (RFC 791 §3.2; Linux's ip_options_fragment), the length kept."""
    h = bytearray(hdr)
    i = 20
    while i < len(h):
        t = h[i]
        if t == 0:  # end of options
            break
        if t == 1:
            i += 1
            continue
        n = h[i + 1] if i + 1 < len(h) else 0
        if n < 2 or i + n > len(h):
            break  # malformed: left as it is
        if not t & 0x80:
            h[i:i + n] = b"\x01" * n
        i += n
    return bytes(h)


# ------------------------------------------------------ transport checksums


def udp_header(src: bytes, dst: bytes, sport: int, dport: int, payload) -> bytes:
    """UDP header for ESP-in-UDP (RFC 3948 §2.1): checksum 0 over IPv4; over IPv6,
    where a zero UDP checksum is not allowed (RFC 8200 §8.1), a computed one."""
    length = 8 + len(payload)
    if len(src) == 4:
        return UDP_HEADER.pack(sport, dport, length, 0)
    c = checksum(payload, pseudo_header_sum(src, dst, IPPROTO_UDP, length) + sport + dport + length)
    return UDP_HEADER.pack(sport, dport, length, c or 0xFFFF)


def fix_transport_checksum(packet: bytearray, offset: int, proto: int) -> None:
    """Recompute the TCP/UDP checksum at ``offset`` from the packet's own addresses.

    Transport mode behind a NAT (RFC 3948 §3.1.2): the peer computed it over
    addresses the NAT rewrote, so the receiver recomputes it. A zero IPv4 UDP
    checksum (none computed) stays zero. Other protocols are left alone.
    """
    if proto not in (IPPROTO_TCP, IPPROTO_UDP):
        return
    if packet[0] >> 4 == 4:
        src, dst = packet[12:16], packet[16:20]
    else:
        src, dst = packet[8:24], packet[24:40]
    seg_len = len(packet) - offset
    pos = offset + (16 if proto == IPPROTO_TCP else 6)
    if pos + 2 > len(packet):
        return
    if proto == IPPROTO_UDP and len(src) == 4 and packet[pos] == 0 and packet[pos + 1] == 0:
        return
    packet[pos] = packet[pos + 1] = 0
    c = checksum(memoryview(packet)[offset:], pseudo_header_sum(src, dst, proto, seg_len))
    if c == 0 and proto == IPPROTO_UDP:
        c = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    _U16.pack_into(packet, pos, c)
