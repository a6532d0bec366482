"""MOBIKE (RFC 4555) as the responder: a client that changes networks keeps its IKE and CHILD SAs.

Rules:
- IKE_AUTH: a peer that sends MOBIKE_SUPPORTED gets it back when its connection has
  mobike = true (``auth_notifies``); the SA then accepts address updates. As initiator we
  do not offer it: we do not follow our own address changes (RFC 4555 lets only the
  original initiator move the SA).
- INFORMATIONAL with UPDATE_SA_ADDRESSES (§3.5), authenticated like any request: the IKE
  SA takes the addresses this request came from and went to; NAT detection is redone
  from its NAT_DETECTION notifies (our answer carries ours) and COOKIE2 is echoed (§3.8);
  every CHILD SA follows the new addresses without a rekey (a ChildSaMoved event: the
  datapath keeps SPIs, keys and sequence numbers). The answer goes to the new address.
- Without MOBIKE negotiated, an UPDATE_SA_ADDRESSES request is answered as an ordinary
  INFORMATIONAL (engine.ike.exchanges.informational), the SA staying where it was.
"""

from __future__ import annotations

import logging

from engine.events import ChildSaMoved
from engine.ike.exchange import Label, Responder, Table, notify
from engine.ike.init import check_nat, nat_notifies
from engine.wire.constants import NotifyType
from engine.wire.payloads import NotifyPayload

log = logging.getLogger("engine.ike")


class S(Label):
    IDLE = "idle"
    ANSWERED = "answered"


class I(Label):  # noqa: E742
    REQ_UPDATE = "INFORMATIONAL with UPDATE_SA_ADDRESSES"


TABLE = Table("INFORMATIONAL (MOBIKE)", {
    (S.IDLE, I.REQ_UPDATE): (S.ANSWERED, "update"),
}, remote={I.REQ_UPDATE}, final={S.ANSWERED})


def auth_notifies(sa, conn, payloads) -> list:
    """Our MOBIKE_SUPPORTED for the IKE_AUTH answer, when the client offered it and mobike is on."""
    if conn.mobike and notify(payloads, NotifyType.MOBIKE_SUPPORTED) is not None:
        sa.mobike = True
        sa.mobike_addrs = (sa.local, sa.remote)
        return [NotifyPayload(NotifyType.MOBIKE_SUPPORTED)]
    return []


def wants_update(sa, payloads) -> bool:
    return sa.mobike and notify(payloads, NotifyType.UPDATE_SA_ADDRESSES) is not None


class UpdateResponder(Responder):
    TABLE = TABLE
    INITIAL = S.IDLE
    name = "INFORMATIONAL"

    def respond(self, exchange: int, payloads: list, now: float) -> list:
        self.answer: list = []
        self.moved = False
        self.fire(I.REQ_UPDATE, now, payloads=payloads)
        return self.answer

    def update(self, now: float, payloads: list) -> None:
        sa = self.sa
        local, remote = sa.received_on
        nat = check_nat(payloads, sa.spi_i, sa.spi_r, local, remote)
        answer: list = []
        if nat is not None:
            sa.nat.local_behind, sa.nat.remote_behind = nat
            answer += nat_notifies(sa.spi_i, sa.spi_r, local, remote)
        cookie = notify(payloads, NotifyType.COOKIE2)
        if cookie is not None and 8 <= len(cookie.data) <= 64:
            answer.append(NotifyPayload(NotifyType.COOKIE2, data=cookie.data))
        self.moved = (local, remote) != sa.mobike_addrs
        self.previous = sa.mobike_addrs
        sa.local, sa.remote = local, remote
        if local[1] == sa.host.engine.natt_port:
            sa.floated = True
        self.answer = answer

    def responded(self, now: float) -> None:
        sa = self.sa
        if not self.moved:
            return
        sa.mobike_addrs = (sa.local, sa.remote)
        sa.mobike_moves += 1
        log.info("%s[%d]: MOBIKE: peer moved from %s:%d to %s:%d", sa.name, sa.unique_id, *self.previous[1],
                 *sa.remote, extra={"connection": sa.name})
        encap = sa.encap
        for child in sa.children.values():
            sa.host.emit(ChildSaMoved(sa.unique_id, sa.name, child.config.name, child.spi_in_int, child.spi_out_int,
                                      sa.local[0], sa.remote[0], sa.local[1], sa.remote[1], encap))
        sa.host.changed(sa)
