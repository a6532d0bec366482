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

This module gathers them (import from here); they live in
``xfrm_const`` (numbers), ``xfrm_structs`` (C structs, addresses),
``xfrm_attrs`` (attributes), ``xfrm_messages`` (message bodies, building a
request) and ``xfrm_parse`` (splitting and decoding what the kernel sends).
"""

from __future__ import annotations

from pyroute2.netlink import NETLINK_XFRM

from engine.datapath.xfrm_attrs import *  # noqa: F403
from engine.datapath.xfrm_attrs import _address_nla, _algo_nla, _pad4, _struct_nla  # noqa: F401
from engine.datapath.xfrm_const import *  # noqa: F403
from engine.datapath.xfrm_messages import *  # noqa: F403
from engine.datapath.xfrm_messages import _field_size  # noqa: F401
from engine.datapath.xfrm_parse import *  # noqa: F403
from engine.datapath.xfrm_parse import _NLMSGHDR  # noqa: F401
from engine.datapath.xfrm_structs import *  # noqa: F403
from engine.datapath.xfrm_structs import (  # noqa: F401
    _USERPOLICY_INFO_LAYOUT,
    _USERSA_INFO_LAYOUT,
    _body_fields,
    _grow,
    _no_value,
)

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
    "xfrm_user_mapping",
    "xfrm_user_polexpire",
    "xfrm_user_tmpl",
    "xfrm_userpolicy_id",
    "xfrm_userpolicy_info",
    "xfrm_userpolicy_type",
    "xfrm_usersa_id",
    "xfrm_usersa_info",
]
