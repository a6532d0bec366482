"""UDP sockets for IKE (ike_port) and NAT-T (natt_port) on each listen
address, read with loop.add_reader. Wildcard sockets learn the local
address of each datagram from IP_PKTINFO, which NAT detection needs.

The sockets read with UDP_GRO (Linux 5.0+): a burst of equal-sized
datagrams from one peer (ESP-in-UDP under load) comes up in one read and is
split here, each datagram handled on its own as before. The NAT-T socket of a
datapath that takes ESP-in-UDP itself (``esp_sink``) reads with ``recvmmsg``
(engine.datapath.mmsg), up to UDP_SLOTS datagrams (or GRO batches) per
system call: what a peer without UDP GSO (charon) sends arrives one
datagram at a time, and one ``recvmsg`` each was a system call per
datagram. A datapath may ask
for DF on every datagram (``prepare``); an IKE message larger than the path
then fails with EMSGSIZE and is sent again once with fragmentation allowed,
as it would have been without DF."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import sys
import time
from collections import deque
from collections.abc import Callable

from engine.datapath import mmsg
from engine.ike.front_door import RateLimit

log = logging.getLogger("engine.runtime")

Addr = tuple[str, int]
IP_PKTINFO = mmsg.IP_PKTINFO
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = mmsg.IPV6_PKTINFO
MAX_DATAGRAM = 65535
READ_BATCH_SECONDS = 0.004
"""A readable socket is read for about this long at most per turn of the loop; what one recvmmsg
read beyond it waits for the next turns (UdpEndpoint.pending)."""
_clock = time.perf_counter
SOL_UDP = 17
UDP_GRO = 104
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
PMTUDISC_DONT = 0
DATAGRAM_ERRORS = "datagram_errors"
"""The IKE counter (stats, counters, metrics ``ike_messages_total``) of datagrams whose handling raised."""
ERROR_LOG_RATE = 0.1
ERROR_LOG_BURST = 5.0
"""Datagram handling errors logged (with a traceback): a burst of 5, then one every 10 s at most."""
UDP_SLOTS = 32
"""Datagrams (or GRO batches) per recvmmsg call on a NAT-T socket."""
UDP_CALLS = 4
"""recvmmsg calls per readiness callback at most (and READ_BATCH_SECONDS)."""
CONTROL_SIZE = 96
"""Bytes of control messages per datagram: IP(V6)_PKTINFO and UDP_GRO's segment size."""


class UdpEndpoint:
    """One bound socket."""

    def __init__(self, sock: socket.socket, addr: str, port: int) -> None:
        self.sock = sock
        self.addr = addr
        self.port = port
        self.wildcard = addr in ("0.0.0.0", "::")
        self.family = sock.family
        self.batch: mmsg.MmsgReceiver | None = None
        """recvmmsg reader of the NAT-T socket when a datapath takes ESP-in-UDP itself."""
        self.pending: deque | None = None
        """(datagram, local, remote) read but not handled yet: a recvmmsg batch of IKE messages can
        be tens of milliseconds of work, so past READ_BATCH_SECONDS the rest waits for the next turns
        of the loop (the socket is not read meanwhile, so order holds)."""


class UdpSockets:
    def __init__(self, on_datagram: Callable[[bytes, Addr, Addr], None]) -> None:
        self.on_datagram = on_datagram
        self.endpoints: list[UdpEndpoint] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.prepare: Callable[[socket.socket], None] | None = None
        """Called on each new socket (the kernel datapath adds its IPsec bypass)."""
        self.esp_sink: Callable[[list, Addr, Addr], None] | None = None
        """Takes the ESP-in-UDP datagrams of one read on the NAT-T port at once (a datapath that
        decrypts in userspace); without it each goes through ``on_datagram``."""
        self.natt_port = 0
        self.handler_errors = 0
        """Datagrams whose handling raised (an engine bug; the reader goes on)."""
        self.count: Callable[[str], None] | None = None
        """Also counts them where the status and metrics show counters (the runtime points it at the
        IKE endpoint's: ``datagram_errors``)."""
        self._error_log = RateLimit(rate=ERROR_LOG_RATE, burst=ERROR_LOG_BURST)
        self._errors_unlogged = 0
        self._sources: dict[tuple[str, int], list] = {}
        """(source address, socket family) -> the IP_PKTINFO ancillary data that sends from it on a
        wildcard socket of that family."""

    def open(self, addresses: list[str], ports: list[int]) -> None:
        self._loop = asyncio.get_running_loop()
        bound = bind_addresses(addresses)
        for addr in dict.fromkeys(addresses):
            if addr not in bound and not ipaddress.ip_address(addr).is_unspecified:
                _must_be_local(addr)  # a wildcard covers it only if the machine has it
        try:
            for addr in bound:
                for port in ports:
                    self._open_one(addr, port)
        except OSError:
            self.close()
            raise

    def _open_one(self, addr: str, port: int) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:  # (EAFNOSUPPORT: a kernel booted with ipv6.disable=1) said with the address
            raise OSError(exc.errno, f"cannot listen on {addr} port {port}: {exc.strerror}") from None
        try:
            # No SO_REUSEADDR: on UDP it lets a second process bind the same address and port, and
            # the kernel then hands every datagram to the newest socket, so the first one silently
            # stops receiving (ESP and IKE lost, no counter anywhere). A busy port must be an error.
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            sock.setblocking(False)
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            except OSError as exc:  # a kernel before 5.0: one datagram per read
                log.debug("no UDP_GRO on %s port %d: %s", addr, port, exc)
            if self.prepare is not None:
                self.prepare(sock)
            sock.bind((addr, port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {addr} port {port}: {exc.strerror}") from None
        ep = UdpEndpoint(sock, addr, sock.getsockname()[1])
        self.endpoints.append(ep)
        if self.esp_sink is not None and port == self.natt_port and port and mmsg.recv_available:
            ep.batch = mmsg.MmsgReceiver(sock, UDP_SLOTS, names=True, control=CONTROL_SIZE)
            self._loop.add_reader(sock.fileno(), self._readable_batch, ep)
        else:
            self._loop.add_reader(sock.fileno(), self._readable, ep)
        log.info("listening on %s port %d", addr, ep.port)

    def _readable(self, ep: UdpEndpoint) -> None:
        recvmsg = ep.sock.recvmsg
        on_datagram = self.on_datagram
        clock = _clock
        until = clock() + READ_BATCH_SECONDS
        for _ in range(64):  # bounded: let other work run under a flood
            # ...in time too: 64 handshake messages are tens of milliseconds of work, which every
            # timer (and the other socket) would wait for. What is left is read on the next turn.
            if clock() > until:
                return
            try:
                data, anc, _flags, src = recvmsg(MAX_DATAGRAM, 96)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("recv on %s:%d: %s", ep.addr, ep.port, exc)
                return
            local = ep.addr
            size = 0
            for level, ctype, cdata in anc:
                if level == SOL_UDP and ctype == UDP_GRO and len(cdata) >= 4:
                    size = int.from_bytes(cdata[:4], sys.byteorder)
                elif ep.wildcard:
                    local = _pktinfo_dst(((level, ctype, cdata),), ep.family) or local
            where = (local, ep.port)
            peer = (src[0], src[1])
            try:
                if size and len(data) > size:
                    # Several datagrams joined by GRO: each on its own, in order.
                    datagrams = [data[off:off + size] for off in range(0, len(data), size)]
                else:
                    datagrams = (data,)
                sink = self.esp_sink
                if sink is not None and ep.port == self.natt_port:
                    # ESP (a non-zero SPI where IKE has its zero marker) goes to the datapath in one
                    # call, still in order with any IKE between.
                    esp = []
                    for d in datagrams:
                        if len(d) >= 16 and d[0] | d[1] | d[2]:
                            esp.append(d)
                            continue
                        if esp:
                            sink(esp, where, peer)
                            esp = []
                        on_datagram(d, where, peer)
                    if esp:
                        sink(esp, where, peer)
                else:
                    for d in datagrams:
                        on_datagram(d, where, peer)
            except Exception:  # one bad datagram must never kill the socket reader
                self._handler_error(src)

    def _handler_error(self, src) -> None:
        """Count a datagram whose handling raised, and log it with its traceback, rate-limited: a peer
        that found an input the engine chokes on must not fill the log (the count says how many)."""
        self.handler_errors += 1
        if self.count is not None:
            self.count(DATAGRAM_ERRORS)
        if not self._error_log.allow(time.monotonic()):
            self._errors_unlogged += 1
            return
        unlogged, self._errors_unlogged = self._errors_unlogged, 0
        log.exception("error handling a datagram from %s:%d (%d more since the last one logged, %d in all)",
                      src[0], src[1], unlogged, self.handler_errors)

    def _readable_batch(self, ep: UdpEndpoint) -> None:
        """`_readable` with recvmmsg (the NAT-T socket of a datapath with an ``esp_sink``)."""
        rx = ep.batch
        clock = _clock
        until = clock() + READ_BATCH_SECONDS
        for _ in range(UDP_CALLS):
            if clock() > until:
                return
            try:
                count = rx.recv()
            except OSError as exc:
                log.debug("recvmmsg on %s:%d: %s", ep.addr, ep.port, exc)
                return
            if count:
                self._handle_batch(ep, rx, count, until)
                if ep.pending is not None:
                    return  # out of time within this read: the rest in the next turns (_resume)
            if count < rx.slots:
                return

    def _handle_batch(self, ep: UdpEndpoint, rx: mmsg.MmsgReceiver, count: int, until: float) -> None:
        """The datagrams of one recvmmsg, in order: ESP to the sink in runs from one peer to one
        local address, anything else (IKE) one by one through ``on_datagram``; once an IKE message
        ends past ``until``, the rest goes to ``ep.pending`` for the next turns of the loop."""
        sink = self.esp_sink
        on_datagram = self.on_datagram
        port = ep.port
        view = rx.view
        esp: list = []
        esp_at = None
        last_name = last_control = None
        peer = where = None
        size = 0
        deferred: deque | None = None
        for i, n in enumerate(rx.lengths(count)):
            try:
                name = rx.name(i)
                if name != last_name:
                    last_name = name
                    peer = mmsg.parse_sockaddr(name)
                control = rx.control(i)
                if control != last_control:
                    # The same local address and GRO size as the previous datagram's, mostly.
                    last_control = control
                    local = ep.addr
                    size = 0
                    for level, ctype, cdata in mmsg.cmsgs(control):
                        if level == SOL_UDP and ctype == UDP_GRO and len(cdata) >= 4:
                            size = int.from_bytes(cdata[:4], sys.byteorder)
                        elif ep.wildcard:
                            local = _pktinfo_dst(((level, ctype, cdata),), ep.family) or local
                    where = (local, port)
                if peer is None:
                    continue  # not an IPv4/IPv6 source: not for us
                at = i * mmsg.RECV_SLOT
                if size and n > size:
                    # Several datagrams joined by GRO: each on its own, in order.
                    datagrams = [bytes(view[at + off:at + min(off + size, n)]) for off in range(0, n, size)]
                else:
                    datagrams = (bytes(view[at:at + n]),)
                for d in datagrams:
                    if deferred is not None:
                        deferred.append((d, where, peer))
                        continue
                    if len(d) >= 16 and d[0] | d[1] | d[2]:
                        # ESP (a non-zero SPI where IKE has its zero marker): to the datapath in runs.
                        if esp and esp_at != (where, peer):
                            sink(esp, *esp_at)
                            esp = []
                        esp.append(d)
                        esp_at = (where, peer)
                        continue
                    if esp:
                        sink(esp, *esp_at)
                        esp = []
                    on_datagram(d, where, peer)
                    if _clock() > until:
                        deferred = deque()
            except Exception:  # one bad datagram must never kill the socket reader
                esp = []
                self._handler_error(peer or ("?", 0))
        if esp:
            try:
                sink(esp, *esp_at)
            except Exception:  # noqa: BLE001 - as above
                self._handler_error(esp_at[1])
        if deferred:
            ep.pending = deferred
            self._loop.remove_reader(ep.sock.fileno())
            self._loop.call_soon(self._resume, ep)

    def _resume(self, ep: UdpEndpoint) -> None:
        """Datagrams a read left for later (``ep.pending``), in order, READ_BATCH_SECONDS per turn of
        the loop; the socket is read again once none is left."""
        pending = ep.pending
        if pending is None or ep.sock.fileno() < 0:
            return  # closed meanwhile
        until = _clock() + READ_BATCH_SECONDS
        sink, on_datagram = self.esp_sink, self.on_datagram
        esp: list = []
        esp_at = None
        while pending:
            d, where, peer = pending.popleft()
            try:
                if sink is not None and len(d) >= 16 and d[0] | d[1] | d[2]:
                    if esp and esp_at != (where, peer):
                        sink(esp, *esp_at)
                        esp = []
                    esp.append(d)
                    esp_at = (where, peer)
                    continue
                if esp:
                    sink(esp, *esp_at)
                    esp = []
                on_datagram(d, where, peer)
            except Exception:  # noqa: BLE001 - one bad datagram must never stop the reader
                esp = []
                self._handler_error(peer)
            if pending and _clock() > until:
                break
        if esp:
            try:
                sink(esp, *esp_at)
            except Exception:  # noqa: BLE001 - as above
                self._handler_error(esp_at[1])
        if pending:
            self._loop.call_soon(self._resume, ep)
            return
        ep.pending = None
        self._loop.add_reader(ep.sock.fileno(), self._readable_batch, ep)

    def send(self, data: bytes, local: Addr, remote: Addr) -> None:
        ep = self._pick(local, remote)
        if ep is None:
            log.warning("no socket for %s:%d -> %s:%d", local[0], local[1], remote[0], remote[1])
            return
        try:
            self._sendto(ep, data, local[0], remote)
        except (BlockingIOError, InterruptedError):
            log.debug("send buffer full, dropped a datagram to %s:%d", *remote)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE and self._send_fragmentable(ep, data, local[0], remote):
                return
            log.warning("send to %s:%d failed: %s", remote[0], remote[1], exc)

    def _sendto(self, ep: UdpEndpoint, data: bytes, source: str, remote: Addr) -> None:
        """Send from ``source``: on a wildcard socket the kernel would pick the source from the route
        (on loopback 127.0.0.1 for any 127.x.y.z), so an answer to a request sent to one of our
        addresses names that address in IP_PKTINFO, as charon's wildcard sockets do."""
        if ep.wildcard and source != ep.addr:
            anc = self._source_anc(ep, source)
            if anc:
                ep.sock.sendmsg([data], anc, 0, remote)
                return
        ep.sock.sendto(data, remote)

    def _source_anc(self, ep: UdpEndpoint, source: str) -> list:
        key = (source, ep.family)  # the same address on the other family's wildcard gives []
        anc = self._sources.get(key)
        if anc is None:
            anc = mmsg.source_pktinfo(source, ep.family)
            if len(self._sources) >= 256:  # our own addresses: a few; bounded all the same
                self._sources.clear()
            self._sources[key] = anc
        return anc

    def _send_fragmentable(self, ep: UdpEndpoint, data: bytes, source: str, remote: Addr) -> bool:
        """Send one datagram with IP fragmentation allowed, on a socket that otherwise sets DF
        (an IKE message larger than the path); True when it went out."""
        level, opt = (socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER) if ep.family == socket.AF_INET6 \
            else (socket.IPPROTO_IP, IP_MTU_DISCOVER)
        try:
            before = ep.sock.getsockopt(level, opt)
            ep.sock.setsockopt(level, opt, PMTUDISC_DONT)
            try:
                self._sendto(ep, data, source, remote)
            finally:
                ep.sock.setsockopt(level, opt, before)
        except OSError as exc:
            log.warning("send to %s:%d failed: %s", remote[0], remote[1], exc)
            return True
        return True

    def _pick(self, local: Addr, remote: Addr) -> UdpEndpoint | None:
        family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
        fallback = None
        for ep in self.endpoints:
            if ep.port != local[1] or ep.family != family:
                continue
            if ep.addr == local[0]:
                return ep
            if ep.wildcard:
                fallback = ep
        return fallback

    def source_for(self, remote: str) -> str | None:
        """The address the kernel would send from towards ``remote``: a route lookup on a socket
        prepared as ours (marks, bypass), by connect() on UDP, which sends nothing."""
        family = socket.AF_INET6 if ":" in remote else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                if self.prepare is not None:
                    self.prepare(s)
                s.connect((remote, 9))
                return s.getsockname()[0]
        except OSError as exc:
            log.debug("no route to %s for a source address: %s", remote, exc)
            return None

    def socket_for(self, local: Addr) -> socket.socket | None:
        ep = self._pick(local, ("::" if ":" in local[0] else "0.0.0.0", 0))
        return ep.sock if ep else None

    def source_control(self, local: Addr) -> list:
        """The ancillary data that makes a datagram sent on `socket_for` ``local``'s socket leave from
        ``local``'s address, as `send` does for IKE: IP_PKTINFO / IPV6_PKTINFO on a wildcard socket
        (the route would pick the source, and a NAT in front of the peer lets in only what comes from
        the address the peer sent to); [] on a socket bound to that address, whose datagrams need no
        control message."""
        ep = self._pick(local, ("::" if ":" in local[0] else "0.0.0.0", 0))
        if ep is None or not ep.wildcard or local[0] == ep.addr:
            return []
        return list(self._source_anc(ep, local[0]))

    def close(self) -> None:
        for ep in self.endpoints:
            if self._loop is not None:
                self._loop.remove_reader(ep.sock.fileno())
            ep.pending = None
            ep.sock.close()
        self.endpoints.clear()


def bind_addresses(addresses: list[str]) -> list[str]:
    """The addresses to bind, in the order given: each once, and none that a wildcard of its family in
    the list already covers. Without SO_REUSEADDR, 0.0.0.0 and 192.0.2.1 on one port cannot both be
    bound (EADDRINUSE); the wildcard alone receives what is sent to 192.0.2.1 too and learns that
    address from IP_PKTINFO, as charon's wildcard sockets do. IPv6 sockets are IPV6_V6ONLY, so ``::``
    covers IPv6 addresses only and 0.0.0.0 IPv4 ones only. Says once, at INFO, what was left out."""
    parsed = [(text, ipaddress.ip_address(text)) for text in addresses]
    wildcards = {ip.version: str(ip) for _text, ip in parsed if ip.is_unspecified}
    out: list[str] = []
    seen: set = set()
    covered: dict[str, list[str]] = {}
    for text, ip in parsed:
        if ip in seen:
            continue
        seen.add(ip)
        if ip.is_unspecified:
            out.append(str(ip))  # "::0" too is a wildcard (UdpEndpoint.wildcard, IPV6_PKTINFO)
        elif ip.version in wildcards:
            covered.setdefault(wildcards[ip.version], []).append(text)
        else:
            out.append(text)
    for wildcard, texts in covered.items():
        log.info("listen: %s already receives what is sent to %s; binding %s only for IPv%d", wildcard,
                 ", ".join(texts), wildcard, 6 if ":" in wildcard else 4)
    return out


def _must_be_local(addr: str) -> None:
    """Raise the error binding ``addr`` alone would give (EADDRNOTAVAIL when the machine does not have
    it): listed beside a wildcard it is not bound, and answers from it would fail at each send."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((addr, 0))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {addr}: {exc.strerror}") from None


def _pktinfo_dst(anc, family) -> str | None:
    for level, ctype, data in anc:
        if family == socket.AF_INET and level == socket.IPPROTO_IP and ctype == IP_PKTINFO and len(data) >= 12:
            # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
            return socket.inet_ntop(socket.AF_INET, data[8:12])
        if family == socket.AF_INET6 and level == socket.IPPROTO_IPV6 and ctype == IPV6_PKTINFO and len(data) >= 16:
            return socket.inet_ntop(socket.AF_INET6, data[:16])
    return None

