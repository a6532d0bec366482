"""NETLINK_XFRM messages (include/uapi/linux/xfrm.h) on pyroute2's netlink base.

pyroute2 0.9 has no XFRM SA or policy messages, so they are defined here:

* C structs that appear inside other structs (selector, lifetimes, templates,
  ...) are :class:`CStruct` types. pyroute2 accepts any class with
  ``decode_from``/``encode_into`` as a field format, so they nest in
  ``nlmsg.fields`` like ``'I'`` or ``'16s'`` would. They decode to plain dicts.
* Message bodies are ``nlmsg`` subclasses named after their C struct
  (``xfrm_usersa_info``, ``xfrm_userpolicy_info``, ...); all share one
  ``XFRMA_*`` attribute map (:class:`xfrm_msg`).
* Attributes are ``nla`` subclasses (``xfrm_algo``, ``xfrm_algo_aead``,
  ``xfrm_user_tmpl`` lists, ``xfrm_replay_state_esn``, ...).

Layouts are the kernel's on 64-bit Linux (x86_64, arm64): ``__u64`` members
are 8-byte aligned, so padding is spelled out and every struct checks its
size against ``sizeof()`` when the class is created.

Addresses (``xfrm_address_t``) decode to 16 raw bytes; the family lives
elsewhere in each struct, so :func:`address_text` needs it.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from collections.abc import Iterator
from typing import Any, ClassVar

from pyroute2.netlink import NETLINK_XFRM, nla, nlmsg

__all__ = [
    "MESSAGE_CLASSES",
    "NETLINK_XFRM",
    "CStruct",
    "NetlinkReply",
    "address_bytes",
    "address_text",
    "parse_error",
    "parse_messages",
    "userpolicy_info_body",
    "usersa_info_body",
    "xfrm_address",
    "xfrm_encap_tmpl",
    "xfrm_id",
    "xfrm_lifetime_cfg",
    "xfrm_lifetime_cur",
    "xfrm_mark",
    "xfrm_msg",
    "xfrm_replay_state",
    "xfrm_selector",
    "xfrm_stats",
    "xfrm_user_acquire",
    "xfrm_user_expire",
    "xfrm_user_polexpire",
    "xfrm_user_tmpl",
    "xfrm_userpolicy_id",
    "xfrm_userpolicy_info",
    "xfrm_userpolicy_type",
    "xfrm_usersa_id",
    "xfrm_usersa_info",
]

# ---------------------------------------------------------------- constants

XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_DELPOLICY = 0x14
XFRM_MSG_GETPOLICY = 0x15
XFRM_MSG_ALLOCSPI = 0x16
XFRM_MSG_ACQUIRE = 0x17
XFRM_MSG_EXPIRE = 0x18
XFRM_MSG_UPDPOLICY = 0x19
XFRM_MSG_UPDSA = 0x1A
XFRM_MSG_POLEXPIRE = 0x1B
XFRM_MSG_FLUSHSA = 0x1C
XFRM_MSG_FLUSHPOLICY = 0x1D

MSG_NAMES = {
    XFRM_MSG_NEWSA: "NEWSA",
    XFRM_MSG_DELSA: "DELSA",
    XFRM_MSG_GETSA: "GETSA",
    XFRM_MSG_NEWPOLICY: "NEWPOLICY",
    XFRM_MSG_DELPOLICY: "DELPOLICY",
    XFRM_MSG_GETPOLICY: "GETPOLICY",
    XFRM_MSG_ALLOCSPI: "ALLOCSPI",
    XFRM_MSG_ACQUIRE: "ACQUIRE",
    XFRM_MSG_EXPIRE: "EXPIRE",
    XFRM_MSG_UPDPOLICY: "UPDPOLICY",
    XFRM_MSG_UPDSA: "UPDSA",
    XFRM_MSG_POLEXPIRE: "POLEXPIRE",
    XFRM_MSG_FLUSHSA: "FLUSHSA",
    XFRM_MSG_FLUSHPOLICY: "FLUSHPOLICY",
}

# Attribute types (enum xfrm_attr_type_t)
XFRMA_UNSPEC = 0
XFRMA_ALG_AUTH = 1
XFRMA_ALG_CRYPT = 2
XFRMA_ALG_COMP = 3
XFRMA_ENCAP = 4
XFRMA_TMPL = 5
XFRMA_SA = 6
XFRMA_POLICY = 7
XFRMA_SEC_CTX = 8
XFRMA_LTIME_VAL = 9
XFRMA_REPLAY_VAL = 10
XFRMA_REPLAY_THRESH = 11
XFRMA_ETIMER_THRESH = 12
XFRMA_SRCADDR = 13
XFRMA_COADDR = 14
XFRMA_LASTUSED = 15
XFRMA_POLICY_TYPE = 16
XFRMA_MIGRATE = 17
XFRMA_ALG_AEAD = 18
XFRMA_KMADDRESS = 19
XFRMA_ALG_AUTH_TRUNC = 20
XFRMA_MARK = 21
XFRMA_TFCPAD = 22
XFRMA_REPLAY_ESN_VAL = 23
XFRMA_SA_EXTRA_FLAGS = 24
XFRMA_PROTO = 25
XFRMA_ADDRESS_FILTER = 26
XFRMA_PAD = 27
XFRMA_OFFLOAD_DEV = 28
XFRMA_SET_MARK = 29
XFRMA_SET_MARK_MASK = 30
XFRMA_IF_ID = 31
XFRMA_MTIMER_THRESH = 32

XFRM_INF = 0xFFFFFFFFFFFFFFFF
"""Lifetime limit meaning "none" (a zero limit would expire at once)."""

XFRM_MODE_TRANSPORT = 0
XFRM_MODE_TUNNEL = 1

XFRM_POLICY_IN = 0
XFRM_POLICY_OUT = 1
XFRM_POLICY_FWD = 2
XFRM_POLICY_ALLOW = 0
XFRM_POLICY_BLOCK = 1
XFRM_POLICY_TYPE_MAIN = 0
XFRM_POLICY_TYPE_SUB = 1
XFRM_SHARE_ANY = 0

XFRM_STATE_NOECN = 1
XFRM_STATE_DECAP_DSCP = 2
XFRM_STATE_NOPMTUDISC = 4
XFRM_STATE_WILDRECV = 8
XFRM_STATE_ICMP = 16
XFRM_STATE_AF_UNSPEC = 32
XFRM_STATE_ALIGN4 = 64
XFRM_STATE_ESN = 128

XFRMA_REPLAY_ESN_MAX = 4096
"""Largest replay window (bits) the kernel accepts in xfrm_replay_state_esn."""

# Multicast groups (enum xfrm_nlgroups); bind() takes the bit 1 << (group - 1).
XFRMNLGRP_ACQUIRE = 1
XFRMNLGRP_EXPIRE = 2
XFRMNLGRP_SA = 3
XFRMNLGRP_POLICY = 4

# Socket options (linux/in.h, linux/in6.h, linux/udp.h)
IP_XFRM_POLICY = 17
IPV6_XFRM_POLICY = 35
UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2

IPPROTO_ESP = 50
IPPROTO_AH = 51

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_MULTI = 2
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

_NLMSGHDR = struct.Struct("=IHHII")


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


# ---------------------------------------------------------------- attributes

class _struct_nla(nla):
    """An attribute whose payload is one fixed C struct (a dict value)."""

    __slots__ = ()
    struct_type: ClassVar[type[CStruct]]

    def ft_encode(self, offset: int) -> tuple[int, int]:
        end = self.struct_type.encode_into(self.data, offset, self)
        return _pad4(self.data, end)

    def ft_decode(self, offset: int) -> None:
        self.update(self.struct_type.decode_from(self.data, offset)[0])
        self.pop("attrs", None)


def _pad4(data: bytearray, end: int) -> tuple[int, int]:
    diff = (-end) & 3
    if diff:
        data.extend(bytes(diff))
    return end + diff, diff


class _address_nla(nla):
    """XFRMA_SRCADDR / XFRMA_COADDR: one xfrm_address_t (value: raw 16 bytes)."""

    __slots__ = ()

    def ft_encode(self, offset: int) -> tuple[int, int]:
        return xfrm_address.encode_into(self.data, offset, self.value), 0

    def ft_decode(self, offset: int) -> None:
        self.value = bytes(self.data[offset:offset + 16])
        self.pop("attrs", None)


class _algo_nla(nla):
    """struct xfrm_algo / xfrm_algo_auth / xfrm_algo_aead: a name, lengths, then the key.

    Value: ``{"alg_name": "cbc(aes)", "alg_key_len": 128 (bits), "alg_key": b"..."}``
    plus ``alg_trunc_len`` or ``alg_icv_len`` (bits) for the auth and AEAD forms.
    """

    __slots__ = ()
    head: ClassVar[struct.Struct]
    extra: ClassVar[str | None] = None

    def ft_encode(self, offset: int) -> tuple[int, int]:
        get = functools.partial(dict.get, self)
        key = bytes(get("alg_key") or b"")
        name = get("alg_name") or ""
        name_b = name.encode() if isinstance(name, str) else bytes(name)
        if len(name_b) >= 64:
            raise ValueError(f"algorithm name {name!r} is longer than 63 bytes")
        key_len = get("alg_key_len")
        if key_len is None or key_len == 0 and key:
            key_len = len(key) * 8
        if key_len != len(key) * 8:
            raise ValueError(f"{name}: alg_key_len {key_len} bits but the key has {len(key)} bytes")
        args = [name_b, key_len] + ([get(self.extra, 0)] if self.extra else [])
        end = offset + self.head.size + len(key)
        _grow(self.data, end)
        self.head.pack_into(self.data, offset, *args)
        self.data[offset + self.head.size:end] = key
        return _pad4(self.data, end)

    def ft_decode(self, offset: int) -> None:
        values = self.head.unpack_from(self.data, offset)
        self["alg_name"] = values[0].split(b"\0", 1)[0].decode("ascii", "replace")
        self["alg_key_len"] = values[1]
        if self.extra:
            self[self.extra] = values[2]
        start = offset + self.head.size
        end = min(start + (values[1] + 7) // 8, self.offset + self.length)
        self["alg_key"] = bytes(self.data[start:end])
        self.pop("attrs", None)


class xfrm_algo(_algo_nla):
    """XFRMA_ALG_CRYPT / XFRMA_ALG_AUTH / XFRMA_ALG_COMP: struct xfrm_algo."""

    __slots__ = ()
    head = struct.Struct("=64sI")


class xfrm_algo_auth(_algo_nla):
    """XFRMA_ALG_AUTH_TRUNC: struct xfrm_algo_auth (alg_trunc_len in bits)."""

    __slots__ = ()
    head = struct.Struct("=64sII")
    extra = "alg_trunc_len"


class xfrm_algo_aead(_algo_nla):
    """XFRMA_ALG_AEAD: struct xfrm_algo_aead (alg_icv_len in bits)."""

    __slots__ = ()
    head = struct.Struct("=64sII")
    extra = "alg_icv_len"


class xfrm_user_tmpl_list(nla):
    """XFRMA_TMPL: an array of struct xfrm_user_tmpl (value: a list of dicts)."""

    __slots__ = ()

    def ft_encode(self, offset: int) -> tuple[int, int]:
        for tmpl in self.value or ():
            offset = xfrm_user_tmpl.encode_into(self.data, offset, tmpl)
        return offset, 0

    def ft_decode(self, offset: int) -> None:
        end = self.offset + self.length
        tmpls = []
        while offset + xfrm_user_tmpl.size <= end:
            tmpl, offset = xfrm_user_tmpl.decode_from(self.data, offset)
            tmpls.append(tmpl)
        self.value = tmpls
        self.pop("attrs", None)


class xfrm_replay_state_esn(nla):
    """XFRMA_REPLAY_ESN_VAL: struct xfrm_replay_state_esn with its bitmap.

    Value: ``bmp_len`` (32-bit words), ``oseq``, ``seq``, ``oseq_hi``, ``seq_hi``,
    ``replay_window`` (packets) and ``bmp`` (list of words; zeros if absent).
    """

    __slots__ = ()

    def ft_encode(self, offset: int) -> tuple[int, int]:
        bmp_len = dict.get(self, "bmp_len", 0)
        bmp = list(dict.get(self, "bmp") or ())
        bmp += [0] * (bmp_len - len(bmp))
        if len(bmp) != bmp_len:
            raise ValueError(f"replay bitmap has {len(bmp)} words, bmp_len says {bmp_len}")
        offset = xfrm_replay_state_esn_head.encode_into(self.data, offset, self)
        if bmp:
            _grow(self.data, offset + 4 * bmp_len)
            struct.pack_into(f"={bmp_len}I", self.data, offset, *bmp)
            offset += 4 * bmp_len
        return offset, 0

    def ft_decode(self, offset: int) -> None:
        head, offset = xfrm_replay_state_esn_head.decode_from(self.data, offset)
        self.update(head)
        words = min(head["bmp_len"], max(0, (self.offset + self.length - offset) // 4))
        self["bmp"] = list(struct.unpack_from(f"={words}I", self.data, offset)) if words else []
        self.pop("attrs", None)


def struct_nla(struct_type: type[CStruct]) -> type[_struct_nla]:
    """An nla class carrying one ``struct_type``."""
    return type(f"nla_{struct_type.__name__}", (_struct_nla,), {"__slots__": (), "struct_type": struct_type})


# ---------------------------------------------------------------- messages

class xfrm_msg(nlmsg):
    """Base of every XFRM message: the shared XFRMA_* attribute map."""

    __slots__ = ()
    prefix = "XFRMA_"
    nla_map = (
        (XFRMA_UNSPEC, "XFRMA_UNSPEC", "none"),
        (XFRMA_ALG_AUTH, "XFRMA_ALG_AUTH", "xfrm_algo"),
        (XFRMA_ALG_CRYPT, "XFRMA_ALG_CRYPT", "xfrm_algo"),
        (XFRMA_ALG_COMP, "XFRMA_ALG_COMP", "xfrm_algo"),
        (XFRMA_ENCAP, "XFRMA_ENCAP", "encap_tmpl"),
        (XFRMA_TMPL, "XFRMA_TMPL", "xfrm_user_tmpl_list"),
        (XFRMA_SA, "XFRMA_SA", "usersa_info_nla"),
        (XFRMA_POLICY, "XFRMA_POLICY", "userpolicy_info_nla"),
        (XFRMA_SEC_CTX, "XFRMA_SEC_CTX", "hex"),
        (XFRMA_LTIME_VAL, "XFRMA_LTIME_VAL", "lifetime_cur"),
        (XFRMA_REPLAY_VAL, "XFRMA_REPLAY_VAL", "replay_state"),
        (XFRMA_REPLAY_THRESH, "XFRMA_REPLAY_THRESH", "uint32"),
        (XFRMA_ETIMER_THRESH, "XFRMA_ETIMER_THRESH", "uint32"),
        (XFRMA_SRCADDR, "XFRMA_SRCADDR", "address"),
        (XFRMA_COADDR, "XFRMA_COADDR", "address"),
        (XFRMA_LASTUSED, "XFRMA_LASTUSED", "uint64"),
        (XFRMA_POLICY_TYPE, "XFRMA_POLICY_TYPE", "policy_type"),
        (XFRMA_MIGRATE, "XFRMA_MIGRATE", "hex"),
        (XFRMA_ALG_AEAD, "XFRMA_ALG_AEAD", "xfrm_algo_aead"),
        (XFRMA_KMADDRESS, "XFRMA_KMADDRESS", "hex"),
        (XFRMA_ALG_AUTH_TRUNC, "XFRMA_ALG_AUTH_TRUNC", "xfrm_algo_auth"),
        (XFRMA_MARK, "XFRMA_MARK", "mark"),
        (XFRMA_TFCPAD, "XFRMA_TFCPAD", "uint32"),
        (XFRMA_REPLAY_ESN_VAL, "XFRMA_REPLAY_ESN_VAL", "xfrm_replay_state_esn"),
        (XFRMA_SA_EXTRA_FLAGS, "XFRMA_SA_EXTRA_FLAGS", "uint32"),
        (XFRMA_PROTO, "XFRMA_PROTO", "uint8"),
        (XFRMA_ADDRESS_FILTER, "XFRMA_ADDRESS_FILTER", "hex"),
        (XFRMA_PAD, "XFRMA_PAD", "hex"),
        (XFRMA_OFFLOAD_DEV, "XFRMA_OFFLOAD_DEV", "hex"),
        (XFRMA_SET_MARK, "XFRMA_SET_MARK", "uint32"),
        (XFRMA_SET_MARK_MASK, "XFRMA_SET_MARK_MASK", "uint32"),
        (XFRMA_IF_ID, "XFRMA_IF_ID", "uint32"),
        (XFRMA_MTIMER_THRESH, "XFRMA_MTIMER_THRESH", "uint32"),
    )

    xfrm_algo = xfrm_algo
    xfrm_algo_auth = xfrm_algo_auth
    xfrm_algo_aead = xfrm_algo_aead
    xfrm_user_tmpl_list = xfrm_user_tmpl_list
    xfrm_replay_state_esn = xfrm_replay_state_esn
    encap_tmpl = struct_nla(xfrm_encap_tmpl)
    usersa_info_nla = struct_nla(usersa_info_body)
    userpolicy_info_nla = struct_nla(userpolicy_info_body)
    lifetime_cur = struct_nla(xfrm_lifetime_cur)
    replay_state = struct_nla(xfrm_replay_state)
    policy_type = struct_nla(xfrm_userpolicy_type)
    mark = struct_nla(xfrm_mark)
    address = _address_nla

    def decode(self) -> None:
        super().decode()
        for name, _ in self.fields:
            if name[0] == "_":  # explicit padding: no value to show
                self.pop(name, None)


class xfrm_usersa_info(xfrm_msg):
    """struct xfrm_usersa_info: NEWSA / UPDSA requests, GETSA replies and dumps."""

    __slots__ = ()
    fields = _body_fields(_USERSA_INFO_LAYOUT)


class xfrm_usersa_id(xfrm_msg):
    """struct xfrm_usersa_id: DELSA and single GETSA requests (+ XFRMA_SRCADDR)."""

    __slots__ = ()
    fields = (("daddr", xfrm_address), ("spi", ">I"), ("family", "H"), ("proto", "B"), ("_pad", "x"))


class xfrm_userpolicy_info(xfrm_msg):
    """struct xfrm_userpolicy_info: NEWPOLICY / UPDPOLICY requests, GETPOLICY replies."""

    __slots__ = ()
    fields = _body_fields(_USERPOLICY_INFO_LAYOUT)


class xfrm_userpolicy_id(xfrm_msg):
    """struct xfrm_userpolicy_id: DELPOLICY and single GETPOLICY (by selector or index)."""

    __slots__ = ()
    fields = (("sel", xfrm_selector), ("index", "I"), ("dir", "B"), ("_pad", "3x"))


class xfrm_user_acquire(xfrm_msg):
    """struct xfrm_user_acquire: the kernel wants an SA for a policy (+ XFRMA_TMPL)."""

    __slots__ = ()
    fields = (
        ("id", xfrm_id),
        ("saddr", xfrm_address),
        ("sel", xfrm_selector),
        ("policy", userpolicy_info_body),
        ("aalgos", "I"),
        ("ealgos", "I"),
        ("calgos", "I"),
        ("seq", "I"),
    )


class xfrm_user_expire(xfrm_msg):
    """struct xfrm_user_expire: an SA reached its soft (hard=0) or hard (hard=1) limit."""

    __slots__ = ()
    fields = (("state", usersa_info_body), ("hard", "B"), ("_pad", "7x"))


class xfrm_user_polexpire(xfrm_msg):
    """struct xfrm_user_polexpire: a policy lifetime expired."""

    __slots__ = ()
    fields = (("pol", userpolicy_info_body), ("hard", "B"), ("_pad", "7x"))


# Message bodies in C byte counts (NLMSG_ALIGN'd by the kernel too).
BODY_SIZES = {
    xfrm_usersa_info: 224,
    xfrm_usersa_id: 24,
    xfrm_userpolicy_info: 168,
    xfrm_userpolicy_id: 64,
    xfrm_user_acquire: 280,
    xfrm_user_expire: 232,
    xfrm_user_polexpire: 176,
}


def _field_size(fmt: Any) -> int:
    return struct.calcsize("=" + fmt if fmt[0] not in "<>!=@" else fmt) if isinstance(fmt, str) else fmt.size


for _cls, _size in BODY_SIZES.items():
    _got = sum(_field_size(f) for _, f in _cls.fields)
    if _got != _size:  # pragma: no cover - a layout typo must fail at import
        raise TypeError(f"{_cls.__name__}: fields add up to {_got} bytes, sizeof() is {_size}")

MESSAGE_CLASSES: dict[int, type[xfrm_msg]] = {
    XFRM_MSG_NEWSA: xfrm_usersa_info,
    XFRM_MSG_UPDSA: xfrm_usersa_info,
    XFRM_MSG_DELSA: xfrm_usersa_id,
    XFRM_MSG_GETSA: xfrm_usersa_id,
    XFRM_MSG_NEWPOLICY: xfrm_userpolicy_info,
    XFRM_MSG_UPDPOLICY: xfrm_userpolicy_info,
    XFRM_MSG_DELPOLICY: xfrm_userpolicy_id,
    XFRM_MSG_GETPOLICY: xfrm_userpolicy_id,
    XFRM_MSG_ACQUIRE: xfrm_user_acquire,
    XFRM_MSG_EXPIRE: xfrm_user_expire,
    XFRM_MSG_POLEXPIRE: xfrm_user_polexpire,
}
"""Which class decodes a message the kernel sends with that type.

The kernel answers GETSA with NEWSA and GETPOLICY with NEWPOLICY; DELSA and
DELPOLICY notifications to the SA/POLICY groups carry other bodies, but this
datapath does not subscribe to those groups."""


def encode_request(msg: xfrm_msg, msg_type: int, flags: int, seq: int) -> bytes:
    """Encode ``msg`` as one netlink request and return its bytes."""
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.reset()
    msg.encode()
    return bytes(msg.data)


# ---------------------------------------------------------------- parsing

class NetlinkReply:
    """One message of a netlink datagram, before or after decoding."""

    __slots__ = ("error", "error_text", "flags", "msg", "pid", "seq", "type")

    def __init__(self, mtype: int, flags: int, seq: int, pid: int) -> None:
        self.type = mtype
        self.flags = flags
        self.seq = seq
        self.pid = pid
        self.error: int | None = None
        """For NLMSG_ERROR: 0 (an ACK) or a positive errno."""
        self.error_text = ""
        """The kernel's extended-ACK message, if any."""
        self.msg: xfrm_msg | None = None
        """The decoded XFRM message (None for control messages and unknown types)."""

    def __repr__(self) -> str:
        kind = MSG_NAMES.get(self.type, {NLMSG_ERROR: "ERROR", NLMSG_DONE: "DONE"}.get(self.type, str(self.type)))
        extra = f" error={self.error}" if self.error is not None else ""
        return f"<NetlinkReply {kind} seq={self.seq}{extra}>"


def parse_error(data: bytes | bytearray, offset: int, length: int, flags: int) -> tuple[int, str]:
    """The errno (positive, 0 for an ACK) and extended-ACK text of an NLMSG_ERROR."""
    (code,) = struct.unpack_from("=i", data, offset + 16)
    text = ""
    if flags & NLM_F_ACK_TLVS:
        # struct nlmsgerr: error, then the request's header (and its payload
        # unless the kernel capped it), then the TLVs.
        (orig_len,) = struct.unpack_from("=I", data, offset + 20)
        pos = offset + 20 + (16 if flags & NLM_F_CAPPED else max(16, (orig_len + 3) & ~3))
        end = offset + length
        while pos + 4 <= end:
            alen, atype = struct.unpack_from("=HH", data, pos)
            if alen < 4:
                break
            if atype & 0x3FFF == NLMSGERR_ATTR_MSG:
                text = bytes(data[pos + 4:pos + alen]).split(b"\0", 1)[0].decode("utf-8", "replace")
            pos += (alen + 3) & ~3
    return -code, text


def parse_messages(data: bytes | bytearray) -> Iterator[NetlinkReply]:
    """Split a netlink datagram into messages and decode the XFRM ones.

    A truncated or malformed tail ends the iteration instead of raising: the
    caller sees what was whole.
    """
    offset = 0
    size = len(data)
    while offset + 16 <= size:
        length, mtype, flags, seq, pid = _NLMSGHDR.unpack_from(data, offset)
        if length < 16 or offset + length > size:
            return
        reply = NetlinkReply(mtype, flags, seq, pid)
        if mtype == NLMSG_ERROR and length >= 20:
            reply.error, reply.error_text = parse_error(data, offset, length, flags)
        elif mtype == NLMSG_DONE:
            # a dump's end carries an int: 0, or -errno when the dump failed
            reply.error = -struct.unpack_from("=i", data, offset + 16)[0] if length >= 20 else 0
        else:
            cls = MESSAGE_CLASSES.get(mtype)
            if cls is not None and length >= 16 + BODY_SIZES[cls]:
                msg = cls(data, offset=offset)
                msg.decode()
                reply.msg = msg
        yield reply
        offset += (length + 3) & ~3
