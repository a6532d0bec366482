"""How the endpoint sets connections up: initiating (to an address, or after a host name
resolves), keyingtries after a failed attempt, and setting a connection up again when the peer
went silent (dpd_action = restart) or closed it (close_action = start; engine.ike.close_action).

A mixin of ``IkeEndpoint``: it uses the endpoint's policy, registry, scheduler, names and the
``_attempts`` / ``_retries`` tables the endpoint creates.
"""

from __future__ import annotations

import ipaddress
import logging

from engine.events import IkeState, NegotiationFailed
from engine.ike import addresses, names, policy_change
from engine.ike.close_action import CLOSE_START_HOLDOFF, coming
from engine.ike.errors import IllegalTransition, LocalError
from engine.ike.exchanges import CATALOG
from engine.ike.host import Ended
from engine.ike.sa import IkeSa
from engine.policy.model import ConnectionConfig

log = logging.getLogger("engine.ike")

REFUSAL_QUIET = 60.0
"""Seconds within which the same refusal to initiate a connection (its local address) is not
warned about again."""


class Initiation:
    """Initiating, keyingtries and re-establishing (see the module docstring)."""

    listening: tuple[str, ...] = ()
    """The addresses the runtime bound (EngineRuntime.start): without [engine] listen, those it
    derived from local_addrs, which the initiator must send from too (empty: only the policy's
    listen is known, as in tests and the lab)."""
    unopened: dict[int, str] = {}
    """IP version -> why the runtime could not open the socket of that family it derived (no
    [engine] listen; engine.runtime.listening): said in the refusal of a connection that needs it."""

    def _connection_failed(self, sa: IkeSa, now: float) -> None:
        """keyingtries: try again, with a growing pause, until the budget is spent."""
        conn = sa.conn
        if conn is None or not sa.connection_initiator:
            return
        self._attempt_failed(conn, now)

    def _attempt_failed(self, conn: ConnectionConfig, now: float) -> None:
        n = self._attempts.get(conn.name, 0) + 1
        self._attempts[conn.name] = n
        if conn.keyingtries != 0 and n >= conn.keyingtries:
            self._attempts.pop(conn.name, None)
            return
        delay = min(60.0, 2.0 * n) + self.random.uniform(0, 1)
        name, token = conn.name, object()
        self._retries[name] = (now + delay, token)
        self.scheduler.call_at(now + delay, lambda t: self._retry(name, token, t))

    def _retry(self, name: str, token: object, now: float, only: tuple[str, ...] = ()) -> None:
        held = self._retries.get(name)
        if held is None or held[1] is not token:
            return  # terminated, or up, since it was scheduled
        del self._retries[name]
        self._initiate_quietly(name, now, only)

    def retrying(self, name: str) -> float | None:
        """When a failed connection's next keyingtries attempt starts (None: none pending)."""
        held = self._retries.get(name)
        return held[0] if held is not None else None

    def initiate_logged(self, name: str, now: float, child: str | None = None) -> None:
        """``initiate`` where no one asked for it (start_action, a policy applied, a trap's
        ACQUIRE): a connection that cannot start now (LocalError, logged by initiate) does not
        stop the others."""
        try:
            self.initiate(name, now, child)
        except LocalError as exc:
            if isinstance(exc, IllegalTransition):
                raise

    def _initiate_quietly(self, name: str, now: float, only: tuple[str, ...] = ()) -> None:
        try:
            self.initiate(name, now, only=only)
        except LocalError as exc:
            if isinstance(exc, IllegalTransition):
                raise
            log.debug("%s: not re-initiated: %s", name, exc)

    def local_address(self, conn: ConnectionConfig, remote: str) -> str:
        """Our address towards ``remote`` (charon's resolve_hosts / ike_cfg resolve_me; the rule is
        engine.ike.addresses.local_for, which the kernel's traps share). LocalError naming the
        connection when local_addrs has no address of the peer's family, none we listen on, or
        not the route's source."""
        listen = self.policy.engine.listen
        return addresses.local_for(conn.name, conn.local_addrs, listen or self.listening, remote,
                                   self.source_address, self.names.addresses, derived=not listen,
                                   unopened=None if listen else self.unopened.get(ipaddress.ip_address(remote).version))

    def initiate(self, name: str, now: float, child: str | None = None, *,
                 only: tuple[str, ...] = (), local_names: bool = True) -> IkeSa | None:
        """Bring up connection ``name`` (all its children, one, or those named in ``only``). None:
        its peer, or our address (a host name in local_addrs), is named by a host name the
        runtime is resolving; the initiation starts when ``resolved`` answers. ``local_names``
        False: local_addrs' names were asked for this initiation already (not again)."""
        conn = self._conn(name)
        if not policy_change.initiable(conn):
            raise LocalError(f"connection '{name}' has no remote address to initiate to")
        children = [conn.child(child)] if child else [c for c in conn.children if not only or c.name in only]
        if not children:
            return None  # those named in ``only`` left the policy
        existing = self.registry.current(conn.name)
        if existing is not None:
            if existing.state != IkeState.CONNECTING:
                # Bring up missing children on the SA we already have, once.
                have = {c.config.name for c in existing.children.values()} | coming(existing)
                for cfg in children:
                    if cfg.name not in have:
                        existing.start(CATALOG.create_child(existing, cfg), now)
            self.scheduler.touch(existing)
            return existing
        target = names.initiate_target(conn)
        if names.is_name(target):
            addrs = self.names.fresh(target, now)
            if not addrs:
                # A terminate meanwhile cancels it (under this key, see resolving()).
                self.names.wait(target, ("initiate", name, child),
                                lambda t: self._initiate_resolved(name, child, target, t, only), bounded=False)
                log.info("%s: resolving %s before initiating", name, target)
                return None
            target = names.pick(addrs, conn)
        if local_names:
            unknown = self._local_name_unknown(conn, target)
            if unknown is not None:
                # charon's resolve_me resolves local_addrs' names before it picks a source: the
                # route's source is ours only if the name holds it (a terminate cancels this too)
                self.names.wait(unknown, ("initiate", name, child),
                                lambda t: self._initiate_local_resolved(name, child, t, only), bounded=False)
                log.info("%s: resolving %s (local_addrs) before initiating", name, unknown)
                return None
        remote = (target, conn.remote_port)
        try:
            local = (self.local_address(conn, remote[0]), conn.local_port or self.ike_port)
        except LocalError as exc:
            # Said here too: a trap's ACQUIRE or a keyingtries retry has no one to raise it to.
            # The same refusal again within REFUSAL_QUIET (a trap asks every ACQUIRE_HOLD while
            # traffic hits it) at debug level only.
            level = logging.WARNING if self._refusal_is_news(name, str(exc), now) else logging.DEBUG
            log.log(level, "%s: not initiated: %s", name, exc, extra={"connection": name})
            exc.logged = True  # (callers that log what initiate raises do not say it again)
            raise
        sa = IkeSa(self, conn, initiator=True, unique_id=self.registry.next_ike_id(), local=local, remote=remote,
                   spi_i=self.registry.new_ike_spi(), now=now)
        self.registry.add(sa)
        sa.start(CATALOG.ike_init(sa, children), now)
        self.scheduler.touch(sa)
        return sa

    def resolved(self, name: str, addrs, now: float) -> None:
        """The runtime's answer for host name ``name`` (its addresses; empty: it did not resolve):
        what waited for it (initiations, a redirect) goes on, to the addresses now known."""
        for action in self.names.answer(name, addrs, now):
            action(now)

    def _initiate_resolved(self, conn_name: str, child: str | None, host: str, now: float,
                           only: tuple[str, ...] = ()) -> None:
        if not self.names.addresses(host):
            log.warning("%s: not initiated: %s did not resolve to an address", conn_name, host,
                        extra={"connection": conn_name})
            self.count("name_unresolved")
            # As an event too (charon: "unable to resolve, initiate aborted", ALERT_PEER_ADDR_FAILED):
            # `initiate --wait` and the console learn the initiation is over. The IKE SA id is one
            # no SA will have, so the console files it with no other negotiation.
            self.emit(NegotiationFailed(
                self.registry.next_ike_id(), conn_name, "IKE_SA_INIT", "UNRESOLVED",
                f"{host} did not resolve to an address, so nothing was sent: check the name (and the "
                f"host's DNS), or put the peer's address in connections.{conn_name}.remote_addrs", child))
            if conn_name in self._attempts and conn_name in {c.name for c in self.policy.connections}:
                # A keyingtries attempt: it counts, and the next one follows (charon's retransmit()
                # keyingtry++ and tries again; its IKE SA keeps the peer's last address, which
                # ours has only while the name's answer is kept: see names.MAX_NAMES).
                self._attempt_failed(self._conn(conn_name), now)
            return
        try:
            conn = self._conn(conn_name)
        except LocalError:
            return  # removed by a policy change meanwhile
        if (names.initiate_target(conn) or "").lower() != host.lower():
            return  # its remote_addrs changed meanwhile
        self._initiate_after_wait(conn_name, child, now, only)

    def _refusal_is_news(self, name: str, text: str, now: float) -> bool:
        """Whether connection ``name``'s initiation refused with ``text`` is worth a warning: not
        when the last refusal said the same less than REFUSAL_QUIET seconds ago."""
        said = self.__dict__.setdefault("_refusals", {})  # (the endpoint's own tables: none for this)
        last = said.get(name)
        if last is not None and last[0] == text and now - last[1] < REFUSAL_QUIET:
            return False
        if len(said) >= 1024:  # connection names of the policy: a few; bounded all the same
            said.clear()
        said[name] = (text, now)
        return True

    def _local_name_unknown(self, conn: ConnectionConfig, target: str) -> str | None:
        """A host name in local_addrs with no address known yet, when our address towards
        ``target`` may depend on it (no literal local_addrs address of its family)."""
        if addresses.literal(conn.local_addrs, ipaddress.ip_address(target).version) is not None:
            return None
        return next((e.strip() for e in conn.local_addrs if names.is_name(e) and not self.names.addresses(e)), None)

    def _initiate_local_resolved(self, conn_name: str, child: str | None, now: float,
                                 only: tuple[str, ...] = ()) -> None:
        # Asked once: a name that did not resolve ends this initiation with local_address's
        # error (naming it), not another query.
        if not self._initiate_after_wait(conn_name, child, now, only, local_names=False):
            return
        conn = next((c for c in self.policy.connections if c.name == conn_name), None)
        unresolved = [e.strip() for e in conn.local_addrs if names.is_name(e) and not self.names.addresses(e)] \
            if conn is not None else []
        if not unresolved:
            return  # refused for another reason: the warning says it
        # As for the peer's name (_initiate_resolved): an event, so that `initiate --wait` and the
        # console learn the initiation is over, and that it was OUR name (charon's resolve_me).
        self.count("name_unresolved")
        key = f"connections.{conn_name}.local_addrs"
        self.emit(NegotiationFailed(
            self.registry.next_ike_id(), conn_name, "IKE_SA_INIT", "UNRESOLVED",
            f"our host name {', '.join(unresolved)} ({key}) did not resolve to an address, so nothing was "
            f"sent: check the name (and this host's DNS), or put our address in {key}", child))
        if conn_name in self._attempts:
            self._attempt_failed(conn, now)  # a keyingtries attempt: counts, the next one follows

    def _initiate_after_wait(self, conn_name: str, child: str | None, now: float, only: tuple[str, ...],
                             local_names: bool = True) -> bool:
        """Whether it was refused (LocalError: logged)."""
        try:
            self.initiate(conn_name, now, child, only=only, local_names=local_names)
        except LocalError as exc:
            if isinstance(exc, IllegalTransition):
                raise
            if not getattr(exc, "logged", False):
                log.warning("%s: not initiated: %s", conn_name, exc, extra={"connection": conn_name})
            return True
        return False

    def _reestablish(self, sa: IkeSa, ended: Ended, now: float) -> None:
        # charon's reestablish: the CHILD SAs that were up with dpd_action = restart, or those
        # ended.children names for close_action = start (engine.ike.close_action)
        only = tuple(dict.fromkeys(c.name for c in ended.children if ended.kind == "closed"
                                   or c.dpd_action == "restart"))
        if not only:
            return
        name = sa.name
        at = (sa.established_at or now) + CLOSE_START_HOLDOFF if ended.kind == "closed" else now
        if at <= now:
            self.scheduler.call_at(now, lambda t: self._initiate_quietly(name, t, only))
            return
        # The peer deleted an IKE SA it had just set up: a peer that deletes each new one at
        # once gets one IKE_SA_INIT per CLOSE_START_HOLDOFF, not a storm; held as a keyingtries
        # retry is, so that terminate cancels it and an SA coming up meanwhile drops it.
        log.info("%s: the peer closed an IKE SA it had just set up: setting it up again in %.0fs "
                 "(close_action = start)", name, at - now, extra={"connection": name})
        token = object()
        self._retries[name] = (at, token)
        self.scheduler.call_at(at, lambda t: self._retry(name, token, t, only))
