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

import dataclasses
import errno
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from engine.datapath.kernel_policy import (
    PROTOCOLS,
    PolicyError,
    PolicySpec,
    Selector,
    engine_reqid,
    is_our_priority,
    is_our_reqid,
    kernel_reqid,
    protect_policies,
    rule_policies,
)
from engine.datapath.kernel_move import moved_sa
from engine.datapath.kernel_sa import SaConfigError, build_sa, family_of, sa_id
from engine.datapath.kernel_socket import (
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NetlinkRequestError,
    XfrmSocket,
)
from engine.datapath.xfrm_netlink import (
    IP_XFRM_POLICY,
    IPV6_XFRM_POLICY,
    UDP_ENCAP,
    UDP_ENCAP_ESPINUDP,
    XFRM_MSG_ACQUIRE,
    XFRM_MSG_DELPOLICY,
    XFRM_MSG_DELSA,
    XFRM_MSG_EXPIRE,
    XFRM_MSG_GETPOLICY,
    XFRM_MSG_GETSA,
    XFRM_MSG_NEWPOLICY,
    XFRM_MSG_NEWSA,
    XFRM_MSG_UPDPOLICY,
    XFRM_POLICY_ALLOW,
    XFRM_POLICY_IN,
    XFRM_POLICY_OUT,
    XFRM_POLICY_TYPE_MAIN,
    XFRMNLGRP_ACQUIRE,
    XFRMNLGRP_EXPIRE,
    address_text,
    userpolicy_info_body,
    xfrm_userpolicy_id,
    xfrm_userpolicy_info,
)
from engine.events import (
    AcquireRequested,
    ChildSaDeleted,
    ChildSaInstalled,
    ChildSaMoved,
    Event,
    LogMessage,
    RekeyRequested,
    SaCounters,
)
from engine.policy.model import ChildConfig, Policy, RuleConfig

log = logging.getLogger(__name__)

__all__ = [
    "FlushResult",
    "KernelDatapath",
    "KernelDatapathError",
    "enable_udp_encap",
    "socket_bypass",
]


class KernelDatapathError(Exception):
    """The kernel refused a change, or a request cannot become kernel state.

    Whatever the call had changed before failing has been undone.
    ``errno`` is the kernel's error number when it came from the kernel.
    """

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


@dataclass(frozen=True)
class FlushResult:
    """What :meth:`KernelDatapath.flush_ours` removed."""

    policies: int
    sas: int


Holder = tuple[str, object, int | None]
"""Why a policy is installed: ("child", spi_in, kreqid), ("trap", reqid, kreqid)
or ("rule", name, None). A policy stays while it has holders."""


@dataclass
class _Policy:
    spec: PolicySpec
    holders: set[Holder] = field(default_factory=set)


@dataclass(frozen=True)
class _SaRef:
    daddr: str
    spi: int
    proto: int
    family: int


@dataclass
class _Child:
    ev: ChildSaInstalled
    kreqid: int
    sa_in: _SaRef
    sa_out: _SaRef
    holder: Holder
    policy_keys: list[tuple[int, Selector]]
    reported: set[bool] = field(default_factory=set)
    """Expire hardness already turned into RekeyRequested (soft once, hard once)."""


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


class KernelDatapath:
    """CHILD SAs, traps and bypass/discard rules as Linux XFRM state.

    ``netns``: the name of a network namespace (``ip netns``) to work in;
    None for the caller's own.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._nl = XfrmSocket(netns)
        try:
            # subscribed from the start, so no ACQUIRE or EXPIRE is missed
            groups = (1 << (XFRMNLGRP_ACQUIRE - 1)) | (1 << (XFRMNLGRP_EXPIRE - 1))
            self._events = XfrmSocket(netns, groups=groups)
        except BaseException:
            self._nl.close()
            raise
        self._lock = threading.RLock()
        self._policies: dict[tuple[int, Selector], _Policy] = {}
        self._children: dict[int, _Child] = {}
        self._sa_index: dict[tuple[int, str, int], tuple[int, str]] = {}
        """(spi, daddr, proto) -> (spi_in of the child it belongs to, "in" or "out")."""
        self._traps: dict[int, list[tuple[int, Selector]]] = {}
        self._rules: dict[tuple[int, Selector], Holder] = {}

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
        sa_in = _SaRef(str(_ip(ev.local_addr)), ev.spi_in, proto, family)
        sa_out = _SaRef(str(_ip(ev.remote_addr)), ev.spi_out, proto, family)
        holder: Holder = ("child", ev.spi_in, kreqid)
        what = f"child {ev.child!r} {{{ev.unique_id}}}"
        with self._lock:
            if ev.spi_in in self._children:
                raise KernelDatapathError(f"{what}: inbound SPI 0x{ev.spi_in:08x} is already installed")
            undo: list[Callable[[], None]] = []
            try:
                self._add_sa(msg_in, sa_in, what)
                undo.append(lambda: self._delete_sa(sa_in, what))
                self._add_sa(msg_out, sa_out, what)
                undo.append(lambda: self._delete_sa(sa_out, what))
                for spec in specs:
                    self._hold_policy(spec, holder, undo, what)
            except BaseException:
                self._rollback(undo)
                raise
            # the keys are the kernel's now: none stay here (a move reads them back from it)
            self._children[ev.spi_in] = _Child(ev.without_keys(), kreqid, sa_in, sa_out, holder,
                                               [s.key for s in specs])
            self._sa_index[(sa_in.spi, sa_in.daddr, proto)] = (ev.spi_in, "in")
            self._sa_index[(sa_out.spi, sa_out.daddr, proto)] = (ev.spi_in, "out")

    def remove_child(self, ev: ChildSaDeleted) -> None:
        """Remove a CHILD SA: its policies (unless another SA of the same
        reqid, a trap or a rekey, still holds them), then both SAs. SAs the
        kernel already removed (hard expiry) are fine."""
        what = f"child {ev.child!r} {{{ev.unique_id}}}"
        with self._lock:
            child = self._children.pop(ev.spi_in, None)
            errors: list[Exception] = []
            if child is not None:
                for key in child.policy_keys:
                    try:
                        self._release_policy(key, child.holder, what)
                    except KernelDatapathError as exc:
                        errors.append(exc)
                refs = [child.sa_in, child.sa_out]
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
                    refs = [_SaRef(str(_ip(ev.local_addr)), ev.spi_in, proto, family),
                            _SaRef(str(_ip(ev.remote_addr)), ev.spi_out, proto, family)]
            for ref in refs:
                self._sa_index.pop((ref.spi, ref.daddr, ref.proto), None)
                try:
                    self._delete_sa(ref, what)
                except KernelDatapathError as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]

    def move_child(self, ev: ChildSaMoved) -> None:
        """MOBIKE (RFC 4555): put the pair of ``ev.spi_in`` on new outer addresses
        without a rekey, as charon's kernel-netlink ``update_sa``: each SA is read
        back (keys, replay state, counters), deleted and added again on the new
        addresses (engine.datapath.kernel_move), then the tunnel policies'
        templates follow. On any failure what was changed is undone and the
        pair stays where it was."""
        what = f"child {ev.child!r} (inbound SPI 0x{ev.spi_in:08x})"
        with self._lock:
            child = self._children.get(ev.spi_in)
            if child is None:
                raise KernelDatapathError(f"{what}: not installed by this datapath")
            if child.ev.mode != "tunnel":
                # transport selectors are the outer addresses: only a new CHILD SA can follow them
                raise KernelDatapathError(f"{what}: a transport mode SA cannot move")
            try:
                family = family_of(ev.local_addr)
                if family_of(ev.remote_addr) != family or family != child.sa_in.family:
                    raise SaConfigError(f"{ev.local_addr} and {ev.remote_addr}: not the SA's address family")
            except SaConfigError as exc:
                raise KernelDatapathError(f"{what}: {exc}") from None
            sa_in = dataclasses.replace(child.sa_in, daddr=str(_ip(ev.local_addr)))
            sa_out = dataclasses.replace(child.sa_out, daddr=str(_ip(ev.remote_addr)))
            was = child.ev
            back = dataclasses.replace(ev, local_addr=was.local_addr, remote_addr=was.remote_addr,
                                       local_port=was.local_port, remote_port=was.remote_port, encap=was.encap)
            undo: list[Callable[[], None]] = []
            try:
                self._move_sa(child.sa_in, sa_in, True, ev, back, undo, what)
                self._move_sa(child.sa_out, sa_out, False, ev, back, undo, what)
                for key in child.policy_keys:
                    self._move_policy(key, ev, undo, what)
            except BaseException:
                self._rollback(undo)
                raise
            for old, new, direction in ((child.sa_in, sa_in, "in"), (child.sa_out, sa_out, "out")):
                self._sa_index.pop((old.spi, old.daddr, old.proto), None)
                self._sa_index[(new.spi, new.daddr, new.proto)] = (ev.spi_in, direction)
            child.sa_in, child.sa_out = sa_in, sa_out
            child.ev = dataclasses.replace(child.ev, local_addr=ev.local_addr, remote_addr=ev.remote_addr,
                                           local_port=ev.local_port, remote_port=ev.remote_port, encap=ev.encap)

    def _move_sa(self, old: _SaRef, new: _SaRef, inbound: bool, ev: ChildSaMoved, back: ChildSaMoved,
                 undo: list[Callable[[], None]], what: str) -> None:
        ident = sa_id(old.daddr, old.spi, old.proto, old.family)
        replies = self._request(ident, XFRM_MSG_GETSA, 0, f"{what}: GETSA {_sa_text(old)}")
        if not replies:
            raise KernelDatapathError(f"{what}: GETSA {_sa_text(old)}: the kernel returned nothing")
        current = replies[0].msg
        if not is_our_reqid(current["reqid"]):
            raise KernelDatapathError(f"{what}: SA {_sa_text(old)} belongs to someone else now")
        try:
            msg = moved_sa(current, inbound, ev)
            # undo puts it back where it was, also past the sequence numbers sent meanwhile
            restore = moved_sa(current, inbound, back)
        except SaConfigError as exc:
            raise KernelDatapathError(f"{what}: {exc}") from None
        self._request(ident, XFRM_MSG_DELSA, 0, f"{what}: DELSA {_sa_text(old)}")
        # the keys live on only in these closures, which end with this call
        undo.append(lambda: self._request(restore, XFRM_MSG_NEWSA, NLM_F_CREATE | NLM_F_EXCL,
                                          f"{what}: NEWSA {_sa_text(old)} (undo)"))
        self._request(msg, XFRM_MSG_NEWSA, NLM_F_CREATE | NLM_F_EXCL, f"{what}: NEWSA {_sa_text(new)}")
        undo.append(lambda: self._request(sa_id(new.daddr, new.spi, new.proto, new.family), XFRM_MSG_DELSA, 0,
                                          f"{what}: DELSA {_sa_text(new)} (undo)"))

    def _move_policy(self, key: tuple[int, Selector], ev: ChildSaMoved, undo: list[Callable[[], None]],
                     what: str) -> None:
        entry = self._policies.get(key)
        if entry is None or entry.spec.tmpl is None:
            return  # the allow-only fwd policy names no SA
        src, dst = (ev.local_addr, ev.remote_addr) if key[0] == XFRM_POLICY_OUT else (ev.remote_addr, ev.local_addr)
        spec = dataclasses.replace(entry.spec, tmpl=dataclasses.replace(entry.spec.tmpl, src=src, dst=dst))
        if spec == entry.spec:
            return
        old = entry.spec
        self._update_policy(spec, what)
        entry.spec = spec
        undo.append(lambda: self._restore_spec(entry, old, what))

    # ------------------------------------------------------------ traps
    def install_trap(self, reqid: int, child: ChildConfig, local_addr: str, remote_addr: str) -> None:
        """Install the policies of ``child`` without SAs (``start_action = trap``):
        the first matching packet makes the kernel send an ACQUIRE, which
        :meth:`read_events` turns into ``AcquireRequested(reqid)``. The engine
        must use the same ``reqid`` for the CHILD SA it then negotiates."""
        local = [ts.resolve(_ip(local_addr)) for ts in child.local_ts]
        remote = [ts.resolve(_ip(remote_addr)) for ts in child.remote_ts]
        what = f"trap {child.name!r}"
        try:
            kreqid = kernel_reqid(reqid)
            specs = protect_policies(local, remote, local_addr, remote_addr, child.protocol, child.mode,
                                     kreqid, child.priority)
        except PolicyError as exc:
            raise KernelDatapathError(f"{what}: {exc}") from None
        holder: Holder = ("trap", reqid, kreqid)
        with self._lock:
            if reqid in self._traps:
                raise KernelDatapathError(f"{what}: reqid {reqid} already has a trap")
            undo: list[Callable[[], None]] = []
            try:
                for spec in specs:
                    self._hold_policy(spec, holder, undo, what)
            except BaseException:
                self._rollback(undo)
                raise
            self._traps[reqid] = [s.key for s in specs]

    def remove_trap(self, reqid: int) -> None:
        """Remove a trap's policies (those a CHILD SA of the same reqid still uses stay)."""
        with self._lock:
            keys = self._traps.pop(reqid, None)
            if keys is None:
                return
            holder: Holder = ("trap", reqid, kernel_reqid(reqid))
            for key in keys:
                self._release_policy(key, holder, f"trap reqid {reqid}")

    # ------------------------------------------------------------ rules
    def install_rules(self, rules: Sequence[RuleConfig]) -> None:
        """Make the kernel's bypass (allow) and discard (block) policies match
        ``rules`` exactly: new ones are added, changed ones updated, dropped
        ones removed. On failure the previous rule set stays in force."""
        wanted: dict[tuple[int, Selector], tuple[PolicySpec, Holder]] = {}
        for rule in rules:
            try:
                specs = rule_policies(rule.action, rule.local_ts, rule.remote_ts, rule.priority)
            except PolicyError as exc:
                raise KernelDatapathError(f"rule {rule.name!r}: {exc}") from None
            for spec in specs:
                # an earlier rule with the same selector shadows a later one
                wanted.setdefault(spec.key, (spec, ("rule", rule.name, None)))
        with self._lock:
            undo: list[Callable[[], None]] = []
            try:
                for key, (spec, holder) in wanted.items():
                    old = self._rules.get(key)
                    if old is not None and old != holder:
                        self._policies[key].holders.discard(old)
                        undo.append(lambda k=key, o=old: self._policies[k].holders.add(o))
                    self._hold_policy(spec, holder, undo, f"rule {holder[1]!r}")
            except BaseException:
                self._rollback(undo)
                raise
            stale = {k: h for k, h in self._rules.items() if k not in wanted}
            self._rules = {key: holder for key, (_, holder) in wanted.items()}
            errors = []
            for key, holder in stale.items():
                try:
                    self._release_policy(key, holder, f"rule {holder[1]!r}")
                except KernelDatapathError as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]

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
        """ACQUIRE and EXPIRE messages for our policies and SAs, as engine events.

        Waits up to ``timeout`` seconds (None: until one arrives; keep it
        finite in a thread so the thread can stop) for the first, then
        returns all that are queued. ACQUIRE -> :class:`AcquireRequested`;
        soft EXPIRE -> ``RekeyRequested(hard=False)``, hard ->
        ``RekeyRequested(hard=True)`` (the kernel has then deleted the SA),
        each at most once per CHILD SA.
        """
        replies, overrun = self._events.read(timeout)
        events: list[Event] = []
        if overrun:
            events.append(LogMessage(time=time.time(), level="warning", source=__name__,
                                     text="the kernel dropped XFRM events (ACQUIRE/EXPIRE): we read too slowly"))
        for reply in replies:
            msg = reply.msg
            if msg is None:
                continue
            if reply.type == XFRM_MSG_ACQUIRE:
                ev = acquire_event(msg)
            elif reply.type == XFRM_MSG_EXPIRE:
                ev = self._expire_event(msg)
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

    # ------------------------------------------------------------ flush
    def flush_ours(self) -> FlushResult:
        """Remove every policy and SA carrying our tag, whoever's memory they
        were in (this run, or a crashed earlier one); nothing else."""
        with self._lock:
            policies = sas = 0
            errors: list[Exception] = []
            for reply in self._request(xfrm_userpolicy_id(), XFRM_MSG_GETPOLICY, NLM_F_DUMP, "GETPOLICY dump"):
                msg = reply.msg
                if not _policy_is_ours(msg):
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
                ref = _SaRef(address_text(msg["id"]["daddr"], family), msg["id"]["spi"], msg["id"]["proto"], family)
                try:
                    self._request(sa_id(ref.daddr, ref.spi, ref.proto, ref.family), XFRM_MSG_DELSA, 0,
                                  f"DELSA {_sa_text(ref)}")
                    sas += 1
                except KernelDatapathError as exc:
                    if exc.errno != errno.ESRCH:
                        errors.append(exc)
            self._policies.clear()
            self._children.clear()
            self._sa_index.clear()
            self._traps.clear()
            self._rules.clear()
            if errors:
                raise errors[0]
            return FlushResult(policies, sas)

    # ------------------------------------------------------------ kernel I/O
    def _request(self, msg, msg_type: int, flags: int, what: str):
        try:
            return self._nl.request(msg, msg_type, flags)
        except NetlinkRequestError as exc:
            raise KernelDatapathError(f"{what}: the kernel said: {exc.strerror}", exc.errno) from None
        except TimeoutError as exc:
            raise KernelDatapathError(str(exc), errno.ETIMEDOUT) from None

    def _add_sa(self, msg, ref: _SaRef, what: str) -> None:
        text = f"{what}: NEWSA {_sa_text(ref)}"
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

    def _sa_reqid(self, ref: _SaRef) -> int | None:
        try:
            replies = self._request(sa_id(ref.daddr, ref.spi, ref.proto, ref.family), XFRM_MSG_GETSA, 0, "GETSA")
        except KernelDatapathError as exc:
            if exc.errno == errno.ESRCH:
                return None
            raise
        return replies[0].msg["reqid"] if replies else None

    def _delete_sa(self, ref: _SaRef, what: str) -> None:
        reqid = self._sa_reqid(ref)
        if reqid is None:
            return  # already gone (hard expiry)
        if not is_our_reqid(reqid):
            log.warning("%s: SA %s now belongs to someone else (reqid %d); left alone", what, _sa_text(ref), reqid)
            return
        try:
            self._request(sa_id(ref.daddr, ref.spi, ref.proto, ref.family), XFRM_MSG_DELSA, 0,
                          f"{what}: DELSA {_sa_text(ref)}")
        except KernelDatapathError as exc:
            if exc.errno != errno.ESRCH:
                raise

    def _policy_msg(self, spec: PolicySpec) -> xfrm_userpolicy_info:
        msg = xfrm_userpolicy_info()
        for k, v in spec.to_dict().items():
            msg[k] = v
        return msg

    def _policy_id(self, spec: PolicySpec) -> xfrm_userpolicy_id:
        msg = xfrm_userpolicy_id()
        msg["sel"] = spec.sel.to_dict()
        msg["dir"] = spec.dir
        return msg

    def _kernel_policy(self, spec: PolicySpec):
        """The kernel's policy with the identity of ``spec``, or None."""
        try:
            replies = self._request(self._policy_id(spec), XFRM_MSG_GETPOLICY, 0, "GETPOLICY")
        except KernelDatapathError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return replies[0].msg if replies else None

    def _add_policy(self, spec: PolicySpec, what: str) -> None:
        try:
            self._request(self._policy_msg(spec), XFRM_MSG_NEWPOLICY, NLM_F_CREATE | NLM_F_EXCL,
                          f"{what}: NEWPOLICY {spec.describe()}")
        except KernelDatapathError as exc:
            if exc.errno != errno.EEXIST:
                raise
            existing = self._kernel_policy(spec)
            if existing is not None and not _policy_is_ours(existing):
                raise KernelDatapathError(
                    f"{what}: policy {spec.describe()}: the kernel already has a policy for this selector and "
                    f"direction that ipsec-console did not install (priority {existing['priority']}); remove it "
                    f"or change the traffic selectors", errno.EEXIST) from None
            # ours, left over from an earlier run: take it over
            self._update_policy(spec, what)

    def _update_policy(self, spec: PolicySpec, what: str) -> None:
        self._request(self._policy_msg(spec), XFRM_MSG_UPDPOLICY, NLM_F_CREATE,
                      f"{what}: UPDPOLICY {spec.describe()}")

    def _delete_policy(self, spec: PolicySpec, what: str) -> None:
        existing = self._kernel_policy(spec)
        if existing is None:
            return
        if not _policy_is_ours(existing):
            log.warning("%s: policy %s now belongs to someone else; left alone", what, spec.describe())
            return
        req = xfrm_userpolicy_id()
        req["index"] = existing["index"]
        req["dir"] = spec.dir
        try:
            self._request(req, XFRM_MSG_DELPOLICY, 0, f"{what}: DELPOLICY {spec.describe()}")
        except KernelDatapathError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def _hold_policy(self, spec: PolicySpec, holder: Holder, undo: list[Callable[[], None]], what: str) -> None:
        """Make sure the kernel has ``spec`` and count ``holder`` as its user."""
        entry = self._policies.get(spec.key)
        if entry is None:
            self._add_policy(spec, what)
            self._policies[spec.key] = _Policy(spec, {holder})
            undo.append(lambda: self._drop_entry(spec.key, what))
            return
        if entry.spec != spec:
            if not _may_replace(entry, holder):
                users = ", ".join(_holder_text(h) for h in sorted(entry.holders, key=str))
                raise KernelDatapathError(
                    f"{what}: policy {spec.describe()} conflicts with {entry.spec.describe()} of {users}",
                    errno.EEXIST)
            old = entry.spec
            self._update_policy(spec, what)
            entry.spec = spec
            undo.append(lambda: self._restore_spec(entry, old, what))
        if holder not in entry.holders:
            entry.holders.add(holder)
            undo.append(lambda: entry.holders.discard(holder))

    def _restore_spec(self, entry: _Policy, old: PolicySpec, what: str) -> None:
        self._update_policy(old, what)
        entry.spec = old

    def _drop_entry(self, key: tuple[int, Selector], what: str) -> None:
        entry = self._policies.pop(key, None)
        if entry is not None:
            self._delete_policy(entry.spec, what)

    def _release_policy(self, key: tuple[int, Selector], holder: Holder, what: str) -> None:
        entry = self._policies.get(key)
        if entry is None:
            return
        entry.holders.discard(holder)
        if not entry.holders:
            del self._policies[key]
            self._delete_policy(entry.spec, what)

    @staticmethod
    def _rollback(undo: list[Callable[[], None]]) -> None:
        for action in reversed(undo):
            try:
                action()
            except Exception as exc:  # keep undoing the rest; the first error is what the caller sees
                log.warning("rollback step failed: %s", exc)


# ---------------------------------------------------------------- helpers

def _ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(addr)
    except ValueError:
        raise KernelDatapathError(f"{addr!r} is not an IP address") from None


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


def _policy_is_ours(msg) -> bool:
    """Our tag: priority in our band, and only our reqids in its templates."""
    if not is_our_priority(msg["priority"]):
        return False
    ptype = msg.get_attr("XFRMA_POLICY_TYPE")
    if ptype is not None and ptype.get("type", XFRM_POLICY_TYPE_MAIN) != XFRM_POLICY_TYPE_MAIN:
        return False
    return all(is_our_reqid(t["reqid"]) for t in msg.get_attr("XFRMA_TMPL") or [])


def _may_replace(entry: _Policy, holder: Holder) -> bool:
    """A policy may be changed in place when everyone using it agrees on what it
    is for: the same reqid (a rekey or trap with new tunnel endpoints), or
    only rules (a rule set being replaced)."""
    kinds = {h[0] for h in entry.holders}
    if holder[0] == "rule":
        return kinds <= {"rule"}
    return "rule" not in kinds and all(h[2] == holder[2] for h in entry.holders)


def _holder_text(holder: Holder) -> str:
    kind, key, _ = holder
    if kind == "child":
        return f"the CHILD SA with inbound SPI 0x{key:08x}"
    if kind == "trap":
        return f"the trap of reqid {key}"
    return f"rule {key!r}"


def _sa_text(ref: _SaRef) -> str:
    proto = {50: "esp", 51: "ah"}.get(ref.proto, str(ref.proto))
    return f"{proto} spi 0x{ref.spi:08x} dst {ref.daddr}"


def _expire_reason(state: dict, hard: bool) -> str:
    lft, cur = state["lft"], state["curlft"]
    kind = "hard" if hard else "soft"
    if cur["bytes"] >= lft[f"{kind}_byte_limit"]:
        return f"{kind} byte limit ({lft[f'{kind}_byte_limit']} bytes) reached"
    if cur["packets"] >= lft[f"{kind}_packet_limit"]:
        return f"{kind} packet limit ({lft[f'{kind}_packet_limit']} packets) reached"
    return f"{kind} lifetime expired"


