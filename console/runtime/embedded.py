"""The engine inside the console: an EngineRuntime (``ipsec-console CONFIG``)
or the lab (``ipsec-console`` with no argument) on the app's own event loop.

The engine is asyncio and sans-IO at its core, so it runs as one more task
group of the app's loop; blocking datapath work goes to threads inside the
datapath itself. Stopping the console stops the engine, which deletes its SAs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from console.runtime.base import Capabilities, CommandError, Runtime, RuntimeDisconnected, RuntimeUnavailable
from engine.events import Event, PolicyApplied
from engine.ike.errors import LocalError
from engine.ops import journal
from engine.policy.model import Policy
from engine.status import StatusSnapshot

_STOP = object()


def _message(exc: Exception) -> str:
    """A readable error: KeyError's str() is the repr of its key."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


class EmbeddedRuntime(Runtime):
    def __init__(self, config: str | os.PathLike | None, *, lab: bool = False) -> None:
        self.config = Path(config) if config is not None else None
        self.kind = "lab" if lab else "embedded"
        self._rt = None
        self._queue: asyncio.Queue | None = None
        if lab:
            from engine.runtime.lab import LABEL

            self.label = LABEL
        else:
            self.label = f"engine embedded — {self.config}"

    @classmethod
    def lab(cls, config: str | os.PathLike | None = None) -> "EmbeddedRuntime":
        """The built-in lab (sample-configs/lab.toml and its peers), or another lab policy."""
        return cls(config, lab=True)

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        from engine.pki.errors import PkiError
        from engine.policy.findings import PolicyError

        # The Logs screen shows the engine's whole log, every message included (it
        # filters by level itself); records only exist at or above the logger's level.
        engine_log = logging.getLogger("engine")
        self._old_level = engine_log.level
        engine_log.setLevel(logging.DEBUG)

        try:
            if self.kind == "lab":
                from engine.runtime.lab import LabRuntime

                rt = LabRuntime(self.config)
            else:
                rt = self._engine_runtime()
            await rt.start()
            self._queue = rt.subscribe(maxsize=20000) if self.kind == "lab" else rt.subscribe(20000, replay=True)
        except PolicyError as exc:
            first = exc.findings[0].format() if exc.findings else str(exc)
            more = f" (and {len(exc.findings) - 1} more: run ipsec-console check)" if len(exc.findings) > 1 else ""
            raise RuntimeUnavailable(f"the policy does not validate: {first}{more}") from None
        except (PkiError, OSError, ValueError) as exc:
            raise RuntimeUnavailable(str(exc)) from None
        self._rt = rt
        if self.kind == "lab":
            for event in rt.recent_events():
                self._queue.put_nowait(event)
        self.capabilities = Capabilities(
            apply_policy=True,
            save_policy=self.kind != "lab" or os.access(self.config or ".", os.W_OK),
            packet_samples=True,
            notes=("lab",) if self.kind == "lab" else (),
        )

    def _engine_runtime(self):
        from engine.policy.parse import load_policy
        from engine.runtime.daemon import make_datapath
        from engine.runtime.engine import EngineRuntime

        policy = load_policy(self.config)
        text = self.config.read_text(encoding="utf-8")
        if policy.engine.datapath in ("kernel", "userspace") and os.geteuid() != 0:
            raise RuntimeUnavailable(
                f"datapath = \"{policy.engine.datapath}\" needs root (CAP_NET_ADMIN): run with sudo, "
                "attach to a daemon with `ipsec-console attach`, or try the lab")
        return EngineRuntime(policy, datapath=make_datapath(policy), policy_text=text)

    async def stop(self) -> None:
        rt, self._rt = self._rt, None
        if self._queue is not None:
            self._queue.put_nowait(_STOP)
        if rt is not None:
            await rt.stop(delete=True) if self.kind != "lab" else await rt.stop()
        logging.getLogger("engine").setLevel(getattr(self, "_old_level", logging.NOTSET))

    def _runtime(self):
        if self._rt is None:
            raise RuntimeDisconnected("the engine is not running")
        return self._rt

    # ------------------------------------------------------------ observation
    async def status(self) -> StatusSnapshot:
        return self._runtime().status()

    async def events(self) -> AsyncIterator[Event]:
        q = self._queue
        if q is None:
            return
        while True:
            event = await q.get()
            if event is _STOP:
                return
            yield event

    async def policy(self) -> tuple[Policy, str]:
        rt = self._runtime()
        return rt.policy, rt.policy_text or ""

    # ------------------------------------------------------------ commands
    async def initiate(self, name: str, child: str | None = None) -> None:
        try:
            self._runtime().initiate(name, child)
        except (LocalError, KeyError) as exc:
            raise CommandError(_message(exc)) from None

    async def terminate(self, name: str, *, unique_id: int | None = None) -> None:
        try:
            n = self._runtime().terminate(name, unique_id=unique_id) if self.kind != "lab" \
                else self._runtime().terminate(name)
        except (LocalError, KeyError) as exc:
            raise CommandError(_message(exc)) from None
        if n == 0:
            raise CommandError(f"'{name}' has no IKE SA to terminate")

    async def rekey(self, name: str, *, ike: bool = False, unique_id: int | None = None) -> None:
        try:
            n = self._runtime().rekey(name, ike=ike, unique_id=unique_id)
        except (LocalError, KeyError) as exc:
            raise CommandError(_message(exc)) from None
        if n == 0:
            what = "IKE SA" if ike else "CHILD SA"
            raise CommandError(f"'{name}' has no established {what} to rekey")

    async def apply_policy(self, policy: Policy, text: str | None = None) -> PolicyApplied:
        from engine.pki.errors import PkiError

        runtime = self._runtime()
        old_text = runtime.policy_text
        try:
            applied = runtime.apply_policy(policy, text)
        except (ValueError, PkiError, LocalError) as exc:
            raise CommandError(f"not applied: {exc}") from None
        journal.record_applied(policy, applied, old_text=old_text, new_text=text, via="console")
        return applied
