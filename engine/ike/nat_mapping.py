"""Following a NAT mapping change seen in ESP-in-UDP (the datapath's NatMappingChanged): the
kernel raises XFRM_MSG_MAPPING when authenticated ESP of a UDP-encapsulated SA arrives from a new
source, charon's kernel handler queues an update_sa_job, and that calls
``ike_sa->update_hosts(ike_sa, NULL, new, 0)``: the IKE SA and every CHILD SA go to the new
address and port, but only when the peer is behind a NAT (COND_NAT_THERE), and not when we are
behind one as the original initiator (a road-warrior client: the gateway has no mapping to
follow; our own NAT changing is repaired by our next message). For MOBIKE SAs too: RFC 4555
§3.8 forbids dynamic updates from IKE packets only, and charon's job does not look at MOBIKE.
Without this a client whose mapping changes loses its inbound tunnel traffic until its next IKE
message (a DPD, maybe minutes away)."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from engine.events import ChildState
from engine.ike import sa_nat

if TYPE_CHECKING:
    from engine.ike.child import ChildSa
    from engine.ike.sa import IkeSa

log = logging.getLogger("engine.ike")


def follow_esp_mapping(sa: IkeSa, child: ChildSa, remote: tuple[str, int]) -> bool:
    """Move ``sa`` and its CHILD SAs to ``remote`` (the source of authenticated ESP-in-UDP on
    ``child``) if charon would; True when it moved. Never raises on what the datapath reports."""
    if not sa.established or sa.sk is None or child.state == ChildState.DELETED:
        return False
    try:
        new_version = ipaddress.ip_address(remote[0]).version
        port = int(remote[1])
    except (ValueError, TypeError, IndexError):
        return False
    if not 0 < port < 65536 or remote == sa.remote:
        return False
    extra = {"connection": sa.name}
    try:
        same_family = ipaddress.ip_address(sa.remote[0]).version == new_version
    except ValueError:
        same_family = False
    if not same_family:
        # A NAT maps within one family; another family is a MOBIKE move, done by UPDATE_SA_ADDRESSES.
        return False
    if not sa.nat.remote_behind:
        log.debug("%s[%d]: ESP from %s:%d, but the peer is not behind a NAT: not following it",
                  sa.name, sa.unique_id, remote[0], port, extra=extra)
        return False
    if sa.nat.local_behind and sa.connection_initiator:
        log.debug("%s[%d]: ESP from %s:%d, but we are behind a NAT and initiated: not following it",
                  sa.name, sa.unique_id, remote[0], port, extra=extra)
        return False
    log.info("%s[%d]: peer's NAT mapping changed (ESP-in-UDP from %s:%d, was %s:%d)%s", sa.name, sa.unique_id,
             remote[0], port, *sa.remote, ", its CHILD SAs follow" if sa.children else "", extra=extra)
    sa.remote = (remote[0], port)
    if sa.children:
        sa_nat.children_follow(sa)
    return True
