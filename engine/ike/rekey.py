"""Building the IKE SA that replaces another (RFC 7296 §2.18)."""

from __future__ import annotations

from engine.events import IkeState
from engine.ike.init import install_ike_keys
from engine.ike.proposals import Chosen
from engine.ike.sa import IkeSa


def make_rekeyed_sa(old: IkeSa, *, initiator: bool, spi_i: bytes, spi_r: bytes, chosen: Chosen,
                    nonce_i: bytes, nonce_r: bytes, shared: bytes, now: float) -> IkeSa:
    """The new IKE SA. The initiator of the rekey becomes the new SA's original
    initiator (§2.18); SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)."""
    ep = old.ep
    new = IkeSa(ep, old.conn, initiator=initiator, unique_id=ep.next_ike_id(), local=old.local,
                remote=old.remote, spi_i=spi_i, spi_r=spi_r, now=now)
    new.chosen = chosen.with_spi(b"")
    new.nonce_i, new.nonce_r = nonce_i, nonce_r
    install_ike_keys(new, shared, old_sk_d=old.keys.sk_d.reveal(), old_prf=old.chosen.prf)
    new.nat = old.nat
    new.floated = old.floated
    new.peer_fragmentation = old.peer_fragmentation
    new.peer_is_ours = old.peer_is_ours
    new.peer_hash_algorithms = old.peer_hash_algorithms
    new.local_id, new.remote_id = old.local_id, old.remote_id
    new.candidates = old.candidates
    new.rekeyed_from = old
    ep.register(new)
    new.set_state(IkeState.ESTABLISHED, "rekeyed")
    new.established_at = now
    new.schedule_lifetimes(now)
    return new


def move_children(old: IkeSa, new: IkeSa) -> None:
    for spi, child in list(old.children.items()):
        new.children[spi] = child
    old.children.clear()
    old.deleting_children.clear()
    # The children's rekey and expiry timers now belong to the new SA.
    old.ep.touch(old)
    old.ep.touch(new)
