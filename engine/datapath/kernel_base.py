"""What the parts of the kernel datapath share: its error, how an SA and a
policy's users are named, and the one way a request reaches the kernel."""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from engine.datapath.kernel_socket import NetlinkRequestError, XfrmSocket

log = logging.getLogger("engine.datapath.kernel")


class KernelDatapathError(Exception):
    """The kernel refused a change, or a request cannot become kernel state.

    Whatever the call had changed before failing has been undone.
    ``errno`` is the kernel's error number when it came from the kernel.
    """

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


Holder = tuple[str, object, int | None]
"""Why a policy is installed: ("child", spi_in, kreqid), ("trap", reqid, kreqid)
or ("rule", name, None). A policy stays while it has holders."""


@dataclass(frozen=True)
class SaRef:
    daddr: str
    spi: int
    proto: int
    family: int


class XfrmRequests:
    """A NETLINK_XFRM request socket whose refusals become :class:`KernelDatapathError`."""

    _nl: XfrmSocket

    def _request(self, msg, msg_type: int, flags: int, what: str):
        try:
            return self._nl.request(msg, msg_type, flags)
        except NetlinkRequestError as exc:
            raise KernelDatapathError(f"{what}: the kernel said: {exc.strerror}", exc.errno) from None
        except TimeoutError as exc:
            raise KernelDatapathError(str(exc), errno.ETIMEDOUT) from None

    @staticmethod
    def _rollback(undo: list[Callable[[], None]]) -> None:
        for action in reversed(undo):
            try:
                action()
            except Exception as exc:  # keep undoing the rest; the first error is what the caller sees
                log.warning("rollback step failed: %s", exc)


def ip_of(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(addr)
    except ValueError:
        raise KernelDatapathError(f"{addr!r} is not an IP address") from None


def sa_text(ref: SaRef) -> str:
    proto = {50: "esp", 51: "ah"}.get(ref.proto, str(ref.proto))
    return f"{proto} spi 0x{ref.spi:08x} dst {ref.daddr}"
