"""EAP inside IKEv2 (RFC 7296 §2.16): packets, methods, conversations. Sans-IO.

- ``packet``    EAP packets (RFC 3748): Request/Response/Success/Failure, Identity, Nak
- ``method``    the interface every method implements, in each role
- ``identity``  EAP-Identity
- ``mschapv2``  EAP-MSCHAPv2 (RFC 2759 framed as Windows and strongSwan do), MSK per RFC 3079
- ``tls``       EAP-TLS (RFC 5216, RFC 9190 for TLS 1.3), MSK from the TLS exporter
- ``session``   ``EapServer`` / ``EapPeer``: one conversation, the objects IKE_AUTH drives

How IKE_AUTH drives it (gateway): the client's first IKE_AUTH request has
IDi but no AUTH; build ``EapServer(methods_for(auth), server_methods(...),
ask_identity=..., ...)`` and put ``server.start().payload`` into the answer
(with IDr, CERT and our AUTH). Each further request carries one EAP payload:
``step = server.receive(payload)`` and answer ``step.payload``. When
``step.state == "success"`` the client's next request carries AUTH made
with ``server.msk`` (SK_pi if None) as the shared key of RFC 7296 §2.15;
check it and answer with ours. A "failure" step's payload is EAP-Failure;
the IKE SA then ends with AUTHENTICATION_FAILED and ``step.reason``.
Our client mirrors it with ``EapPeer(...).receive(payload)``.
"""

from __future__ import annotations

import os
from datetime import datetime

from engine.crypto.tls import TlsCredentials
from engine.eap.identity import IdentityPeer, IdentityServer
from engine.eap.method import MethodStep, Outcome, PeerMethod, Random, ServerMethod
from engine.eap.mschapv2 import MschapV2Peer, MschapV2Server, PasswordLookup
from engine.eap.packet import EapError, EapPacket, EapType, decode
from engine.eap.session import EapPeer, EapServer, EapStep, PeerMethods, ServerMethods, method_name
from engine.eap.tls import CrlSource, EapTlsPeer, EapTlsServer
from engine.policy.model import Identity
from engine.secret import Secret

METHODS_BY_AUTH: dict[str, tuple[int, ...]] = {
    "eap-mschapv2": (EapType.MSCHAPV2,),
    "eap-tls": (EapType.TLS,),
    "eap": (EapType.MSCHAPV2, EapType.TLS),
}
"""EAP types a policy's ``auth`` allows, in the order the gateway offers them (swanctl's words)."""


def methods_for(auth: str) -> tuple[int, ...]:
    """The EAP types of a policy ``auth`` value; KeyError for one that is not EAP."""
    return METHODS_BY_AUTH[auth]


def server_methods(*, passwords: PasswordLookup | None = None, tls: TlsCredentials | None = None,
                   now: datetime | None = None, peer_identity: Identity | None = None,
                   random: Random = os.urandom, crl_source: CrlSource | None = None) -> ServerMethods:
    """The gateway's method builder: MS-CHAPv2 with a password lookup, TLS with credentials."""

    def make(eap_type: int) -> ServerMethod | None:
        if eap_type == EapType.MSCHAPV2 and passwords is not None:
            return MschapV2Server(passwords, random=random)
        if eap_type == EapType.TLS and tls is not None and now is not None:
            return EapTlsServer(tls, now, peer_identity=peer_identity, random=random, crl_source=crl_source)
        return None

    return make


def peer_methods(identity: bytes, *, password: Secret | None = None, tls: TlsCredentials | None = None,
                 now: datetime | None = None, server_identity: Identity | None = None,
                 random: Random = os.urandom, crl_source: CrlSource | None = None) -> PeerMethods:
    """Our client's method builder."""

    def make(eap_type: int) -> PeerMethod | None:
        if eap_type == EapType.MSCHAPV2:
            return MschapV2Peer(identity, password, random=random)
        if eap_type == EapType.TLS and tls is not None and now is not None:
            return EapTlsPeer(identity, tls, now, server_identity=server_identity, random=random,
                              crl_source=crl_source)
        return None

    return make


__all__ = [
    "CrlSource", "EapError", "EapPacket", "EapPeer", "EapServer", "EapStep", "EapTlsPeer", "EapTlsServer", "EapType",
    "IdentityPeer", "IdentityServer", "MethodStep", "MschapV2Peer", "MschapV2Server", "Outcome", "PeerMethod",
    "ServerMethod", "TlsCredentials", "decode", "method_name", "methods_for", "peer_methods", "server_methods",
]
