"""NETLINK_XFRM message bodies (``nlmsg`` subclasses named after their C struct, all sharing one
``XFRMA_*`` attribute map in `xfrm_msg`), their sizes, the class per message type, and the
encoding of a request (see engine.datapath.xfrm_netlink, which re-exports them)."""

from __future__ import annotations

import struct
from typing import Any

from pyroute2.netlink import nlmsg

from engine.datapath.xfrm_attrs import (
    _address_nla,
    struct_nla,
    xfrm_algo,
    xfrm_algo_aead,
    xfrm_algo_auth,
    xfrm_replay_state_esn,
    xfrm_user_tmpl_list,
)
from engine.datapath.xfrm_const import (
    XFRMA_ADDRESS_FILTER,
    XFRMA_ALG_AEAD,
    XFRMA_ALG_AUTH,
    XFRMA_ALG_AUTH_TRUNC,
    XFRMA_ALG_COMP,
    XFRMA_ALG_CRYPT,
    XFRMA_COADDR,
    XFRMA_ENCAP,
    XFRMA_ETIMER_THRESH,
    XFRMA_IF_ID,
    XFRMA_KMADDRESS,
    XFRMA_LASTUSED,
    XFRMA_LTIME_VAL,
    XFRMA_MARK,
    XFRMA_MIGRATE,
    XFRMA_MTIMER_THRESH,
    XFRMA_OFFLOAD_DEV,
    XFRMA_PAD,
    XFRMA_POLICY,
    XFRMA_POLICY_TYPE,
    XFRMA_PROTO,
    XFRMA_REPLAY_ESN_VAL,
    XFRMA_REPLAY_THRESH,
    XFRMA_REPLAY_VAL,
    XFRMA_SA,
    XFRMA_SA_EXTRA_FLAGS,
    XFRMA_SEC_CTX,
    XFRMA_SET_MARK,
    XFRMA_SET_MARK_MASK,
    XFRMA_SRCADDR,
    XFRMA_TFCPAD,
    XFRMA_TMPL,
    XFRMA_UNSPEC,
    XFRM_MSG_ACQUIRE,
    XFRM_MSG_DELPOLICY,
    XFRM_MSG_DELSA,
    XFRM_MSG_EXPIRE,
    XFRM_MSG_GETPOLICY,
    XFRM_MSG_GETSA,
    XFRM_MSG_MAPPING,
    XFRM_MSG_NEWPOLICY,
    XFRM_MSG_NEWSA,
    XFRM_MSG_POLEXPIRE,
    XFRM_MSG_UPDPOLICY,
    XFRM_MSG_UPDSA,
)
from engine.datapath.xfrm_structs import (
    _USERPOLICY_INFO_LAYOUT,
    _USERSA_INFO_LAYOUT,
    _body_fields,
    userpolicy_info_body,
    usersa_info_body,
    xfrm_address,
    xfrm_encap_tmpl,
    xfrm_id,
    xfrm_lifetime_cur,
    xfrm_mark,
    xfrm_replay_state,
    xfrm_selector,
    xfrm_userpolicy_type,
)

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


class xfrm_user_mapping(xfrm_msg):
    """struct xfrm_user_mapping: authenticated ESP-in-UDP of the inbound SA ``(daddr, spi, proto)``
    came from ``new_saddr``:``new_sport`` instead of ``old_saddr``:``old_sport`` (ports in network
    order; the kernel sends it only for SAs with an encap template)."""

    __slots__ = ()
    fields = (
        ("daddr", xfrm_address),
        ("spi", ">I"),
        ("family", "H"),
        ("proto", "B"),
        ("_pad", "x"),
        ("reqid", "I"),
        ("old_saddr", xfrm_address),
        ("new_saddr", xfrm_address),
        ("old_sport", ">H"),
        ("new_sport", ">H"),
    )


# Message bodies in C byte counts (NLMSG_ALIGN'd by the kernel too).
BODY_SIZES = {
    xfrm_usersa_info: 224,
    xfrm_usersa_id: 24,
    xfrm_userpolicy_info: 168,
    xfrm_userpolicy_id: 64,
    xfrm_user_acquire: 280,
    xfrm_user_expire: 232,
    xfrm_user_polexpire: 176,
    xfrm_user_mapping: 64,
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
    XFRM_MSG_MAPPING: xfrm_user_mapping,
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
