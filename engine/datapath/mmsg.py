"""Many datagrams in one system call on a socket without GSO (a raw ESP socket):
``sendmmsg(2)`` and ``recvmmsg(2)`` through ctypes, which Python's socket
module does not offer.

`MmsgSender` owns a buffer of fixed-size slots and, built once, the
``mmsghdr``/``iovec`` arrays that point at them, at the peer's address and at
an optional control message (IP_PKTINFO): a send copies each packet into its
slot, writes its length into its iovec and makes one ``sendmmsg`` call for
the lot. The kernel sends the datagrams one by one, exactly as that many
``sendmsg`` calls would: the wire cannot tell the difference.

Errors stay per packet: ``sendmmsg`` stops at the first datagram it cannot
send and reports how many went; `MmsgSender.send` then reports that
datagram's errno to its caller and goes on with the next one.

`MmsgReceiver` reads up to its number of slots of datagrams per
``recvmmsg`` call into slots of 64 KiB each (any datagram fits whole, as in
a ``recv(65535)``), with each one's source address and control messages
when asked for. The slots are anonymous memory: only the pages a datagram
touched are resident. A datagram is the kernel's to drop or deliver exactly
as with one ``recvmsg`` per datagram.

Available where libc has ``sendmmsg``/``recvmmsg`` (glibc 2.14+, musl):
`available` and `recv_available` say so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import socket
import struct
import sys
from collections.abc import Callable, Sequence

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_sendmmsg = getattr(_libc, "sendmmsg", None)
if _sendmmsg is not None:
    _sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    _sendmmsg.restype = ctypes.c_int

available = _sendmmsg is not None
"""Whether this libc has sendmmsg."""
_recvmmsg = getattr(_libc, "recvmmsg", None)
if _recvmmsg is not None:
    _recvmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    _recvmmsg.restype = ctypes.c_int
recv_available = _recvmmsg is not None
"""Whether this libc has recvmmsg."""

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)

MAX_BYTES = 1 << 20
"""Slot memory per sender at most: fewer slots when packets are large (a jumbo path)."""
MAX_SLOTS = 128
_SLOT_ALIGN = 2048


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int))


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("hdr", _Msghdr), ("len", ctypes.c_uint))


_IOV_SIZE = ctypes.sizeof(_Iovec)
_IOV_LEN_AT = _Iovec.len.offset
_SIZE_T = struct.Struct("@N")
_CMSG_HDR = struct.Struct("@Nii")


def _cmsg_align(n: int) -> int:
    a = ctypes.sizeof(ctypes.c_size_t)
    return (n + a - 1) & ~(a - 1)


def control_message(level: int, kind: int, data: bytes) -> bytes:
    """One control message as the kernel reads it (CMSG_SPACE bytes: header, data, padding)."""
    hdr = _CMSG_HDR.size
    return (_CMSG_HDR.pack(_cmsg_align(hdr) + len(data), level, kind)
            + bytes(_cmsg_align(hdr) - hdr) + data + bytes(_cmsg_align(len(data)) - len(data)))


def source_pktinfo(source: str, family: int) -> list:
    """sendmsg ancillary data that makes ``source`` the source address ([] for a wildcard or an address
    of the other family: the kernel picks)."""
    try:
        if family == socket.AF_INET:
            packed = socket.inet_pton(socket.AF_INET, source)
            if packed == bytes(4):
                return []
            # struct in_pktinfo { int ifindex; in_addr spec_dst (the source); in_addr addr; }
            return [(socket.IPPROTO_IP, IP_PKTINFO, bytes(4) + packed + bytes(4))]
        packed = socket.inet_pton(socket.AF_INET6, source)
        if packed == bytes(16):
            return []
        # struct in6_pktinfo { in6_addr addr (the source); unsigned int ifindex; }
        return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, packed + bytes(4))]
    except OSError:
        return []


def sockaddr(family: int, address: str, port: int = 0) -> bytes:
    """struct sockaddr_in / sockaddr_in6 for ``address`` (the family in host order, as the kernel reads it)."""
    if family == socket.AF_INET:
        return struct.pack("=HH4s8x", family, socket.htons(port), socket.inet_pton(family, address))
    if family == socket.AF_INET6:
        return struct.pack("=HHI16sI", family, socket.htons(port), 0, socket.inet_pton(family, address), 0)
    raise ValueError(f"address family {family} is not IPv4 or IPv6")


class MmsgSender:
    """Datagrams to one address through one socket, up to `slots` per ``sendmmsg`` call (see the module
    docstring). The socket stays the caller's; `send` never raises for a refused datagram."""

    def __init__(self, sock: socket.socket, name: bytes, control: bytes = b"", slot_size: int = _SLOT_ALIGN) -> None:
        if not available:
            raise OSError("sendmmsg is not in this libc")
        self.sock = sock
        """Asked for its fd at each send: a closed socket's number may belong to another file by then."""
        self._name = ctypes.create_string_buffer(name, len(name))
        self._control = ctypes.create_string_buffer(control, len(control)) if control else None
        self.calls = 0
        """sendmmsg calls made (statistics, tests)."""
        self._build(slot_size)

    def _build(self, slot_size: int) -> None:
        slot_size = (slot_size + _SLOT_ALIGN - 1) // _SLOT_ALIGN * _SLOT_ALIGN
        self.slot_size = slot_size
        self.slots = n = max(1, min(MAX_SLOTS, MAX_BYTES // slot_size))
        self._data = ctypes.create_string_buffer(n * slot_size)
        self._mv = memoryview(self._data).cast("B")
        self._iov = (_Iovec * n)()
        self._iov_mv = memoryview(self._iov).cast("B")
        self._msgs = (_Mmsghdr * n)()
        base = ctypes.addressof(self._data)
        iov_base = ctypes.addressof(self._iov)
        name = ctypes.addressof(self._name)
        control = ctypes.addressof(self._control) if self._control is not None else None
        for i in range(n):
            self._iov[i].base = base + i * slot_size
            h = self._msgs[i].hdr
            h.name = name
            h.namelen = len(self._name)
            h.iov = iov_base + i * _IOV_SIZE
            h.iovlen = 1
            if control is not None:
                h.control = control
                h.controllen = len(self._control)
        self._msgs_at = ctypes.addressof(self._msgs)

    def send(self, pkts: Sequence, failed: Callable[[int, int], None]) -> None:
        """Send every datagram of ``pkts`` in order; ``failed(index, errno)`` for each one refused."""
        total = len(pkts)
        if not total:
            return
        longest = max(map(len, pkts))
        if longest > self.slot_size:
            self._build(longest)
        slot = self.slot_size
        slots = self.slots
        mv = self._mv
        iov_mv = self._iov_mv
        pack_len = _SIZE_T.pack_into
        fd = self.sock.fileno()
        if fd < 0:
            for i in range(total):
                failed(i, errno.EBADF)
            return
        msgs_at = self._msgs_at
        msg_size = ctypes.sizeof(_Mmsghdr)
        start = 0
        while start < total:
            count = min(slots, total - start)
            off = 0
            at = _IOV_LEN_AT
            for k in range(start, start + count):
                p = pkts[k]
                n = len(p)
                mv[off:off + n] = p
                pack_len(iov_mv, at, n)
                off += slot
                at += _IOV_SIZE
            done = 0
            while done < count:
                self.calls += 1
                r = _sendmmsg(fd, msgs_at + done * msg_size, count - done, 0)
                if r <= 0:
                    # The datagram at `done` was refused: report it, go on with the next.
                    failed(start + done, ctypes.get_errno())
                    done += 1
                else:
                    done += r
            start += count


RECV_SLOT = 1 << 16
"""Bytes per receive slot: the largest datagram an IP socket can hand over (a reassembled one)."""
NAME_SIZE = 28
"""sockaddr_in6, the larger of the two source address forms."""
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
_MSG_SIZE = ctypes.sizeof(_Mmsghdr)
_U32_PER_MSG = _MSG_SIZE // 4
_LEN_AT_U32 = _Mmsghdr.len.offset // 4
_NAMELEN_AT_U32 = _Msghdr.namelen.offset // 4
_CONTROLLEN_AT = _Msghdr.controllen.offset
_FLAGS_AT_U32 = _Msghdr.flags.offset // 4


class MmsgReceiver:
    """Datagrams from one socket, up to `slots` per ``recvmmsg`` call (see the module docstring).

    `recv` returns how many arrived; then `data(i)` is datagram i (a memoryview into slot i, valid
    until the next `recv`), and with ``names``/``control`` given, `name(i)` and `control(i)` its
    source address and control messages (raw bytes, as the kernel wrote them). The socket stays
    the caller's."""

    def __init__(self, sock: socket.socket, slots: int = 64, *, names: bool = False, control: int = 0) -> None:
        if not recv_available:
            raise OSError("recvmmsg is not in this libc")
        self.sock = sock
        """Asked for its fd at each call (see MmsgSender.sock)."""
        self.slots = n = max(1, slots)
        self.calls = 0
        """recvmmsg calls made (statistics, tests)."""
        self._mem = mmap.mmap(-1, n * RECV_SLOT)
        self.view = memoryview(self._mem)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._mem))
        self._iov = (_Iovec * n)()
        self._msgs = (_Mmsghdr * n)()
        self._names = ctypes.create_string_buffer(n * NAME_SIZE) if names else None
        self._names_mv = memoryview(self._names).cast("B") if names else None
        self._control_size = control = _cmsg_align(control)
        self._control = ctypes.create_string_buffer(n * control) if control else None
        self._control_mv = memoryview(self._control).cast("B") if control else None
        iov_at = ctypes.addressof(self._iov)
        for i in range(n):
            self._iov[i].base = base + i * RECV_SLOT
            self._iov[i].len = RECV_SLOT
            h = self._msgs[i].hdr
            h.iov = iov_at + i * _IOV_SIZE
            h.iovlen = 1
            if names:
                h.name = ctypes.addressof(self._names) + i * NAME_SIZE
                h.namelen = NAME_SIZE
            if control:
                h.control = ctypes.addressof(self._control) + i * control
                h.controllen = control
        self._msgs_at = ctypes.addressof(self._msgs)
        # The kernel writes each received message's name and control lengths back into its header:
        # one copy of the headers as built puts them back before the next call.
        self._pristine = bytes(self._msgs)
        self._u32 = memoryview(self._msgs).cast("B").cast("I")
        self._dirty = 0

    def recv(self) -> int:
        """Read what is waiting, up to `slots` datagrams, without blocking: how many (0 when
        none). Raises OSError for an error other than "nothing waiting"."""
        fd = self.sock.fileno()
        if fd < 0:
            raise OSError(errno.EBADF, "socket closed")
        if self._dirty:
            ctypes.memmove(self._msgs_at, self._pristine, self._dirty * _MSG_SIZE)
        self.calls += 1
        r = _recvmmsg(fd, self._msgs_at, self.slots, MSG_DONTWAIT, None)
        if r < 0:
            self._dirty = 0
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(code, os.strerror(code))
        self._dirty = r
        return r

    def lengths(self, count: int) -> list[int]:
        """The sizes of datagrams 0..count-1 of the last `recv`."""
        return self._u32[_LEN_AT_U32:_LEN_AT_U32 + count * _U32_PER_MSG:_U32_PER_MSG].tolist()

    def data(self, i: int, length: int):
        """Datagram ``i`` of the last `recv` (``length`` from `lengths`): a memoryview into its slot."""
        at = i * RECV_SLOT
        return self.view[at:at + length]

    def name(self, i: int) -> bytes:
        """The source address of datagram ``i`` as the kernel wrote it (a sockaddr)."""
        n = self._u32[i * _U32_PER_MSG + _NAMELEN_AT_U32]
        at = i * NAME_SIZE
        return bytes(self._names_mv[at:at + n])

    def control(self, i: int) -> bytes:
        """The control messages of datagram ``i`` (see `cmsgs`)."""
        n = _SIZE_T.unpack_from(self._msgs, i * _MSG_SIZE + _CONTROLLEN_AT)[0]
        at = i * self._control_size
        return bytes(self._control_mv[at:at + n])

    def truncated(self, i: int) -> bool:
        """Whether the kernel cut datagram ``i`` or its control messages short (MSG_TRUNC/MSG_CTRUNC)."""
        return bool(self._u32[i * _U32_PER_MSG + _FLAGS_AT_U32] & (socket.MSG_TRUNC | socket.MSG_CTRUNC))


def cmsgs(control: bytes) -> list[tuple[int, int, bytes]]:
    """(level, type, data) of each control message in ``control`` (what socket.recvmsg returns)."""
    out = []
    hdr = _CMSG_HDR.size
    start = _cmsg_align(hdr)
    off = 0
    end = len(control)
    while off + hdr <= end:
        length, level, kind = _CMSG_HDR.unpack_from(control, off)
        if length < hdr or off + length > end:
            break
        out.append((level, kind, control[off + start:off + length]))
        off += _cmsg_align(length)
    return out


def parse_sockaddr(name: bytes) -> tuple[str, int] | None:
    """(address, port) of a sockaddr_in / sockaddr_in6 as the kernel wrote it; None for another family."""
    if len(name) >= 8:
        family = int.from_bytes(name[:2], sys.byteorder)
        if family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, name[4:8]), int.from_bytes(name[2:4], "big")
        if family == socket.AF_INET6 and len(name) >= 24:
            host = socket.inet_ntop(socket.AF_INET6, name[8:24])
            scope = int.from_bytes(name[24:28], sys.byteorder) if len(name) >= 28 else 0
            if scope:
                # A link-local peer: its interface, as socket.recvfrom names it.
                try:
                    host = f"{host}%{socket.if_indextoname(scope)}"
                except OSError:
                    host = f"{host}%{scope}"
            return host, int.from_bytes(name[2:4], "big")
    return None
