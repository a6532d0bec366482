"""Postquantum Preshared Keys in IKE_AUTH (RFC 8784 §3), both roles.

- IKE_SA_INIT: the initiator sends USE_PPK when its connection names a
  ppk_id; the responder answers with USE_PPK when one of the connections it
  may choose uses PPKs. Both sent it: ``sa.use_ppk``.
- IKE_AUTH initiator: SK_d, SK_pi, SK_pr are replaced with prf+(PPK, ...)
  before AUTH is computed; PPK_IDENTITY names the PPK (PPK_ID_FIXED, as
  strongSwan); unless ppk_required, NO_PPK_AUTH carries AUTH computed with
  the unmodified SK_pi for a responder without that PPK. The answer carries
  PPK_IDENTITY when the responder used the PPK; without it the unmodified keys
  come back (refused when ppk_required). With EAP all this goes with our MSK
  AUTH after EAP-Success (as charon's ike_auth.c: PPK_IDENTITY goes in the
  message holding AUTH): the gateway's first AUTH is made before it knows of a
  PPK, with the unmodified SK_pr.
- IKE_AUTH responder: a PPK_IDENTITY whose PPK we hold (and, when the
  connection names one, the same PPK_ID): the PPK keys, AUTH verified with
  SK_pi', an empty PPK_IDENTITY in the answer. No such PPK: NO_PPK_AUTH is
  verified instead, unless ppk_required (AUTHENTICATION_FAILED). For an EAP
  client, the same when its MSK AUTH comes.

Keys without the PPK are dropped once the answer is decided.
"""

from __future__ import annotations

import dataclasses

from engine.crypto.ppk import apply_ppk
from engine.ike.errors import LocalError
from engine.policy.secrets import lookup_ppk
from engine.wire.constants import NotifyType
from engine.wire.errors import MalformedMessage
from engine.wire.payloads import AuthPayload, NotifyPayload
from engine.wire.ppk import decode_ppk_identity, no_ppk_auth, ppk_identity, use_ppk


def wants_ppk(conn) -> bool:
    return conn is not None and (conn.ppk_id is not None or conn.ppk_required)


def init_notifies(conn) -> list:
    """USE_PPK for our IKE_SA_INIT request or answer."""
    return [use_ppk()] if wants_ppk(conn) else []


def _notify(payloads, ntype: int) -> NotifyPayload | None:
    return next((p for p in payloads if isinstance(p, NotifyPayload) and p.type == ntype), None)


def _switch(sa, secret) -> None:
    keys = sa.keys
    new = apply_ppk(sa.chosen.prf, secret, keys.sk_d, keys.sk_pi, keys.sk_pr)
    sa.keys = dataclasses.replace(keys, sk_d=new.sk_d, sk_pi=new.sk_pi, sk_pr=new.sk_pr)


class InitiatorPpk:
    """The initiator's PPK for one IKE_AUTH (``used`` False: none offered). The keys change
    with `switch`, right before our AUTH is computed."""

    def __init__(self, sa, conn) -> None:
        self.plain = None
        self.secret = None
        self.ppk_id: str | None = None
        if not wants_ppk(conn):
            return
        if not sa.use_ppk:
            if conn.ppk_required:
                raise LocalError("a PPK is required (ppk_required) but the peer did not offer USE_PPK")
            return
        entry = lookup_ppk(sa.host.auth.policy.secrets, conn.ppk_id) if conn.ppk_id else None
        if entry is None:
            if conn.ppk_required:
                raise LocalError(f"a PPK is required but the secrets file has no [ppk.*] with id = "
                                 f"\"{conn.ppk_id}\"")
            return
        self.secret = entry.secret
        self.ppk_id = conn.ppk_id
        self.required = conn.ppk_required

    def switch(self, sa) -> None:
        """SK_d, SK_pi, SK_pr to the PPK ones (the unmodified ones kept for NO_PPK_AUTH and the
        answer); nothing without a PPK or when done already."""
        if self.secret is None:
            return
        self.plain = sa.keys
        _switch(sa, self.secret)
        self.secret = None

    @property
    def used(self) -> bool:
        return self.plain is not None

    def notifies(self, auth_data_with) -> list:
        """PPK_IDENTITY and (PPK optional) NO_PPK_AUTH; ``auth_data_with(sk_pi)`` computes our AUTH data."""
        if not self.used:
            return []
        out = [ppk_identity(self.ppk_id.encode())]
        if not self.required:
            out.append(no_ppk_auth(auth_data_with(self.plain.sk_pi.reveal())))
        return out

    def answer(self, sa, payloads) -> str | None:
        """The responder's choice: keeps the PPK keys or goes back to the plain ones; why it
        is refused (ppk_required and the responder did not use the PPK), else None."""
        if not self.used:
            return None
        plain, self.plain = self.plain, None
        if _notify(payloads, NotifyType.PPK_IDENTITY) is not None:
            sa.ppk_used = True
            return None
        if self.required:
            return "the peer did not use our PPK (ppk_required): it has no PPK with id " \
                   f"\"{self.ppk_id}\" or does not require it"
        sa.keys = plain  # the responder authenticated with NO_PPK_AUTH: the keys stay without the PPK
        return None


def responder(sa, conn, payloads, auth: AuthPayload) -> tuple[AuthPayload | None, str]:
    """(the AUTH to verify, with the keys switched to the PPK ones when it is used; None and
    why when the peer cannot be accepted)."""
    notify = _notify(payloads, NotifyType.PPK_IDENTITY) if sa.use_ppk else None
    if notify is None:
        if conn.ppk_required:
            return None, ("a PPK is required (ppk_required) but the peer " +
                          ("sent no PPK_IDENTITY" if sa.use_ppk else "does not support PPKs (no USE_PPK)"))
        return auth, ""
    try:
        ident = decode_ppk_identity(notify.data)
    except MalformedMessage as exc:
        # A PPK_ID we cannot read (another type, too long) names no PPK of ours: NO_PPK_AUTH
        # applies as for one we lack (RFC 8784 §3; charon's get_ppk_r ignores it likewise).
        entry, ppk_id = None, f"unreadable: {exc}"
    else:
        ppk_id = str(ident)
        if conn.ppk_id is not None and ppk_id != conn.ppk_id:
            return None, f"the peer's PPK_ID '{ppk_id}' is not the configured ppk_id '{conn.ppk_id}'"
        entry = lookup_ppk(sa.host.auth.policy.secrets, ppk_id)
    if entry is not None:
        _switch(sa, entry.secret)
        sa.ppk_used = True
        return auth, ""
    if conn.ppk_required:
        return None, f"a PPK is required but we have none with id '{ppk_id}'"
    fallback = _notify(payloads, NotifyType.NO_PPK_AUTH)
    if fallback is None:
        return None, f"we have no PPK with id '{ppk_id}' and the peer sent no NO_PPK_AUTH"
    return AuthPayload(auth.method, fallback.data), ""


def responder_notifies(sa) -> list:
    """An empty PPK_IDENTITY in our IKE_AUTH answer when we used the PPK (as strongSwan)."""
    return [NotifyPayload(NotifyType.PPK_IDENTITY)] if sa.ppk_used else []
