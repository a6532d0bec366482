"""Uniqueness of a peer's IKE SAs (swanctl's ``unique``), as charon's ike_sa_manager
check_uniqueness / enforce_replace.

The peer is (connection, EAP identity of a peer that used EAP, else its IKE identity:
``Registry.identity_of``). When a new IKE SA of that peer is authenticated, its older
established ones

- go at once (destroyed: the peer lost them) when its IKE_AUTH carries INITIAL_CONTACT, unless
  ``unique = never``;
- ``replace``: are deleted; from the same address and port (a make-before-break
  reauthentication) only 10 s later, so the client's new CHILD SAs overlap the old ones;
- ``keep``: stay, and the new one is refused (AUTHENTICATION_FAILED), unless it comes from the
  same address and port (a reauthentication);
- ``no``: stay.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.ike.registry import Registry
    from engine.ike.sa import IkeSa
    from engine.ike.scheduler import Scheduler

log = logging.getLogger(__name__)

REAUTH_DELETE_DELAY = 10.0
"""charon's enforce_replace: the duplicate of a suspected reauthentication is deleted this much
later (delete_ike_sa_job scheduled in 10 s), "as we want overlapping CHILD_SAs to keep
connectivity up"."""


def _same_host(a: IkeSa, b: IkeSa) -> bool:
    # charon's host_t equals: address and port
    return tuple(a.remote) == tuple(b.remote)


def refuses(registry: Registry, sa: IkeSa, initial_contact: bool) -> str | None:
    """Responder, ``sa`` authenticated and about to be answered: why ``unique = keep`` refuses it
    (charon's ike_auth build_r: "canceling IKE_SA setup due to uniqueness policy"), or None."""
    conn = sa.conn
    if conn is None or conn.unique != "keep" or initial_contact:
        return None
    others = [o for o in registry.with_identity(registry.identity_of(sa)) if o is not sa and o.established]
    if not others or all(_same_host(o, sa) for o in others):
        return None
    who = registry.identity_of(sa)[2]
    return (f"'{who}' already has an IKE SA of connection '{conn.name}' from another address "
            f"({others[0].remote[0]}:{others[0].remote[1]}) and unique = keep keeps it; this one is refused")


def enforce(registry: Registry, scheduler: Scheduler, sa: IkeSa, now: float, *, initial_contact: bool) -> None:
    """``sa`` is up and indexed: end the older IKE SAs of its peer that uniqueness says go. As the
    responder only, as charon (ike_auth build_r): an initiator receives no INITIAL_CONTACT, and its
    older SAs with the same gateway are a reauthentication of its own."""
    if sa.original_initiator:
        return
    unique = sa.conn.unique if sa.conn is not None else "no"
    if unique == "never" or not (initial_contact or unique in ("replace", "keep")):
        return
    for old in registry.same_identity(sa):
        if not old.established:
            continue
        if initial_contact:
            # The peer lost its state: our older SAs with it are dead (§2.4).
            old.destroy(now, "peer sent INITIAL_CONTACT")
        elif unique == "keep":
            # Only a reauthentication from the same host got here (refuses): like charon, which
            # enforces nothing for keep, the old SA stays until the client deletes it.
            continue
        elif _same_host(old, sa):
            log.info("%s[%d]: suspected reauthentication of '%s', deleting the duplicate IKE SA [%d] in "
                     "%.0f s (unique = replace)", sa.name, sa.unique_id, registry.identity_of(sa)[2],
                     old.unique_id, REAUTH_DELETE_DELAY, extra={"connection": sa.name})
            spi = old.our_spi  # not the SA: a scheduled call holds no IKE SA (it may go before)

            def later(t: float, spi=spi, old=old.unique_id) -> None:
                o = registry.get(spi)
                if o is not None and o.unique_id == old and o.established:
                    o.delete(t, "replaced by a new IKE SA with the same peer (unique = replace, reauthentication)")

            scheduler.call_at(now + REAUTH_DELETE_DELAY, later)
        else:
            # The peer may still hold it (or dropped it silently, as Libreswan does): tell it.
            old.delete(now, "replaced by a new IKE SA with the same peer (unique = replace)")
