"""The lab runtime: ``ipsec-console`` with no argument.

`LabRuntime` runs the local endpoint ("hq", ``sample-configs/lab.toml``)
and the simulated peers listed in its ``[lab]`` section, each an
`EngineRuntime` with a `LabDatapath`, all in this process on 127.0.0.x
with unprivileged ports. Real IKEv2 between them, real ESP SAs, real
packets from the traffic generator: nothing leaves the machine and nothing
needs root.

The console sees only the local endpoint: `LabRuntime` offers the surface
of an `EngineRuntime` (status, connections, commands, apply_policy,
subscribe, policy) for hq, plus `label` and `kind`. The peers' log lines
stay out of hq's event stream (each runtime's log handler only takes the
records emitted while that endpoint runs, tracked with a context variable).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from pathlib import Path

from engine.datapath.lab import LabDatapath
from engine.events import (
    ChildSaDeleted,
    ChildSaInstalled,
    Event,
    ExchangeReceived,
    ExchangeSent,
    IkeSaStateChanged,
    NegotiationFailed,
    PolicyApplied,
)
from engine.policy.model import Policy
from engine.runtime.engine import EngineRuntime
from engine.status import ConnectionInfo, StatusSnapshot

log = logging.getLogger("engine.lab")

LABEL = "LAB: simulated peers on loopback, nothing leaves this machine"
PEER_RATE_SHARE = 0.5
"""Each peer generates this share of hq's rate, so traffic also starts on their side."""
HISTORY = 500
"""Recent negotiation events kept for a subscriber that arrives late (see recent_events)."""
_ENDPOINT: contextvars.ContextVar[str] = contextvars.ContextVar("lab_endpoint", default="")


def _initiates(policy: Policy) -> bool:
    return any(k.start_action == "start" for c in policy.connections for k in c.children)


class _OnlyEndpoint(logging.Filter):
    """Let through the records of one lab endpoint ("" = whatever runs outside the peers)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.endpoint = name

    def filter(self, record: logging.LogRecord) -> bool:
        return _ENDPOINT.get() == self.endpoint


class LabEndpoint:
    """One endpoint of the lab: its name, policy, runtime and datapath."""

    def __init__(self, name: str, policy: Policy, runtime: EngineRuntime, datapath: LabDatapath,
                 context: contextvars.Context) -> None:
        self.name = name
        self.policy = policy
        self.runtime = runtime
        self.datapath = datapath
        self.context = context


class LabRuntime:
    """The lab (see the module docstring). ``config``: the lab policy (default: the shipped lab.toml)."""

    kind = "lab"
    label = LABEL

    def __init__(self, config: str | Path | None = None, *, rate: float | None = None) -> None:
        if config is None:
            from engine.policy.samples import sample_path

            config = sample_path("lab.toml")
        self.config = Path(config)
        self.rate = rate
        """Generated packets per second at hq (default: the [lab] section's rate)."""
        self.local: EngineRuntime | None = None
        """hq's runtime: what the console shows."""
        self.endpoints: list[LabEndpoint] = []
        """hq first, then the peers."""
        self._history: deque[Event] = deque(maxlen=HISTORY)
        self._recorder: asyncio.Task | None = None
        self._queue: asyncio.Queue | None = None

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load the policies (PolicyError if broken), start the peers, then hq. Returns once all listen."""
        from engine.policy.parse import load_policy

        text = self.config.read_text(encoding="utf-8")
        hq = load_policy(self.config)
        if hq.engine.datapath != "lab" or hq.lab is None:
            raise ValueError(f"{self.config}: not a lab policy (needs datapath = \"lab\" and a [lab] section)")
        peers = [(Path(p).stem, load_policy(self.config.parent / p)) for p in hq.lab.peers]
        natt: dict[str, int] = {}
        for _name, pol in [("hq", hq), *peers]:
            for addr in pol.engine.listen:
                natt[addr] = pol.engine.natt_port
        rate = self.rate if self.rate is not None else hq.lab.rate
        # Whoever initiates starts after the one it talks to, so the first IKE_SA_INIT finds a
        # listening socket (a lost one would be retransmitted only after seconds): responders
        # first, then hq, then the peers that initiate towards hq.
        responders = [(n, p, None, rate * PEER_RATE_SHARE) for n, p in peers if not _initiates(p)]
        initiators = [(n, p, None, rate * PEER_RATE_SHARE) for n, p in peers if _initiates(p)]
        plan = responders + [("hq", hq, text, rate)] + initiators
        try:
            for name, pol, ptext, prate in plan:
                ctx = contextvars.copy_context()
                ctx.run(_ENDPOINT.set, "" if name == "hq" else name)
                dp = LabDatapath(pol, peer_natt=natt, rate=prate, flows=hq.lab.flows)
                rt = EngineRuntime(pol, datapath=dp, policy_text=ptext)
                ep = LabEndpoint(name, pol, rt, dp, ctx)
                if name == "hq":
                    self.endpoints.insert(0, ep)
                else:
                    self.endpoints.append(ep)
                if name == "hq":
                    self.local = rt
                    self._queue = rt.subscribe(maxsize=HISTORY * 4)
                    self._recorder = asyncio.create_task(self._record(), name="lab-history")
                # Every handle the runtime creates from here on inherits this context.
                await asyncio.get_running_loop().create_task(rt.start(), context=ctx)
                if rt._log_handler is not None:
                    rt._log_handler.addFilter(_OnlyEndpoint("" if name == "hq" else name))
        except BaseException:
            await self.stop()
            raise
        log.info("lab up: %s", ", ".join(f"{e.name} {','.join(e.policy.engine.listen)}" for e in self.endpoints))

    async def stop(self) -> None:
        """Stop hq first (its DELETEs reach the peers), then the peers."""
        for ep in list(self.endpoints):
            try:
                await asyncio.get_running_loop().create_task(ep.runtime.stop(delete=True), context=ep.context)
            except Exception:
                log.exception("stopping lab endpoint %s failed", ep.name)
        self.endpoints.clear()
        if self._recorder is not None:
            self._recorder.cancel()
            self._recorder = None
        self.local = None

    _KEEP = (NegotiationFailed, IkeSaStateChanged, ChildSaInstalled, ChildSaDeleted, ExchangeSent,
             ExchangeReceived, PolicyApplied)

    async def _record(self) -> None:
        while True:
            ev = await self._queue.get()
            if isinstance(ev, self._KEEP):
                self._history.append(ev)

    def recent_events(self) -> list[Event]:
        """hq's recent negotiation events, oldest first (a late subscriber replays these)."""
        # Events published since the recorder task last ran are still in its queue: the first
        # negotiation happens while the lab starts, and its ladder lost messages without this.
        if self._queue is not None:
            while not self._queue.empty():
                ev = self._queue.get_nowait()
                if isinstance(ev, self._KEEP):
                    self._history.append(ev)
        return list(self._history)

    # ------------------------------------------------------------ the local endpoint's surface
    def _hq(self) -> EngineRuntime:
        if self.local is None:
            raise RuntimeError("the lab is not running")
        return self.local

    @property
    def policy(self) -> Policy:
        return self._hq().policy

    @property
    def policy_text(self) -> str | None:
        return self._hq().policy_text

    @property
    def key_sinks(self) -> list:
        """hq's (see EngineRuntime.key_sinks)."""
        return self._hq().key_sinks

    @property
    def datapath(self) -> LabDatapath:
        return self.endpoints[0].datapath

    def endpoint(self, name: str) -> LabEndpoint:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise KeyError(name)

    def status(self) -> StatusSnapshot:
        return self._hq().status()

    def connections(self) -> list[ConnectionInfo]:
        return self._hq().connections()

    def initiate(self, name: str, child: str | None = None) -> None:
        self._hq().initiate(name, child)

    def terminate(self, name: str, **kw):
        """Like EngineRuntime.terminate (keyword options passed through)."""
        return self._hq().terminate(name, **kw)

    def rekey(self, name: str, *, ike: bool = False, unique_id: int | None = None) -> int:
        return self._hq().rekey(name, ike=ike, unique_id=unique_id)

    def apply_policy(self, policy: Policy, text: str | None = None) -> PolicyApplied:
        return self._hq().apply_policy(policy, text)

    def subscribe(self, maxsize: int = 10000, **kw) -> asyncio.Queue:
        """Like EngineRuntime.subscribe (keyword options, e.g. replay, passed through)."""
        return self._hq().subscribe(maxsize, **kw)

    def unsubscribe(self, q: asyncio.Queue) -> None:
        if self.local is not None:
            self.local.unsubscribe(q)

    def add_sink(self, kinds: tuple[type, ...], fn) -> None:
        """hq's (see EngineRuntime.add_sink)."""
        self._hq().add_sink(kinds, fn)

    def remove_sink(self, fn) -> None:
        if self.local is not None:
            self.local.remove_sink(fn)

    def now(self) -> float:
        return self._hq().now()

    # ------------------------------------------------------------ lab controls
    def pause_traffic(self, paused: bool = True) -> None:
        """Stop (or resume) every endpoint's generator; replies to packets in flight still go out."""
        for ep in self.endpoints:
            ep.datapath.paused = paused

    def set_rate(self, rate: float) -> None:
        """hq's generator rate in packets per second (peers follow at PEER_RATE_SHARE)."""
        for ep in self.endpoints:
            ep.datapath.generator.rate = rate if ep.runtime is self.local else rate * PEER_RATE_SHARE
