"""systemd's notify protocol (sd_notify(3)), spoken directly: one datagram per
state change to the unix socket named by ``$NOTIFY_SOCKET``, no library.

With ``Type=notify`` systemd considers the daemon started when ``READY=1``
arrives; ``RELOADING=1`` (with ``MONOTONIC_USEC``) and ``READY=1`` bracket a
reload, ``STOPPING=1`` announces the shutdown, ``STATUS=`` is the one line
``systemctl status`` shows, and ``WATCHDOG=1`` pings the watchdog when
``WatchdogSec=`` is set. Without ``$NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("engine.daemon")


class Notifier:
    """Sends sd_notify messages for this process (see the module docstring)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket; anything else but an absolute path (vsock:...) is not ours.
        self.address = "\0" + path[1:] if path.startswith("@") else path if path.startswith("/") else None
        self.watchdog_interval = self._watchdog(env)

    @staticmethod
    def _watchdog(env: Mapping[str, str]) -> float | None:
        """Half the watchdog timeout in seconds when systemd watches this very process, else None."""
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        pid = env.get("WATCHDOG_PID")
        if usec <= 0 or (pid and pid != str(os.getpid())):
            return None
        return usec / 2e6

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram with ``fields`` (``"READY=1"``, ``"STATUS=..."``), newline-separated.
        Returns whether it was sent; a failure is logged, never raised: systemd's absence must not
        stop the engine."""
        if self.address is None:
            return False
        data = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(data, self.address)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address.lstrip("\0"), exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (253+, Type=notify-reload) match this to its reload request.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                         "STATUS=reloading the policy")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=deleting SAs and stopping")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")
