"""IKEv2 exchanges as explicit state machines, one module per exchange, each
holding both roles and one declared table (in the spirit of h11's
``_state.py``). What they share, the table and the two roles' interfaces,
is ``engine.ike.exchange``.

- ``ike_sa_init``    IKE_SA_INIT (COOKIE and INVALID_KE_PAYLOAD retries; the
                     responder behind the front door, ``engine.ike.front_door``)
- ``ike_auth``       IKE_AUTH (identities, AUTH, the first CHILD SA)
- ``eap_auth``       IKE_AUTH with EAP rounds (§2.16), both roles
- ``create_child``   CREATE_CHILD_SA for a new CHILD SA
- ``child_rekey``    CREATE_CHILD_SA rekeying a CHILD SA, with its collisions
- ``ike_rekey``      CREATE_CHILD_SA rekeying the IKE SA, with its collisions
- ``informational``  INFORMATIONAL: deletes, DPD, error notifies
- ``mobike``         INFORMATIONAL with UPDATE_SA_ADDRESSES (RFC 4555), both roles
- ``redirect``       REDIRECT (RFC 5685): sent by a gateway in IKE_AUTH, followed by a client
- ``child_sa``       the CHILD SA payloads the three CHILD-making exchanges share

Each module's docstring lists its rules in words; its ``TABLE`` maps
(state, input) to (next state, action). Inputs caused by the peer are declared
remote: a pair the table lacks is then a RemoteError, answered with a notify
(requests) or dropped (responses), never an exception out of the endpoint;
for our own inputs it is an IllegalTransition (a bug of ours). Collisions and
lost or late messages are states of the table (``SENT_COLLIDED``,
``SENT_OLD_GONE``...), reached through the ``peer_*`` events an IKE SA
passes to the exchange it has in flight.

How the IKE SA (``engine.ike.sa``) drives them:

- Initiator: ``sa.start(exchange)`` queues it; when the window is free the SA
  calls ``request(now)`` for the next request (a ``Request``: exchange type and
  payloads), sends it, retransmits it, and hands the answer to
  ``response(exchange, payloads, now)``. It asks again after each answer, until
  ``request`` returns None: a multi-round exchange just returns its next
  request (the exchange type may change between rounds).
- Responder: for a request with no responder in progress, ``CATALOG.responder``
  picks one; ``respond(exchange, payloads, now)`` returns the answer's
  payloads, ``responded(now)`` runs after the answer went out. A responder
  whose ``finished`` is False stays, and further requests go to it while
  ``accepts(exchange)`` says so.

Adding an exchange (e.g. IKE_INTERMEDIATE, EAP rounds in IKE_AUTH,
IKE_FOLLOWUP_KE after CREATE_CHILD_SA):

1. A module here with its states and inputs (enums), a ``TABLE`` (remote
   inputs listed), an ``Initiator`` subclass and a ``Responder`` subclass whose
   methods are the table's actions. Classify each answer or request into one
   input, then ``fire`` it; an action may return the next input to spell out
   a decision (``child_rekey``: WON/LOST).
2. Rounds: IKE_INTERMEDIATE is an Initiator that ``ike_sa_init.IkeInit`` starts
   through its ``next_exchange`` factory and that starts IKE_AUTH when done,
   its responder accepted while the SA is CONNECTING (``responder`` below).
   EAP adds SENT states to ``ike_auth`` (one per round) and a responder that
   stays (``finished`` False, ``accepts(IKE_AUTH)``). IKE_FOLLOWUP_KE makes
   ``child_rekey``/``ike_rekey`` return further requests of that type, and
   their responders stay until the last key exchange.
3. Collisions: override the ``peer_*`` hooks of ``engine.ike.exchange.Initiator`` and map
   them to inputs with ``maybe`` (ignored where the table has no rule).
4. Dispatch: route the exchange type (and payloads) in ``Catalog.responder``.
5. A test of the table in tests/engine/test_ike_tables.py (every action
   exists, every state is reachable) and a case on the two-endpoint bench.
"""

from __future__ import annotations

from engine.events import IkeState
from engine.ike.child import ChildSa
from engine.ike.errors import RemoteError
from engine.ike import intermediate
from engine.ike.exchanges import (
    child_rekey,
    create_child,
    eap_auth,
    ike_auth,
    ike_intermediate,
    ike_rekey,
    ike_sa_init,
    informational,
    mobike,
)
from engine.ike.exchange import Initiator, Responder, find, notify
from engine.ike.sa import IkeSa
from engine.policy.model import ChildConfig
from engine.wire.constants import ExchangeType, NotifyType, ProtocolId
from engine.wire.payloads import AuthPayload, IdPayload, SaPayload

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_CONNECTING = IkeState.CONNECTING
_CREATED = IkeState.CREATED
_CREATE_CHILD_SA = ExchangeType.CREATE_CHILD_SA
_IKE_AUTH = ExchangeType.IKE_AUTH
_IKE_INTERMEDIATE = ExchangeType.IKE_INTERMEDIATE
_INFORMATIONAL = ExchangeType.INFORMATIONAL

MODULES = (ike_sa_init, ike_intermediate, ike_auth, eap_auth, create_child, child_rekey, ike_rekey, informational,
           mobike)
"""Every exchange module (each has a TABLE)."""


class Catalog:
    """The exchanges an IKE SA starts and answers (engine.ike.host.Catalog)."""

    def responder(self, sa: IkeSa, exchange: int, payloads: list) -> Responder:
        if exchange == _IKE_AUTH:
            if sa.state != _CONNECTING or sa.original_initiator:
                raise RemoteError(NotifyType.INVALID_SYNTAX, "IKE_AUTH request on an established IKE SA")
            if intermediate.pending(sa):
                # Skipping a negotiated additional key exchange would drop its protection.
                raise RemoteError(NotifyType.INVALID_SYNTAX, "IKE_AUTH before the negotiated IKE_INTERMEDIATE "
                                  "key exchanges")
            intermediate.note_auth_mid(sa, sa.peer_mid)
            if find(payloads, IdPayload, lambda p: p.initiator) is not None and find(payloads, AuthPayload) is None:
                return eap_auth.EapAuthResponder(sa)  # no AUTH: the client wants EAP (§2.16)
            return ike_auth.IkeAuthResponder(sa)
        if exchange == _IKE_INTERMEDIATE:
            if sa.state != IkeState.CONNECTING or sa.original_initiator or not intermediate.pending(sa):
                raise RemoteError(NotifyType.INVALID_SYNTAX, "IKE_INTERMEDIATE request that was not negotiated")
            return ike_intermediate.IkeIntermediateResponder(sa)
        if sa.state in (_CREATED, _CONNECTING):
            raise RemoteError(NotifyType.INVALID_SYNTAX, "a request before IKE_AUTH completed")
        if exchange == _CREATE_CHILD_SA:
            sa_p = find(payloads, SaPayload)
            if sa_p is not None and sa_p.proposals and sa_p.proposals[0].protocol == ProtocolId.IKE:
                return ike_rekey.IkeRekeyResponder(sa)
            if notify(payloads, NotifyType.REKEY_SA) is not None:
                return child_rekey.ChildRekeyResponder(sa)
            return create_child.CreateChildResponder(sa)
        if exchange == _INFORMATIONAL:
            if mobike.wants_update(sa, payloads):
                return mobike.UpdateResponder(sa)
            return informational.InformationalResponder(sa)
        if exchange == ExchangeType.IKE_FOLLOWUP_KE:
            # No CREATE_CHILD_SA of the peer waits for this round (RFC 9370 §2.2.4).
            raise RemoteError(NotifyType.STATE_NOT_FOUND, "IKE_FOLLOWUP_KE without a CREATE_CHILD_SA in progress")
        # Not fatal, as charon answers an exchange type it has no rules for (message.c: NOT_SUPPORTED):
        # INVALID_SYNTAX would end the IKE SA on both ends (RFC 7296 §2.21.3) over an extension.
        raise RemoteError(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, f"unexpected exchange type {exchange}",
                          data=b"\x00")

    def ike_init(self, sa: IkeSa, children: list[ChildConfig]) -> Initiator:
        return ike_sa_init.IkeInit(sa, children, ike_intermediate.before(eap_auth.ike_auth_for))

    def ike_rekey(self, sa: IkeSa) -> Initiator:
        return ike_rekey.IkeRekey(sa)

    def ike_delete(self, sa: IkeSa, reason: str) -> Initiator:
        return informational.DeleteIke(sa, reason)

    def create_child(self, sa: IkeSa, cfg: ChildConfig) -> Initiator:
        return create_child.CreateChild(sa, cfg)

    def child_rekey(self, sa: IkeSa, child: ChildSa) -> Initiator:
        return child_rekey.ChildRekey(sa, child)

    def child_delete(self, sa: IkeSa, child: ChildSa, reason: str) -> Initiator:
        return informational.DeleteChild(sa, child, reason)

    def dpd(self, sa: IkeSa) -> Initiator:
        if sa.mobike and sa.connection_initiator:
            return mobike.Dpd(sa)  # NAT detection behind a NAT (RFC 4555 §3.8; charon's queue_dpd)
        return informational.Dpd(sa)


CATALOG = Catalog()
