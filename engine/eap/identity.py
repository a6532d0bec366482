"""EAP-Identity (RFC 3748 §5.1), both roles.

Not an authentication: it only asks the client's name. The gateway uses it
when its policy says ``eap_id = "%any"`` (or a pattern), then runs the real
method for that name; the client answers with its ``eap_id``, or its IKE
identity when it has none (as strongSwan does).
"""

from __future__ import annotations

from engine.eap.method import MethodStep, Outcome, PeerMethod, ServerMethod, fail, more
from engine.eap.packet import EapPacket, EapType, identity_request, identity_response

MAX_IDENTITY = 253
"""Longest EAP identity accepted (RFC 3748 leaves it open; RADIUS' User-Name holds 253)."""


class IdentityServer(ServerMethod):
    type = EapType.IDENTITY
    name = "EAP-Identity"

    def start(self, identifier: int) -> EapPacket:
        return identity_request(identifier)

    def process(self, response: EapPacket, identifier: int) -> MethodStep:
        if len(response.type_data) > MAX_IDENTITY:
            return fail(f"EAP identity of {len(response.type_data)} bytes (at most {MAX_IDENTITY} accepted)")
        self.identity = response.type_data.rstrip(b"\0")
        return MethodStep(Outcome.SUCCESS)


class IdentityPeer(PeerMethod):
    type = EapType.IDENTITY
    name = "EAP-Identity"

    def __init__(self, identity: bytes) -> None:
        super().__init__()
        self.identity = identity

    def process(self, request: EapPacket) -> MethodStep:
        return more(identity_response(request.identifier, self.identity or b""))
