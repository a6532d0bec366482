"""The kernel datapath as the runtime sees it (engine.datapath.base.Datapath).

Calls into :class:`KernelDatapath` are synchronous netlink round trips of
well under a millisecond, so they run on the event loop: the runtime
dispatches ``ChildSaInstalled`` before it transmits the IKE message that
completes the exchange, and a synchronous install keeps the SA in the
kernel before the peer can send on it (charon's order too). Only start and
stop (flushes, socket setup) go to a thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from engine.datapath.kernel import (
    KernelDatapath,
    KernelDatapathError,
    enable_udp_encap,
    socket_bypass,
)
from engine.datapath.kernel_vip import VirtualIps
from engine.datapath.traps import AskedTraps, TrapNotes, is_host, trap_local
from engine.crypto.transforms import EsnId
from engine.events import (
    AcquireRequested,
    ChildSaDeleted,
    ChildSaInstalled,
    ChildSaMoved,
    SaCounters,
    VirtualIpsChanged,
)
from engine.ike.errors import PlanRefused
from engine.ike.names import initiate_target, is_name
from engine.policy.model import ChildConfig, ConnectionConfig, Policy

log = logging.getLogger(__name__)

XFRM_STAT = "/proc/net/xfrm_stat"
REKEYED_INBOUND_LINGER = 5.0
"""Seconds a rekeyed pair's inbound SA still accepts packets in flight (charon's
delete_rekeyed_delay; the userspace datapath's REKEYED_INBOUND_LINGER)."""
# Kernel-wide drop counters (/proc/net/xfrm_stat) that belong to no SA.
GLOBAL_DROPS = {
    "no_sa": ("XfrmInNoStates", "XfrmOutNoStates"),
    "discard_rule": ("XfrmInPolBlock", "XfrmOutPolBlock"),
    "policy_mismatch": ("XfrmInTmplMismatch", "XfrmInNoPols", "XfrmInStateMismatch"),
    "malformed": ("XfrmInHdrError", "XfrmFwdHdrError"),
}


@dataclass(frozen=True)
class _Trap:
    reqid: int
    child: ChildConfig
    local: str
    remote: str
    routed: bool = False
    """``local`` is the route's source towards ``remote`` (no local address configured)."""


def read_xfrm_stat(path: str = XFRM_STAT) -> dict[str, int]:
    """Drops by reason from the kernel's XFRM MIB (empty without CONFIG_XFRM_STATISTICS)."""
    try:
        with open(path) as f:
            mib = {k: int(v) for k, v in (line.split() for line in f if line.strip())}
    except (OSError, ValueError):
        return {}
    return {reason: sum(mib.get(n, 0) for n in names) for reason, names in GLOBAL_DROPS.items()}


def claim_namespace(netns: str | None) -> socket.socket | None:
    """Claim the kernel datapath of a network namespace for this process, or raise OSError naming
    the holder. Two instances there would share the tag of what they install: the second's flush at
    start would remove the first's SAs and policies (its tunnels down, or its traffic in clear).
    An abstract unix socket: per network namespace, and released by the kernel when its holder
    dies, so a crash leaves nothing stale. Abstract names have no permissions, though: a name held
    by another user than root or ours (who could not run a kernel datapath) is a squatter, not
    an ipsec-console; it must not keep the daemon down, which then starts unclaimed (None).
    ``netns`` (tests; the daemon runs in its own namespace and passes none) is claimed in this
    process's namespace under a name of its own: it does not meet a daemon run inside ``netns``."""
    name = b"\0ipsec-console/kernel-datapath" + (b"/" + netns.encode() if netns else b"")
    where = f"network namespace {netns}" if netns else "this network namespace"
    for attempt in range(2):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(name)
            sock.listen(8)
            sock.setblocking(False)  # the holder's loop accepts probes (KernelRuntimeDatapath._answer)
            return sock
        except OSError:
            sock.close()
        holder = _holder(name)
        if holder is not None or attempt:
            break
        time.sleep(0.05)  # (refused: bound, not listening yet, or not ours) once more
    if holder is not None and holder[1] in (0, os.geteuid()):
        raise OSError(f"another ipsec-console (pid {holder[0]}) runs the kernel datapath in {where}: starting "
                      "would flush its SAs and policies; stop it first, or attach to it (ipsec-console attach)")
    by = f"pid {holder[0]} of uid {holder[1]}" if holder else "a socket that does not answer"
    log.warning("the kernel datapath's claim on %s is held by %s, not an ipsec-console (any local user can "
                "bind it): starting without it; a second ipsec-console here will not be refused", where, by)
    return None


def _holder(name: bytes) -> tuple[int, int] | None:
    """(pid, uid) of the process listening on abstract socket ``name`` (None: none answers)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            probe.connect(name)
            pid, uid, _gid = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            return pid, uid
    except OSError:
        return None


class KernelRuntimeDatapath:
    """Adapter from the runtime's Datapath protocol to :class:`KernelDatapath`."""

    name = "kernel"

    def __init__(self, policy: Policy, netns: str | None = None) -> None:
        self.policy = policy
        self.netns = netns
        self.kernel: KernelDatapath | None = None
        self._claim: socket.socket | None = None
        """Held while running: see claim_namespace."""
        self.runtime = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._traps: dict[tuple[str, str], _Trap] = {}
        self._asked_traps = AskedTraps()
        """(connection, child) the engine asked a trap for (close_action/dpd_action = trap)."""
        self._notes = TrapNotes(log)
        """Traps that could not go in, said once (each apply derives them all again)."""
        self._encap_fds: set[int] = set()
        self._userspace_esp = 0
        self._vips: VirtualIps | None = None
        """Virtual IPs a gateway gave us, on lo, and their source routes (engine.datapath.kernel_vip)."""
        self._vip_worker: ThreadPoolExecutor | None = None
        """One thread for them, in order: pyroute2's blocking API cannot run on the event loop's thread."""

    # ------------------------------------------------------------ lifecycle
    async def start(self, runtime) -> None:
        self.runtime = runtime
        self._loop = asyncio.get_running_loop()
        # Before the flush below, which would take another instance's SAs and policies (same tag).
        self._claim = claim_namespace(self.netns)
        if self._claim is not None:
            self._loop.add_reader(self._claim.fileno(), self._answer)
        try:
            self.kernel = await asyncio.to_thread(KernelDatapath, self.netns)
        except BaseException:
            self._release()
            raise
        try:
            flushed = await asyncio.to_thread(self.kernel.flush_ours)
            if flushed.policies or flushed.sas:
                log.info("removed %d policies and %d SAs left by an earlier run", flushed.policies, flushed.sas)
            if self.netns is None and any(c.vips for c in self.policy.connections):
                self._start_vips()
            self._loop.add_reader(self.kernel.events_fileno(), self._on_kernel_events)
        except BaseException:
            self.kernel.close(flush=False)
            self.kernel = None
            self._release()
            raise

    def _answer(self) -> None:
        """A probe of claim_namespace connected: drop it (unaccepted, they filled the backlog and
        later probes could not learn who holds the claim)."""
        try:
            conn, _ = self._claim.accept()
            conn.close()
        except OSError:
            pass

    def _release(self) -> None:
        claim, self._claim = self._claim, None
        if claim is not None:
            if self._loop is not None:
                self._loop.remove_reader(claim.fileno())
            claim.close()

    async def stop(self) -> None:
        kernel, self.kernel = self.kernel, None
        if kernel is None:
            return
        worker, self._vip_worker = self._vip_worker, None
        if worker is not None:
            vips, self._vips = self._vips, None
            if vips is not None:
                notes = worker.submit(vips.close)
                await asyncio.to_thread(worker.shutdown, wait=True)
                self._log_notes(notes)
            else:
                await asyncio.to_thread(worker.shutdown, wait=True)
        if self._loop is not None:
            self._loop.remove_reader(kernel.events_fileno())
        self._traps.clear()
        self._notes.forget()
        try:
            await asyncio.to_thread(kernel.close)
        finally:
            self._release()

    def prepare_socket(self, sock: socket.socket) -> None:
        """IKE must pass whatever the SPD says: a per-socket bypass, as charon's."""
        socket_bypass(sock)

    # ------------------------------------------------------------ SAs
    def install(self, ev: ChildSaInstalled) -> None:
        self._enable_udp_encap()
        try:
            self._kernel().install_child(ev, priority=self._child_priority(ev.connection, ev.child))
        except KernelDatapathError as exc:
            self._report("error", f"cannot install CHILD SA {ev.child}{{{ev.unique_id}}}: {exc}", ev.connection)
            # the runtime deletes it with the peer, which would otherwise send into nothing (charon too
            # fails a CHILD SA the kernel refuses)
            raise
        if self._vips is not None:
            self._vip_call(self._vips.child_installed, ev)

    def remove(self, ev: ChildSaDeleted) -> None:
        if self._vips is not None:
            self._vip_call(self._vips.child_removed, ev)
        # the peer may have sent on the old SA until our DELETE (or its own) reached it
        linger = ev.reason.startswith("rekeyed") and self._loop is not None
        try:
            self._kernel().remove_child(ev, linger=linger)
        except KernelDatapathError as exc:
            self._report("error", f"cannot remove CHILD SA {ev.child}{{{ev.unique_id}}}: {exc}", ev.connection)
        if linger:
            self._loop.call_later(REKEYED_INBOUND_LINGER, self._forget, ev.spi_in, ev.connection)

    def _forget(self, spi_in: int, connection: str) -> None:
        kernel = self.kernel
        if kernel is None:
            return  # stopped meanwhile: the flush took it
        try:
            kernel.forget(spi_in)
        except KernelDatapathError as exc:
            self._report("error", f"cannot remove the rekeyed inbound SA 0x{spi_in:08x}: {exc}", connection)

    def move(self, ev: ChildSaMoved) -> None:
        """MOBIKE moved a pair: its XFRM states and policy templates follow the new outer
        addresses with the same SPIs, keys and sequence numbers (KernelDatapath.move_child),
        synchronously like install (a few sub-millisecond round trips). If the kernel refuses,
        the pair stays where it was and a CHILD rekey puts a new one on the new addresses."""
        self._enable_udp_encap()
        try:
            self._kernel().move_child(ev)
        except KernelDatapathError as exc:
            self._report("warning", f"CHILD SA {ev.child} (inbound SPI 0x{ev.spi_in:08x}) not moved in the "
                                    f"kernel, rekeying it instead: {exc}", ev.connection)
            self.runtime.endpoint.rekey_child_spi(ev.spi_in, self.runtime.now())
            return
        log.info("CHILD SA %s (inbound SPI 0x%08x) moved to %s - %s", ev.child, ev.spi_in, ev.local_addr,
                 ev.remote_addr, extra={"connection": ev.connection})

    def virtual_ips(self, ev: VirtualIpsChanged) -> None:
        """Addresses a gateway assigned us go on lo, with source routes for the CHILD SAs that use
        them (engine.datapath.kernel_vip); they come off with their IKE SA."""
        if self.netns is not None:
            return  # a namespace of the tests: the runtime's own process is elsewhere
        if self._vips is None:  # vips came with a policy applied later
            self._start_vips()
        self._vip_call(self._vips.assigned, ev.addresses, ev.assigned)
        log.info("virtual IP%s %s %s lo", "s" if len(ev.addresses) > 1 else "", " ".join(ev.addresses),
                 "on" if ev.assigned else "removed from", extra={"connection": ev.connection})

    def _start_vips(self) -> None:
        self._vip_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="virtual-ips")
        self._vips = self._vip_worker.submit(VirtualIps).result()
        self._vip_call(self._vips.remove_stale)

    def _vip_call(self, fn, *args) -> None:
        """Run ``fn`` on the virtual-IP thread (in order); its notes are logged on the loop's thread."""
        loop = self._loop
        future = self._vip_worker.submit(fn, *args)

        def done(f) -> None:
            try:
                loop.call_soon_threadsafe(self._log_notes, f)
            except RuntimeError:  # the loop closed meanwhile (stopping)
                pass

        future.add_done_callback(done)

    def _log_notes(self, future) -> None:
        try:
            notes = future.result()
        except Exception as exc:  # noqa: BLE001  (a bug of ours must not stop the datapath)
            log.exception("virtual IP routing failed: %s", exc)
            return
        for level, text in notes:
            self._report(level, text)

    def receive_esp(self, data: bytes, local, remote, now: float) -> None:
        # The kernel decapsulates ESP-in-UDP on the NAT-T socket; what still
        # reaches us had no SA (or came before the socket was switched).
        self._userspace_esp += 1

    def counters(self) -> tuple[list[SaCounters], dict[str, int]]:
        sas = self._kernel().counters()
        if self.runtime is not None:
            # The kernel stamps last use in Unix time; the engine counts on its own clock.
            shift = time.time() - self.runtime.now()
            sas = [dataclasses.replace(c, last_used=c.last_used - shift) if c.last_used else c for c in sas]
        drops = read_xfrm_stat() if self.netns is None else {}
        if self._userspace_esp:
            drops["no_sa"] = drops.get("no_sa", 0) + self._userspace_esp
        return sas, {k: v for k, v in drops.items() if v}

    # ------------------------------------------------------------ policy
    def apply_policy(self, policy: Policy) -> None:
        """Rules become bypass/discard policies; ``start_action = "trap"``
        children become trap policies. Rules the kernel refuses refuse the whole policy
        (PlanRefused with the kernel's message; the previous rules stay, the runtime keeps its
        policy): running a policy whose discard rules are not in force would leave traffic it
        blocks flowing, while everything says the policy was applied."""
        _refuse_esn_without_replay_window(policy)
        self._enable_udp_encap()
        kernel = self._kernel()
        try:
            kernel.install_rules(policy.rules)
        except KernelDatapathError as exc:
            raise PlanRefused(f"the kernel refused the bypass/discard rules: {exc}") from None
        self.policy = policy
        self._apply_traps()

    def peer_addresses_changed(self) -> None:
        """A host name in remote_addrs resolved anew (the runtime calls this): a trap that waited
        for its peer's address goes in, one whose peer moved (DynDNS) follows it."""
        if self.kernel is not None:
            self._apply_traps()

    def _apply_traps(self) -> None:
        kernel = self._kernel()
        policy = self.policy
        wanted: dict[tuple[str, str], tuple[_Trap, ConnectionConfig]] = {}
        self._asked_traps.prune(policy)
        self._notes.begin()
        for conn in policy.connections:
            for child in conn.children:
                if self._asked_traps.wants(conn, child):
                    trap = self._trap_for(conn, child)
                    if trap is not None:
                        wanted[(conn.name, child.name)] = (trap, conn)
        for key, trap in list(self._traps.items()):
            new = wanted.get(key, (None,))[0]
            if new is not None and new.reqid == trap.reqid:
                continue  # the same, or replaced below: the new one in before the old goes
            if new != trap:
                del self._traps[key]  # the SpdTable forgets it even when the kernel refuses
                try:
                    kernel.remove_trap(trap.reqid)
                except KernelDatapathError as exc:
                    # raising would fail a reload whose rules are in (and skip the traps after it)
                    self._report("error", f"trap for {key[0]}/{key[1]} not removed: {exc}", key[0])
        for key, (trap, conn) in wanted.items():
            old = self._traps.get(key)
            if old == trap:
                continue
            try:
                if old is None:
                    kernel.install_trap(trap.reqid, trap.child, trap.local, trap.remote)
                else:
                    # charon's "updating already routed CHILD_SA": removing first would leave the
                    # selectors without a policy a moment (their traffic in clear)
                    kernel.install_trap(trap.reqid, trap.child, trap.local, trap.remote, replace=True)
                self._traps[key] = trap
            except KernelDatapathError as exc:
                # tried again at each apply: the same refusal is no news (a refused update keeps
                # the old trap in force)
                self._notes.note(conn, key[1], "error", f"trap for {key[0]}/{key[1]} not installed: {exc}")
        self._notes.end()

    def trap(self, connection: str, child: str) -> None:
        """The engine's TrapRequested: that child is trapped too, until the policy drops it."""
        if self._asked_traps.ask(connection, child) and self.kernel is not None:
            self._apply_traps()

    def untrap(self, connection: str) -> list[str]:
        """The admin's terminate: the traps the engine asked for that connection go (those of
        ``start_action = "trap"`` are the policy's and stay), or the next packet would bring the
        tunnel back. Returns the children whose trap went."""
        gone = self._asked_traps.drop(connection)
        if gone and self.kernel is not None:
            self._apply_traps()
        return gone

    def _trap_for(self, conn: ConnectionConfig, child: ChildConfig) -> _Trap | None:
        # The peer the trap's ACQUIRE initiates to (engine.ike.names): a literal address, or what
        # its host name resolved to; a name not answered yet is installed once it is.
        peer_address = getattr(self.runtime, "peer_address", None)
        remote = peer_address(conn) if peer_address is not None else \
            next((a for a in conn.remote_addrs if is_host(a)), None)
        if remote is None or not is_host(remote):
            target = initiate_target(conn)
            what = f"trap {conn.name}/{child.name}"
            if target is not None and is_name(target):
                self._notes.note(conn, child.name, "info", f"{what}: waiting for {target} to resolve")
            else:
                self._notes.note(conn, child.name, "warning", f"{what}: needs a concrete remote address")
            return None
        version = ipaddress.ip_address(remote).version
        # the address IKE will initiate from (engine.ike.addresses.local_for), or no trap: an
        # ACQUIRE of a trap IKE refuses to initiate for would say that refusal again each time
        endpoint = getattr(self.runtime, "endpoint", None)
        local, routed, refused = trap_local(conn, self.policy, remote, lambda peer: self._route_source(conn, child, peer),
                                            self._resolved(), getattr(endpoint, "listening", ()),
                                            getattr(endpoint, "unopened", None))
        if refused is not None:
            resolved = self._resolved()
            unknown = next((e for e in conn.local_addrs if is_name(e) and resolved is not None and not resolved(e)), None)
            if unknown is not None:
                # (at start the policy goes in before any name is answered: a wait, not a fault)
                self._notes.note(conn, child.name, "info", f"trap {conn.name}/{child.name}: waiting for {unknown} "
                                                           "to resolve")
                return None
            self._notes.note(conn, child.name, "warning", f"trap {conn.name}/{child.name} not installed: {refused}")
            return None
        if local is None:
            self._notes.note(conn, child.name, "warning", f"trap {conn.name}/{child.name}: needs local_addrs or "
                                                         f"[engine] listen with an IPv{version} address (the host "
                                                         f"has no route to {remote} to take one from)")
            return None
        reqid = self._engine_reqid(conn, child)
        if reqid is None:
            return None
        return _Trap(reqid, child, local, remote, routed)

    def _resolved(self):
        """What local_addrs' host names resolved to (the engine's table; None: no engine)."""
        names = getattr(getattr(self.runtime, "endpoint", None), "names", None)
        return getattr(names, "addresses", None)

    def _route_source(self, conn: ConnectionConfig, child: ChildConfig, remote: str) -> str | None:
        """No local address configured: the one the host sends from towards ``remote``, which the
        IKE SA will use too (IkeEndpoint.local_address; charon's trap_manager asks
        get_source_addr at each install). Asked at each apply, as the userspace datapath's traps
        do: a host whose address changed gets the trap moved to it (the old one's policies match
        none of the traffic, which would leave in clear). An installed trap to the same peer keeps
        its own while the host has no route: a route gone for a while does not take it away."""
        source_for = getattr(getattr(self.runtime, "sockets", None), "source_for", None)
        found = source_for(remote) if source_for is not None else None
        if found is None:
            installed = self._traps.get((conn.name, child.name))
            if installed is not None and installed.routed and installed.remote == remote:
                return installed.local
        return found

    def _engine_reqid(self, conn: ConnectionConfig, child: ChildConfig) -> int | None:
        """The reqid the engine will give this child's SAs, so that the
        ACQUIRE of the trap finds it (IkeEndpoint.acquire)."""
        endpoint = getattr(self.runtime, "endpoint", None)
        by_config = getattr(endpoint, "reqid_for_config", None)
        if by_config is not None:
            return by_config(conn.name, child.name)
        by_sa = getattr(endpoint, "reqid_for", None)
        if by_sa is not None:
            # reqid_for keys reqids by (IKE SA's connection name, child name)
            return by_sa(_ConnectionRef(conn.name), child, None)
        self._notes.note(conn, child.name, "warning",
                         f"trap {conn.name}/{child.name}: the engine cannot name its reqid")
        return None

    def _child_priority(self, connection: str, child: str) -> int | None:
        try:
            return self.policy.connection(connection).child(child).priority
        except KeyError:
            return None

    # ------------------------------------------------------------ plumbing
    def _kernel(self) -> KernelDatapath:
        if self.kernel is None:
            raise RuntimeError("the kernel datapath is not started")
        return self.kernel

    def _enable_udp_encap(self) -> None:
        """UDP_ENCAP on the NAT-T sockets (only those: on port 500 the kernel
        would take IKE for ESP, as IKE there has no non-ESP marker)."""
        sockets = getattr(self.runtime, "sockets", None)
        natt = self.policy.engine.natt_port
        for ep in getattr(sockets, "endpoints", ()):
            fd = ep.sock.fileno()
            if ep.port == natt and fd not in self._encap_fds:
                enable_udp_encap(ep.sock)
                self._encap_fds.add(fd)

    def _on_kernel_events(self) -> None:
        kernel = self.kernel
        if kernel is None:
            return
        try:
            events = kernel.read_events(0)
        except OSError as exc:
            log.warning("reading XFRM events failed: %s", exc)
            return
        for ev in events:
            if isinstance(ev, AcquireRequested) and not any(t.reqid == ev.reqid for t in self._traps.values()):
                # charon's trap_manager too ("trap not found, unable to acquire reqid"): a trap
                # policy the kernel would not remove, or one that went while this was queued,
                # must not bring back a tunnel the admin or the policy took down
                log.debug("ACQUIRE for reqid %d: no trap of ours, ignored", ev.reqid)
                continue
            self.runtime.datapath_event(ev)

    @staticmethod
    def _report(level: str, text: str, connection: str = "") -> None:
        # the runtime turns engine.* log records into LogMessage events
        getattr(log, level)("%s", text, extra={"connection": connection})


def _refuse_esn_without_replay_window(policy: Policy) -> None:
    """Linux refuses an inbound ESN SA without a replay window (xfrm_init_replay: EINVAL; charon's
    too, it passes the window as configured): such a CHILD SA would fail at every negotiation that
    picks ESN, with the kernel's bare "Invalid argument". Said once, naming the child, instead."""
    for conn in policy.connections:
        for child in conn.children:
            if child.replay_window == 0 and any(t.id == EsnId.ESN for p in child.proposals for t in p.esn):
                raise PlanRefused(
                    f"connection '{conn.name}': child '{child.name}' has replay_window = 0 and offers ESN: the "
                    "Linux kernel refuses an inbound ESN SA without a replay window; set replay_window "
                    "(the default is 64) or leave ESN out of its proposals")


@dataclass(frozen=True)
class _ConnectionRef:
    """What IkeEndpoint.reqid_for reads of an IKE SA: its connection name."""

    name: str
