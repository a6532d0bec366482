"""UDP sockets for IKE (ike_port) and NAT-T (natt_port) on each listen
address, read with loop.add_reader. Wildcard sockets learn the local
address of each datagram from IP_PKTINFO, which NAT detection needs."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("engine.runtime")

Addr = tuple[str, int]
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
MAX_DATAGRAM = 65535


class UdpEndpoint:
    """One bound socket."""

    def __init__(self, sock: socket.socket, addr: str, port: int) -> None:
        self.sock = sock
        self.addr = addr
        self.port = port
        self.wildcard = addr in ("0.0.0.0", "::")
        self.family = sock.family


class UdpSockets:
    def __init__(self, on_datagram: Callable[[bytes, Addr, Addr], None]) -> None:
        self.on_datagram = on_datagram
        self.endpoints: list[UdpEndpoint] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.prepare: Callable[[socket.socket], None] | None = None
        """Called on each new socket (the kernel datapath adds its IPsec bypass)."""

    def open(self, addresses: list[str], ports: list[int]) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            for addr in addresses:
                for port in ports:
                    self._open_one(addr, port)
        except OSError:
            self.close()
            raise

    def _open_one(self, addr: str, port: int) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            sock.setblocking(False)
            if self.prepare is not None:
                self.prepare(sock)
            sock.bind((addr, port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {addr} port {port}: {exc.strerror}") from None
        ep = UdpEndpoint(sock, addr, sock.getsockname()[1])
        self.endpoints.append(ep)
        self._loop.add_reader(sock.fileno(), self._readable, ep)
        log.info("listening on %s port %d", addr, ep.port)

    def _readable(self, ep: UdpEndpoint) -> None:
        for _ in range(64):  # bounded: let other work run under a flood
            try:
                data, anc, _flags, src = ep.sock.recvmsg(MAX_DATAGRAM, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("recv on %s:%d: %s", ep.addr, ep.port, exc)
                return
            local = ep.addr
            if ep.wildcard:
                local = _pktinfo_dst(anc, ep.family) or ep.addr
            try:
                self.on_datagram(data, (local, ep.port), (src[0], src[1]))
            except Exception:  # one bad datagram must never kill the socket reader
                log.exception("error handling a datagram from %s:%d", src[0], src[1])

    def send(self, data: bytes, local: Addr, remote: Addr) -> None:
        ep = self._pick(local, remote)
        if ep is None:
            log.warning("no socket for %s:%d -> %s:%d", local[0], local[1], remote[0], remote[1])
            return
        try:
            ep.sock.sendto(data, remote)
        except (BlockingIOError, InterruptedError):
            log.debug("send buffer full, dropped a datagram to %s:%d", *remote)
        except OSError as exc:
            log.warning("send to %s:%d failed: %s", remote[0], remote[1], exc)

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

    def socket_for(self, local: Addr) -> socket.socket | None:
        ep = self._pick(local, ("::" if ":" in local[0] else "0.0.0.0", 0))
        return ep.sock if ep else None

    def close(self) -> None:
        for ep in self.endpoints:
            if self._loop is not None:
                self._loop.remove_reader(ep.sock.fileno())
            ep.sock.close()
        self.endpoints.clear()


def _pktinfo_dst(anc, family) -> str | None:
    for level, ctype, data in anc:
        if family == socket.AF_INET and level == socket.IPPROTO_IP and ctype == IP_PKTINFO and len(data) >= 12:
            # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
            return socket.inet_ntop(socket.AF_INET, data[8:12])
        if family == socket.AF_INET6 and level == socket.IPPROTO_IPV6 and ctype == IPV6_PKTINFO and len(data) >= 16:
            return socket.inet_ntop(socket.AF_INET6, data[:16])
    return None

