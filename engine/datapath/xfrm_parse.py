"""Parsing of NETLINK_XFRM datagrams from the kernel: split into messages, errors and extended
ACK text, XFRM bodies decoded (see engine.datapath.xfrm_netlink, which re-exports it)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from engine.datapath.xfrm_const import (
    MSG_NAMES,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGERR_ATTR_MSG,
)
from engine.datapath.xfrm_messages import BODY_SIZES, MESSAGE_CLASSES, xfrm_msg

_NLMSGHDR = struct.Struct("=IHHII")

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
