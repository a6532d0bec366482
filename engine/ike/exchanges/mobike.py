"""MOBIKE (RFC 4555): a client that changes networks keeps its IKE and CHILD SAs, both roles.

Rules (responder):
- IKE_AUTH: a peer that sends MOBIKE_SUPPORTED gets it back when its connection has
  mobike = true (``auth_notifies``); the SA then accepts address updates.
- An INFORMATIONAL with COOKIE2 gets it back (§3.8), also a return routability check
  without UPDATE_SA_ADDRESSES (§5.2), which moves nothing; one with NAT-D (charon's MOBIKE
  DPD behind a NAT) gets ours for the addresses it came from, and moves nothing either.
- INFORMATIONAL with UPDATE_SA_ADDRESSES (§3.5), authenticated like any request: the IKE
  SA takes the addresses this request came from and went to; NAT detection is redone
  from its NAT_DETECTION notifies (our answer carries ours) and COOKIE2 is echoed (§3.8);
  the answer goes to the new address. To new addresses, a return routability check first
  (§3.7: "by default ... SHOULD be performed"; charon omits it): an INFORMATIONAL with a
  fresh COOKIE2 to the new address (``Check``). Its echo moves every CHILD SA there without
  a rekey (a ChildSaMoved event: the datapath keeps SPIs, keys and sequence numbers), so an
  authenticated client (or whoever rewrote its update's source address) cannot point our ESP
  traffic at an address that did not ask for it (§5.2). A wrong echo closes the IKE SA (§3.7);
  no answer is a dead peer, as for any request. The echo moves them to the checked addresses
  whatever its source (the client's NAT may have mapped it anew: its DPD NAT detection sees
  that and sends another update). One check waits at most (the last update's addresses), and
  the peer's IKE rekey gets TEMPORARY_FAILURE while a check (or our own update) is in flight.
- Only UPDATE_SA_ADDRESSES moves a MOBIKE SA, in both roles: no implicit update from the source
  of any other authenticated message (§3.8; charon's process_message; sa_nat.update_remote).
  Answers still go where their request came from (RFC 7296 §2.11).
- Without MOBIKE negotiated, an UPDATE_SA_ADDRESSES request is answered as an ordinary
  INFORMATIONAL (engine.ike.exchanges.informational), the SA staying where it was.

Rules (initiator; RFC 4555 lets only the original initiator move the SA, §3.5):
- IKE_AUTH: with mobike = true our first IKE_AUTH request carries MOBIKE_SUPPORTED
  (``offer_notifies``); the gateway's last IKE_AUTH answer carrying it agrees (``accepted``).
- Our address changed (``roam``: once a second the runtime checks that our address still exists
  and reaches the peer, as charon keeps a valid path; when it does not, the source a route
  lookup now picks is the new address): the IKE SA sends from the new address at once, and an
  INFORMATIONAL with UPDATE_SA_ADDRESSES, NAT_DETECTION_SOURCE/DESTINATION_IP (hashed over
  the new address; faked with encap = true, as in IKE_SA_INIT) and a fresh COOKIE2 (§3.5)
  goes first in the queue. Its retransmissions follow later moves.
- The answer must echo our COOKIE2 (§3.8, compared in constant time) and carry no error
  (UNACCEPTABLE_ADDRESSES...): otherwise the IKE SA is deleted, as charon does. Then the
  CHILD SAs follow the new addresses without a rekey (ChildSaMoved, as on the responder: the
  userspace datapath re-points the pair; the kernel one, which cannot yet, rekeys it instead),
  after the peer proved it can be reached from there (the return routability check).
- Behind a NAT our DPDs carry NAT detection (``Dpd``, §3.8); a gateway's
  NAT_DETECTION_DESTINATION_IP other than in its last answer (DPD or update) means our NAT
  mapping changed: an update goes out, our addresses unchanged (the gateway follows no implicit
  update). The first answer of an IKE SA only sets the reference, as charon's has_mapping_changed.
- A NAT seen in the answer while IKE is still on port 500 moves IKE to the NAT-T port, and
  the update is sent again from there; a move while the update is in flight (or queued)
  sends one more update when it completes (the last addresses win, §3.5).
"""

from __future__ import annotations

import hmac
import logging

from engine.crypto.auth import nat_detection_hash
from engine.events import ChildSaMoved, IkeState
from engine.ike import addresses
from engine.ike.exchange import Initiator, Label, Request, Responder, Table, error_notifies, notify
from engine.ike.exchanges import informational
from engine.ike.init import check_nat, nat_notifies
from engine.ike.text import notify_name
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.mobility import COOKIE2_MIN, cookie2
from engine.wire.payloads import NotifyPayload

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_MOBIKE_SUPPORTED = NotifyType.MOBIKE_SUPPORTED
_UPDATE_SA_ADDRESSES = NotifyType.UPDATE_SA_ADDRESSES

log = logging.getLogger("engine.ike")


class S(Label):
    IDLE = "idle"
    ANSWERED = "answered"


class I(Label):  # noqa: E742
    REQ_UPDATE = "INFORMATIONAL with UPDATE_SA_ADDRESSES"
    # initiator
    START = "start"
    START_STALE = "start, but the SA is not up or already announced these addresses"
    RESP_OK = "answer echoing our COOKIE2"
    RESP_REFUSED = "answer with an error notify or without our COOKIE2"
    ABORT = "abort"


class SI(Label):
    """Initiator states."""

    IDLE = "idle"
    SENT = "update sent"
    DONE = "done"


TABLE = Table("INFORMATIONAL (MOBIKE)", {
    (S.IDLE, I.REQ_UPDATE): (S.ANSWERED, "update"),
    # initiator
    (SI.IDLE, I.START): (SI.SENT, "send"),
    (SI.IDLE, I.START_STALE): (SI.DONE, None),
    (SI.IDLE, I.ABORT): (SI.DONE, None),
    (SI.SENT, I.RESP_OK): (SI.DONE, "moved"),
    (SI.SENT, I.RESP_REFUSED): (SI.DONE, "refused"),
    (SI.SENT, I.ABORT): (SI.DONE, None),
    (SI.DONE, I.ABORT): (SI.DONE, None),
}, remote={I.REQ_UPDATE, I.RESP_OK, I.RESP_REFUSED}, final={S.ANSWERED, SI.DONE})
COOKIE2_SIZE = 16


def auth_notifies(sa, conn, payloads) -> list:
    """Our MOBIKE_SUPPORTED for the IKE_AUTH answer, when the client offered it and mobike is on."""
    if conn.mobike and notify(payloads, _MOBIKE_SUPPORTED) is not None:
        sa.mobike = True
        sa.mobike_addrs = (sa.local, sa.remote)
        return [NotifyPayload(_MOBIKE_SUPPORTED)]
    return []


def offer_notifies(sa, conn) -> list:
    """Our MOBIKE_SUPPORTED for the first IKE_AUTH request (we are the side that may move)."""
    return [NotifyPayload(NotifyType.MOBIKE_SUPPORTED)] if conn.mobike and sa.connection_initiator else []


def accepted(sa, payloads) -> None:
    """The gateway's last IKE_AUTH answer: MOBIKE is on when we offered it and it agreed."""
    if sa.conn is not None and sa.conn.mobike and notify(payloads, NotifyType.MOBIKE_SUPPORTED) is not None:
        sa.mobike = True
        sa.mobike_addrs = (sa.local, sa.remote)


def may_use(conn, address: str, resolved=None) -> bool:
    """Whether ``address`` is one local_addrs allows (none, %any, the address, a subnet or range
    holding it, or what a host name there resolved to: charon's ike_cfg match_me)."""
    return addresses.allows(conn.local_addrs, address, resolved)


def roam(sa, address: str, now: float) -> bool:
    """Our address towards the peer is now ``address``: move the IKE SA there and tell the peer
    (UPDATE_SA_ADDRESSES). False when this SA does not move (no MOBIKE, not ours to move, not up,
    already there, or an address local_addrs does not allow)."""
    if not (sa.mobike and sa.connection_initiator and sa.state == IkeState.ESTABLISHED) or sa.conn is None:
        return False
    if address == sa.local[0] or not may_use(sa.conn, address, sa.host.names.addresses) or \
            (":" in address) != (":" in sa.remote[0]):
        return False
    log.info("%s[%d]: MOBIKE: our address changed from %s to %s, updating the SA", sa.name, sa.unique_id,
             sa.local[0], address, extra={"connection": sa.name})
    sa.local = (address, sa.local[1])
    sa.host.changed(sa)
    if not any(isinstance(ex, Update) and ex.state == SI.IDLE for ex in sa.queue):
        # One in flight sends another when it completes (it announced the old address).
        if not isinstance(sa.active, Update):
            sa.start(Update(sa), now, front=True)
    return True


class Update(Initiator):
    """INFORMATIONAL with UPDATE_SA_ADDRESSES from our new address (RFC 4555 §3.5)."""

    TABLE = TABLE
    INITIAL = SI.IDLE
    name = "INFORMATIONAL (MOBIKE update)"
    affects_children = True
    """Its answer moves the CHILD SAs: a peer's IKE rekey meanwhile would take them to another IKE SA
    before that (TEMPORARY_FAILURE, §2.25.2)."""

    def __init__(self, sa, *, remapped: bool = False) -> None:
        super().__init__(sa)
        self.remapped = remapped
        """Sent for our NAT mapping (Dpd): the gateway sees us elsewhere, our addresses are the same."""

    def request(self, now: float) -> Request | None:
        if self.state != SI.IDLE:
            return None
        sa = self.sa
        stale = sa.state != IkeState.ESTABLISHED or \
            (not self.remapped and (sa.local, sa.remote) == sa.mobike_addrs)
        self.fire(I.START_STALE if stale else I.START, now)
        return Request(ExchangeType.INFORMATIONAL, self.payloads) if self.state == SI.SENT else None

    def send(self, now: float) -> None:
        sa = self.sa
        self.cookie = sa.host.rng(COOKIE2_SIZE)
        self.announced = (sa.local, sa.remote)
        self.before = set(sa.children)
        """CHILD SAs on the old addresses: those made meanwhile (a peer's rekey) start on the new ones."""
        fake = sa.host.rng(20) if sa.conn is not None and sa.conn.encap else None
        self.payloads = [NotifyPayload(NotifyType.UPDATE_SA_ADDRESSES),
                         *nat_notifies(sa.spi_i, sa.spi_r, sa.local, sa.remote, fake), cookie2(self.cookie)]

    def response(self, exchange: int, payloads: list, now: float) -> None:
        errors = error_notifies(payloads)
        echo = notify(payloads, NotifyType.COOKIE2)
        if errors:
            why = f"the peer refused our address update with {notify_name(errors[0].type)}"
        elif echo is None or len(echo.data) < COOKIE2_MIN or not hmac.compare_digest(echo.data, self.cookie):
            why = "the peer's answer to our address update does not echo our COOKIE2 (RFC 4555 §3.8)"
        else:
            self.fire(I.RESP_OK, now, payloads=payloads)
            return
        self.fire(I.RESP_REFUSED, now, reason=why)

    def moved(self, now: float, payloads: list) -> None:
        sa = self.sa
        local, remote = self.announced
        nat = check_nat(payloads, sa.spi_i, sa.spi_r, local, remote)
        if nat is not None:
            sa.nat.local_behind, sa.nat.remote_behind = nat
        mapping_changed(sa, payloads, local)  # the gateway's view of us now: what our DPDs compare with
        if sa.nat.any and not sa.floated:
            sa.float_ports()  # a NAT on the new path: IKE and ESP go to the NAT-T port (§3.5)
        if (sa.local, sa.remote) != self.announced:
            # We moved again (or floated) meanwhile: the CHILD SAs wait for the last addresses.
            sa.start(Update(sa), now, front=True)
            return
        previous, sa.mobike_addrs = sa.mobike_addrs, self.announced
        sa.mobike_moves += 1
        if previous == self.announced:
            log.info("%s[%d]: MOBIKE: the peer knows our new NAT mapping", sa.name, sa.unique_id,
                     extra={"connection": sa.name})
        else:
            log.info("%s[%d]: MOBIKE: moved from %s:%d to %s:%d", sa.name, sa.unique_id,
                     *(previous[0] if previous else ("?", 0)), *local, extra={"connection": sa.name})
        for spi, child in sa.children.items():
            if spi in self.before:
                sa.host.emit(ChildSaMoved(sa.unique_id, sa.name, child.config.name, child.spi_in_int,
                                          child.spi_out_int, local[0], remote[0], local[1], remote[1], sa.encap))
        sa.host.changed(sa)

    def refused(self, now: float, reason: str) -> None:
        sa = self.sa
        sa.fail(ExchangeType.INFORMATIONAL, "UPDATE_SA_ADDRESSES", reason, now)
        sa.delete(now, reason)

    def abort(self, now: float) -> None:
        self.fire(I.ABORT, now)

    def migrate(self, sa) -> bool:
        self.sa = sa  # an IKE rekey completed first: the new SA has the same addresses to announce
        return True


def mapping_changed(sa, payloads, local) -> bool:
    """Whether the gateway's NAT_DETECTION_DESTINATION_IP (our address as it sees it) differs from
    the one it sent last (RFC 4555 §3.8), or shows we are no longer behind a NAT; it is kept for
    the next comparison. The first one only sets the reference (charon's has_mapping_changed: the
    IKE_SA_INIT one, on port 500, cannot be compared with a NAT-T port mapping)."""
    dest = [p.data for p in payloads if isinstance(p, NotifyPayload)
            and p.type == NotifyType.NAT_DETECTION_DESTINATION_IP]
    if not dest:
        return False
    if nat_detection_hash(sa.spi_i, sa.spi_r, local[0], local[1]) in dest:
        sa.nat.mapped = None
        return sa.nat.local_behind  # no NAT any more (charon's ike_natd sets mapping_changed too)
    previous, sa.nat.mapped = sa.nat.mapped, dest[0]
    return previous is not None and previous != dest[0]


class Dpd(informational.Dpd):
    """The MOBIKE client's DPD (RFC 4555 §3.8: "SHOULD include these notifications in DPD messages";
    charon's queue_dpd hands it to ike_mobike): behind a NAT it carries NAT detection for our
    addresses, and a gateway's NAT_DETECTION_DESTINATION_IP other than before in the answer means
    our NAT mapping changed (the gateway, which follows no implicit update, sends our traffic to
    the old one): UPDATE_SA_ADDRESSES goes out from where we are, as charon's process_i does."""

    name = "INFORMATIONAL (MOBIKE DPD)"

    def build(self, now: float) -> list:
        sa = self.sa
        self.sent_from = sa.local if sa.nat.local_behind else None
        if self.sent_from is None:
            return []
        return nat_notifies(sa.spi_i, sa.spi_r, sa.local, sa.remote)

    def response(self, exchange: int, payloads: list, now: float) -> None:
        super().response(exchange, payloads, now)
        sa = self.sa
        if self.sent_from is None or not mapping_changed(sa, payloads, self.sent_from) \
                or sa.state != IkeState.ESTABLISHED:
            return
        if any(isinstance(ex, Update) and ex.state == SI.IDLE for ex in sa.queue) or isinstance(sa.active, Update):
            return  # one is on its way (its answer gives the gateway's view of us anew)
        log.info("%s[%d]: MOBIKE: our NAT mapping changed (the peer's NAT detection in its DPD answer), "
                 "sending an address update", sa.name, sa.unique_id, extra={"connection": sa.name})
        sa.start(Update(sa, remapped=True), now, front=True)


_CHECK_NOTIFIES = frozenset({NotifyType.COOKIE2, NotifyType.NAT_DETECTION_SOURCE_IP,
                             NotifyType.NAT_DETECTION_DESTINATION_IP, NotifyType.ADDITIONAL_IP4_ADDRESS,
                             NotifyType.ADDITIONAL_IP6_ADDRESS, NotifyType.NO_ADDITIONAL_ADDRESSES,
                             NotifyType.NO_NATS_ALLOWED})
"""What a return routability check may carry besides its COOKIE2 (anything else: an ordinary INFORMATIONAL)."""
_CHECK_STARTS = (NotifyType.COOKIE2, NotifyType.NAT_DETECTION_SOURCE_IP, NotifyType.NAT_DETECTION_DESTINATION_IP)
"""What makes such an INFORMATIONAL one for UpdateResponder (charon's task manager: ike_mobike)."""


def wants_update(sa, payloads) -> bool:
    """An INFORMATIONAL for UpdateResponder: UPDATE_SA_ADDRESSES, or a return routability check
    (COOKIE2 and MOBIKE notifies only: its answer must copy the cookie, §3.8, as charon's ike_mobike does)."""
    if not sa.mobike:
        return False
    if notify(payloads, _UPDATE_SA_ADDRESSES) is not None:
        return True
    # NAT-D alone too: charon's MOBIKE DPD behind a NAT (its queue_dpd), answered with our NAT-D so
    # the client sees its NAT mapping change and sends an update.
    return any(notify(payloads, t) is not None for t in _CHECK_STARTS) and all(
        isinstance(p, NotifyPayload) and p.type in _CHECK_NOTIFIES for p in payloads)


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
        # Without UPDATE_SA_ADDRESSES a return routability check (§5.2): answered where it came
        # from (NAT detection and COOKIE2 too), but neither the addresses nor the NAT state change.
        updating = notify(payloads, NotifyType.UPDATE_SA_ADDRESSES) is not None
        nat = check_nat(payloads, sa.spi_i, sa.spi_r, local, remote)
        answer: list = []
        if nat is not None:
            if updating:
                sa.nat.local_behind, sa.nat.remote_behind = nat
            answer += nat_notifies(sa.spi_i, sa.spi_r, local, remote)
        cookie = notify(payloads, NotifyType.COOKIE2)
        if cookie is not None and 8 <= len(cookie.data) <= 64:
            answer.append(NotifyPayload(NotifyType.COOKIE2, data=cookie.data))
        self.answer = answer
        if not updating:
            return
        self.moved = (local, remote) != sa.mobike_addrs
        self.previous = sa.mobike_addrs
        sa.local, sa.remote = local, remote
        if local[1] == sa.host.engine.natt_port:
            sa.floated = True

    def responded(self, now: float) -> None:
        sa = self.sa
        if not self.moved:
            return
        sa.mobike_addrs = (sa.local, sa.remote)
        log.info("%s[%d]: MOBIKE: peer moved from %s:%d to %s:%d, checking that it can be reached there "
                 "(RFC 4555 §3.7) before its CHILD SAs follow", sa.name, sa.unique_id, *self.previous[1],
                 *sa.remote, extra={"connection": sa.name})
        # Only the last addresses need checking: a check still queued (one is in flight,
        # unanswered) is dropped, so a client announcing addresses faster than it answers
        # does not grow our queue.
        sa.queue[:] = [ex for ex in sa.queue if not (isinstance(ex, Check) and ex.state == SI.IDLE)]
        sa.start(Check(sa, self.previous), now, front=True)
        sa.host.changed(sa)


class Check(Initiator):
    """Responder: the return routability check of the peer's new addresses (RFC 4555 §3.7), an
    INFORMATIONAL with a fresh COOKIE2 only; its echo moves the CHILD SAs there."""

    TABLE = TABLE
    INITIAL = SI.IDLE
    name = "INFORMATIONAL (MOBIKE return routability check)"
    affects_children = True  # as Update's

    def __init__(self, sa, previous) -> None:
        super().__init__(sa)
        self.previous = previous
        self.checking = (sa.local, sa.remote)
        self.before = set(sa.children)
        """CHILD SAs on the old addresses: those made meanwhile start on the new ones."""

    def request(self, now: float) -> Request | None:
        if self.state != SI.IDLE:
            return None
        sa = self.sa
        # A newer update came first: its own check follows.
        stale = sa.state != IkeState.ESTABLISHED or sa.mobike_addrs != self.checking
        self.fire(I.START_STALE if stale else I.START, now)
        return Request(ExchangeType.INFORMATIONAL, self.payloads) if self.state == SI.SENT else None

    def send(self, now: float) -> None:
        self.cookie = self.sa.host.rng(COOKIE2_SIZE)
        self.payloads = [cookie2(self.cookie)]

    def response(self, exchange: int, payloads: list, now: float) -> None:
        echo = notify(payloads, NotifyType.COOKIE2)
        if echo is None or len(echo.data) < COOKIE2_MIN or not hmac.compare_digest(echo.data, self.cookie):
            self.fire(I.RESP_REFUSED, now, reason="the peer's answer to our return routability check at its new "
                      "address does not echo our COOKIE2 (RFC 4555 §3.7)")
            return
        self.fire(I.RESP_OK, now, payloads=payloads)

    def moved(self, now: float, payloads: list) -> None:
        sa = self.sa
        if sa.mobike_addrs != self.checking:
            return  # it moved again meanwhile: the check of the last addresses moves the CHILD SAs
        # To the addresses checked, wherever the answer came from: the echo proves the client
        # receives there (§3.7), and an INFORMATIONAL without UPDATE_SA_ADDRESSES moves nothing
        # (§3.8). A client whose NAT mapped it anew meanwhile sees it in its next DPD's NAT
        # detection and sends another update.
        sa.mobike_moves += 1
        local, remote = self.checking
        log.info("%s[%d]: MOBIKE: the peer answered our check at %s:%d, its CHILD SAs follow", sa.name,
                 sa.unique_id, *remote, extra={"connection": sa.name})
        encap = sa.encap
        for spi, child in sa.children.items():
            if spi in self.before:
                sa.host.emit(ChildSaMoved(sa.unique_id, sa.name, child.config.name, child.spi_in_int,
                                          child.spi_out_int, local[0], remote[0], local[1], remote[1], encap))
        sa.host.changed(sa)

    def refused(self, now: float, reason: str) -> None:
        sa = self.sa
        sa.fail(ExchangeType.INFORMATIONAL, "COOKIE2", reason, now)
        sa.delete(now, reason)

    def abort(self, now: float) -> None:
        self.fire(I.ABORT, now)

    def migrate(self, sa) -> bool:
        self.sa = sa  # an IKE rekey completed first: the new SA holds the CHILD SAs to move
        self.before = set(sa.children)
        return True
