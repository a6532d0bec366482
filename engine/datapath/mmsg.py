"""Many datagrams in one system call on a socket without GSO (a raw ESP socket):
``sendmmsg(2)`` through ctypes, which Python's socket module does not offer.

`MmsgSender` owns a buffer of fixed-size slots and, built once, the
``mmsghdr``/``iovec`` arrays that point at them, at the peer's address and at
an optional control message (IP_PKTINFO): a send copies each packet into its
slot, writes its length into its iovec and makes one ``sendmmsg`` call for
the lot. The kernel sends the datagrams one by one, exactly as that many
``sendmsg`` calls would: the wire cannot tell the difference.

Errors stay per packet: ``sendmmsg`` stops at the first datagram it cannot
send and reports how many went; `MmsgSender.send` then reports that
datagram's errno to its caller and goes on with the next one.

Available where libc has ``sendmmsg`` (glibc 2.14+, musl): `available` says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import struct
from collections.abc import Callable, Sequence

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_sendmmsg = getattr(_libc, "sendmmsg", None)
if _sendmmsg is not None:
    _sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    _sendmmsg.restype = ctypes.c_int

available = _sendmmsg is not None
"""Whether this libc has sendmmsg."""

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
