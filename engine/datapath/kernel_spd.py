"""The kernel datapath's SPD entries: each XFRM policy we install, counted by
its users (CHILD SAs, traps, bypass/discard rules), added, taken over from a
crashed run, changed in place or removed when its last user goes."""

from __future__ import annotations

import dataclasses
import errno
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from engine.datapath.kernel_base import Holder, KernelDatapathError, XfrmRequests, ip_of, log
from engine.datapath.kernel_policy import (
    PolicyError,
    PolicySpec,
    Selector,
    is_our_priority,
    is_our_reqid,
    kernel_reqid,
    protect_policies,
    rule_policies,
)
from engine.datapath.xfrm_netlink import (
    XFRM_MSG_DELPOLICY,
    XFRM_MSG_GETPOLICY,
    XFRM_MSG_NEWPOLICY,
    XFRM_MSG_UPDPOLICY,
    XFRM_POLICY_OUT,
    XFRM_POLICY_TYPE_MAIN,
    xfrm_userpolicy_id,
    xfrm_userpolicy_info,
)
from engine.datapath.kernel_socket import NLM_F_CREATE, NLM_F_EXCL
from engine.events import ChildSaMoved
from engine.policy.model import ChildConfig, RuleConfig


@dataclass
class PolicyEntry:
    spec: PolicySpec
    holders: set[Holder] = field(default_factory=set)
    wanted: dict[Holder, PolicySpec] = field(default_factory=dict)
    """What each holder installed, oldest first (charon's policy_entry used_by list): when the holder
    whose template is in the kernel goes, the newest remaining one's goes back in (two CHILD SAs of a
    reqid with different tunnel endpoints, the newer deleted first, left the older's traffic sent
    towards the newer's peer address)."""

    def want(self, holder: Holder, spec: PolicySpec) -> Callable[[], None]:
        """Record ``spec`` as ``holder``'s newest; returns the undo."""
        before = dict(self.wanted)
        # (holders gone without a release, a rule renamed in place, leave their record here)
        self.wanted = {h: s for h, s in self.wanted.items() if h in self.holders and h != holder}
        self.wanted[holder] = spec

        def undo() -> None:
            self.wanted = before
        return undo

    def newest(self) -> PolicySpec | None:
        """The spec of the newest remaining holder that recorded one, a trap's only when no SA or rule
        holds the policy (charon sorts used_by by priority, and a trap's, POLICY_PRIORITY_ROUTED,
        comes after an installed SA's whatever the order they came in)."""
        mine = [(h, s) for h, s in reversed(self.wanted.items()) if h in self.holders]
        return next((s for h, s in mine if h[0] != "trap"), None) or next((s for _, s in mine), None)


class SpdTable(XfrmRequests):
    """The policies of a :class:`engine.datapath.kernel.KernelDatapath`; the methods
    without a leading underscore take its lock, the others run under it."""

    _lock: threading.RLock
    _policies: dict[tuple[int, Selector], PolicyEntry]
    _traps: dict[int, list[tuple[int, Selector]]]
    _rules: dict[tuple[int, Selector], Holder]

    # ------------------------------------------------------------ traps
    def install_trap(self, reqid: int, child: ChildConfig, local_addr: str, remote_addr: str, *,
                     replace: bool = False) -> None:
        """Install the policies of ``child`` without SAs (``start_action = trap``):
        the first matching packet makes the kernel send an ACQUIRE, which
        :meth:`read_events` turns into ``AcquireRequested(reqid)``. The engine
        must use the same ``reqid`` for the CHILD SA it then negotiates.

        ``replace``: the reqid's trap changed (its peer moved, its child did): the new policies go
        in (updated in place where the selectors stay) before the old ones that are left go, as
        charon's trap_manager updates a routed CHILD_SA: no moment without a policy, when the
        traffic would leave in clear. If the kernel refuses, the old trap stays in force."""
        local = [ts.resolve(ip_of(local_addr)) for ts in child.local_ts]
        remote = [ts.resolve(ip_of(remote_addr)) for ts in child.remote_ts]
        what = f"trap {child.name!r}"
        try:
            kreqid = kernel_reqid(reqid)
            specs = protect_policies(local, remote, local_addr, remote_addr, child.protocol, child.mode,
                                     kreqid, child.priority)
        except PolicyError as exc:
            raise KernelDatapathError(f"{what}: {exc}") from None
        holder: Holder = ("trap", reqid, kreqid)
        with self._lock:
            old = self._traps.get(reqid)
            if old is not None and not replace:
                raise KernelDatapathError(f"{what}: reqid {reqid} already has a trap")
            undo: list[Callable[[], None]] = []
            try:
                for spec in specs:
                    self._hold_policy(spec, holder, undo, what)
            except BaseException:
                self._rollback(undo)
                raise
            keys = self._traps[reqid] = [s.key for s in specs]
            for key in old or ():
                if key not in keys:
                    try:
                        self._release_policy(key, holder, what)
                    except KernelDatapathError as exc:
                        # the new trap is in: one stale policy is no reason to say it is not
                        log.warning("%s: old policy not removed: %s", what, exc)

    def remove_trap(self, reqid: int) -> None:
        """Remove a trap's policies (those a CHILD SA of the same reqid still uses stay). A policy
        the kernel refuses to delete does not keep the others: each is released, then the first
        refusal is raised (the caller reports it and goes on, as charon's del_policy does)."""
        with self._lock:
            keys = self._traps.pop(reqid, None)
            if keys is None:
                return
            holder: Holder = ("trap", reqid, kernel_reqid(reqid))
            refused: KernelDatapathError | None = None
            for key in keys:
                try:
                    self._release_policy(key, holder, f"trap reqid {reqid}")
                except KernelDatapathError as exc:
                    refused = refused or exc
            if refused is not None:
                raise refused

    # ------------------------------------------------------------ rules
    def install_rules(self, rules: Sequence[RuleConfig]) -> None:
        """Make the kernel's bypass (allow) and discard (block) policies match
        ``rules`` exactly: new ones are added, changed ones updated, dropped
        ones removed. On failure the previous rule set stays in force: what was added is removed,
        what was changed is put back (KernelDatapathError with the kernel's message). A policy of a
        dropped rule the kernel will not delete, once the new set is in, is logged: the new set
        stands (raising then would have the caller believe the old one still did)."""
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
            for key, holder in stale.items():
                try:
                    self._release_policy(key, holder, f"rule {holder[1]!r}")
                except KernelDatapathError as exc:
                    log.error("rule %r removed, but its kernel policy stays: %s", holder[1], exc)

    def move_policy(self, key: tuple[int, Selector], ev: ChildSaMoved, undo: list[Callable[[], None]],
                     what: str) -> None:
        entry = self._policies.get(key)
        if entry is None or entry.spec.tmpl is None:
            return  # the allow-only fwd policy names no SA
        src, dst = (ev.local_addr, ev.remote_addr) if key[0] == XFRM_POLICY_OUT else (ev.remote_addr, ev.local_addr)
        mover = next((h for h in entry.holders if h[0] == "child" and h[1] == ev.spi_in), None)
        mine = entry.wanted.get(mover) if mover is not None else None
        if mine is not None and mine.tmpl is not None:
            # Only the record of the SA that moved follows it (charon's child_sa.c update() re-adds
            # that SA's policies alone): a trap, or another SA of the reqid, sharing the template keeps
            # its own. The kernel has the newest record's template, so it changes only when the
            # mover is the newest.
            before = dict(entry.wanted)
            entry.wanted[mover] = dataclasses.replace(mine, tmpl=dataclasses.replace(mine.tmpl, src=src, dst=dst))
            undo.append(lambda: setattr(entry, "wanted", before))
            spec = entry.newest() or entry.spec
        else:  # no record of the mover (not expected): the kernel's template follows it
            spec = dataclasses.replace(entry.spec, tmpl=dataclasses.replace(entry.spec.tmpl, src=src, dst=dst))
        if spec == entry.spec:
            return
        old = entry.spec
        self._update_policy(spec, what)
        entry.spec = spec
        undo.append(lambda: self._restore_spec(entry, old, what))

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
            if existing is not None and not policy_is_ours(existing):
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
        if not policy_is_ours(existing):
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
            self._policies[spec.key] = PolicyEntry(spec, {holder}, {holder: spec})
            undo.append(lambda: self._drop_entry(spec.key, what))
            return
        if entry.spec != spec and not may_replace(entry, holder):
            users = ", ".join(_holder_text(h) for h in sorted(entry.holders, key=str))
            raise KernelDatapathError(
                f"{what}: policy {spec.describe()} conflicts with {entry.spec.describe()} of {users}",
                errno.EEXIST)
        undo.append(entry.want(holder, spec))
        if holder not in entry.holders:
            entry.holders.add(holder)
            undo.append(lambda: entry.holders.discard(holder))
        wanted = entry.newest() or spec  # the newcomer's, unless it is a trap and an SA holds the policy
        if wanted != entry.spec:
            old = entry.spec
            self._update_policy(wanted, what)
            entry.spec = wanted
            undo.append(lambda: self._restore_spec(entry, old, what))

    def _restore_spec(self, entry: PolicyEntry, old: PolicySpec, what: str) -> None:
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
        entry.wanted.pop(holder, None)
        if not entry.holders:
            del self._policies[key]
            self._delete_policy(entry.spec, what)
            return
        newest = entry.newest()
        if newest is not None and newest != entry.spec:
            self._update_policy(newest, what)
            entry.spec = newest


def policy_is_ours(msg) -> bool:
    """Our tag: priority in our band, and only our reqids in its templates."""
    if not is_our_priority(msg["priority"]):
        return False
    ptype = msg.get_attr("XFRMA_POLICY_TYPE")
    if ptype is not None and ptype.get("type", XFRM_POLICY_TYPE_MAIN) != XFRM_POLICY_TYPE_MAIN:
        return False
    return all(is_our_reqid(t["reqid"]) for t in msg.get_attr("XFRMA_TMPL") or [])


def may_replace(entry: PolicyEntry, holder: Holder) -> bool:
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
