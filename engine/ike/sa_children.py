"""The CHILD SAs an IKE SA holds: installing and removing them (with their
events), whether the peer knows one yet (§2.3), and handing them over to the
IKE SA that replaces this one (§2.18). Functions of the IKE SA."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.events import ChildState
from engine.ike.child import ChildSa, deleted_event, installed_event

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_DELETED = ChildState.DELETED
_INSTALLED = ChildState.INSTALLED

if TYPE_CHECKING:
    from engine.ike.sa import IkeSa

log = logging.getLogger("engine.ike")


def install_child(sa: IkeSa, child: ChildSa, now: float) -> None:
    sa.children[child.spi_in] = child
    child.set_state(_INSTALLED)
    sa.child_lifetimes(child, now)
    if log.isEnabledFor(logging.INFO):
        log.info("%s[%d]: CHILD_SA %s{%d} established with SPIs %s_i %s_o and TS %s === %s (%s@%s)",
                 sa.name, sa.unique_id, child.config.name, child.unique_id, child.spi_in.hex(),
                 child.spi_out.hex(), " ".join(map(str, child.local_ts)), " ".join(map(str, child.remote_ts)),
                 sa.remote_id, sa.remote[0], extra={"connection": sa.name})
    sa.host.emit(installed_event(child, ike_sa=sa.unique_id, connection=sa.name,
                                 local=sa.local, remote=sa.remote, encap=sa.encap,
                                 peer_is_ours=sa.peer_is_ours))
    sa.host.changed(sa)


def remove_child(sa: IkeSa, child: ChildSa, now: float, reason: str) -> None:
    if child.state == _DELETED:
        return
    child.set_state(_DELETED)
    child.rekey_at = child.expire_at = child.deadline = None
    if sa.children.get(child.spi_in) is child:
        del sa.children[child.spi_in]
    sa.host.ids.release_spi(child.spi_in)
    sa.host.emit(deleted_event(child, ike_sa=sa.unique_id, connection=sa.name,
                               local=sa.local, remote=sa.remote, reason=reason))


def confirmed(sa: IkeSa, child: ChildSa, now: float) -> bool:
    """The peer knows ``child``: we created it as initiator, or the peer has sent
    a request since our answer that created it (§2.3: a window of one), or it
    has had a whole retransmission budget to get that answer."""
    if child.unconfirmed_mid is not None and (sa.peer_mid > child.unconfirmed_mid
                                              or now >= child.unconfirmed_until):
        child.unconfirmed_mid = None
    return child.unconfirmed_mid is None


def child_by_spi_out(sa: IkeSa, spi: bytes, protocol: int | None = None) -> ChildSa | None:
    """The CHILD SA whose outbound SPI is ``spi``. A Delete or REKEY_SA names an SA by
    protocol and SPI (RFC 7296 §3.10, §3.11; charon's get_child_sa(protocol, spi)): an AH
    SPI must not find our ESP SA that happens to have the same SPI."""
    for c in sa.children.values():
        if c.spi_out == spi and (protocol is None or c.chosen.protocol == protocol):
            return c
    return None


def hand_over(sa: IkeSa, new: IkeSa, now: float) -> None:
    """A rekey replaced this IKE SA by ``new``: children and the exchanges we
    had not started yet move there (§2.18)."""
    # One INFO line per IKE rekey (as charon's "IKE_SA ... rekeyed"): rare, and without it the log
    # shows CHILD SAs under an IKE SA number it never saw set up.
    log.info("%s[%d]: IKE SA rekeyed into %s[%d] with SPIs %s_i %s_r (%s@%s)", sa.name, sa.unique_id, new.name,
             new.unique_id, new.spi_i.hex(), new.spi_r.hex(), new.remote_id, new.remote[0],
             extra={"connection": sa.name})
    for child in sa.children.values():
        # The peer started or answered this rekey after every answer of ours:
        # it knows all these CHILD SAs (and Message IDs start again on ``new``).
        child.unconfirmed_mid = None
    new.children.update(sa.children)
    sa.children.clear()
    sa.host.vips.move(sa, new, now)
    # What IKE_AUTH established stays with the SA that replaces this one.
    new.mobike, new.mobike_addrs, new.mobike_moves = sa.mobike, sa.mobike_addrs, sa.mobike_moves
    new.eap_identity, new.eap_method, new.cert_subject = sa.eap_identity, sa.eap_method, sa.cert_subject
    new.vip_dns, new.vip_subnets = sa.vip_dns, sa.vip_subnets
    for ex in sa.queue:
        if ex.migrate(new):
            new.queue.append(ex)
        else:
            ex.abort(now)
    sa.queue.clear()
    for at, ex in sa.deferred:
        if ex.migrate(new):
            new.deferred.append((at, ex))
    sa.deferred.clear()
    sa.rekey_at = sa.expire_at = sa.dpd_at = sa.keepalive_at = None
    sa.host.changed(sa)
    sa.host.changed(new)
    new.kick(now)
