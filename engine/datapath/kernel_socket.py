"""A NETLINK_XFRM socket for blocking requests from any thread, or for events.

pyroute2's ``NetlinkSocket`` opens the socket (it knows how to do that inside
a named network namespace); we then keep a duplicate of its descriptor and
close pyroute2's wrapper, so requests, replies and multicast reads go through
a plain socket here. Why: pyroute2 0.9's sync API keeps one kernel socket and
one asyncio loop *per calling thread* and cannot even be constructed on a
thread whose event loop is running (the runtime's, Textual's), while the
runtime calls the datapath from its loop or from whichever worker is free.
A multicast subscription bound in one thread would be invisible to a read in
another. One socket, one lock and our own ACK/dump loop avoid all that (and
the per-call event-loop cost, which matters under emulation).
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import threading
import time

from engine.datapath.xfrm_netlink import (
    MSG_NAMES,
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NETLINK_XFRM,
    NLMSG_DONE,
    NLMSG_ERROR,
    SOL_NETLINK,
    NetlinkReply,
    encode_request,
    parse_messages,
    xfrm_msg,
)

NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300

RECV_BUFFER = 256 * 1024
"""Receive buffer per recv(): dump datagrams stay well below it (the kernel
sizes them from what we read, capped at 32 KiB)."""


def _open_xfrm_socket(netns: str | None) -> socket.socket:
    """A NETLINK_XFRM socket (in ``netns``), opened by pyroute2 on a thread of
    its own: its constructor runs an asyncio loop, which a thread with a
    running loop cannot."""
    result: list = []

    def work() -> None:
        try:
            from pyroute2.netlink.nlsocket import NetlinkSocket

            nl = NetlinkSocket(family=NETLINK_XFRM, netns=netns, rcvbuf=4 * 1024 * 1024)
            try:
                # pyroute2's socket property is per thread: this thread's is the one
                fd = os.dup(nl.asyncore.socket.fileno())
            finally:
                nl.close()
            result.append(socket.socket(fileno=fd))
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=work, name="xfrm-socket-open", daemon=True)
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


class NetlinkRequestError(OSError):
    """The kernel refused a request: ``errno``, and its extended-ACK text if any."""

    def __init__(self, code: int, request: str, kernel_text: str = "") -> None:
        self.request = request
        self.kernel_text = kernel_text
        super().__init__(code, os.strerror(code) + (f" ({kernel_text})" if kernel_text else ""))

    def __str__(self) -> str:
        return f"{self.request}: {self.strerror}"


class XfrmSocket:
    """One NETLINK_XFRM socket, optionally inside network namespace ``netns``.

    ``groups`` is the multicast bitmask (``1 << (XFRMNLGRP_x - 1)``); a socket
    with groups is for :meth:`read`, one without for :meth:`request`.
    """

    def __init__(self, netns: str | None = None, groups: int = 0, timeout: float = 10.0) -> None:
        self.netns = netns
        self.timeout = timeout
        sock = _open_xfrm_socket(netns)
        try:
            for opt in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):
                try:
                    sock.setsockopt(SOL_NETLINK, opt, 1)
                except OSError:
                    pass  # older kernels: plain errno without text
            sock.bind((0, groups))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._buf = bytearray(RECV_BUFFER)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._closed = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()

    # ------------------------------------------------------------ requests
    def request(self, msg: xfrm_msg, msg_type: int, flags: int = NLM_F_ACK) -> list[NetlinkReply]:
        """Send one request and return the XFRM messages of its answer.

        ``NLM_F_REQUEST`` is added. With ``NLM_F_DUMP`` it collects until
        NLMSG_DONE, otherwise until the ACK (``NLM_F_ACK`` is always set for
        non-dumps so that success is confirmed). Raises
        :class:`NetlinkRequestError` on a kernel error, ``TimeoutError`` when
        the kernel does not answer within ``timeout`` seconds.
        """
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        if not dump:
            flags |= NLM_F_ACK
        flags |= NLM_F_REQUEST
        name = MSG_NAMES.get(msg_type, str(msg_type))
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "XFRM socket is closed")
            seq = next(self._seq) % 0xFFFFFFFF + 1  # never 0: that is multicast
            self._sock.send(encode_request(msg, msg_type, flags, seq))
            deadline = time.monotonic() + self.timeout
            replies: list[NetlinkReply] = []
            while True:
                for reply in self._receive(deadline, name):
                    if reply.seq != seq:
                        continue  # a late answer to an earlier, abandoned request
                    if reply.type in (NLMSG_ERROR, NLMSG_DONE):
                        if reply.error:
                            raise NetlinkRequestError(reply.error, name, reply.error_text)
                        return replies
                    if reply.msg is not None:
                        replies.append(reply)

    def _receive(self, deadline: float, what: str) -> list[NetlinkReply]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what}: no answer from the kernel within {self.timeout:g} s")
            ready, _, _ = select.select([self._sock], [], [], remaining)
            if not ready:
                continue
            try:
                n = self._sock.recv_into(self._buf)
            except BlockingIOError:
                continue
            return list(parse_messages(memoryview(self._buf)[:n].tobytes()))

    # ------------------------------------------------------------ events
    def read(self, timeout: float | None = 0.0) -> tuple[list[NetlinkReply], bool]:
        """Multicast messages: wait up to ``timeout`` (None: forever) for the
        first datagram, then take whatever else is queued without waiting.

        Returns (messages, overrun): ``overrun`` is True when the kernel
        dropped messages because we read too slowly (ENOBUFS).
        """
        out: list[NetlinkReply] = []
        overrun = False
        with self._lock:
            if self._closed:
                return out, overrun
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
                return out, overrun
            while True:
                try:
                    n = self._sock.recv_into(self._buf)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        overrun = True
                        continue
                    raise
                out.extend(parse_messages(memoryview(self._buf)[:n].tobytes()))
        return out, overrun
