"""The fixed C structs of NETLINK_XFRM (include/uapi/linux/xfrm.h) as `CStruct` types, and
``xfrm_address_t`` (see engine.datapath.xfrm_netlink, which re-exports them).

C structs that appear inside other structs (selector, lifetimes, templates, ...) are `CStruct`
types: pyroute2 accepts any class with ``decode_from``/``encode_into`` as a field format, so
they nest in ``nlmsg.fields`` like ``'I'`` or ``'16s'`` would. They decode to plain dicts.
Layouts are the kernel's on 64-bit Linux (x86_64, arm64): ``__u64`` members are 8-byte aligned,
so padding is spelled out and every struct checks its size against ``sizeof()`` when the class
is created.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from typing import Any, ClassVar

# ---------------------------------------------------------------- addresses

def address_bytes(addr: Any) -> bytes:
    """The 16 bytes of an ``xfrm_address_t``: IPv4 in the first 4, the rest zero."""
    if addr is None or addr == 0 or addr == "":
        return bytes(16)
    if isinstance(addr, (bytes, bytearray, memoryview)):
        raw = bytes(addr)
        if len(raw) not in (4, 16):
            raise ValueError(f"xfrm address must be 4 or 16 bytes, not {len(raw)}")
        return raw.ljust(16, b"\0")
    return ipaddress.ip_address(addr).packed.ljust(16, b"\0")


def address_text(raw: bytes, family: int) -> str:
    """Text form of a decoded ``xfrm_address_t`` (``family``: AF_INET or AF_INET6)."""
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(bytes(raw[:4])))
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(bytes(raw[:16])))
    raise ValueError(f"unknown address family {family}")


class xfrm_address:
    """``xfrm_address_t`` as a field type: encodes text, ipaddress objects or bytes."""

    size: ClassVar[int] = 16

    @staticmethod
    def pack_into(buf: bytearray, offset: int, value: Any) -> None:
        buf[offset:offset + 16] = address_bytes(value)

    @staticmethod
    def decode_from(data: bytes | bytearray, offset: int) -> tuple[bytes, int]:
        return bytes(data[offset:offset + 16]), offset + 16

    @staticmethod
    def encode_into(data: bytearray, offset: int, value: Any) -> int:
        _grow(data, offset + 16)
        xfrm_address.pack_into(data, offset, value)
        return offset + 16


def _no_value(_key: str, default: Any = None) -> Any:
    return default


def _grow(data: bytearray, end: int) -> None:
    if len(data) < end:
        data.extend(bytes(end - len(data)))


# ---------------------------------------------------------------- C structs

class CStruct:
    """A fixed-size C struct, usable as a pyroute2 field format and nestable.

    ``layout`` lists ``(name, fmt)``: ``fmt`` is a :mod:`struct` code (standard
    sizes, no implicit alignment; ``'>H'`` for network order) or another field
    type (:class:`CStruct`, :class:`xfrm_address`). Names starting with ``_``
    are padding and never appear in decoded dicts. ``size`` is C's ``sizeof``;
    a layout that does not add up to it is refused when the class is made.
    """

    layout: ClassVar[tuple[tuple[str, Any], ...]] = ()
    size: ClassVar[int] = 0
    _steps: ClassVar[tuple[tuple[str, Any, struct.Struct | None, int], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        steps = []
        offset = 0
        for name, fmt in cls.layout:
            if isinstance(fmt, str):
                packer = struct.Struct(fmt if fmt[0] in "<>!=@" else "=" + fmt)
                steps.append((name, None, packer, offset))
                offset += packer.size
            else:
                steps.append((name, fmt, None, offset))
                offset += fmt.size
        if offset != cls.size:
            raise TypeError(f"{cls.__name__}: layout adds up to {offset} bytes, sizeof() is {cls.size}")
        cls._steps = tuple(steps)

    @classmethod
    def pack_into(cls, buf: bytearray, offset: int, value: Any) -> None:
        # dict.get, not nlmsg.get: pyroute2's get() would search attributes first
        get = functools.partial(dict.get, value) if isinstance(value, dict) else _no_value
        for name, sub, packer, rel in cls._steps:
            if sub is not None:
                sub.pack_into(buf, offset + rel, get(name))
            elif name[0] != "_":
                v = get(name, 0)
                if isinstance(v, str):
                    v = v.encode()
                packer.pack_into(buf, offset + rel, 0 if v is None else v)
            # padding: the buffer is already zero

    @classmethod
    def decode_from(cls, data: bytes | bytearray, offset: int) -> tuple[dict, int]:
        if len(data) < offset + cls.size:
            raise ValueError(f"{cls.__name__}: need {cls.size} bytes at offset {offset}, have {len(data) - offset}")
        out: dict[str, Any] = {}
        for name, sub, packer, rel in cls._steps:
            if name[0] == "_":
                continue
            if sub is not None:
                out[name], _ = sub.decode_from(data, offset + rel)
            else:
                out[name] = packer.unpack_from(data, offset + rel)[0]
        return out, offset + cls.size

    @classmethod
    def encode_into(cls, data: bytearray, offset: int, value: Any) -> int:
        _grow(data, offset + cls.size)
        cls.pack_into(data, offset, value)
        return offset + cls.size

    @classmethod
    def pack(cls, value: Any) -> bytes:
        buf = bytearray(cls.size)
        cls.pack_into(buf, 0, value)
        return bytes(buf)

    @classmethod
    def unpack(cls, data: bytes | bytearray, offset: int = 0) -> dict:
        return cls.decode_from(data, offset)[0]


class xfrm_selector(CStruct):
    """struct xfrm_selector: what traffic a policy or SA applies to."""

    size = 56
    layout = (
        ("daddr", xfrm_address),
        ("saddr", xfrm_address),
        ("dport", ">H"),
        ("dport_mask", ">H"),
        ("sport", ">H"),
        ("sport_mask", ">H"),
        ("family", "H"),
        ("prefixlen_d", "B"),
        ("prefixlen_s", "B"),
        ("proto", "B"),
        ("_pad", "3x"),
        ("ifindex", "i"),
        ("user", "I"),
    )


class xfrm_id(CStruct):
    """struct xfrm_id: (daddr, spi, proto) identifies an SA."""

    size = 24
    layout = (("daddr", xfrm_address), ("spi", ">I"), ("proto", "B"), ("_pad", "3x"))


class xfrm_lifetime_cfg(CStruct):
    """struct xfrm_lifetime_cfg: limits; XFRM_INF means none for bytes/packets, 0 for seconds."""

    size = 64
    layout = (
        ("soft_byte_limit", "Q"),
        ("hard_byte_limit", "Q"),
        ("soft_packet_limit", "Q"),
        ("hard_packet_limit", "Q"),
        ("soft_add_expires_seconds", "Q"),
        ("hard_add_expires_seconds", "Q"),
        ("soft_use_expires_seconds", "Q"),
        ("hard_use_expires_seconds", "Q"),
    )


class xfrm_lifetime_cur(CStruct):
    """struct xfrm_lifetime_cur: what the SA has carried so far."""

    size = 32
    layout = (("bytes", "Q"), ("packets", "Q"), ("add_time", "Q"), ("use_time", "Q"))


class xfrm_stats(CStruct):
    """struct xfrm_stats: per-SA drop counters."""

    size = 12
    layout = (("replay_window", "I"), ("replay", "I"), ("integrity_failed", "I"))


class xfrm_user_tmpl(CStruct):
    """struct xfrm_user_tmpl: which SA a policy requires (the XFRMA_TMPL array element)."""

    size = 64
    layout = (
        ("id", xfrm_id),
        ("family", "H"),
        ("_pad1", "2x"),
        ("saddr", xfrm_address),
        ("reqid", "I"),
        ("mode", "B"),
        ("share", "B"),
        ("optional", "B"),
        ("_pad2", "x"),
        ("aalgos", "I"),
        ("ealgos", "I"),
        ("calgos", "I"),
    )


class xfrm_encap_tmpl(CStruct):
    """struct xfrm_encap_tmpl: UDP encapsulation (type, ports in network order)."""

    size = 24
    layout = (
        ("encap_type", "H"),
        ("encap_sport", ">H"),
        ("encap_dport", ">H"),
        ("_pad", "2x"),
        ("encap_oa", xfrm_address),
    )


class xfrm_mark(CStruct):
    """struct xfrm_mark: value and mask."""

    size = 8
    layout = (("v", "I"), ("m", "I"))


class xfrm_replay_state(CStruct):
    """struct xfrm_replay_state: the legacy 32-packet replay state."""

    size = 12
    layout = (("oseq", "I"), ("seq", "I"), ("bitmap", "I"))


class xfrm_replay_state_esn_head(CStruct):
    """The fixed part of struct xfrm_replay_state_esn (the bitmap follows)."""

    size = 24
    layout = (
        ("bmp_len", "I"),
        ("oseq", "I"),
        ("seq", "I"),
        ("oseq_hi", "I"),
        ("seq_hi", "I"),
        ("replay_window", "I"),
    )


class xfrm_userpolicy_type(CStruct):
    """struct xfrm_userpolicy_type (XFRMA_POLICY_TYPE)."""

    size = 6
    layout = (("type", "B"), ("_pad1", "x"), ("reserved1", "H"), ("reserved2", "B"), ("_pad2", "x"))


_USERSA_INFO_LAYOUT = (
    ("sel", xfrm_selector),
    ("id", xfrm_id),
    ("saddr", xfrm_address),
    ("lft", xfrm_lifetime_cfg),
    ("curlft", xfrm_lifetime_cur),
    ("stats", xfrm_stats),
    ("seq", "I"),
    ("reqid", "I"),
    ("family", "H"),
    ("mode", "B"),
    ("replay_window", "B"),
    ("flags", "B"),
    ("_pad", "7x"),
)

_USERPOLICY_INFO_LAYOUT = (
    ("sel", xfrm_selector),
    ("lft", xfrm_lifetime_cfg),
    ("curlft", xfrm_lifetime_cur),
    ("priority", "I"),
    ("index", "I"),
    ("dir", "B"),
    ("action", "B"),
    ("flags", "B"),
    ("share", "B"),
    ("_pad", "4x"),
)


class usersa_info_body(CStruct):
    """struct xfrm_usersa_info as a nested struct (in xfrm_user_expire, XFRMA_SA)."""

    size = 224
    layout = _USERSA_INFO_LAYOUT


class userpolicy_info_body(CStruct):
    """struct xfrm_userpolicy_info as a nested struct (acquire, polexpire, IP_XFRM_POLICY)."""

    size = 168
    layout = _USERPOLICY_INFO_LAYOUT


def _body_fields(layout: tuple) -> tuple:
    """A CStruct layout as pyroute2 ``fields`` (pyroute2 packs each field alone,
    so the explicit padding entries keep the C offsets)."""
    return tuple((name, fmt) for name, fmt in layout)

