"""Traps of the userspace datapath (a mixin of engine.datapath.userspace.UserspaceDatapath).

``start_action = "trap"`` and the traps the engine asks for (close_action/dpd_action = trap): the
trapped child's remote selectors are routed into the TUN device, and the first packet its policy
protects without an SA asks the engine for one (UserspaceDatapath._acquire). The bookkeeping the
kernel datapath shares is in engine.datapath.traps.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from engine.datapath.traps import trap_child, trap_local, unresolved_local
from engine.datapath.tun import ranges_to_networks
from engine.ike import addresses
from engine.ike.names import initiate_target, is_name
from engine.policy.model import ChildConfig


class UserspaceTraps:
    """Reads and sets, on the datapath: ``policy``, ``runtime``, ``path`` (SaPath), ``routes``,
    ``_addrs``, ``_trap_routes``, ``_asked_traps`` (AskedTraps), ``_notes`` (TrapNotes),
    ``_strict_rpf``, ``_rpf_said``; calls ``_peer_routed``."""

    def _apply_traps(self, *, spd: bool = False) -> None:
        """``start_action = "trap"``: the child's remote selectors are routed into the device, and
        the first packet its policy protects without an SA starts the negotiation (what the
        kernel's trap policy and ACQUIRE do for the kernel datapath). ``dynamic`` selectors (a
        transport-mode or host-to-host child) name the peer the trap initiates to: its address is
        routed, and the SPD decides with them made concrete (``spd``: rebuild it even unchanged)."""
        wanted: dict[tuple[str, str], tuple[tuple, str | None]] = {}
        concrete: dict[str, dict[str, ChildConfig]] = {}
        """Connection -> child -> its config with the trap's selectors (for the SPD only)."""
        peer_address = getattr(self.runtime, "peer_address", None)
        self._asked_traps.prune(self.policy)
        self._notes.begin()
        for conn in self.policy.connections:
            target = initiate_target(conn)
            for child in conn.children:
                if not self._asked_traps.wants(conn, child):
                    continue
                what = f"trap {conn.name}/{child.name}"
                if target is None:
                    # nobody to initiate to (the kernel datapath says the same)
                    self._notes.note(conn, child.name, "warning", f"{what}: needs a concrete remote address")
                    continue
                nets = tuple(n for ts in child.remote_ts if not ts.dynamic
                             for n in ranges_to_networks(ts.start, ts.end))
                remote_dynamic = any(ts.dynamic for ts in child.remote_ts)
                peer = None
                if child.mode == "transport" or remote_dynamic:
                    # The peer itself: a host name once it resolved (peer_addresses_changed).
                    peer = peer_address(conn) if peer_address is not None else target
                    try:
                        host = ipaddress.ip_network(peer)
                    except (TypeError, ValueError):
                        if is_name(target):
                            self._notes.note(conn, child.name, "info", f"{what}: waiting for {target} to resolve")
                        continue
                    nets = (host,) if child.mode == "transport" else nets + (host,)
                    if self._strict_rpf and not self._rpf_said:
                        self._peer_routed(str(host.network_address), nets)
                local_nets = tuple(n for ts in child.local_ts if not ts.dynamic
                                   for n in ranges_to_networks(ts.start, ts.end))
                if remote_dynamic or any(ts.dynamic for ts in child.local_ts):
                    version = host.version if peer is not None else next((t.version for t in child.remote_ts), 4)
                    local, refused = self._trap_local(conn, child, peer, target, version)
                    if refused is not None:
                        # IKE would refuse the ACQUIRE's initiation: no trap (as the kernel's)
                        self._notes.note(conn, child.name, *refused)
                        continue
                    concrete.setdefault(conn.name, {})[child.name] = trap_child(child, local, peer, version)
                    if local is not None and any(ts.dynamic for ts in child.local_ts):
                        # the SPD entry is from that address: packets must leave from it (a host
                        # with several would pick another, dropped without an acquire)
                        local_nets += (ipaddress.ip_network(local),)
                src = self._addrs.address_in(local_nets) if self._addrs is not None and local_nets else None
                wanted[(conn.name, child.name)] = (nets, src)
        self._notes.end()
        self._spd_with(concrete, spd)
        self.path.traps = set(wanted)
        if self.routes is None:
            return
        old, self._trap_routes = self._trap_routes, wanted
        for key, route in wanted.items():
            if old.get(key) != route:
                self.routes.add(*route, trap=True)  # an SA's route of the network stays the kernel's
        for key, route in old.items():
            if wanted.get(key) != route:
                self.routes.remove(*route, trap=True)

    def _trap_local(self, conn, child: ChildConfig, peer: str | None, target: str, version: int
                    ) -> tuple[str | None, tuple[str, str] | None]:
        """Our end of the trap by the rule IKE initiates from (engine.datapath.traps.trap_local, as
        the kernel's traps): (address or None for any of ``version``, None or the (level, words)
        of a trap that must not go in). ``peer``: the address the trap routes (None: the tunnel's
        selectors only; the rule then takes the peer IKE initiates to, when known)."""
        endpoint = getattr(self.runtime, "endpoint", None)
        resolved = getattr(getattr(endpoint, "names", None), "addresses", None)
        listening = getattr(endpoint, "listening", ())
        if peer is None:
            peer_address = getattr(self.runtime, "peer_address", None)
            peer = peer_address(conn) if peer_address is not None else target
        try:
            remote_version = ipaddress.ip_address(peer).version
        except (TypeError, ValueError):
            remote_version = None  # a name not answered yet: what the policy names
        if remote_version != version:
            return addresses.configured(conn.local_addrs, self.policy.engine.listen or listening, version,
                                        resolved), None
        source_for = getattr(getattr(self.runtime, "sockets", None), "source_for", None)
        local, _routed, refused = trap_local(conn, self.policy, peer, source_for, resolved, listening,
                                             getattr(endpoint, "unopened", None))
        if refused is None:
            return local, None
        unknown = unresolved_local(conn, resolved)
        if unknown is not None:
            # (at start the policy goes in before any name is answered: a wait, not a fault)
            return None, ("info", f"trap {conn.name}/{child.name}: waiting for {unknown} to resolve")
        return None, ("warning", f"trap {conn.name}/{child.name} not installed: {refused}")

    def _spd_with(self, concrete: dict[str, dict[str, ChildConfig]], rebuild: bool) -> None:
        """The SPD of the policy with the traps' concrete selectors (the policy's own leaves their
        ``dynamic`` ones unresolved unless remote_addrs is one literal address: a packet to a
        peer named otherwise would be dropped, never acquired). Rebuilt only when they change,
        for a trap request or a name resolving anew (it re-indexes every installed pair)."""
        policy = self.policy
        if concrete:
            policy = dataclasses.replace(policy, connections=tuple(
                dataclasses.replace(c, children=tuple(concrete[c.name].get(k.name, k) for k in c.children))
                if c.name in concrete else c for c in policy.connections))
        if rebuild or policy != self.path.policy:
            self.path.apply_policy(policy)

    def peer_addresses_changed(self) -> None:
        """A host name in remote_addrs resolved anew (the runtime calls this): a trap that routes
        the peer's address (transport mode, ``dynamic`` remote selectors) follows it."""
        if self.policy is not None:
            self._apply_traps()

    def trap(self, connection: str, child: str) -> None:
        """The engine's TrapRequested: that child is trapped too, until the policy drops it."""
        if self._asked_traps.ask(connection, child):
            self._apply_traps()
            self.path._clear_flows()  # a flow decided "no_sa" before would not ask for the SA

    def untrap(self, connection: str) -> list[str]:
        """The admin's terminate: the traps the engine asked for that connection go (those of
        ``start_action = "trap"`` are the policy's and stay), or the next packet would bring the
        tunnel back. Returns the children whose trap went."""
        gone = self._asked_traps.drop(connection)
        if gone:
            self._apply_traps()
            self.path._clear_flows()  # a flow decided to acquire must not go on asking
        return gone

