"""NAT detection decides only when the peer sent both kinds of NAT_DETECTION notify (RFC 7296 §2.23
has every IKE_SA_INIT carry both; charon's ike_natd.c process_payloads sets the NAT conditions and
NAT-T only when src_seen && dst_seen). With one kind alone we guessed a NAT on the other side and
moved to UDP encapsulation and port 4500 for a peer that never asked for NAT-T."""

from __future__ import annotations

from engine.ike.init import check_nat, nat_notifies
from engine.wire.constants import NotifyType

LOCAL, REMOTE = ("192.0.2.1", 500), ("198.51.100.7", 500)
SPI_I, SPI_R = bytes(range(8)), bytes(8)


def _kinds(local, remote):
    return {n.type: n for n in nat_notifies(SPI_I, SPI_R, local, remote)}


def test_one_kind_alone_decides_nothing():
    theirs = _kinds(REMOTE, LOCAL)  # as the peer computes them: its source is our remote
    only_source = [theirs[NotifyType.NAT_DETECTION_SOURCE_IP]]
    only_dest = [theirs[NotifyType.NAT_DETECTION_DESTINATION_IP]]
    assert check_nat(only_source, SPI_I, SPI_R, LOCAL, REMOTE) is None
    assert check_nat(only_dest, SPI_I, SPI_R, LOCAL, REMOTE) is None
    # ... nor when the single kind does not match (before: "the peer is behind a NAT")
    other = _kinds(("203.0.113.9", 500), LOCAL)
    assert check_nat([other[NotifyType.NAT_DETECTION_SOURCE_IP]], SPI_I, SPI_R, LOCAL, REMOTE) is None


def test_both_kinds_decide_as_before():
    theirs = _kinds(REMOTE, LOCAL)
    assert check_nat(list(theirs.values()), SPI_I, SPI_R, LOCAL, REMOTE) == (False, False)
    natted = _kinds(("203.0.113.9", 4500), LOCAL)
    assert check_nat([natted[NotifyType.NAT_DETECTION_SOURCE_IP], theirs[NotifyType.NAT_DETECTION_DESTINATION_IP]],
                     SPI_I, SPI_R, LOCAL, REMOTE) == (False, True)
