"""The SA a peer's CHILD rekey replaced, when the peer deletes an SA that replaced it
(informational._replacement_deleted): never put back in use. Sans-IO pairs."""

from __future__ import annotations

from engine.events import ChildState

from tests.engine.ike_pair import child, connection, live
from tests.engine.ike_pair import started as make


# ====================================================================== putting a replaced SA back in use
def test_the_peer_deleting_our_redundant_sa_after_a_lost_collision_does_not_revive_the_old_sa():
    """A CHILD rekey collision we lost: we delete our redundant SA, the peer's SA replaces old
    and old waits for the peer's Delete. The peer deleting our redundant SA as well (crossing
    our Delete) must not put old back in use beside the peer's replacement: that is no
    'neither end has an SA' case, and old would be rekeyed into a third pair."""
    from engine.ike.exchanges.child_sa import ChildOffer
    from engine.wire.constants import ExchangeType, ProtocolId
    from engine.wire.message import decode_message
    from engine.wire.payloads import DeletePayload
    from tests.engine.test_ike_edges import request, strip

    p = make(connection(children=[child(esp=("aes256gcm16-x25519",))]))
    (sa_a,) = live(p, "a")
    (old_a,) = sa_a.children.values()
    (old_b,) = live(p, "b")[0].children.values()
    # Our rekey of old (request Q) goes out and is held on the link.
    p.a.rekey("tun", p.now)
    p.collect()
    held, p.wire[:] = p.wire[:], []
    # The peer's rekey of old (request P) arrives meanwhile: a collision, answered.
    offer = ChildOffer(live(p, "b")[0], old_b.config, with_ke=True, rekey=old_b)
    request(p, "b", offer.payloads(nonce=True), ExchangeType.CREATE_CHILD_SA)
    theirs = next(c for c in sa_a.children.values() if c.spi_out == offer.spi_in)
    theirs.nonces = (b"\xff" * 32, b"\xff" * 32)  # our exchange holds the lowest nonce: we lose

    def informational_request_from_a(side, d):
        if side != "a" or d.data == b"\xff":
            return True
        h = decode_message(strip(d.data)).header
        return not (h.exchange == ExchangeType.INFORMATIONAL and not h.response)

    p.filter = informational_request_from_a  # our Delete of our redundant SA stays in flight
    p.wire[:] = held
    p.deliver()
    ours = next(c for c in sa_a.children.values() if c is not old_a and c is not theirs)
    assert ours.state == ChildState.DELETING and old_a.state == ChildState.REKEYED
    assert theirs.state == ChildState.INSTALLED
    # The peer's Delete of our redundant SA crosses ours.
    request(p, "b", [DeletePayload(ProtocolId.ESP, (ours.spi_out,))])
    assert ours.state == ChildState.DELETED
    assert old_a.state == ChildState.REKEYED, "old put back in use beside the peer's replacement"
