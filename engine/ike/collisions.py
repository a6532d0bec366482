"""What happens after a rekey, including simultaneous rekeys (RFC 7296 §2.8.1).

When both peers rekey the same SA at once, two replacements appear. The one
created by the exchange holding the lowest of the four nonces is redundant;
the peer that initiated that exchange deletes its replacement, the other
peer deletes the old SA.
"""

from __future__ import annotations

import logging

from engine.events import ChildState, IkeState
from engine.ike.child import ChildSa
from engine.ike.rekey import move_children
from engine.ike.sa import IkeSa

log = logging.getLogger("engine.ike")


def _we_lost(ours: tuple[bytes, bytes], theirs: tuple[bytes, bytes]) -> bool:
    """Our exchange (Ni ours, Nr theirs) holds the lowest nonce of the four."""
    return min(ours) < min(theirs)


# ---------------------------------------------------------------- CHILD SAs
def finish_child_rekey(sa: IkeSa, old: ChildSa, new: ChildSa, now: float) -> None:
    """Our CHILD rekey completed with ``new``."""
    from engine.ike.tasks import DeleteChild

    theirs: ChildSa | None = getattr(old, "collision", None)
    if theirs is not None and theirs.spi_in in sa.children:
        if _we_lost(new.nonces, theirs.nonces):
            log.info("%s[%d]: CHILD rekey collision lost, deleting redundant %s", sa.name, sa.unique_id,
                     new.spi_in.hex(), extra={"connection": sa.name})
            old.set_state(ChildState.REKEYED)
            new.rekey_at = None
            sa.queue(DeleteChild(new, "rekey collision (redundant SA)"), now)
            return
        log.info("%s[%d]: CHILD rekey collision won", sa.name, sa.unique_id, extra={"connection": sa.name})
    if old.state == ChildState.REKEYING:
        old.set_state(ChildState.REKEYED)
    old.rekey_at = None
    sa.queue(DeleteChild(old, "rekeyed"), now)


def responded_child_rekey(sa: IkeSa, old: ChildSa, new: ChildSa, now: float) -> None:
    """We answered the peer's rekey of ``old`` with ``new``."""
    old.rekey_at = None
    if old.state == ChildState.REKEYING:
        old.collision = new  # our own rekey is in flight: decide when it completes
        return
    old.set_state(ChildState.REKEYED)
    # The peer deletes the old SA; if it never does, the old SA's hard lifetime ends it.


# ---------------------------------------------------------------- IKE SAs
def finish_ike_rekey(old: IkeSa, new: IkeSa, now: float) -> None:
    """Our IKE rekey completed with ``new``."""
    from engine.ike.tasks import DeleteIke

    theirs: IkeSa | None = getattr(old, "collision", None)
    if theirs is not None and theirs.state == IkeState.ESTABLISHED:
        if _we_lost((new.nonce_i, new.nonce_r), (theirs.nonce_i, theirs.nonce_r)):
            log.info("%s[%d]: IKE rekey collision lost", old.name, old.unique_id, extra={"connection": old.name})
            move_children(old, theirs)
            old.set_state(IkeState.REKEYED)
            old.rekey_at = old.expire_at = old.dpd_at = None
            new.rekey_at = None
            new.set_state(IkeState.DELETING, "rekey collision (redundant IKE SA)")
            new.queue(DeleteIke("rekey collision (redundant IKE SA)"), now)
            return
    move_children(old, new)
    old.set_state(IkeState.REKEYED)
    old.rekey_at = old.expire_at = old.dpd_at = None
    old.set_state(IkeState.DELETING, "rekeyed")
    old.queue(DeleteIke("rekeyed"), now)


def responded_ike_rekey(old: IkeSa, new: IkeSa, now: float) -> None:
    """We answered the peer's IKE rekey with ``new``."""
    if old.state == IkeState.REKEYING:
        old.collision = new
        return
    move_children(old, new)
    old.set_state(IkeState.REKEYED)
    old.rekey_at = old.dpd_at = None
    # The peer deletes the old IKE SA; expire_at stays as a safety net.
