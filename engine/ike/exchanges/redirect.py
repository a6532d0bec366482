"""IKE redirect (RFC 5685), both roles: a loaded gateway sends clients elsewhere, and our
client follows.

Rules (gateway), in IKE_AUTH (§6):
- A connection with ``redirect_to`` answers an authenticated client that announced
  REDIRECT_SUPPORTED in IKE_SA_INIT with IDr, CERT, AUTH and N(REDIRECT, the gateway), without
  SA, TS or CP (no CHILD SA, no lease), and forgets the IKE SA once the answer is out (``drop``;
  the answer itself is kept for the client's retransmissions):
  the client connects to the other gateway (charon 5.9.8 does not delete the SA first; a
  client that does gets no answer to its DELETE, which it may ignore as it moved on).
- A client that did not announce REDIRECT_SUPPORTED cannot follow: it is served as usual, and the
  log says why it was not redirected.
The redirect in IKE_AUTH needs no nonce (that is only for IKE_SA_INIT answers, §4).

Rules (client), as charon's ``follow_redirects = yes``:
- Our first IKE_SA_INIT carries REDIRECT_SUPPORTED, or REDIRECTED_FROM (the gateway that sent
  us) when this IKE SA follows a redirect (``init_notifies``, §4.2, §5).
- N(REDIRECT) in the IKE_SA_INIT answer counts only with our nonce in it (§4.2, compared in
  constant time; otherwise the answer is refused as malformed); in the IKE_AUTH answer once the
  gateway is authenticated (§6); in an INFORMATIONAL request of an established gateway (§5:
  answered empty). Then a new IKE SA starts at that gateway with the same CHILD configs (the
  endpoint's ``redirect``, engine.ike.redirect_client): a connecting SA is dropped without a
  DELETE (nothing the gateway keeps, as charon's reset), an established one is deleted once its
  successor is up. A gateway named by a host name is followed once the runtime resolved it.
- A gateway of the other address family, a host name that does not resolve, or more than
  MAX_REDIRECTS within REDIRECT_PERIOD seconds (a loop; charon's limits, counted along the
  successors and on an established SA redirected again and again): the attempt fails with that
  reason instead. An established SA redirected again while its successor still connects is not
  followed twice.
"""

from __future__ import annotations

import hmac
import logging

from engine.ike.exchange import notify
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.errors import MalformedMessage
from engine.wire.mobility import decode_redirect, redirect, redirect_supported, redirected_from

log = logging.getLogger("engine.ike")

MAX_REDIRECTS = 5
REDIRECT_PERIOD = 300.0
"""charon's MAX_REDIRECTS and REDIRECT_LOOP_DETECT_PERIOD."""


def auth_redirect(sa, conn) -> list | None:
    """The N(REDIRECT) for the IKE_AUTH answer (None: serve the client here)."""
    if conn.redirect_to is None:
        return None
    if not sa.peer_redirect_supported:
        log.info("%s[%d]: not redirected to %s: the client did not announce REDIRECT_SUPPORTED (RFC 5685)",
                 sa.name, sa.unique_id, conn.redirect_to, extra={"connection": sa.name})
        return None
    log.info("%s[%d]: redirecting the client to %s (RFC 5685)", sa.name, sa.unique_id, conn.redirect_to,
             extra={"connection": sa.name})
    return [redirect(conn.redirect_to)]


def drop(sa, now: float) -> None:
    """After our N(REDIRECT) went out: nothing more happens on this IKE SA."""
    where = sa.conn.redirect_to if sa.conn is not None else "another gateway"
    # The answer may be lost: a retransmission of the request gets it again (charon keeps the SA
    # for half_open_timeout instead).
    sa.host.keep_answer(sa, now)
    sa.destroy(now, f"redirected to {where}")


# ---------------------------------------------------------------- the client
def init_notifies(sa) -> list:
    """REDIRECT_SUPPORTED, or REDIRECTED_FROM when this SA follows a redirect, for IKE_SA_INIT."""
    if sa.redirected_from:
        return [redirected_from(sa.redirected_from)]
    return [redirect_supported()]


def gateway_of(payloads, nonce: bytes | None = None) -> tuple[str | None, str]:
    """(the gateway of an N(REDIRECT), "") or (None, why it is unusable); (None, "") without one.
    ``nonce``: ours, which a REDIRECT answering IKE_SA_INIT must carry."""
    n = notify(payloads, NotifyType.REDIRECT)
    if n is None:
        return None, ""
    try:
        r = decode_redirect(n)
    except MalformedMessage as exc:
        return None, f"an unreadable REDIRECT ({exc})"
    if nonce is not None and not hmac.compare_digest(r.nonce, nonce):
        return None, "a REDIRECT without our nonce (RFC 5685 §4.2: it does not answer our request)"
    return r.gateway, ""


def follow(sa, gateway: str, exchange: int, children, now: float) -> None:
    """Start over at ``gateway`` (or fail saying why not); this IKE SA goes."""
    if sa.established and any(o.replaces is sa and o.alive for o in sa.host.registry):
        # The gateway repeats itself while we still connect where it sent us: one successor at a time.
        log.info("%s[%d]: the gateway redirects us to %s while we still connect where it sent us before: "
                 "not followed", sa.name, sa.unique_id, gateway, extra={"connection": sa.name})
        return
    why = sa.host.redirect(sa, gateway, children, now, exchange)
    if why is None:
        log.info("%s[%d]: redirected to %s (RFC 5685), connecting there", sa.name, sa.unique_id, gateway,
                 extra={"connection": sa.name})
        if sa.established:
            return  # deleted once the new IKE SA is up (the endpoint's redirect)
        sa.destroy(now, f"redirected to {gateway}")
        return
    reason = f"the gateway redirects us to {gateway} (RFC 5685), but {why}"
    sa.fail(exchange, "REDIRECT", reason, now, sent_by_peer=True)
    if sa.established:
        sa.delete(now, reason)
    else:
        # As charon: no DELETE for an SA the gateway forgot already (see drop).
        sa.destroy(now, reason)


def redirected(sa, payloads, now: float, children=()) -> bool:
    """Our client got N(REDIRECT) in the IKE_AUTH answer (the gateway is authenticated): follow it."""
    gateway, bad = gateway_of(payloads)
    if gateway is None and not bad:
        return False
    if gateway is None:
        reason = f"the gateway sent {bad}"
        sa.fail(ExchangeType.IKE_AUTH, "REDIRECT", reason, now, sent_by_peer=True)
        sa.destroy(now, reason)
        return True
    follow(sa, gateway, ExchangeType.IKE_AUTH, children, now)
    return True
