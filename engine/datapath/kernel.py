"""The kernel datapath: CHILD SAs and SPD entries in Linux XFRM over NETLINK_XFRM.

Blocking calls; the asyncio runtime runs them in thread workers (a lock
serialises them). What it installs is tagged (see :mod:`kernel_policy`):
policies by a priority band, SAs and templates by a reqid range, so
:meth:`KernelDatapath.flush_ours` removes exactly ours, also after a crash,
and nothing of anyone else's. One datapath per network namespace: two
ipsec-console instances in one namespace would share the tag.

Typical use by the runtime::

    dp = KernelDatapath()            # or KernelDatapath(netns="blue")
    dp.flush_ours()                  # leftovers of a crashed run
    socket_bypass(ike_socket)        # IKE itself must not be caught by a tunnel
    enable_udp_encap(natt_socket)    # the kernel decapsulates ESP-in-UDP on 4500
    dp.install_rules(policy.rules)
    loop.add_reader(dp.events_fileno(), lambda: feed(dp.read_events()))
    ... dp.install_child(ev) / dp.remove_child(ev) / dp.counters() ...
    dp.close()                       # flushes ours
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.datapath.kernel_base import KernelDatapathError, Holder, SaRef, ip_of, log, sa_text
from engine.datapath.kernel_move import MovesChildren
from engine.datapath.kernel_policy import (
    PROTOCOLS,
    PolicyError,
    Selector,
    engine_reqid,
    is_our_reqid,
    kernel_reqid,
    protect_policies,
)
from engine.datapath.kernel_sa import SaConfigError, build_sa, family_of, sa_id
from engine.datapath.kernel_socket import NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, XfrmSocket
from engine.datapath.kernel_spd import PolicyEntry, policy_is_ours
from engine.datapath.natmap import MappingWatch
from engine.datapath.xfrm_netlink import (
    IP_XFRM_POLICY,
    IPPROTO_ESP,
    IPV6_XFRM_POLICY,
    UDP_ENCAP,
    UDP_ENCAP_ESPINUDP,
    XFRM_MSG_ACQUIRE,
    XFRM_MSG_DELPOLICY,
    XFRM_MSG_DELSA,
    XFRM_MSG_EXPIRE,
    XFRM_MSG_GETPOLICY,
    XFRM_MSG_GETSA,
    XFRM_MSG_MAPPING,
    XFRM_MSG_NEWSA,
    XFRM_POLICY_ALLOW,
    XFRM_POLICY_IN,
    XFRM_POLICY_OUT,
    XFRMNLGRP_ACQUIRE,
    XFRMNLGRP_EXPIRE,
    XFRMNLGRP_MAPPING,
    address_text,
    userpolicy_info_body,
    xfrm_userpolicy_id,
)
from engine.events import (
    AcquireRequested,
    ChildSaDeleted,
    ChildSaInstalled,
    Event,
    LogMessage,
    NatMappingChanged,
    RekeyRequested,
    SaCounters,
)
from engine.policy.model import Policy


__all__ = [
    "FlushResult",
    "KernelDatapath",
    "KernelDatapathError",
    "enable_udp_encap",
    "socket_bypass",
]


@dataclass(frozen=True)
class FlushResult:
    """What :meth:`KernelDatapath.flush_ours` removed."""

    policies: int
    sas: int


@dataclass
class _Child:
    ev: ChildSaInstalled
    kreqid: int
    sa_in: SaRef
    sa_out: SaRef
    holder: Holder
    policy_keys: list[tuple[int, Selector]]
    reported: set[bool] = field(default_factory=set)
    """Expire hardness already turned into RekeyRequested (soft once, hard once)."""
    pending_out: ChildSaInstalled | None = None
    """A rekey's responder: the event (with keys) of the outbound SA that goes in only when the
    pair it replaces goes (see install_child)."""


def socket_bypass(sock: socket.socket) -> None:
    """Let ``sock`` send and receive in clear whatever the SPD says (IKE's own
    UDP sockets: otherwise a tunnel or transport policy covering the peer's
    address would catch IKE itself). A per-socket policy, as charon sets."""
    if sock.family == socket.AF_INET:
        level, option = socket.IPPROTO_IP, IP_XFRM_POLICY
    elif sock.family == socket.AF_INET6:
        level, option = socket.IPPROTO_IPV6, IPV6_XFRM_POLICY
    else:
        raise ValueError(f"socket_bypass: not an IP socket (family {sock.family})")
    for direction in (XFRM_POLICY_OUT, XFRM_POLICY_IN):
        policy = userpolicy_info_body.pack({"sel": {"family": int(sock.family)}, "action": XFRM_POLICY_ALLOW,
                                            "dir": direction})
        sock.setsockopt(level, option, policy)


def enable_udp_encap(sock: socket.socket) -> None:
    """Make the kernel decapsulate ESP-in-UDP (RFC 3948) arriving on this UDP
    socket (the NAT-T port). IKE messages, which start with the 4-byte
    non-ESP marker, still reach the socket, marker included."""
    sock.setsockopt(socket.IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)


class KernelDatapath(MovesChildren):
    """CHILD SAs, traps and bypass/discard rules as Linux XFRM state.

    ``netns``: the name of a network namespace (``ip netns``) to work in;
    None for the caller's own.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._nl = XfrmSocket(netns)
        try:
            # subscribed from the start, so no ACQUIRE, EXPIRE or MAPPING is missed
            groups = (1 << (XFRMNLGRP_ACQUIRE - 1)) | (1 << (XFRMNLGRP_EXPIRE - 1)) | (1 << (XFRMNLGRP_MAPPING - 1))
            self._events = XfrmSocket(netns, groups=groups)
        except BaseException:
            self._nl.close()
            raise
        self._lock = threading.RLock()
        self._policies: dict[tuple[int, Selector], PolicyEntry] = {}
        self._children: dict[int, _Child] = {}
        self._sa_index: dict[tuple[int, str, int], tuple[int, str]] = {}
        """(spi, daddr, proto) -> (spi_in of the child it belongs to, "in" or "out")."""
        self._traps: dict[int, list[tuple[int, Selector]]] = {}
        self._rules: dict[tuple[int, Selector], Holder] = {}
        self._waiting: dict[int, list[int]] = {}
        """spi_in of a pair -> spi_in of the pairs whose outbound SA waits for it to go."""
        self._lingering: dict[int, SaRef] = {}
        """spi_in -> inbound SA of a rekeyed pair kept for packets in flight (see remove_child)."""
        self._mappings = MappingWatch()
        """NAT mapping changes already reported (the kernel repeats one for every packet)."""

    # ------------------------------------------------------------ lifecycle
    def close(self, flush: bool = True) -> None:
        """Remove everything of ours (unless ``flush`` is False) and close the sockets."""
        try:
            if flush:
                self.flush_ours()
        finally:
            self._nl.close()
            self._events.close()

    @classmethod
    def for_runtime(cls, policy: Policy, netns: str | None = None):
        """The runtime's view of this datapath (engine.datapath.base.Datapath)."""
        from engine.datapath.kernel_runtime import KernelRuntimeDatapath

        return KernelRuntimeDatapath(policy, netns)

    def __enter__(self) -> KernelDatapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ CHILD SAs
    def install_child(self, ev: ChildSaInstalled, priority: int | None = None) -> None:
        """Install both SAs of ``ev``, then its policies (out, in, fwd).

        Make-before-break: a rekeyed CHILD SA (same reqid) is installed while
        the old one is still there; the policies already point at the reqid,
        so they are shared, not replaced. ``priority`` is the child config's
        explicit SPD priority, if any. On any failure nothing of ``ev``
        stays installed.

        As the rekey's responder, only the inbound SA goes in now: the kernel
        sends on the newest outbound SA of a reqid, and the initiator installs
        its inbound SA only when our response arrives, so sending on the new
        one at once loses packets. Its outbound SA goes in when the pair it
        replaces is removed (the initiator's DELETE), as charon's child_sa.c
        (register_outbound / install_outbound) and the userspace datapath do.
        """
        try:
            kreqid = kernel_reqid(ev.reqid)
            msg_in = build_sa(ev, True, kreqid)
            msg_out = build_sa(ev, False, kreqid)
            specs = protect_policies(ev.local_ts, ev.remote_ts, ev.local_addr, ev.remote_addr,
                                     ev.protocol, ev.mode, kreqid, priority)
        except (SaConfigError, PolicyError) as exc:
            raise KernelDatapathError(f"child {ev.child!r} {{{ev.unique_id}}}: {exc}") from None
        family = family_of(ev.local_addr)
        proto = PROTOCOLS[ev.protocol]
        # canonical text, as address_text() gives it back from the kernel
        sa_in = SaRef(str(ip_of(ev.local_addr)), ev.spi_in, proto, family)
        sa_out = SaRef(str(ip_of(ev.remote_addr)), ev.spi_out, proto, family)
        holder: Holder = ("child", ev.spi_in, kreqid)
        what = f"child {ev.child!r} {{{ev.unique_id}}}"
        with self._lock:
            if ev.spi_in in self._children:
                raise KernelDatapathError(f"{what}: inbound SPI 0x{ev.spi_in:08x} is already installed")
            defer = ev.rekeyed_from is not None and not ev.initiator and ev.rekeyed_from in self._children
            undo: list[Callable[[], None]] = []
            try:
                self._add_sa(msg_in, sa_in, what)
                # a lingering SA of that SPI was ours and is replaced: its timer must not take this one
                self._lingering.pop(ev.spi_in, None)
                undo.append(lambda: self._delete_sa(sa_in, what))
                if not defer:
                    self._add_sa(msg_out, sa_out, what)
                    undo.append(lambda: self._delete_sa(sa_out, what))
                for spec in specs:
                    self._hold_policy(spec, holder, undo, what)
            except BaseException:
                self._rollback(undo)
                raise
            # the keys are the kernel's now: none stay here (a move reads them back from it)
            self._children[ev.spi_in] = _Child(ev.without_keys(), kreqid, sa_in, sa_out, holder,
                                               [s.key for s in specs], pending_out=ev if defer else None)
            self._sa_index[(sa_in.spi, sa_in.daddr, proto)] = (ev.spi_in, "in")
            if defer:
                self._waiting.setdefault(ev.rekeyed_from, []).append(ev.spi_in)
            else:
                self._sa_index[(sa_out.spi, sa_out.daddr, proto)] = (ev.spi_in, "out")

    def _activate(self, spi_in: int, what: str) -> None:
        """Install the waiting outbound SA of pair ``spi_in`` (see install_child)."""
        child = self._children.get(spi_in)
        if child is None or child.pending_out is None:
            return
        ev, child.pending_out = child.pending_out, None
        try:
            msg = build_sa(ev, False, child.kreqid)
        except SaConfigError as exc:
            raise KernelDatapathError(f"{what}: {exc}") from None
        self._add_sa(msg, child.sa_out, what)
        ref = child.sa_out
        self._sa_index[(ref.spi, ref.daddr, ref.proto)] = (spi_in, "out")

    def remove_child(self, ev: ChildSaDeleted, linger: bool = False) -> None:
        """Remove a CHILD SA: its policies (unless another SA of the same
        reqid, a trap or a rekey, still holds them), then both SAs. SAs the
        kernel already removed (hard expiry) are fine. A pair waiting to
        replace this one sends from now on (see install_child).

        ``linger`` (a rekeyed pair): the inbound SA stays for packets still in
        flight until :meth:`forget` (charon's delete_rekeyed_delay)."""
        what = f"child {ev.child!r} {{{ev.unique_id}}}"
        with self._lock:
            child = self._children.pop(ev.spi_in, None)
            self._mappings.forget(ev.spi_in)
            errors: list[Exception] = []
            if child is not None:
                # the successor's outbound SA before this one's goes: never a moment without one
                for spi in self._waiting.pop(ev.spi_in, ()):
                    try:
                        self._activate(spi, what)
                    except KernelDatapathError as exc:
                        errors.append(exc)
                if child.pending_out is not None:
                    waiting = self._waiting.get(child.pending_out.rekeyed_from, [])
                    if ev.spi_in in waiting:
                        waiting.remove(ev.spi_in)
                for key in child.policy_keys:
                    try:
                        self._release_policy(key, child.holder, what)
                    except KernelDatapathError as exc:
                        errors.append(exc)
                refs = [] if linger else [child.sa_in]
                if child.pending_out is None:  # a waiting outbound SA never went in
                    refs.append(child.sa_out)
                if linger:
                    self._lingering[ev.spi_in] = child.sa_in
                    self._sa_index.pop((child.sa_in.spi, child.sa_in.daddr, child.sa_in.proto), None)
            else:
                # Not installed by this instance: remove the SAs only if the
                # kernel says they are ours.
                proto = PROTOCOLS.get(ev.protocol)
                refs = []
                if proto is not None and ev.local_addr and ev.remote_addr:
                    try:
                        family = family_of(ev.local_addr)
                    except SaConfigError as exc:
                        raise KernelDatapathError(f"{what}: {exc}") from None
                    refs = [SaRef(str(ip_of(ev.local_addr)), ev.spi_in, proto, family),
                            SaRef(str(ip_of(ev.remote_addr)), ev.spi_out, proto, family)]
            for ref in refs:
                self._sa_index.pop((ref.spi, ref.daddr, ref.proto), None)
                try:
                    self._delete_sa(ref, what)
                except KernelDatapathError as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]

    def forget(self, spi_in: int) -> None:
        """Remove the inbound SA a ``remove_child(linger=True)`` kept (if still there)."""
        with self._lock:
            ref = self._lingering.pop(spi_in, None)
            if ref is not None:
                self._delete_sa(ref, f"rekeyed inbound SA 0x{spi_in:08x}")

    # ------------------------------------------------------------ counters
    def counters(self) -> list[SaCounters]:
        """Bytes, packets and drops of every SA this instance installed."""
        out = []
        for reply in self._request(sa_id("", 0, 0, 0), XFRM_MSG_GETSA, NLM_F_DUMP, "GETSA dump"):
            msg = reply.msg
            if not is_our_reqid(msg["reqid"]):
                continue
            family = msg["family"]
            daddr = address_text(msg["id"]["daddr"], family)
            spi, proto = msg["id"]["spi"], msg["id"]["proto"]
            with self._lock:
                known = self._sa_index.get((spi, daddr, proto))
            if known is None:
                continue
            stats, cur = msg["stats"], msg["curlft"]
            last_used = msg.get_attr("XFRMA_LASTUSED") or cur["use_time"]
            out.append(SaCounters(
                spi=spi,
                direction=known[1],
                bytes=cur["bytes"],
                packets=cur["packets"],
                drops=(("replay", stats["replay"] + stats["replay_window"]), ("icv", stats["integrity_failed"])),
                last_used=float(last_used) if last_used else None,
            ))
        return out

    # ------------------------------------------------------------ events
    def events_fileno(self) -> int:
        """The event socket's descriptor, for ``loop.add_reader``."""
        return self._events.fileno()

    def read_events(self, timeout: float | None = 0.0) -> list[Event]:
        """ACQUIRE, EXPIRE and MAPPING messages for our policies and SAs, as engine events.

        Waits up to ``timeout`` seconds (None: until one arrives; keep it
        finite in a thread so the thread can stop) for the first, then
        returns all that are queued. ACQUIRE -> :class:`AcquireRequested`;
        soft EXPIRE -> ``RekeyRequested(hard=False)``, hard ->
        ``RekeyRequested(hard=True)`` (the kernel has then deleted the SA),
        each at most once per CHILD SA; MAPPING -> :class:`NatMappingChanged`
        (see ``_mapping_event``).
        """
        replies, overrun = self._events.read(timeout)
        events: list[Event] = []
        if overrun:
            events.append(LogMessage(time=time.time(), level="warning", source=__name__,
                                     text="the kernel dropped XFRM events (ACQUIRE/EXPIRE/MAPPING): we read too slowly"))
        for reply in replies:
            msg = reply.msg
            if msg is None:
                continue
            if reply.type == XFRM_MSG_ACQUIRE:
                ev = acquire_event(msg)
            elif reply.type == XFRM_MSG_EXPIRE:
                ev = self._expire_event(msg)
            elif reply.type == XFRM_MSG_MAPPING:
                ev = self._mapping_event(msg)
            else:
                ev = None
            if ev is not None:
                events.append(ev)
        return events

    def _expire_event(self, msg) -> RekeyRequested | None:
        state = msg["state"]
        if not is_our_reqid(state["reqid"]):
            return None
        daddr = address_text(state["id"]["daddr"], state["family"])
        key = (state["id"]["spi"], daddr, state["id"]["proto"])
        hard = bool(msg["hard"])
        with self._lock:
            known = self._sa_index.get(key)
            spi_in = known[0] if known is not None else None
            child = self._children.get(spi_in) if spi_in is not None else None
            if child is None or hard in child.reported:
                return None
            child.reported.add(hard)
            if hard:
                self._sa_index.pop(key, None)
        return RekeyRequested(spi_in=spi_in, hard=hard, reason=_expire_reason(state, hard))

    def _mapping_event(self, msg, now: float | None = None) -> NatMappingChanged | None:
        """An XFRM_MSG_MAPPING of one of our inbound ESP SAs as the engine's event (charon's
        kernel_netlink_ipsec process_mapping), at most once per SA per change within
        MAPPING_HOLD: a kernel before 5.17 ignores the SA's XFRMA_MTIMER_THRESH and sends one
        for every packet until the SA is moved."""
        if msg["proto"] != IPPROTO_ESP or not is_our_reqid(msg["reqid"]):
            return None
        if not msg["old_sport"]:
            return None  # charon: a per-CPU SA with source port 0 is not followed
        try:
            daddr = address_text(msg["daddr"], msg["family"])
            new = (address_text(msg["new_saddr"], msg["family"]), msg["new_sport"])
        except ValueError:
            return None
        with self._lock:
            known = self._sa_index.get((msg["spi"], daddr, IPPROTO_ESP))
            if known is None or known[1] != "in":
                return None
            return self._mappings.tell(known[0], new, time.monotonic() if now is None else now)

    # ------------------------------------------------------------ flush
    def flush_ours(self) -> FlushResult:
        """Remove every policy and SA carrying our tag, whoever's memory they
        were in (this run, or a crashed earlier one); nothing else."""
        with self._lock:
            policies = sas = 0
            errors: list[Exception] = []
            for reply in self._request(xfrm_userpolicy_id(), XFRM_MSG_GETPOLICY, NLM_F_DUMP, "GETPOLICY dump"):
                msg = reply.msg
                if not policy_is_ours(msg):
                    continue
                req = xfrm_userpolicy_id()
                req["index"] = msg["index"]
                req["dir"] = msg["dir"]
                try:
                    self._request(req, XFRM_MSG_DELPOLICY, 0, f"DELPOLICY index {msg['index']}")
                    policies += 1
                except KernelDatapathError as exc:
                    if exc.errno != errno.ENOENT:
                        errors.append(exc)
            for reply in self._request(sa_id("", 0, 0, 0), XFRM_MSG_GETSA, NLM_F_DUMP, "GETSA dump"):
                msg = reply.msg
                # spi 0: a larval state for an ACQUIRE; the kernel drops it itself
                if not is_our_reqid(msg["reqid"]) or msg["id"]["spi"] == 0:
                    continue
                family = msg["family"]
                ref = SaRef(address_text(msg["id"]["daddr"], family), msg["id"]["spi"], msg["id"]["proto"], family)
                try:
                    self._request(sa_id(ref.daddr, ref.spi, ref.proto, ref.family), XFRM_MSG_DELSA, 0,
                                  f"DELSA {sa_text(ref)}")
                    sas += 1
                except KernelDatapathError as exc:
                    if exc.errno != errno.ESRCH:
                        errors.append(exc)
            self._policies.clear()
            self._children.clear()
            self._sa_index.clear()
            self._traps.clear()
            self._rules.clear()
            self._waiting.clear()
            self._lingering.clear()
            self._mappings = MappingWatch()  # their reported NAT mapping changes go with them
            if errors:
                raise errors[0]
            return FlushResult(policies, sas)

    # ------------------------------------------------------------ kernel I/O
    def _add_sa(self, msg, ref: SaRef, what: str) -> None:
        text = f"{what}: NEWSA {sa_text(ref)}"
        try:
            self._request(msg, XFRM_MSG_NEWSA, NLM_F_CREATE | NLM_F_EXCL, text)
        except KernelDatapathError as exc:
            if exc.errno in (errno.ENOSYS, errno.ENOENT, errno.EPROTONOSUPPORT):
                raise KernelDatapathError(f"{exc}; this kernel lacks ESP/AH or the algorithm (CONFIG_INET_ESP, "
                                          f"CONFIG_INET_AH, crypto modules)", exc.errno) from None
            if exc.errno != errno.EEXIST:
                raise
            # Ours from a run that crashed before flushing: replace it.
            reqid = self._sa_reqid(ref)
            if reqid is None or not is_our_reqid(reqid):
                raise KernelDatapathError(f"{text}: that SPI is already used by an SA ipsec-console did not "
                                          f"install", errno.EEXIST) from None
            self._request(sa_id(ref.daddr, ref.spi, ref.proto, ref.family), XFRM_MSG_DELSA, 0, text)
            self._request(msg, XFRM_MSG_NEWSA, NLM_F_CREATE | NLM_F_EXCL, text)

    def _sa_reqid(self, ref: SaRef) -> int | None:
        try:
            replies = self._request(sa_id(ref.daddr, ref.spi, ref.proto, ref.family), XFRM_MSG_GETSA, 0, "GETSA")
        except KernelDatapathError as exc:
            if exc.errno == errno.ESRCH:
                return None
            raise
        return replies[0].msg["reqid"] if replies else None

    def _delete_sa(self, ref: SaRef, what: str) -> None:
        reqid = self._sa_reqid(ref)
        if reqid is None:
            return  # already gone (hard expiry)
        if not is_our_reqid(reqid):
            log.warning("%s: SA %s now belongs to someone else (reqid %d); left alone", what, sa_text(ref), reqid)
            return
        try:
            self._request(sa_id(ref.daddr, ref.spi, ref.proto, ref.family), XFRM_MSG_DELSA, 0,
                          f"{what}: DELSA {sa_text(ref)}")
        except KernelDatapathError as exc:
            if exc.errno != errno.ESRCH:
                raise

# ---------------------------------------------------------------- helpers

def acquire_event(msg) -> AcquireRequested | None:
    """The engine event for a decoded ``xfrm_user_acquire``, if the policy is ours."""
    tmpls = msg.get_attr("XFRMA_TMPL") or []
    if not tmpls or not is_our_reqid(tmpls[0]["reqid"]):
        return None
    tmpl = tmpls[0]
    family = tmpl["family"] or msg["sel"]["family"]
    return AcquireRequested(reqid=engine_reqid(tmpl["reqid"]),
                            local_addr=address_text(msg["saddr"], family),
                            remote_addr=address_text(msg["id"]["daddr"], family))


def _expire_reason(state: dict, hard: bool) -> str:
    lft, cur = state["lft"], state["curlft"]
    kind = "hard" if hard else "soft"
    if cur["bytes"] >= lft[f"{kind}_byte_limit"]:
        return f"{kind} byte limit ({lft[f'{kind}_byte_limit']} bytes) reached"
    if cur["packets"] >= lft[f"{kind}_packet_limit"]:
        return f"{kind} packet limit ({lft[f'{kind}_packet_limit']} packets) reached"
    return f"{kind} lifetime expired"


