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


class Initiation:
    """Initiating, keyingtries and re-establishing (see the module docstring)."""

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
        """Our address towards ``remote`` (charon's resolve_hosts / ike_cfg resolve_me): the first
        literal local_addrs entry of the peer's family; else a listen address of that family
        local_addrs holds (it may hold a subnet, a range, %any, a host name, or nothing); else
        the host's source towards the peer (``source_address``) when local_addrs holds it and
        we listen on the wildcard (or nothing is set: the runtime binds one); else the
        unspecified address (the kernel picks, the SA learns it from the answer:
        sa_nat.update_remote). LocalError naming the connection when local_addrs has no address
        of the peer's family, none we listen on, or not the route's source."""
        version = ipaddress.ip_address(remote).version
        entries = conn.local_addrs
        found = addresses.literal(entries, version)
        if found is not None:
            return found
        if not addresses.serves(entries, version):
            raise LocalError(f"connection '{conn.name}': local_addrs ({', '.join(entries)}) holds no IPv{version} "
                             f"address to reach {remote} from: add one, or give remote_addrs an "
                             f"IPv{10 - version} address")
        resolved = self.names.addresses
        listen = [a for a in self.policy.engine.listen if ipaddress.ip_address(a).version == version]
        bound = [a for a in listen if not ipaddress.ip_address(a).is_unspecified]
        for a in bound:  # (the address a trap of the connection has too: engine.datapath.traps)
            if addresses.allows(entries, a, resolved):
                return a
        source = self.source_address(remote) if self.source_address is not None else None
        # usable when we listen there: on the wildcard, or nowhere set (the runtime binds one)
        if source and addresses.allows(entries, source, resolved) and (not bound or len(bound) < len(listen)):
            return source
        if bound and len(bound) == len(listen):
            raise LocalError(f"connection '{conn.name}': local_addrs ({', '.join(entries)}) holds none of the "
                             f"IPv{version} addresses [engine] listen binds ({', '.join(bound)}): add one to "
                             "either")
        if source and not addresses.allows(entries, source, resolved):
            raise LocalError(f"connection '{conn.name}': the host reaches {remote} from {source}, which "
                             f"local_addrs ({', '.join(entries)}) does not hold: add it, or route the peer "
                             "through an address local_addrs holds")
        # The kernel picks the source; the SA learns it from the answer (IkeSa._update_remote).
        return "0.0.0.0" if version == 4 else "::"

    def initiate(self, name: str, now: float, child: str | None = None, *,
                 only: tuple[str, ...] = ()) -> IkeSa | None:
        """Bring up connection ``name`` (all its children, one, or those named in ``only``). None:
        its peer is named by a host name the runtime is resolving; the initiation starts when
        ``resolved`` answers."""
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
        remote = (target, conn.remote_port)
        try:
            local = (self.local_address(conn, remote[0]), conn.local_port or self.ike_port)
        except LocalError as exc:
            # Said here too: a trap's ACQUIRE or a keyingtries retry has no one to raise it to.
            log.warning("%s: not initiated: %s", name, exc, extra={"connection": name})
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
        try:
            self.initiate(conn_name, now, child, only=only)
        except LocalError as exc:
            if isinstance(exc, IllegalTransition):
                raise
            log.warning("%s: not initiated: %s", conn_name, exc)

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
