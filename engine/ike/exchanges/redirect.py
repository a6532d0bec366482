"""IKE redirect (RFC 5685) by the responder, in IKE_AUTH (§6): a loaded gateway sends clients elsewhere.

Rules:
- A connection with ``redirect_to`` answers an authenticated client that announced
  REDIRECT_SUPPORTED in IKE_SA_INIT with IDr, CERT, AUTH and N(REDIRECT, the gateway), without
  SA, TS or CP (no CHILD SA, no lease), and forgets the IKE SA once the answer is out (``drop``):
  the client connects to the other gateway (charon 5.9.8 does not delete the SA first; a
  client that does gets no answer to its DELETE, which it may ignore as it moved on).
- A client that did not announce REDIRECT_SUPPORTED cannot follow: it is served as usual, and the
  log says why it was not redirected.
The redirect in IKE_AUTH needs no nonce (that is only for IKE_SA_INIT answers, §4).
- Our client does not announce REDIRECT_SUPPORTED (it cannot follow one yet); a gateway that
  redirects it anyway drops the IKE SA with the reason and the gateway it names (``redirected``).
"""

from __future__ import annotations

import logging

from engine.ike.exchange import notify
from engine.wire.constants import ExchangeType, NotifyType
from engine.wire.errors import MalformedMessage
from engine.wire.mobility import decode_redirect, redirect

log = logging.getLogger("engine.ike")


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
    sa.destroy(now, f"redirected to {where}")


def redirected(sa, payloads, now: float) -> bool:
    """Our client got N(REDIRECT) in the IKE_AUTH answer: say where to, and delete the IKE SA."""
    n = notify(payloads, NotifyType.REDIRECT)
    if n is None:
        return False
    try:
        where = decode_redirect(n).gateway
    except MalformedMessage as exc:
        where = f"an unreadable gateway ({exc})"
    reason = (f"the gateway redirects us to {where} (RFC 5685); this engine does not follow redirects: "
              "set remote_addrs to that gateway")
    sa.fail(ExchangeType.IKE_AUTH, "REDIRECT", reason, now, sent_by_peer=True)
    # As charon does: the SA is dropped without a DELETE (the gateway forgot it already, see drop);
    # not a failure to retry against the same gateway either.
    sa.destroy(now, reason)
    return True
