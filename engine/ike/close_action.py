"""``close_action``: what we do when the peer closes a CHILD SA or the whole IKE SA
(charon: child_delete.c destroy_and_reestablish_internal, ike_delete.c process_r,
ike_sa.c reestablish).

- Only an explicit close by the peer counts: its Delete of a CHILD SA that was
  installed (not one it replaces in a rekey, not one we are rekeying or deleting
  ourselves: charon's ``!initiator && orig_state == CHILD_INSTALLED``), or its
  Delete of an established IKE SA (not one a rekey replaced). Our own deletes,
  expiries and failed negotiations never act (swanctl.opt: "acts on explicit
  close messages only"), so two peers that both say ``start`` do not loop: one
  side's terminate is followed by exactly one re-creation on the other.
- ``trap``: traffic negotiates the CHILD SA again on demand. The trap policy is
  the datapath's (it holds those of ``start_action = "trap"``); the engine asks for
  it with a ``TrapRequested`` event, as for ``dpd_action = "trap"``.
- ``start``: a CHILD SA closed alone is created again at once on the same IKE SA
  (charon queues a child_create on it); when the peer deletes the IKE SA, a new IKE
  SA is set up with the CHILD SAs whose close_action is ``start`` (the endpoint,
  host.Ended ``closed``), those being created then included. Not when we are the
  responder of an asymmetric setup (we leased the peer a virtual IP, or it
  authenticated with EAP): charon's "unable to reestablish IKE_SA due to asymmetric
  setup", a gateway does not dial its clients. charon adds no delay: none is needed,
  as only the peer's explicit close acts.
- A CHILD config still up on this IKE SA (the peer deleted a duplicate) or being
  created is not started again. A CHILD SA closed younger than CLOSE_START_HOLDOFF
  is created again only once it would have lived that long (a peer that deletes
  every new CHILD SA at once must not get a storm; charon has no bound).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.events import ChildState, TrapRequested
from engine.ike.host import Ended

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_DELETED = ChildState.DELETED
_REKEYED = ChildState.REKEYED

if TYPE_CHECKING:
    from engine.ike.child import ChildSa
    from engine.ike.sa import IkeSa
    from engine.policy.model import ChildConfig

log = logging.getLogger("engine.ike")

_LIVE = (ChildState.CREATED, ChildState.INSTALLING, ChildState.INSTALLED, ChildState.REKEYING)

CLOSE_START_HOLDOFF = 5.0
"""close_action = start creates a CHILD SA the peer closed younger than this only once it would
have lived this long: a peer that deletes every new CHILD SA at once (its datapath refuses it) gets
one CREATE_CHILD_SA per this time, not a storm for as long as both run (charon has no bound)."""


def coming(sa: IkeSa) -> set[str]:
    """CHILD configs an exchange of ``sa`` is already bringing up (queued, in flight or deferred)."""
    out = set()
    for ex in (sa.active, *sa.queue, *(ex for _, ex in sa.deferred)):
        name = ex.creates() if ex is not None else None
        if name is not None:
            out.add(name)
    return out


def _trap(sa: IkeSa, cfg: ChildConfig) -> None:
    sa.host.emit(TrapRequested(sa.name, cfg.name, "close_action"))


def child_closed(sa: IkeSa, closed: list[ChildSa], now: float) -> None:
    """The peer's Delete removed ``closed`` (each INSTALLED when the Delete came)."""
    for child in closed:
        cfg = child.config
        if cfg.close_action == "trap":
            _trap(sa, cfg)
        elif cfg.close_action == "start" and sa.established:
            up = {c.config.name for c in sa.children.values() if c.state in _LIVE} | coming(sa)
            if cfg.name in up:
                continue  # a duplicate went; the CHILD SA lives on
            at = child.installed_at + CLOSE_START_HOLDOFF
            log.info("%s[%d]: the peer closed CHILD SA %s{%d}: creating it again%s (close_action = start)",
                     sa.name, sa.unique_id, cfg.name, child.unique_id,
                     f" in {at - now:.0f}s (it was closed young)" if at > now else "",
                     extra={"connection": sa.name})
            sa.host.count("close_action_starts")
            ex = sa.host.exchanges.create_child(sa, cfg)
            if at > now:
                sa.defer(ex, at)
            else:
                sa.start(ex, now)


def ike_closed(sa: IkeSa, reason: str) -> Ended:
    """The peer deleted ``sa`` while it was up: traps now, and what the endpoint starts again."""
    start: list[ChildConfig] = []
    for child in sa.children.values():
        if child.state in (_REKEYED, _DELETED):
            continue  # as charon's reestablish: a replaced SA is no CHILD SA of its own
        cfg = child.config
        if cfg.close_action == "trap":
            _trap(sa, cfg)
        elif cfg.close_action == "start" and cfg not in start:
            start.append(cfg)
    if sa.conn is not None:
        # A CHILD SA being created goes to the new IKE SA (charon's is_child_queued and
        # adopt_child_tasks): a peer that closes its CHILD SAs and then the IKE SA catches
        # close_action = start's CREATE_CHILD_SA in flight. Unlike charon, only for close_action =
        # start: an admin's initiate the peer cut short is not retried behind the admin's back.
        names = {k.name: k for k in sa.conn.children if k.close_action == "start"}
        start += [names[n] for n in sorted(coming(sa)) if n in names and names[n] not in start]
    if not start or asymmetric(sa, "close_action = start"):
        return Ended("deleted", reason)
    return Ended("closed", reason, "start", tuple(start))


def asymmetric(sa: IkeSa, what: str) -> bool:
    """We cannot set ``sa`` up again ourselves: we did not set the connection up, and we leased the
    peer a virtual IP or the peer authenticated to us with EAP (charon's reestablish: "unable to
    reestablish IKE_SA due to asymmetric setup", !COND_ORIGINAL_INITIATOR && (other_vips ||
    COND_EAP_AUTHENTICATED); a gateway does not dial its road warriors). ``connection_initiator``
    survives an IKE rekey as charon's condition does; ``eap_identity`` alone is also set on the EAP
    client, hence the check of our config's remote auth."""
    peer_eap = bool(sa.eap_identity) and sa.conn is not None and sa.conn.remote.is_eap
    if sa.connection_initiator or not (sa.remote_vips or peer_eap):
        return False
    log.info("%s[%d]: %s: not set up again, as the peer %s (asymmetric setup)", sa.name, sa.unique_id, what,
             "has a virtual IP of ours" if sa.remote_vips else "authenticated with EAP",
             extra={"connection": sa.name})
    return True
