"""The asyncio runtime: sockets, the one timer, the datapath and the
subscribers around one sans-IO IkeEndpoint.

One loop per event, as in aioquic's asyncio protocol: receive -> drain
events -> transmit -> re-arm a single ``loop.call_at`` timer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import NamedTuple

from engine import logsafe
from engine.crypto.keypool import KeyPool
from engine.datapath.base import Datapath, NullDatapath
from engine.events import (
    AcquireRequested,
    ChildSaDeleted,
    ChildSaInstalled,
    ChildSaMoved,
    DpdTimeout,
    Event,
    ExchangeReceived,
    ExchangeSent,
    IkeSaStateChanged,
    LogMessage,
    NatMappingChanged,
    NegotiationFailed,
    PolicyApplied,
    RekeyRequested,
    SaCounters,
    TrapRequested,
    VirtualIpsChanged,
)
from engine.ike import names
from engine.ike.endpoint import IkeEndpoint
from engine.policy.model import Policy
from engine.runtime.randomness import RandomBytes
from engine.runtime.reporting import SCAN_CHUNK, Reporting
from engine.runtime import listening
from engine.runtime.crlfetch import CrlFetcher
from engine.runtime.evolve import evolve
from engine.runtime.resolver import NameResolver, system_lookup
from engine.runtime.retention import QUEUE_BYTES, QUEUE_EVENTS, EventHistory, Subscription, event_size, keyless, \
    summary_size
from engine.runtime.udp import UdpSockets
from engine.runtime.wallclock import MOVED, to_wall_clock
from engine.slicing import Steps
from engine.wire.natt import classify_natt

log = logging.getLogger("engine.runtime")

ROAM_INTERVAL = 1.0
"""Seconds between looks at our source addresses (MOBIKE clients follow a change within this)."""
SHUTDOWN_GRACE = 2.0
KEY_POOL_IDLE = 0.005
"""Seconds without an IKE datagram after which the loop counts as idle and the key pool is filled."""
KEY_POOL_STEP = 4
"""Key pairs made per step of filling (X25519: ~0.1 ms; P-521: ~1 ms)."""
_REPLAYED = (IkeSaStateChanged, ExchangeSent, ExchangeReceived, ChildSaInstalled, ChildSaDeleted,
             NegotiationFailed, DpdTimeout, PolicyApplied, LogMessage, VirtualIpsChanged, ChildSaMoved)
_LOUD = ("WARNING", "ERROR", "CRITICAL")
_SUMMARIES = (ExchangeSent, ExchangeReceived)
_NOT_FOR_DATAPATH = frozenset({ExchangeSent, ExchangeReceived, IkeSaStateChanged})


class Terminated(NamedTuple):
    """What a terminate did: IKE SAs deleted, whether a failed connection's pending attempt
    (keyingtries) was cancelled, and the host name an initiation that was cancelled waited for."""

    deleted: int
    retry_stopped: bool
    resolving: str | None = None
    untrapped: tuple[str, ...] = ()
    """Children whose trap close_action/dpd_action = trap had installed was removed."""


class EngineRuntime(Reporting):
    """Runs an IkeEndpoint for one policy. Commands are plain methods; their
    results arrive as events to subscribers."""

    def __init__(self, policy: Policy, *, datapath: Datapath | None = None, policy_text: str | None = None,
                 fragment_size: int | None = None, lookup=system_lookup) -> None:
        self.policy = policy
        self.policy_text = policy_text
        self.endpoint = IkeEndpoint(policy, fragment_size=fragment_size, credentials=_credentials(policy),
                                    rng=RandomBytes())
        self.datapath: Datapath = datapath or NullDatapath()
        self.sockets = UdpSockets(self._on_datagram)
        self._subscribers: list[Subscription] = []
        self._sinks: list[tuple[tuple[type, ...], Callable[[Event], None]]] = []
        self._routes: dict[type, tuple[bool, bool, list[Subscription], list[Callable[[Event], None]], bool, bool,
                                       bool]] = {}
        """Event class -> (kept in the history, is a LogMessage, its subscribers, its sinks, is a message
        summary, has engine-clock times, carries keys): see publish()."""
        self._log_read: bool | None = None  # see log_read()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counters_task: asyncio.Task | None = None
        self._roam_task: asyncio.Task | None = None
        self._lookup = lookup
        """How host names in remote_addrs are resolved (engine.runtime.resolver; tests inject one)."""
        self._resolver: NameResolver | None = None
        self._names_task: asyncio.Task | None = None
        self._log_handler: _EventLogHandler | None = None
        self.started_at = time.time()
        self._counters: dict[tuple[int, str], SaCounters] = {}
        self.key_sinks: list[Callable[[ChildSaInstalled], None]] = []
        """Called with each ChildSaInstalled, keys included, right after the datapath got it
        (``save_keys``): the only way keys leave the runtime, as history and queues hold none."""
        self.key_pool = KeyPool(_pooled_groups(policy))
        """Key pairs for IKE_SA_INIT as responder, made while the loop is idle (see _fill_pool)."""
        self.endpoint.key_pool = self.key_pool
        self._datagrams = 0
        """IKE datagrams received so far: the key pool is filled only when this stood still."""
        self._pool_seen = 0
        self._pool_timer: asyncio.TimerHandle | None = None
        self.crl_fetcher = CrlFetcher(self._crl_updated)
        """CRLs from certificates' distribution points (engine.runtime.crlfetch), fetched in the
        background; an IKE_AUTH request held for one is taken again when its fetch ends."""
        self.history = EventHistory()
        """Recent negotiation events, replayed to late subscribers (the attached console);
        bounded in count and bytes, without keys (engine.runtime.retention)."""

    # ------------------------------------------------------------ lifecycle
    def now(self) -> float:
        # asyncio's clock is time.monotonic(): the same numbers before the loop runs.
        return self._loop.time() if self._loop is not None else time.monotonic()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.endpoint.wall_offset = time.time() - self._loop.time()
        self._log_handler = _EventLogHandler(self)
        logging.getLogger("engine").addHandler(self._log_handler)
        await self.datapath.start(self)
        prepare = getattr(self.datapath, "prepare_socket", None)
        if prepare is not None:
            self.sockets.prepare = prepare
        self.endpoint.source_address = self.sockets.source_for
        self.endpoint.path_usable = path_usable
        self._resolver = NameResolver(self._loop, self._name_resolved, self._lookup)
        self.endpoint.names.resolve = self._resolver.ask
        esp_batch = getattr(self.datapath, "receive_esp_batch", None)
        if esp_batch is not None:
            self.sockets.esp_sink = esp_batch
            self.sockets.natt_port = self.policy.engine.natt_port
        self.sockets.count = lambda what: self.endpoint.count(what)  # with the IKE counters (stats, metrics)
        e = self.policy.engine
        addresses, missing = list(e.listen), {}
        if not addresses:
            # a family chosen here that this host cannot open is a warning, not a failed start
            addresses, missing = listening.openable(listening.derived(self.policy))
        addresses = addresses or ["0.0.0.0"]
        self.sockets.open(addresses, sorted({e.ike_port, e.natt_port}))
        self.endpoint.unopened = missing  # (the LocalError of a connection that needs one says why)
        self.endpoint.listening = tuple(addresses)  # an initiation sends from one of these
        self.datapath.apply_policy(self.policy)
        self.endpoint.start(self.now())
        self.crl_fetcher.start()
        self.crl_fetcher.attach(self.endpoint.credentials)
        self._after()
        self._counters_task = asyncio.create_task(self._counters_loop(), name="counters")
        self._roam_task = asyncio.create_task(self._roam_loop(), name="roam")
        self._names_task = asyncio.create_task(self._names_loop(), name="names")

    def _addresses_from_connections(self) -> list[str]:
        """What to listen on without [engine] listen (engine.runtime.listening.derived)."""
        return list(listening.derived(self.policy))

    async def stop(self, *, delete: bool = True) -> None:
        """Delete our SAs (INFORMATIONAL) when asked, then release everything."""
        if self._loop is None:
            return
        if delete:
            self.endpoint.shutdown(self.now())
            self._after()
            deadline = self.now() + SHUTDOWN_GRACE
            while any(sa.outstanding is not None for sa in self.endpoint.sas) and self.now() < deadline:
                await asyncio.sleep(0.05)
            for sa in self.endpoint.sas:
                sa.destroy(self.now(), "shutting down")
            self._after()
        self.crl_fetcher.close()
        if self._counters_task is not None:
            self._counters_task.cancel()
        if self._roam_task is not None:
            self._roam_task.cancel()
        if self._names_task is not None:
            self._names_task.cancel()
        if self._resolver is not None:
            self._resolver.close()
        if self._timer is not None:
            self._timer.cancel()
        if self._pool_timer is not None:
            self._pool_timer.cancel()
            self._pool_timer = None
        self.sockets.close()
        await self.datapath.stop()
        if self._log_handler is not None:
            logging.getLogger("engine").removeHandler(self._log_handler)
        self._loop = None

    # ------------------------------------------------------------ the loop
    def _on_datagram(self, data: bytes, local, remote) -> None:
        now = self.now()
        self._datagrams += 1
        if local[1] == self.policy.engine.natt_port:
            kind = classify_natt(data)
            if kind == "ike":
                self.endpoint.receive_datagram(data[4:], local, remote, now)
            elif kind == "esp":
                self.datapath.receive_esp(data, local, remote, now)
                self._drain_datapath()
                return
            else:
                return  # keepalive or junk
        else:
            self.endpoint.receive_datagram(data, local, remote, now)
        self._after()

    def _crl_updated(self) -> None:
        """A fetch ended: IKE_AUTH requests held for it are decided now, not at the peer's next
        retransmission."""
        self.endpoint.retry_held(self.now())
        self._after()

    def _on_timer(self) -> None:
        self._timer = None
        self.endpoint.handle_timer(self.now())
        self._after()

    def _after(self) -> None:
        """Drain events -> transmit -> re-arm the timer."""
        ep = self.endpoint
        while (event := ep.next_event()) is not None:
            self._dispatch(event)
        if self._loop is not None:
            self.crl_fetcher.drain()
        for d in ep.datagrams_to_send():
            self.sockets.send(d.data, d.local, d.remote)
        when = ep.get_timer()
        timer = self._timer
        if timer is not None and when is not None and when < timer.when():
            timer.cancel()
            timer = self._timer = None
        # A later deadline (or none) keeps the armed timer: it fires early, finds nothing due and
        # re-arms then. Under a handshake load the earliest deadline moves later with most messages
        # (the oldest half-open SA completes): one callback now and then instead of a cancelled
        # handle and a new one per message.
        if when is not None and timer is None and self._loop is not None:
            self._timer = self._loop.call_at(when, self._on_timer)
        if self._pool_timer is None and self._loop is not None and self.key_pool.short:
            self._pool_seen = self._datagrams
            self._pool_timer = self._loop.call_later(KEY_POOL_IDLE, self._fill_pool)

    def _fill_pool(self) -> None:
        """Make a few key pairs if no IKE datagram came in since the last look (KEY_POOL_IDLE ago,
        or the previous step): under a steady load the pool stays empty and costs nothing but
        this look every KEY_POOL_IDLE; in a quiet moment it fills, a step at a time."""
        self._pool_timer = None
        if self._loop is None or not self.key_pool.short:
            return
        if self._datagrams != self._pool_seen:
            self._pool_seen = self._datagrams
            self._pool_timer = self._loop.call_later(KEY_POOL_IDLE, self._fill_pool)
            return
        self.key_pool.fill(KEY_POOL_STEP)
        if self.key_pool.short:
            # The next step after the loop has looked at its sockets again.
            self._pool_timer = self._loop.call_soon(self._fill_pool)

    def _dispatch(self, event: Event) -> None:
        if type(event) in _NOT_FOR_DATAPATH:
            self.publish(event)  # nine of a handshake's eleven events: no datapath or key sink takes them
            return
        try:
            if isinstance(event, ChildSaInstalled):
                self.datapath.install(event)
            elif isinstance(event, ChildSaDeleted):
                self.datapath.remove(event)
            elif isinstance(event, VirtualIpsChanged) and hasattr(self.datapath, "virtual_ips"):
                self.datapath.virtual_ips(event)
            elif isinstance(event, TrapRequested) and hasattr(self.datapath, "trap"):
                self.datapath.trap(event.connection, event.child)
            elif isinstance(event, ChildSaMoved):
                if hasattr(self.datapath, "move"):
                    self.datapath.move(event)
                else:
                    # A datapath that cannot re-point an SA: a rekey puts
                    # the CHILD SA on the new addresses, as charon does with kernel-libipsec.
                    self.endpoint.rekey_child_spi(event.spi_in, self.now())
        except Exception as exc:
            log.exception("datapath failed to apply %s", type(event).__name__)
            if isinstance(event, ChildSaInstalled):
                # An SA the datapath refused would swallow the peer's traffic: delete it
                # with the peer (the failure shows in the console as a NegotiationFailed).
                self.endpoint.child_install_failed(event.spi_in, self.now(), f"datapath refused it: {exc}")
        if isinstance(event, ChildSaInstalled):
            for sink in list(self.key_sinks):
                try:
                    sink(event)
                except Exception:
                    log.exception("a key sink failed on CHILD SA %d", event.unique_id)
        self.publish(event)

    def datapath_event(self, event: Event) -> None:
        """Events coming from the datapath (lifetimes, acquires, packet samples)."""
        now = self.now()
        if isinstance(event, RekeyRequested):
            self.endpoint.rekey_child_spi(event.spi_in, now, hard=event.hard)
            self._after()
        elif isinstance(event, AcquireRequested):
            self.endpoint.acquire(event.reqid, now)
            self._after()
        elif isinstance(event, NatMappingChanged):
            self.endpoint.nat_mapping_changed(event.spi_in, (event.remote_addr, event.remote_port), now)
            self._after()
        self.publish(event)

    def _drain_datapath(self) -> None:
        drain = getattr(self.datapath, "drain_events", None)
        if drain is not None:
            for ev in drain():
                self.datapath_event(ev)

    def publish(self, event: Event, *, wall_clock: bool = False) -> None:
        """To the history and every subscriber, its times on the wall clock (``wall_clock``: they
        are already)."""
        cls = type(event)
        route = self._routes.get(cls)
        if route is None:
            # Who takes an event depends on its class alone (and, for a LogMessage, its level):
            # decided once per class until the subscribers change, not for each event.
            route = self._routes[cls] = (
                issubclass(cls, _REPLAYED), issubclass(cls, LogMessage),
                [sub for sub in self._subscribers if sub.kinds is None or issubclass(cls, sub.kinds)],
                [fn for kinds, fn in self._sinks if issubclass(cls, kinds)],
                cls in _SUMMARIES, issubclass(cls, MOVED), issubclass(cls, ChildSaInstalled))
        replay, is_log, takers, sinks, summary, clocked, keyed = route
        if is_log and replay:
            replay = event.level in _LOUD
        if not replay and not takers and not sinks:
            return
        if summary:
            # A message summary (six per handshake): what to_wall_clock, keyless and event_size
            # would do to one, without asking each what the event is. The history keeps a record
            # of it (KeptMessage), so the wall-clock copy is made only for someone who takes it.
            when = event.time if wall_clock else event.time + time.time() - self.now()
            size = summary_size(event)
            if replay:
                self.history.append_message(event, when, size)
            if not takers and not sinks:
                return
            kept = event if wall_clock else evolve(event, time=when)
            replay = False
        else:
            # Most events (IkeSaStateChanged, ChildSaInstalled, ChildSaDeleted) carry no engine-clock
            # time and no keys: neither clock is read for them, nothing is copied.
            if clocked and not wall_clock:
                event = to_wall_clock(event, time.time() - self.now())
            kept = keyless(event) if keyed else event  # the datapath had the keys; nothing kept holds them
            size = event_size(kept)
        if replay:
            self.history.append(kept, size, kept=True)
        for sub in takers:
            if not sub.offer(kept, size):
                # A slow subscriber is dropped, never waited for: the engine runs on.
                self.unsubscribe(sub)
                log.warning("event subscriber disconnected: %s", sub.dropped)
        for fn in sinks:
            try:
                fn(kept)
            except Exception:
                log.exception("an event sink failed on %s", cls.__name__)

    def subscribe(self, maxsize: int = QUEUE_EVENTS, *, replay: bool = False,
                  max_bytes: int = QUEUE_BYTES, kinds: tuple[type, ...] | None = None) -> Subscription:
        """A queue of every event from now on, bounded in count and bytes (a reader
        that falls behind is dropped: its ``get()`` raises SubscriberDropped).
        With ``replay`` it starts with the recent negotiation history (as much as
        fits in half its bounds), so a late viewer understands the current state.
        With ``kinds`` only events of those classes (replayed ones too): a service that
        reads a few kinds costs the engine nothing for the others."""
        q = Subscription(maxsize, max_bytes)
        q.kinds = kinds
        self._log_read = None
        if replay:
            recent: list = []
            budget = max_bytes // 2
            for event, size in reversed(self.history.sized()):
                if kinds is not None and not isinstance(event, kinds):
                    continue
                if len(recent) >= maxsize // 2 or size > budget:
                    break
                budget -= size
                recent.append((event, size))
            for event, size in reversed(recent):
                q.offer(event, size)
        self._subscribers.append(q)
        self._routes = {}
        return q

    def add_sink(self, kinds: tuple[type, ...], fn: Callable[[Event], None]) -> None:
        """Call ``fn`` with each published event of ``kinds`` (keyless, on the wall clock, as a
        subscriber gets it) at once, on the engine's loop: for a service whose handling is a few
        counter updates (metrics, key export), a queue and a task woken per event cost more than
        the handling. ``fn`` must be quick and not publish; an exception from it is logged."""
        self._sinks.append((kinds, fn))
        self._routes = {}

    def remove_sink(self, fn: Callable[[Event], None]) -> None:
        self._sinks = [(k, f) for k, f in self._sinks if f != fn]
        self._routes = {}

    def unsubscribe(self, q: Subscription) -> None:
        if q in self._subscribers:
            self._subscribers.remove(q)
        self._routes = {}
        self._log_read = None

    def log_read(self) -> bool:
        """Whether a subscriber reads LogMessage events (cached until the subscribers change)."""
        if self._log_read is None:
            self._log_read = any(sub.wants(LogMessage) for sub in self._subscribers)
        return self._log_read

    async def _roam_loop(self) -> None:
        """MOBIKE as a client: once a second, IKE SAs we initiated with MOBIKE check that our address
        still exists and reaches their peer; one whose path broke moves to the source a route lookup
        now gives (engine.ike.exchanges.mobike). A gateway has no such SA: one pass over its SAs,
        a few thousand at a time."""
        while True:
            await asyncio.sleep(ROAM_INTERVAL)
            try:
                mobike = False
                steps = Steps(SCAN_CHUNK)
                for sa in self.endpoint.registry:
                    if sa.mobike and sa.connection_initiator:
                        mobike = True
                        break
                    if steps.done():
                        await steps.next()
                if mobike and self.endpoint.roam(self.now()):
                    self._after()
            except Exception:
                log.exception("checking our addresses for MOBIKE failed")

    async def _names_loop(self) -> None:
        """The policy's host names are asked again every NAME_TTL seconds, so that a responder
        matches a peer whose name moved (DynDNS), as charon resolving on each lookup does."""
        while True:
            await asyncio.sleep(names.NAME_TTL)
            self.endpoint.names.refresh(names.policy_names(self.policy.connections))

    def _name_resolved(self, name: str, addrs: tuple[str, ...]) -> None:
        if self._loop is None:
            return  # stopped while it was resolved
        before = self.endpoint.names.addresses(name)
        self.endpoint.resolved(name, addrs, self.now())
        if self.endpoint.names.addresses(name) != before:
            changed = getattr(self.datapath, "peer_addresses_changed", None)
            if changed is not None:
                # Trap policies name the peer: one waiting for this name goes in, a moved one moves.
                try:
                    changed()
                except Exception:
                    log.exception("datapath failed to follow %s to %s", name, ", ".join(addrs))
        self._after()

    def peer_address(self, conn) -> str | None:
        """The address ``conn`` initiates to now: its literal target, or what its host name last
        resolved to (None: no target, or not resolved yet)."""
        return names.target_address(conn, self.endpoint.names)

    # ------------------------------------------------------------ commands
    def initiate(self, name: str, child: str | None = None) -> None:
        self.endpoint.initiate(name, self.now(), child)
        self._after()

    def terminate(self, name: str, *, unique_id: int | None = None) -> Terminated:
        """Delete the connection's IKE SAs (or IKE SA ``unique_id``); a whole connection's also
        stops a failed connection trying again (keyingtries) and an initiation waiting for the
        peer's host name to resolve."""
        retrying = unique_id is None and self.endpoint.retrying(name) is not None
        resolving = self.endpoint.resolving(name) if unique_id is None else None
        n = self.endpoint.terminate(name, self.now(), unique_id=unique_id)
        untrap = getattr(self.datapath, "untrap", None)
        # a close_action/dpd_action trap would bring the tunnel back on the next packet
        untrapped = tuple(untrap(name) or ()) if untrap is not None else ()
        self._after()
        return Terminated(n, retrying, resolving, untrapped)

    def rekey(self, name: str, *, ike: bool = False, unique_id: int | None = None) -> int:
        n = self.endpoint.rekey(name, self.now(), ike=ike, unique_id=unique_id)
        self._after()
        return n

    def roam(self, name: str | None = None) -> int:
        """MOBIKE: look at our addresses now (the roam loop does once a second): IKE SAs we initiated
        (of connection ``name``, or all) move to the source address the host now uses towards each
        peer; returns how many move."""
        n = self.endpoint.roam(self.now(), name=name)
        self._after()
        return n

    def apply_policy(self, policy: Policy, text: str | None = None) -> PolicyApplied:
        """Switch to a validated policy; unrelated SAs stay up. The whole change is
        planned first ([engine] keys that need a restart, credentials, each changed
        connection, the datapath when it can tell): if any step would fail, it raises
        (LocalError, PkiError or the datapath's error, naming the connection) and
        nothing changed: same SAs, same policy, no event."""
        credentials = _credentials(policy)
        plan = self.endpoint.plan_policy(policy, credentials)
        check = getattr(self.datapath, "check_policy", None)
        if check is not None:
            check(policy)
        # The datapath first: it is the one step that may still refuse; the endpoint's
        # commit cannot fail once planned.
        self.datapath.apply_policy(policy)
        result = self.endpoint.apply_policy(policy, self.now(), credentials, plan=plan)
        self.key_pool.set_groups(_pooled_groups(policy))
        if self._loop is not None:
            self.crl_fetcher.attach(self.endpoint.credentials)
        self.policy = policy
        self.policy_text = text
        if not policy.engine.listen and self.endpoint.listening:
            for addr, conns in listening.unbound(listening.derived(policy), self.endpoint.listening).items():
                log.warning("connections %s need %s, on which the daemon did not listen at start (it chose %s "
                            "without [engine] listen; a reload opens no socket): they will neither initiate nor "
                            "answer there until the daemon restarts", ", ".join(conns), addr,
                            ", ".join(self.endpoint.listening))
        self._after()
        return result

def path_usable(local: str, remote: str) -> bool:
    """Whether ``local`` is still one of our addresses and has a route to ``remote`` (MOBIKE keeps
    such a path): bind and connect a UDP socket, which sends nothing."""
    family = socket.AF_INET6 if ":" in remote else socket.AF_INET
    if (":" in local) != (family == socket.AF_INET6):
        return False
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((local, 0))
            s.connect((remote, 9))
        return True
    except OSError:
        return False


def _pooled_groups(policy: Policy) -> list[int]:
    """The key exchange an initiator most likely sends: the first of each IKE proposal's."""
    return [p.ke[0].id for c in policy.connections for p in c.proposals if p.ke]


def _credentials(policy: Policy):
    """Certificates and keys for pubkey connections (None when no connection uses them).
    Raises engine.pki.errors.PkiError with the connection and file at fault."""
    if not any(c.local.auth == "pubkey" or c.remote.auth == "pubkey" for c in policy.connections):
        return None
    from engine.pki.credentials import load_credentials

    return load_credentials(policy)


class _EventLogHandler(logging.Handler):
    """Engine log records as LogMessage events for the console and `events`."""

    def __init__(self, runtime: EngineRuntime) -> None:
        super().__init__(logging.DEBUG)
        self.runtime = runtime
        logsafe.protect(self)  # LogMessage text is escaped, capped and rate-limited like stderr

    def handle(self, record: logging.LogRecord) -> bool:
        # No subscriber (a daemon nobody watches): not even the filter and the lock, per log line.
        if not self.runtime._subscribers:
            return False
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        subs = self.runtime._subscribers
        if not subs:
            return
        read = getattr(self.runtime, "log_read", None)  # a stand-in runtime may not tell
        if record.levelname not in _LOUD and read is not None and not read():
            return  # neither kept in the history nor read by anyone
        try:
            text = record.getMessage()
        except Exception:  # a broken format string must not break the engine
            text = str(record.msg)
        self.runtime.publish(LogMessage(record.created, record.levelname, record.name, text,
                                        getattr(record, "connection", "")))
