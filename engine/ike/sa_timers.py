"""What happens to an IKE SA as time passes: retransmissions and the peer
counted as gone (RFC 7296 §2.1, §2.4), half-open and rekeyed deadlines,
lifetimes (rekey, expiry, with jitter), DPD, NAT-T keepalives, deferred
retries, and the CHILD SAs' own timers. Functions of the IKE SA (sa.py keeps
the message layer and the SA's state)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.events import ChildState, DpdTimeout, IkeState, TrapRequested
from engine.ike import close_action
from engine.ike.child import ChildSa
from engine.ike.host import Ended
from engine.ike.text import exchange_name
from engine.wire.constants import ExchangeType

if TYPE_CHECKING:
    from engine.ike.sa import IkeSa, Outstanding

UP = (IkeState.ESTABLISHED, IkeState.REKEYING)
"""States in which an IKE SA is up (DPD runs, CHILD SAs can be rekeyed)."""


def arm_dpd(sa: IkeSa, now: float) -> None:
    """DPD is due ``dpd_delay`` after the last message from the peer."""
    if sa.conn is not None and sa.conn.dpd_delay > 0 and sa.state in UP:
        sa.dpd_at = now + sa.conn.dpd_delay


def next_timer(sa: IkeSa) -> float | None:
    """The earliest time something is due (the scheduler's heap entry)."""
    # A running minimum, not a list of candidates filtered and min()'d: the scheduler asks this for
    # every SA a message touched, several times per handshake.
    best = None
    for t in (sa.rekey_at, sa.expire_at, sa.dpd_at, sa.keepalive_at, sa.half_open_deadline, sa.deadline):
        if t is not None and (best is None or t < best):
            best = t
    out = sa.outstanding
    if out is not None and out.next_at is not None and (best is None or out.next_at < best):
        best = out.next_at
    cached = sa.cached
    if cached is not None and cached.held_until is not None and (best is None or cached.held_until < best):
        best = cached.held_until
    for t, _ in sa.deferred:
        if t is not None and (best is None or t < best):
            best = t
    for c in sa.children.values():
        for t in (c.rekey_at, c.expire_at, c.deadline):
            if t is not None and (best is None or t < best):
                best = t
    return best


HURRY_GAP = 0.5
"""At most one early retransmission per request in this long, whatever arrives (see hurry)."""


def hurry(sa: IkeSa, now: float) -> bool:
    """The peer sent a request on the IKE SA our rekey of ``sa`` creates: it has answered that
    rekey, and the answer was lost. Send our request again now instead of at its next timeout
    (which grows to seconds), so the peer's request finds the new IKE SA before its own
    retransmissions run out (charon 5.9.8 starts rekeying CHILD SAs on a new IKE SA at once).
    The schedule and the count of tries stay as they were: the message that asks this cannot be
    authenticated yet, so it may make us send at most one extra copy per HURRY_GAP."""
    out = sa.outstanding
    if out is None or (out.hurried_at is not None and now - out.hurried_at < HURRY_GAP):
        return False
    out.hurried_at = now
    _send_again(sa, out, now, "retransmits_hurried")
    return True


def _send_again(sa: IkeSa, out: Outstanding, now: float, counter: str) -> None:
    """Our outstanding request once more: counted, shown as a retransmission, sent."""
    sa.host.count(counter)
    sa.summary_event(True, out.exchange, out.mid, False, out.payloads, sum(map(len, out.datagrams)),
                     now, retransmit=out.retransmits, fragments=len(out.datagrams))
    sa.transmit(out.datagrams, now)


def handle(sa: IkeSa, now: float) -> None:
    """Whatever is due at ``now``."""
    if not sa.alive:
        return
    held = sa.cached
    if held is not None and held.held_until is not None and now >= held.held_until:
        (exchange, payloads), held.held_until, held.held_summary = held.held_summary, None, None
        sa.host.count("answers_delayed")
        sa.summary_event(True, exchange, held.mid, True, payloads, sum(map(len, held.datagrams)), now,
                         fragments=len(held.datagrams), via=held.held_via)
        sa.transmit(held.datagrams, now, held.held_via)
    out = sa.outstanding
    if out is not None and now >= out.next_at:
        if out.retransmits >= sa.host.engine.retransmit_tries:
            sa.outstanding = None
            peer_gone(sa, out, now)
            return
        out.retransmits += 1
        out.next_at = now + sa.retransmit_timeout(out.retransmits)
        _send_again(sa, out, now, "retransmits")
    if sa.half_open_deadline is not None and now >= sa.half_open_deadline:
        sa.half_open_deadline = None
        if sa.state == IkeState.CONNECTING:
            # Under a flood these come by thousands: counted, and DEBUG only.
            sa.host.count("half_open_timeouts")
            sa.fail(ExchangeType.IKE_AUTH, "TIMEOUT",
                    "the peer never completed IKE_AUTH (half-open SA timed out)", now, level=logging.DEBUG)
            sa.destroy(now, "half-open timeout")
            return
    if sa.deadline is not None and now >= sa.deadline:
        # A rekeyed IKE SA the peer never deleted: it carries nothing any more.
        sa.destroy(now, "rekeyed (the peer never deleted the old IKE SA)")
        return
    if sa.expire_at is not None and now >= sa.expire_at:
        sa.expire_at = None
        sa.delete(now, reason="IKE SA lifetime expired")
        return
    ex = sa.host.exchanges
    if sa.rekey_at is not None and now >= sa.rekey_at:
        sa.rekey_at = None
        if sa.state == IkeState.ESTABLISHED:
            sa.start(ex.ike_rekey(sa), now)
    if sa.dpd_at is not None and now >= sa.dpd_at:
        sa.dpd_at = None
        if sa.state == IkeState.ESTABLISHED and sa.outstanding is None and not sa.queue:
            # Only after dpd_delay without IKE messages and without inbound ESP (charon's rule, RFC 7296 §2.4).
            due = max(sa.last_received, sa.last_esp_in) + sa.conn.dpd_delay  # as arm_dpd: no rounding loop
            if now >= due:
                sa.start(ex.dpd(sa), now)
            else:
                sa.dpd_at = due
    if sa.keepalive_at is not None and now >= sa.keepalive_at:
        if sa.nat.local_behind and sa.floated and sa.established:
            sa.host.send(b"\xff", sa.local, sa.remote)
        sa.keepalive_at = now + sa.host.engine.keepalive
    if sa.deferred:
        due = [d for d in sa.deferred if d[0] <= now]
        sa.deferred = [d for d in sa.deferred if d[0] > now]
        for _, later in due:
            sa.start(later, now)
    for child in list(sa.children.values()):
        if not sa.alive:
            return
        child_timers(sa, child, now)


def child_timers(sa: IkeSa, child: ChildSa, now: float) -> None:
    ex = sa.host.exchanges
    if child.expire_at is not None and now >= child.expire_at:
        child.expire_at = child.rekey_at = child.deadline = None
        if child.state == ChildState.REKEYED:
            sa.remove_child(child, now, "rekeyed (old SA expired)")
        else:
            sa.start(ex.child_delete(sa, child, "lifetime expired"), now)
    elif child.deadline is not None and now >= child.deadline:
        # Superseded but never deleted by the peer (it lost track of it):
        # delete it ourselves so both ends converge.
        child.deadline = None
        if child.state == ChildState.REKEYED:
            sa.start(ex.child_delete(sa, child, "rekeyed (the peer never deleted it)"), now)
    elif child.rekey_at is not None and now >= child.rekey_at:
        child.rekey_at = None
        if child.state == ChildState.INSTALLED and sa.established:
            sa.start(ex.child_rekey(sa, child), now)


def peer_gone(sa: IkeSa, out: Outstanding, now: float) -> None:
    """Retransmissions exhausted (§2.4): the IKE SA and its children are dead."""
    reason = f"no response to {exchange_name(out.exchange)} after {out.retransmits} retransmissions"
    if sa.active is out.initiator:
        sa.active = None
    out.initiator.abort(now)
    if sa.state in (IkeState.CREATED, IkeState.CONNECTING):
        sa.fail(out.exchange, "TIMEOUT", f"{reason}: is the peer reachable and listening "
                f"on {sa.remote[0]}:{sa.remote[1]}?", now)
        sa.destroy(now, reason, Ended("failed", reason))
        return
    if sa.state in (IkeState.DELETING, IkeState.REKEYED):
        # Nothing to detect: the SA was going away anyway.
        sa.destroy(now, f"{sa.delete_reason or 'deleted'} ({reason})")
        return
    action = next((c.config.dpd_action for c in sa.children.values() if c.config.dpd_action != "clear"),
                  "clear")
    sa.host.emit(DpdTimeout(sa.unique_id, sa.name, action))
    children = tuple(c.config for c in sa.children.values() if c.state != ChildState.DELETED)
    for cfg in dict.fromkeys(c for c in children if c.dpd_action == "trap"):
        # the datapath's trap policy brings the CHILD SA back on the next packet (as charon's reestablish)
        sa.host.emit(TrapRequested(sa.name, cfg.name, "dpd_action"))
    # any restart child, not only a first one (``action`` is the first non-clear child's)
    if any(c.dpd_action == "restart" for c in children) and close_action.asymmetric(sa, "dpd_action = restart"):
        children = ()
    sa.destroy(now, f"peer gone: {reason}", Ended("peer_gone", reason, action, children))


def schedule_lifetimes(sa: IkeSa, now: float) -> None:
    """An IKE SA came up: rekey (with jitter) and expiry, DPD, NAT-T keepalives."""
    c = sa.conn
    if c is None:
        return
    if c.rekey_time > 0:
        jitter = sa.host.random.uniform(0, min(c.rand_time, c.rekey_time / 2)) if c.rand_time else 0.0
        sa.rekey_at = now + c.rekey_time - jitter
        sa.expire_at = now + c.rekey_time + c.over_time
    arm_dpd(sa, now)
    if sa.nat.local_behind:
        sa.keepalive_at = now + sa.host.engine.keepalive


def child_lifetimes(sa: IkeSa, child: ChildSa, now: float) -> None:
    cfg = child.config
    if cfg.rekey_time > 0:
        jitter = sa.host.random.uniform(0, min(cfg.rand_time, cfg.rekey_time / 2)) if cfg.rand_time else 0.0
        child.rekey_at = now + cfg.rekey_time - jitter
    else:
        child.rekey_at = None
    child.expire_at = now + cfg.life_time if cfg.life_time > 0 else None


def superseded(sa: IkeSa, child: ChildSa, now: float) -> None:
    """``child`` was replaced and the peer deletes it: wait, but not for ever.
    Twice the retransmission budget covers the peer retrying its rekey and then its delete."""
    child.set_state(ChildState.REKEYED)
    child.rekey_at = None
    child.deadline = now + 2 * sa.retransmit_budget()
    sa.host.changed(sa)
