"""Routes and local addresses over rtnetlink, without waiting: what the
userspace datapath does per CHILD SA.

pyroute2 does the one-off work (the TUN device, its rule, stale state of a
crash) on a worker thread; it costs about a millisecond per call and cannot
run on the asyncio loop's thread. Per CHILD SA only two things are needed,
and both are done here on the loop, in O(1):

- `RouteWriter`: route add/delete requests built with ``struct``, queued and
  sent together once per loop iteration on a non-blocking NETLINK_ROUTE
  socket. No ACK is asked for: the kernel answers only failures, which are
  read when the socket becomes readable and logged with what they were
  about. A burst of handshakes thus costs one ``sendmsg`` per loop
  iteration, not a round trip per SA.
- `AddressBook`: this host's addresses (the ``src`` of a tunnel route), read
  once with a dump and kept current from the kernel's address
  notifications, instead of a dump per SA.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import struct
from collections import OrderedDict

log = logging.getLogger("engine.datapath.userspace")

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTA_DST, RTA_OIF, RTA_PRIORITY, RTA_PREFSRC, RTA_TABLE = 1, 4, 6, 7, 15
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTN_UNICAST, RTN_BLACKHOLE, RTN_THROW = 1, 6, 9
_RTN = {"unicast": RTN_UNICAST, "blackhole": RTN_BLACKHOLE, "throw": RTN_THROW}
RTPROT_STATIC = 4
RT_TABLE_UNSPEC = 0
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTA = struct.Struct("=HH")
_ERR = struct.Struct("=i")
SEND_BATCH = 64 * 1024
"""Bytes of requests per sendmsg (one netlink datagram)."""
KEEP_DESCRIPTIONS = 8192
"""Requests whose description is kept until the kernel could still refuse them."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, value: bytes) -> bytes:
    n = 4 + len(value)
    return _RTA.pack(n, kind) + value + bytes(_align(n) - n)


def route_message(add: bool, net, *, table: int, oif: int | None = None, src: str | None = None,
                  kind: str = "unicast", metric: int | None = None, seq: int = 0) -> bytes:
    """One RTM_NEWROUTE (create or replace) / RTM_DELROUTE for ``net`` (an ipaddress network) in
    ``table``: ``kind`` ``unicast`` routes into device ``oif`` (with ``src`` as preferred source),
    ``throw`` sends lookups back to the next rule, ``blackhole`` drops (with ``metric``, the
    fail-closed backstop). Same fields as ``ip route`` would send."""
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    rtype = _RTN[kind]
    attrs = [_attr(RTA_DST, net.network_address.packed)]
    if table < 256:
        rtm_table = table
    else:
        rtm_table = RT_TABLE_UNSPEC
        attrs.append(_attr(RTA_TABLE, struct.pack("=I", table)))
    if kind == "unicast":
        if oif is not None:
            attrs.append(_attr(RTA_OIF, struct.pack("=i", oif)))
        if src is not None and add:
            attrs.append(_attr(RTA_PREFSRC, ipaddress.ip_address(src).packed))
    if metric is not None:
        attrs.append(_attr(RTA_PRIORITY, struct.pack("=I", metric)))
    body = _RTMSG.pack(family, net.prefixlen, 0, 0, rtm_table, RTPROT_STATIC, 0, rtype, 0) + b"".join(attrs)
    flags = NLM_F_REQUEST | (NLM_F_CREATE | NLM_F_REPLACE if add else 0)
    return _NLMSGHDR.pack(16 + len(body), RTM_NEWROUTE if add else RTM_DELROUTE, flags, seq, 0) + body


def address_message(add: bool, address: str, prefixlen: int, index: int, *, seq: int = 0) -> bytes:
    """One RTM_NEWADDR / RTM_DELADDR of ``address``/``prefixlen`` on interface ``index`` (``ip addr``)."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    body = _IFADDRMSG.pack(family, prefixlen, 0, 0, index) + _attr(IFA_LOCAL, ip.packed) + _attr(IFA_ADDRESS, ip.packed)
    flags = NLM_F_REQUEST | (NLM_F_CREATE | NLM_F_REPLACE if add else 0)
    return _NLMSGHDR.pack(16 + len(body), RTM_NEWADDR if add else RTM_DELADDR, flags, seq, 0) + body


def parse_messages(data: bytes):
    """(type, seq, body) of each netlink message in a datagram; stops at a malformed length."""
    off = 0
    n = len(data)
    while off + 16 <= n:
        length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < 16 or off + length > n:
            return
        yield mtype, seq, data[off + 16:off + length]
        off += _align(length)


def _attrs(body: bytes, off: int):
    n = len(body)
    while off + 4 <= n:
        length, kind = _RTA.unpack_from(body, off)
        if length < 4 or off + length > n:
            return
        yield kind, body[off + 4:off + length]
        off += _align(length)


def _open(groups: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        s.bind((0, groups))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


class RouteWriter:
    """Queued, batched route requests on the asyncio loop (see the module docstring)."""

    def __init__(self, loop, *, table: int) -> None:
        self.loop = loop
        self.table = table
        self.sock = _open()
        # A full receive queue must not turn into an error of the next send.
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        except OSError:
            pass
        self._queue: list[bytes] = []
        self._flush_scheduled = False
        self._writer = False
        self._seq = 0
        self._what: OrderedDict[int, str] = OrderedDict()
        self.sent = 0
        self.failed = 0
        loop.add_reader(self.sock.fileno(), self._readable)

    def route(self, add: bool, net, *, oif: int | None = None, src: str | None = None, kind: str = "unicast",
              metric: int | None = None) -> None:
        """Queue one route change; it is sent before the loop next waits for I/O."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        self._queue.append(route_message(add, net, table=self.table, oif=oif, src=src, kind=kind, metric=metric, seq=seq))
        self._what[seq] = (f"route {'add' if add else 'del'} {net}{f' src {src}' if src else ''} "
                           f"{'into the TUN device' if kind == 'unicast' else kind} (table {self.table})")
        if len(self._what) > KEEP_DESCRIPTIONS:
            self._what.popitem(last=False)
        if not self._flush_scheduled and not self._writer:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def address(self, add: bool, address: str, prefixlen: int, index: int) -> None:
        """Queue an address change on a device (a virtual IP on the TUN device), in order with the routes."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self._queue.append(address_message(add, address, prefixlen, index, seq=self._seq))
        self._what[self._seq] = f"address {'add' if add else 'del'} {address}/{prefixlen} (interface {index})"
        if not self._flush_scheduled and not self._writer:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what is queued, in order; a full socket buffer waits for writability."""
        self._flush_scheduled = False
        queue = self._queue
        while queue:
            batch, size = [], 0
            for msg in queue:
                if size + len(msg) > SEND_BATCH and batch:
                    break
                batch.append(msg)
                size += len(msg)
            try:
                self.sock.sendmsg([b"".join(batch)], [], 0, (0, 0))
            except (BlockingIOError, InterruptedError):
                if not self._writer:
                    self._writer = True
                    self.loop.add_writer(self.sock.fileno(), self._writable)
                return
            except OSError as exc:
                log.warning("routing requests could not be sent (%d dropped): %s", len(batch), exc)
            del queue[:len(batch)]
            self.sent += len(batch)

    def _writable(self) -> None:
        self.loop.remove_writer(self.sock.fileno())
        self._writer = False
        self.flush()

    def _readable(self) -> None:
        for _ in range(64):
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("rtnetlink: %s", exc)
                return
            for mtype, _seq, body in parse_messages(data):
                if mtype != NLMSG_ERROR or len(body) < 20:
                    continue
                code = -_ERR.unpack_from(body)[0]
                if code == 0:
                    continue
                failed_seq = _NLMSGHDR.unpack_from(body, 4)[3]
                what = self._what.pop(failed_seq, "a routing request")
                if code in (errno.ENOENT, errno.ESRCH) and " del " in what:
                    continue  # already gone (the device went first)
                self.failed += 1
                log.warning("%s failed: %s", what, os.strerror(code))

    def close(self) -> None:
        """Send what is still queued (blocking briefly) and close."""
        if self._writer:
            self.loop.remove_writer(self.sock.fileno())
            self._writer = False
        self.loop.remove_reader(self.sock.fileno())
        if self._queue:
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            try:
                self.flush()
            except OSError as exc:
                log.debug("rtnetlink at close: %s", exc)
        self.sock.close()


class AddressBook:
    """This host's addresses, from one dump plus the kernel's notifications."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self.sock = _open(RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
        self.addresses: dict[tuple[int, int], set[int]] = {}
        """(IP version, address as an integer) -> indexes of the interfaces that carry it."""
        self.packed: set[bytes] = set()
        """The same addresses, packed (4 or 16 bytes), for per-packet membership tests; updated in place."""
        self._src_cache: dict[tuple, str | None] = {}
        self._dump()
        loop.add_reader(self.sock.fileno(), self._readable)

    def _dump(self) -> None:
        req = _NLMSGHDR.pack(16 + _IFADDRMSG.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + \
            _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        self.sock.setblocking(True)
        self.sock.settimeout(2.0)
        try:
            self.sock.send(req)
            done = False
            while not done:
                data = self.sock.recv(1 << 16)
                for mtype, _seq, body in parse_messages(data):
                    if mtype == NLMSG_DONE:
                        done = True
                    elif mtype == NLMSG_ERROR:
                        code = -_ERR.unpack_from(body)[0] if len(body) >= 4 else 0
                        if code:
                            raise OSError(code, f"address dump refused: {os.strerror(code)}")
                    else:
                        self._message(mtype, body)
        finally:
            self.sock.setblocking(False)

    def _readable(self) -> None:
        for _ in range(64):
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    # Notifications were lost: start over from a fresh dump.
                    self.addresses.clear()
                    self.packed.clear()
                    self._src_cache.clear()
                    self.sock.setblocking(True)
                    try:
                        self._dump()
                    except OSError as exc2:
                        log.warning("re-reading this host's addresses failed: %s", exc2)
                    continue
                log.debug("rtnetlink addresses: %s", exc)
                return
            for mtype, _seq, body in parse_messages(data):
                self._message(mtype, body)

    def _message(self, mtype: int, body: bytes) -> None:
        if mtype not in (RTM_NEWADDR, RTM_DELADDR) or len(body) < _IFADDRMSG.size:
            return
        family = body[0]
        if family not in (socket.AF_INET, socket.AF_INET6):
            return
        addr = None
        for kind, value in _attrs(body, _IFADDRMSG.size):
            if kind == IFA_LOCAL or (kind == IFA_ADDRESS and addr is None):
                addr = value
        if addr is None or len(addr) not in (4, 16):
            return
        key = (4 if len(addr) == 4 else 6, int.from_bytes(addr, "big"))
        index = struct.unpack_from("=I", body, 4)[0]
        # by interface, not counted: RTM_NEWADDR also reports a change of an address already there
        # (IPv6 DAD done, lifetimes a router advertisement refreshed)
        where = self.addresses.get(key)
        if mtype == RTM_NEWADDR:
            if where is None:
                where = self.addresses[key] = set()
            where.add(index)
            self.packed.add(bytes(addr))
        elif where is not None:
            where.discard(index)
            if not where:
                del self.addresses[key]
                self.packed.discard(bytes(addr))
        self._src_cache.clear()

    def address_in(self, networks: tuple) -> str | None:
        """One of this host's addresses inside ``networks`` (ipaddress networks), or None; cached."""
        hit = self._src_cache.get(networks, False)
        if hit is not False:
            return hit
        found = None
        for version, value in self.addresses:
            for net in networks:
                if net.version == version and int(net.network_address) <= value <= int(net.broadcast_address):
                    found = str(ipaddress.ip_address(value) if version == 4 else ipaddress.IPv6Address(value))
                    break
            if found:
                break
        if len(self._src_cache) > 4096:
            self._src_cache.clear()
        self._src_cache[networks] = found
        return found

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
