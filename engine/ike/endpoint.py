"""The IKE endpoint: every IKE SA of one host, sans-IO (model: aioquic's
QuicConnection, but for many SAs).

Inputs: ``receive_datagram(data, local, remote, now)`` (an IKE message,
non-ESP marker already removed), ``handle_timer(now)`` and commands
(``initiate``, ``terminate``, ``rekey``, ``apply_policy``...). Outputs, drained
by the caller: ``datagrams_to_send()``, ``get_timer()``, ``next_event()``.

This class is the facade; the work is done by
- ``routing.receive_datagram``: each datagram to its SA by SPI (or to the front door),
- ``front_door.FrontDoor``: IKE_SA_INIT requests (cookies, half-open limits, blocking),
- ``registry.Registry``: the SAs and the identifiers they use,
- ``scheduler.Scheduler``: the timers,
- ``authenticator.Authenticator``: PSK and certificates,
- ``sa.IkeSa`` and ``exchanges``: each IKE SA and its exchanges,
- ``initiation.Initiation``: initiating, keyingtries, setting a connection up again.
IKE SAs reach the endpoint only through the ``host.Host`` methods below.
"""

from __future__ import annotations

import logging
import os
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

from engine.crypto.keypool import KeyPool
from engine.events import ChildState, Event, IkeState, PolicyApplied
from engine.ike import names, nat_mapping, policy_change, redirect_client, routing, sa_receive, uniqueness
from engine.ike.authenticator import Authenticator
from engine.ike.child import ChildSa
from engine.ike.config_payload import VirtualIps
from engine.ike.errors import LocalError
from engine.ike.exchanges import CATALOG, informational, mobike
from engine.ike.host import Addr, Ended
from engine.ike.initiation import Initiation
from engine.ike.registry import KeptAnswer, Registry
from engine.ike.sa import IkeSa
from engine.ike.scheduler import Scheduler
from engine.ike.front_door import FrontDoor
from engine.ike.names import HostNames
from engine.ike.status import ike_sa_info
from engine.policy.model import ChildConfig, ConnectionConfig, EngineConfig, Policy
from engine.wire.constants import ExchangeType

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_CONNECTING = IkeState.CONNECTING

log = logging.getLogger("engine.ike")


class Datagram(NamedTuple):
    """A datagram to send (a tuple: built for every message on the hot path)."""

    data: bytes
    local: Addr
    remote: Addr


class IkeEndpoint(Initiation):
    """All IKE SAs of one host."""

    def __init__(self, policy: Policy, *, rng: Callable[[int], bytes] = os.urandom,
                 seed: int | None = None, fragment_size: int | None = None, credentials=None,
                 wall_offset: float = 0.0) -> None:
        self._policy = policy
        self.engine: EngineConfig = policy.engine
        """The [engine] section (kept with ``policy``; read on every message)."""
        self.rng = rng
        self.random = random.Random(seed)
        self.fragment_size = fragment_size
        self.stats: dict[str, int] = {}
        """Counters (the control socket's ``counters`` command shows them)."""
        self.delete_log = informational.delete_log_budget()
        """Log lines about Deletes we ignore: a peer repeating one is not a line each time."""
        self.registry = Registry(rng)
        self.ids = self.registry
        self.scheduler = Scheduler()
        self.auth = Authenticator(policy, credentials, wall_offset)
        self.exchanges = CATALOG
        self.front_door = FrontDoor(self, self.registry, policy)
        self.vips = VirtualIps(policy.pools)
        """Virtual IP pools and their leases (road-warrior gateways)."""
        self._out: list[Datagram] = []
        self._events: deque[Event] = deque()
        self.emit: Callable[[Event], None] = self._events.append
        """Queue an event for ``next_event`` (a bound deque.append: dozens per handshake)."""
        self._attempts: dict[str, int] = {}
        self._retries: dict[str, tuple[float, object]] = {}
        """keyingtries: connection name -> (when, token) of its next attempt. The scheduler cannot
        cancel a call, so an attempt runs only while its token is still the one held here."""
        self.source_address: Callable[[str], str | None] | None = None
        """The runtime's route lookup: the address the host sends from towards a peer (None: unknown).
        Used only when neither local_addrs nor listen names ours (a laptop), so NAT detection
        hashes our real address; injected like ``rng``, the endpoint itself never asks the kernel."""
        self.key_pool: KeyPool | None = None
        """Key pairs made ahead (engine.crypto.keypool), taken by IKE_SA_INIT as responder; the
        runtime owns and fills it when idle (None: every key is made when needed)."""
        self.names = HostNames()
        """Host names in remote_addrs as the runtime resolved them (engine.ike.names)."""
        self.path_usable: Callable[[str, str], bool] | None = None
        """The runtime's check that our address still exists and reaches a peer (local, remote): a
        MOBIKE SA whose path still works stays on it (as charon keeps a valid path), whatever
        source a fresh route lookup would pick."""

    # ------------------------------------------------------------ config
    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self._policy = policy
        self.engine = policy.engine
        self.front_door.policy = policy
        self.auth.policy = policy
        self.vips.reload(policy.pools)

    @property
    def natt_port(self) -> int:
        return self.policy.engine.natt_port

    @property
    def ike_port(self) -> int:
        return self.policy.engine.ike_port

    @property
    def credentials(self):
        """engine.pki.credentials.Credentials for certificate authentication (loaded by the runtime)."""
        return self.auth.credentials

    @credentials.setter
    def credentials(self, value) -> None:
        self.auth.credentials = value

    @property
    def wall_offset(self) -> float:
        """Unix time minus ``now``: certificates are valid between wall-clock dates."""
        return self.auth.wall_offset

    @wall_offset.setter
    def wall_offset(self, value: float) -> None:
        self.auth.wall_offset = value

    def wall_time(self, now: float) -> float:
        return self.auth.wall_time(now)

    # ------------------------------------------------------------ outputs
    def send(self, data: bytes, local: Addr, remote: Addr) -> None:
        self._out.append(Datagram(data, local, remote))

    transmit = send

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    # ------------------------------------------------------------ the IKE SAs' view (host.Host)
    def changed(self, sa: IkeSa) -> None:
        if sa.half_open_key is not None and sa.state != _CONNECTING:
            self.registry.leave_half_open(sa)
        if sa.timer_key:
            self.scheduler.dirty[sa.timer_key] = sa
        else:
            self.scheduler.touch(sa)

    def adopt(self, sa: IkeSa) -> None:
        self.registry.add(sa)
        if sa.remote_id is not None:
            self.registry.index_identity(sa)
        self.scheduler.touch(sa)

    def established(self, sa: IkeSa, now: float, *, initial_contact: bool) -> None:
        self._attempts.pop(sa.name, None)
        # Up (by the admin's initiate or the peer's): a retry still pending would start the
        # connection again later, after it went down for another reason.
        self._retries.pop(sa.name, None)
        # AUTH is done: the IKE_SA_INIT messages it signed are not needed any more (a held client
        # costs their bytes otherwise, ~600 per SA).
        sa.init_request = sa.init_response = b""
        self.registry.index_identity(sa)
        if sa.replaces is not None:
            # After IKE_AUTH completes (its virtual IPs known): the SA that was redirected goes.
            self.scheduler.call_at(now, lambda t: redirect_client.done(sa, t))
        uniqueness.enforce(self.registry, self.scheduler, sa, now, initial_contact=initial_contact)

    def unique_refuses(self, sa: IkeSa, initial_contact: bool) -> str | None:
        return uniqueness.refuses(self.registry, sa, initial_contact)

    def initial_contact(self, sa: IkeSa) -> bool:
        """No other IKE SA of this connection is up with that peer address (nor one this SA
        replaces after a redirect: it still holds our CHILD SAs at the other gateway)."""
        if sa.replaces is not None:
            return False
        return not any(o.established for o in self.registry.same_address(sa))

    def ended(self, sa: IkeSa, ended: Ended, now: float) -> None:
        self.registry.remove(sa)
        self.vips.release(sa, now)
        self.scheduler.forget(sa)
        if ended.kind == "failed":
            self._connection_failed(sa, now)
        elif ended.kind in ("peer_gone", "closed") and sa.conn is not None:
            self._reestablish(sa, ended, now)

    def keep_answer(self, sa: IkeSa, now: float) -> None:
        cached = sa.cached
        if cached is None:
            return
        # as long as the peer may retransmit (its schedule is like ours), from where the request came
        # (a request that could not be decoded did not move the SA to a new address)
        peer = sa.request_via[1][0] if sa.request_via is not None else sa.remote[0]
        self.registry.keep_answer(sa.our_spi, KeptAnswer(sa.spi_i, sa.spi_r, peer, cached.mid,
                                                         cached.datagrams, now + sa.retransmit_budget()), now)

    # ------------------------------------------------------------ timers
    def retry_held(self, now: float) -> None:
        """Take again the requests held for a CRL being fetched: the runtime calls it when a fetch ends."""
        for sa in self.registry:
            if sa.held_request is not None:
                sa_receive.retake_held(sa, now)

    def get_timer(self) -> float | None:
        return self.scheduler.next_time()

    def handle_timer(self, now: float) -> None:
        for fn in self.scheduler.due_calls(now):
            fn(now)
        for sa in self.scheduler.due_sas(now):
            if sa.alive:
                sa.handle_timer(now)
                self.scheduler.touch(sa)

    def call_at(self, when: float, fn: Callable[[float], None]) -> None:
        self.scheduler.call_at(when, fn)

    # ------------------------------------------------------------ SAs
    @property
    def sas(self) -> list[IkeSa]:
        """Every registered IKE SA (undecided ones from a rekey collision included)."""
        return list(self.registry)

    def reqid_for(self, sa, cfg: ChildConfig, rekey: ChildSa | None) -> int:
        if rekey is not None:
            return rekey.reqid
        return self.registry.reqid(sa.name, cfg.name)

    def reqid_for_config(self, connection: str, child: str) -> int:
        """The reqid of a CHILD config, stable for the engine's life: the kernel's
        policies (and trap policies, before any IKE SA exists) are tied to it."""
        return self.registry.reqid(connection, child)

    # ------------------------------------------------------------ commands
    def _conn(self, name: str) -> ConnectionConfig:
        try:
            return self.policy.connection(name)
        except KeyError:
            raise LocalError(f"no connection named '{name}'") from None

    def terminate(self, name: str, now: float, *, unique_id: int | None = None) -> int:
        """Delete the IKE SAs of a connection (or only IKE SA ``unique_id``); returns how many.
        A whole connection's terminate also cancels its pending keyingtries attempt (`retrying`)."""
        self._conn(name)
        n = 0
        deleted = set()
        for sa in self.registry:
            if unique_id is not None and sa.unique_id != unique_id:
                continue
            # An undecided IKE SA from a rekey collision goes with the rekey that holds it.
            if sa.name == name and sa.alive and not sa.pending:
                sa.delete(now, "terminated by admin")
                self.scheduler.touch(sa)
                deleted.add(sa.unique_id)
                n += 1
        # A redirect of a deleted SA awaiting its gateway's name would start a new one once answered.
        self.names.cancel(lambda key: key[0] == "redirect" and key[1] in deleted)
        self._attempts.pop(name, None)
        if unique_id is None:
            self._retries.pop(name, None)
            self.names.cancel(_of_connection(name))  # an initiation, or a redirect, awaiting DNS
        return n

    def resolving(self, name: str) -> str | None:
        """The host name an initiation (or a redirect) of connection ``name`` waits for (None: none)."""
        hosts = self.names.waiting(_of_connection(name))
        return hosts[0] if hosts else None

    def rekey(self, name: str, now: float, *, ike: bool = False, unique_id: int | None = None) -> int:
        self._conn(name)
        n = 0
        for sa in self.registry:
            if sa.name != name or sa.state != IkeState.ESTABLISHED:
                continue
            if ike:
                if unique_id is None or sa.unique_id == unique_id:
                    sa.start(CATALOG.ike_rekey(sa), now)
                    self.scheduler.touch(sa)
                    n += 1
                continue
            for c in list(sa.children.values()):
                if c.state == ChildState.INSTALLED and (unique_id is None or c.unique_id == unique_id):
                    sa.start(CATALOG.child_rekey(sa, c), now)
                    self.scheduler.touch(sa)
                    n += 1
        return n

    def _child(self, spi_in: int) -> tuple[IkeSa, ChildSa] | None:
        spi = spi_in.to_bytes(4, "big")
        for sa in self.registry:
            c = sa.children.get(spi)
            if c is not None:
                return sa, c
        return None

    def rekey_child_spi(self, spi_in: int, now: float, *, hard: bool = False) -> None:
        """The datapath hit a soft (rekey) or hard (delete) limit of an SA."""
        found = self._child(spi_in)
        if found is None:
            return
        sa, c = found
        if hard:
            sa.start(CATALOG.child_delete(sa, c, "hard lifetime reached"), now)
        elif c.state == ChildState.INSTALLED:
            sa.start(CATALOG.child_rekey(sa, c), now)
        self.scheduler.touch(sa)

    def child_activity(self, spis_in: Iterable[int], now: float) -> None:
        """The datapath received ESP/AH on these inbound SPIs since it last said so: their peers are
        alive, so DPD waits (an input like a datagram; the runtime feeds it from its counters)."""
        wanted = {spi.to_bytes(4, "big") for spi in spis_in}
        if not wanted:
            return
        for sa in self.registry:
            if sa.last_esp_in < now and not wanted.isdisjoint(sa.children):
                sa.last_esp_in = now

    def child_install_failed(self, spi_in: int, now: float, reason: str) -> None:
        """The datapath could not install a CHILD SA: tell the admin and delete it with the peer."""
        found = self._child(spi_in)
        if found is None:
            return
        sa, c = found
        sa.fail(ExchangeType.CREATE_CHILD_SA, "DATAPATH", f"CHILD SA '{c.config.name}' could not be "
                f"installed ({reason}); deleting it so the peer stops sending into it", now, child=c.config.name)
        sa.start(CATALOG.child_delete(sa, c, "datapath refused it"), now)
        self.scheduler.touch(sa)

    def nat_mapping_changed(self, spi_in: int, remote: Addr, now: float) -> None:
        """Authenticated ESP-in-UDP on ``spi_in`` came from ``remote`` (engine.ike.nat_mapping)."""
        found = self._child(spi_in)
        if found is not None:
            nat_mapping.follow_esp_mapping(*found, remote)

    def acquire(self, reqid: int, now: float) -> None:
        """Traffic hit a trap policy: bring up the child with that reqid."""
        owner = self.registry.reqid_owner(reqid)
        if owner is not None:
            self.initiate_logged(owner[0], now, owner[1])

    def roam(self, now: float, *, name: str | None = None, address: str | None = None) -> int:
        """Our address may have changed (the runtime saw addresses come and go, or the admin
        names ``address``): each IKE SA we initiated with MOBIKE (of connection ``name``, or all)
        moves to ``address`` or, without it and once its path no longer works (``path_usable``),
        to the source the host now uses towards its peer (``source_address``), and tells the peer
        (RFC 4555 §3.5). Returns how many move."""
        if name is not None:
            self._conn(name)
        n = 0
        looked_up: dict[str, str | None] = {}  # one route lookup per peer address and pass
        usable: dict[tuple[str, str], bool] = {}  # one path check per (our address, peer) and pass
        for sa in list(self.registry):
            if not (sa.mobike and sa.connection_initiator) or (name is not None and sa.name != name):
                continue
            target = address
            if target is None and self.path_usable is not None:
                path = (sa.local[0], sa.remote[0])
                if path not in usable:
                    usable[path] = self.path_usable(*path)
                if usable[path]:
                    continue  # our address is still there and reaches the peer: keep the path
            if target is None and self.source_address is not None:
                peer = sa.remote[0]
                if peer not in looked_up:
                    looked_up[peer] = self.source_address(peer)
                target = looked_up[peer]
            if target and mobike.roam(sa, target, now):
                self.scheduler.touch(sa)
                n += 1
        return n

    def redirect(self, sa: IkeSa, gateway: str, children, now: float,
                 exchange: int = ExchangeType.IKE_AUTH) -> str | None:
        """RFC 5685 as a client (engine.ike.redirect_client): None when followed, else why not."""
        return redirect_client.follow(self, sa, gateway, children, now, exchange)

    def shutdown(self, now: float) -> None:
        """Delete every SA (INFORMATIONAL); the runtime flushes and stops."""
        self.front_door.closed = True
        # Timers run on while the Deletes are answered: a pending attempt would start a new IKE SA.
        self._retries.clear()
        self._attempts.clear()
        self.names.cancel(lambda key: True)  # as would an initiation awaiting DNS
        for sa in self.registry:
            if sa.pending:
                continue  # it goes with the rekey that holds it
            if sa.established:
                sa.delete(now, "shutting down")
                self.scheduler.touch(sa)
            else:
                sa.destroy(now, "shutting down")

    def plan_policy(self, policy: Policy, credentials=None) -> policy_change.PolicyPlan:
        """Check a policy change without applying it (raises LocalError naming the connection)."""
        return policy_change.plan(self.policy, policy, credentials if credentials is not None else self.credentials)

    def apply_policy(self, policy: Policy, now: float, credentials=None,
                     plan: policy_change.PolicyPlan | None = None) -> PolicyApplied:
        """Switch to ``policy``: SAs of removed or changed connections go, new and
        changed connections with start_action = start come up; others stay. The
        change is planned whole first: if it cannot be applied, LocalError and
        nothing changed."""
        if plan is None:
            plan = self.plan_policy(policy, credentials)
        for name in plan.terminate:
            self.terminate(name, now)
        self.policy = policy
        self.auth.credentials = plan.credentials
        self.vips.end_stale(list(self.registry), now)  # clients whose address left its pool
        self.names.refresh(names.policy_names(policy.connections))
        for name in plan.start:
            self.initiate_logged(name, now)
        event = PolicyApplied(plan.added, plan.removed, plan.changed)
        self.emit(event)
        return event

    def start(self, now: float) -> None:
        """Initiate every connection with a child whose start_action is start."""
        self.names.refresh(names.policy_names(self.policy.connections))
        for conn in self.policy.connections:
            if any(c.start_action == "start" for c in conn.children) and policy_change.initiable(conn):
                self.initiate_logged(conn.name, now)

    # ------------------------------------------------------------ input: routing.py
    receive_datagram = routing.receive_datagram

    # ------------------------------------------------------------ status
    def status(self, now: float):
        """IkeSaInfo snapshots of every usable SA (counters are added by the runtime)."""
        return [ike_sa_info(sa, now) for sa in self.registry if sa.state not in (IkeState.DESTROYED, IkeState.CREATED)]

    # ------------------------------------------------------------ key export (engine.ops.keylog)
    def ike_keys(self, unique_id: int) -> dict | None:
        """SPIs, negotiated ENCR/INTEG and SK_e*/SK_a* of IKE SA #unique_id, for the opt-in Wireshark
        key export (``[engine] save_keys``) only; None until its keys exist. Never put these in an event."""
        for sa in self.registry:
            if sa.unique_id == unique_id and sa.keys is not None and sa.chosen is not None:
                return {"spi_i": sa.spi_i, "spi_r": sa.spi_r, "encr": sa.chosen.encr, "integ": sa.chosen.integ,
                        "keys": sa.keys}
        return None


def _of_connection(name: str) -> Callable[[object], bool]:
    """Matches the keys under which connection ``name`` waits for a host name: its initiations
    (``initiate``) and the redirects of its IKE SAs (engine.ike.redirect_client)."""
    return lambda key: (key[0] == "initiate" and key[1] == name) or (key[0] == "redirect" and key[2] == name)

