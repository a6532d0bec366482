"""An IKE SA's addresses and NAT (RFC 7296 §2.23): what NAT detection found,
following the peer's NAT mapping, learning our own address, and floating to
the NAT-T ports. Functions of the IKE SA."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.events import ChildSaMoved, ChildState, IkeState
from engine.ike.host import Addr

if TYPE_CHECKING:
    from engine.ike.sa import IkeSa

log = logging.getLogger("engine.ike")

UNSPECIFIED = ("0.0.0.0", "::")
"""Our address when we initiate without knowing it: the kernel picks the source, the answer tells us."""


@dataclass
class NatState:
    local_behind: bool = False
    """Our NAT_DETECTION_DESTINATION_IP did not match: we are behind a NAT."""
    remote_behind: bool = False
    """The peer's NAT_DETECTION_SOURCE_IP did not match its address (or it fakes a NAT)."""
    mapped: bytes | None = None
    """MOBIKE client behind a NAT: the gateway's last NAT_DETECTION_DESTINATION_IP (our address as
    it sees it, RFC 4555 §3.8), from a DPD or an address update answer; another one later means
    our NAT mapping changed (engine.ike.exchanges.mobike.Dpd)."""

    @property
    def any(self) -> bool:
        return self.local_behind or self.remote_behind


def update_remote(sa: IkeSa, local: Addr, remote: Addr) -> None:
    """Follow the peer's NAT mapping on authenticated messages (§2.23: only a peer behind a NAT,
    as charon's update_hosts with COND_NAT_THERE; the NAT-T port float aside), and learn our own
    address when we initiated from an unspecified one (no local_addrs, no listen: a laptop).
    Not with MOBIKE (RFC 4555 §3.8: "MUST NOT use these dynamic updates for IKEv2 packets", so
    that an INFORMATIONAL without UPDATE_SA_ADDRESSES, a path test, moves nothing; charon's
    task_manager_v2 process_message does no implicit update once MOBIKE is on): only the
    address update moves a MOBIKE SA, and a client behind a NAT finds its mapping changed with
    NAT detection in its DPDs (engine.ike.exchanges.mobike)."""
    if sa.local[0] in UNSPECIFIED and local[0] not in UNSPECIFIED:
        sa.local = (local[0], sa.local[1])
    # Once on the NAT-T port, a message on the IKE port (a peer starting over from a new
    # address) is answered where it came from but does not move the SA back.
    on_natt = local[1] == sa.host.engine.natt_port
    moved = False
    if remote != sa.remote and sa.sk is not None and not sa.mobike and (on_natt or not sa.floated):
        if on_natt and not sa.floated and (remote[0] == sa.remote[0] or sa.state == IkeState.CONNECTING):
            # The peer's first message on the NAT-T port, from the same address: the normal
            # switch of §2.23 (its NAT may map port 4500 anew), once per IKE SA, not a move.
            # From anywhere in IKE_AUTH: charon forces that update (task_manager_v2, mid == 1).
            log.debug("%s[%d]: NAT-T port float: %s:%d -> %s:%d", sa.name, sa.unique_id,
                      *sa.remote, *remote, extra={"connection": sa.name})
            sa.remote, moved = remote, True
        elif not sa.nat.remote_behind:
            # charon's update_hosts without force flags: the other end moves only with
            # COND_NAT_THERE; a peer not behind a NAT has no mapping to change (§2.23 updates
            # follow a NAT), so an authenticated copy from elsewhere moves nothing.
            log.debug("%s[%d]: the peer's message came from %s:%d, but it is not behind a NAT: staying on "
                      "%s:%d", sa.name, sa.unique_id, *remote, *sa.remote, extra={"connection": sa.name})
        elif sa.connection_initiator and sa.nat.local_behind:
            # §2.23: "A host behind a NAT SHOULD NOT do this type of dynamic address update" (one
            # authenticated copy from elsewhere would take IKE and ESP there); charon's update_hosts
            # follows the other end only when we are not behind a NAT as the original initiator.
            # The answer still goes where the request came from (§2.11).
            log.debug("%s[%d]: the peer's message came from %s:%d; behind a NAT we stay on %s:%d",
                      sa.name, sa.unique_id, *remote, *sa.remote, extra={"connection": sa.name})
        else:
            log.info("%s[%d]: peer moved from %s:%d to %s:%d%s", sa.name, sa.unique_id, *sa.remote, *remote,
                     ", its CHILD SAs follow" if sa.children else "", extra={"connection": sa.name})
            sa.remote, moved = remote, True
    # Only when the peer is there now: a message from elsewhere that did not move the SA leaves
    # IKE on the IKE port, where the non-ESP marker would garble it.
    if on_natt and not sa.floated and remote == sa.remote:
        sa.floated = True
        sa.local = local
    if moved and sa.children:
        children_follow(sa)


def children_follow(sa: IkeSa) -> None:
    """The CHILD SAs go where the IKE SA now goes, keeping SPIs, keys and sequence numbers
    (charon's update_hosts updates every CHILD SA with the IKE SA's new hosts): the peer's ESP
    comes from its new NAT mapping, and ours would keep going to the old one, a one-way tunnel
    that DPD (answered over IKE) never notices."""
    local, remote, encap = sa.local, sa.remote, sa.encap
    for child in sa.children.values():
        if child.state != ChildState.DELETED:
            sa.host.emit(ChildSaMoved(sa.unique_id, sa.name, child.config.name, child.spi_in_int,
                                      child.spi_out_int, local[0], remote[0], local[1], remote[1], encap))


def float_ports(sa: IkeSa) -> None:
    """Move IKE to the NAT-T ports after IKE_SA_INIT (§2.23)."""
    sa.local = (sa.local[0], sa.host.engine.natt_port)
    sa.remote = (sa.remote[0], sa.conn.remote_natt_port)
    sa.floated = True
