"""A policy file that does not exist yet (``ipsec-console new.toml``), or one that does not
validate (a hand edit gone wrong).

No engine runs (there is no policy it could run): the console opens on the
Policies screen with the file as a new, empty document, or as it is on disk
with its findings, so it can be authored or fixed with the forms and saved.
Apply is not offered; the saved file is started with ``ipsec-console FILE``
or ``ipsec-console daemon FILE``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

from engine.events import Event, PolicyApplied
from engine.policy.model import Policy
from engine.status import StatusSnapshot

from console.runtime.base import Capabilities, CommandError, Runtime


class DraftRuntime(Runtime):
    """See the module docstring."""

    kind = "draft"

    def __init__(self, path: str | os.PathLike, *, problem: str = "") -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.problem = problem
        """Why the file on disk does not validate ("": it does not exist yet)."""
        if problem:
            self.label = f"{self.path} does not validate: no engine (fix it, save, then start it)"
        else:
            self.label = f"new file {self.path}: no engine (save it, then start it)"
        self.capabilities = Capabilities(apply_policy=False, save_policy=True, packet_samples=False,
                                         notes=("does not validate",) if problem else ("new file",))
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        self._stopped.clear()

    async def stop(self) -> None:
        self._stopped.set()

    async def status(self) -> StatusSnapshot:
        return StatusSnapshot(time.time(), (), ())

    async def events(self) -> AsyncIterator[Event]:
        await self._stopped.wait()
        return
        yield  # an async generator that ends when the console stops

    async def policy(self) -> tuple[Policy, str]:
        return Policy(path=self.path), ""

    def _refuse(self) -> None:
        why = "it does not validate: fix it, save it" if self.problem else "save it"
        raise CommandError(f"no engine runs {os.path.basename(self.path)} ({why}), then start it with "
                           f"ipsec-console {self.path}")

    async def initiate(self, name: str, child: str | None = None) -> None:
        self._refuse()

    async def terminate(self, name: str, *, unique_id: int | None = None) -> None:
        self._refuse()

    async def rekey(self, name: str, *, ike: bool = False, unique_id: int | None = None) -> None:
        self._refuse()

    async def apply_policy(self, policy: Policy, text: str | None = None) -> PolicyApplied:
        self._refuse()
