"""Resolving the host names of remote_addrs for the endpoint (engine.ike.names), off the loop:
the system resolver (getaddrinfo: /etc/hosts, DNS) runs in the loop's executor, bounded in
time, one query per name at a time; the answer goes back to the endpoint on the loop."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

log = logging.getLogger("engine.runtime")

RESOLVE_TIMEOUT = 10.0
"""Seconds one name may take; then the endpoint is told it did not resolve."""


async def system_lookup(loop: asyncio.AbstractEventLoop, name: str) -> tuple[str, ...]:
    infos = await loop.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    return tuple(dict.fromkeys(info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)))


class NameResolver:
    """``ask(name)`` (the endpoint's ``names.resolve``) starts a lookup; ``answer(name, addrs)``
    is called on the loop with what it found (empty: nothing, the failure logged)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, answer: Callable[[str, tuple[str, ...]], None],
                 lookup: Callable[[asyncio.AbstractEventLoop, str], Awaitable[tuple[str, ...]]] = system_lookup
                 ) -> None:
        self._loop = loop
        self._answer = answer
        self.lookup = lookup
        self._tasks: dict[str, asyncio.Task] = {}

    def ask(self, name: str) -> None:
        key = name.lower()
        if key in self._tasks:
            return  # one query per name at a time: its answer serves every asker
        self._tasks[key] = self._loop.create_task(self._resolve(key), name=f"resolve {key}")

    async def _resolve(self, name: str) -> None:
        addrs: tuple[str, ...] = ()
        try:
            addrs = await asyncio.wait_for(self.lookup(self._loop, name), RESOLVE_TIMEOUT)
            if not addrs:
                log.warning("%s resolved to no IPv4/IPv6 address", name)
        except asyncio.TimeoutError:
            log.warning("resolving %s took over %.0f s: given up", name, RESOLVE_TIMEOUT)
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            log.warning("resolving %s failed: %s", name, exc)
        finally:
            self._tasks.pop(name, None)
        self._answer(name, addrs)

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
