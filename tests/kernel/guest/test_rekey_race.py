"""A CHILD SA rekey loses no packets in a real kernel: the moments between the
responder's install and the initiator's, and between the initiator's delete of
the old pair and the responder's (the DELETE in flight), as charon's child_sa.c
(outbound SA installed late by the responder, delete_rekeyed_delay)."""

from __future__ import annotations

from engine.events import ChildSaDeleted

from .lab import GCM256, LEFT_INNER, RIGHT_INNER, by_spi, child_pair


def _deleted(ev, reason="rekeyed"):
    return ChildSaDeleted(ike_sa=1, connection="lab", child="lab", unique_id=ev.unique_id, reqid=ev.reqid,
                          protocol="esp", spi_in=ev.spi_in, spi_out=ev.spi_out, local_addr=ev.local_addr,
                          remote_addr=ev.remote_addr, reason=reason)


def test_no_packet_lost_while_the_rekey_messages_are_in_flight(lab, dp):
    """Left initiates the rekey, right responds."""
    left, right = dp
    old = child_pair(GCM256, reqid=5, spi_l=0xB0000001, spi_r=0xB0001001, unique_id=1)
    new_l = child_pair(GCM256, reqid=5, spi_l=0xB0000002, spi_r=0xB0001002, unique_id=2,
                       rekeyed_from=0xB0000001, initiator=True).left
    new_r = child_pair(GCM256, reqid=5, spi_l=0xB0000002, spi_r=0xB0001002, unique_id=2,
                       rekeyed_from=0xB0001001, initiator=False).right
    left.install_child(old.left)
    right.install_child(old.right)
    assert lab.ping(lab.right, LEFT_INNER, src=RIGHT_INNER, count=2) == 2

    # right answered CREATE_CHILD_SA; the response has not reached left yet
    right.install_child(new_r)
    assert lab.ping(lab.right, LEFT_INNER, src=RIGHT_INNER, count=2) == 2

    # left has the response: new pair in, old pair deleted; its DELETE has not reached right yet
    left.install_child(new_l)
    left.remove_child(_deleted(old.left), linger=True)
    assert lab.ping(lab.right, LEFT_INNER, src=RIGHT_INNER, count=2) == 2

    # the DELETE arrives: right sends on the new pair from now on
    right.remove_child(_deleted(old.right, "deleted by peer"))
    assert lab.ping(lab.right, LEFT_INNER, src=RIGHT_INNER, count=2) == 2
    assert by_spi(right.counters())[0xB0000002].packets >= 2  # right's new outbound SA carried them
    left.forget(0xB0000001)
    state = lab.xfrm(lab.left) + lab.xfrm(lab.right)
    assert "0xb0000001" not in state and "0xb0001001" not in state
    assert lab.ping(lab.right, LEFT_INNER, src=RIGHT_INNER, count=2) == 2
