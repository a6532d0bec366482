"""The runtime seam: the one interface every console screen talks to.

Three implementations sit behind it and the screens never know which:

* ``embedded`` / ``lab`` — the engine runs in a worker of the app
  (``console.runtime.embedded``; the lab is the embedded engine on the
  built-in lab policy, both ends on loopback);
* ``attached`` — a daemon's control socket, JSON lines
  (``console.runtime.attached``); stopping only disconnects, tunnels stay up;
* ``fake`` — scripted and deterministic, for tests (``console.runtime.fake``).

Rules every implementation keeps (the console relies on them):

* All methods are coroutines run on the app's event loop; none may block it
  (blocking work goes to a thread: ``asyncio.to_thread``).
* ``status()`` returns a fresh immutable ``StatusSnapshot``; it is polled
  about once a second and never called twice at the same time.
* ``events()`` is an async iterator consumed by exactly one task (the
  bridge); it ends (``StopAsyncIteration``) when the runtime stops, and
  raises ``RuntimeDisconnected`` when the engine or daemon is lost.
* Commands raise ``CommandError`` for a refusal the admin should read
  (unknown connection, nothing to rekey, daemon said no). They return once
  the engine accepted the command, not when the exchange finished: the
  outcome arrives as events.
* ``apply_policy`` is all-or-nothing: it raises ``engine.policy.PolicyError``
  (or ``CommandError``) and nothing changed, or it returns the
  ``PolicyApplied`` event describing which connections were added, removed
  and changed; only those are touched (unrelated SAs stay up).
* No secret crosses this seam towards the screens except inside the
  ``Policy`` object itself (``Secret`` values, which never render).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from engine.events import Event, PolicyApplied
from engine.policy.model import Policy
from engine.status import StatusSnapshot

RuntimeKind = Literal["lab", "embedded", "attached", "fake", "draft"]


class RuntimeProblem(Exception):
    """Base of the errors a runtime raises towards the console."""


class CommandError(RuntimeProblem):
    """The runtime refused a command; the message is shown to the admin as is."""


class RuntimeDisconnected(RuntimeProblem):
    """The engine worker died or the daemon's control socket closed."""


class RuntimeUnavailable(RuntimeProblem):
    """This runtime cannot start here (missing engine piece, no daemon, no root).

    ``console.app.main`` prints the message as one line and exits non-zero.
    """


@dataclass(frozen=True)
class Capabilities:
    """What the screens may offer with this runtime."""

    apply_policy: bool = True
    """The runtime can swap the running policy (the Policies screen's Apply)."""
    save_policy: bool = True
    """The policy file is local and writable by this process (Save)."""
    packet_samples: bool = True
    """The datapath sends ``PacketSample`` events (the Packets screen)."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Short remarks the header may show, e.g. ``("read-only",)``."""


class Runtime(abc.ABC):
    """The console's only door to an engine. See the module docstring for the rules."""

    kind: RuntimeKind
    """``lab``, ``embedded``, ``attached`` or ``fake``."""
    label: str
    """What the header shows, e.g. ``LAB — simulated peers on loopback``."""
    capabilities: Capabilities = Capabilities()

    # -- life cycle -------------------------------------------------------------
    @abc.abstractmethod
    async def start(self) -> None:
        """Start the engine or connect to the daemon. Raises RuntimeUnavailable."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the embedded engine (deleting its SAs) or, when attached, only disconnect."""

    # -- observation ------------------------------------------------------------
    @abc.abstractmethod
    async def status(self) -> StatusSnapshot:
        """A fresh snapshot of connections, IKE SAs and CHILD SAs with counters."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[Event]:
        """Engine events in order, from now on (see engine.events).

        The runtime should first replay what a fresh subscriber needs to make
        sense of the current state: recent ``LogMessage``/``Exchange*``/
        ``NegotiationFailed`` events it still remembers (bounded), oldest first.
        """

    @abc.abstractmethod
    async def policy(self) -> tuple[Policy, str]:
        """The running policy and the text of its file (``""`` when it has none).

        The text is the policy file only: secrets live in their own file and
        never travel here as text.
        """

    # -- commands ---------------------------------------------------------------
    @abc.abstractmethod
    async def initiate(self, name: str, child: str | None = None) -> None:
        """Bring connection ``name`` up (only CHILD config ``child`` if given)."""

    @abc.abstractmethod
    async def terminate(self, name: str, *, unique_id: int | None = None) -> None:
        """Delete the IKE SAs of ``name`` (only IKE SA ``unique_id`` if given) and their CHILD SAs."""

    @abc.abstractmethod
    async def rekey(self, name: str, *, ike: bool = False, unique_id: int | None = None) -> None:
        """Rekey connection ``name``.

        ``ike=False``: its CHILD SAs, or only CHILD SA ``unique_id`` (a
        ``ChildSaInfo.unique_id``). ``ike=True``: its IKE SA, or only IKE SA
        ``unique_id`` (an ``IkeSaInfo.unique_id``).
        """

    @abc.abstractmethod
    async def apply_policy(self, policy: Policy, text: str | None = None) -> PolicyApplied:
        """Make ``policy`` the running one, touching only changed connections.

        ``text`` is the file text it was parsed from (kept so ``policy()`` gives
        it back). Raises ``engine.policy.PolicyError`` or ``CommandError``;
        then nothing changed.
        """
