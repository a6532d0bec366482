"""NETLINK_XFRM attributes (``XFRMA_*`` payloads) as pyroute2 ``nla`` classes: algorithms with
their keys, template lists, the ESN replay state, addresses and single C structs (see
engine.datapath.xfrm_netlink, which re-exports them)."""

from __future__ import annotations

import functools
import struct
from typing import ClassVar

from pyroute2.netlink import nla

from engine.datapath.xfrm_structs import CStruct, _grow, xfrm_address, xfrm_replay_state_esn_head, xfrm_user_tmpl

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
