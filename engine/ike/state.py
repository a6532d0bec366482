"""The lifecycle tables of the IKE SA and CHILD SA (the states the console
shows). One table per machine; a move that is not in the table raises
IllegalTransition. The exchanges that move SAs along them have their own
tables, in engine.ike.exchanges."""

from __future__ import annotations

from engine.events import ChildState, IkeState
from engine.ike.errors import IllegalTransition

S = IkeState
IKE_TRANSITIONS: dict[IkeState, frozenset[IkeState]] = {
    # CREATED -> ESTABLISHED: an IKE SA born from a rekey is established at once;
    # CREATED -> REKEYED: one born from the peer's rekey that lost a collision
    # (engine.ike.exchanges.ike_rekey) only waits for the peer's delete.
    S.CREATED: frozenset({S.CONNECTING, S.ESTABLISHED, S.REKEYED, S.DESTROYED}),
    S.CONNECTING: frozenset({S.ESTABLISHED, S.DELETING, S.DESTROYED}),
    S.ESTABLISHED: frozenset({S.REKEYING, S.REKEYED, S.DELETING, S.DESTROYED}),
    # REKEYING -> ESTABLISHED: the rekey failed or lost a collision.
    S.REKEYING: frozenset({S.ESTABLISHED, S.REKEYED, S.DELETING, S.DESTROYED}),
    S.REKEYED: frozenset({S.DELETING, S.DESTROYED}),
    S.DELETING: frozenset({S.DESTROYED}),
    S.DESTROYED: frozenset(),
}

C = ChildState
CHILD_TRANSITIONS: dict[ChildState, frozenset[ChildState]] = {
    C.CREATED: frozenset({C.INSTALLED, C.DELETED}),
    C.INSTALLED: frozenset({C.REKEYING, C.REKEYED, C.DELETING, C.DELETED}),
    C.REKEYING: frozenset({C.INSTALLED, C.REKEYED, C.DELETING, C.DELETED}),
    C.REKEYED: frozenset({C.DELETING, C.DELETED}),
    C.DELETING: frozenset({C.DELETED}),
    C.DELETED: frozenset(),
}


def check_ike(old: IkeState, new: IkeState) -> None:
    if new not in IKE_TRANSITIONS[old]:
        raise IllegalTransition(f"IKE SA cannot go from {old.value} to {new.value}")


def check_child(old: ChildState, new: ChildState) -> None:
    if new not in CHILD_TRANSITIONS[old]:
        raise IllegalTransition(f"CHILD SA cannot go from {old.value} to {new.value}")
