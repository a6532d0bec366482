"""The EAP conversation of one IKE SA (RFC 3748 §2, RFC 7296 §2.16), both roles.

``EapServer`` (our gateway) chooses the method, asks the identity first when
told to, handles a client's Nak by offering another allowed method, and ends
with EAP-Success or EAP-Failure. ``EapPeer`` (our client) answers Identity
and Notification requests, Naks a method it is not configured for, runs the
one it is, and believes EAP-Success only once that method finished its part.

Each call returns an ``EapStep``: the packet to send (``step.payload`` for
the IKE message), the state (continue, success, failure; wait: the gateway's
method cannot decide yet, the IKE request is held and its response given
again), a reason in plain words when it failed. After success ``msk`` is the Master Session Key, or
None when the method makes none; ``identity`` the EAP identity authenticated.
Nothing a peer sends raises: it fails the conversation with a reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from engine.eap.identity import IdentityPeer, IdentityServer
from engine.eap.method import Outcome, PeerMethod, Random, ServerMethod
from engine.eap.packet import (
    EapError,
    EapPacket,
    EapType,
    decode,
    failure,
    from_payload,
    nak,
    nak_types,
    printable,
    success,
)
from engine.secret import Secret
from engine.wire.constants import EapCode
from engine.wire.payloads import EapPayload

State = Literal["continue", "success", "failure", "wait"]
MAX_ROUNDS = 80
"""EAP packets accepted from a peer in one conversation (bounds an unauthenticated peer's work)."""

METHOD_NAMES = {EapType.IDENTITY: "EAP-Identity", EapType.MSCHAPV2: "EAP-MSCHAPv2", EapType.TLS: "EAP-TLS",
                EapType.MD5_CHALLENGE: "EAP-MD5", EapType.TTLS: "EAP-TTLS", EapType.PEAP: "PEAP"}


def method_name(eap_type: int) -> str:
    return METHOD_NAMES.get(eap_type, f"EAP type {eap_type}")  # type: ignore[call-overload]


@dataclass(frozen=True)
class EapStep:
    """What to do after one EAP packet."""

    packet: EapPacket | None
    """The packet to send; None when there is nothing to answer."""
    state: State
    reason: str = ""
    """Why it failed (for the log, the Negotiations screen and NegotiationFailed); never a secret."""
    delay: float = 0.0
    """Seconds the answer should wait (MS-CHAPv2 retries); 0 for at once."""

    @property
    def payload(self) -> EapPayload | None:
        return None if self.packet is None else self.packet.to_payload()


def _packet(message: EapPacket | EapPayload | bytes) -> EapPacket:
    if isinstance(message, EapPacket):
        return message
    if isinstance(message, EapPayload):
        return from_payload(message)
    return decode(message)


ServerMethods = Callable[[int], "ServerMethod | None"]
"""Builds the server side of a method type for this conversation, or None if it cannot here."""
PeerMethods = Callable[[int], "PeerMethod | None"]


class EapServer:
    """The gateway's side."""

    def __init__(self, methods: Sequence[int], make: ServerMethods, *, ask_identity: bool,
                 ike_identity: bytes = b"", accept_identity: Callable[[bytes], bool] = lambda _: True,
                 random: Random = os.urandom) -> None:
        if not methods:
            raise ValueError("an EAP server needs at least one method")
        self.methods = tuple(methods)
        self.make = make
        self.ask_identity = ask_identity
        self.accept_identity = accept_identity
        self.identity: bytes | None = None if ask_identity else ike_identity
        """The EAP identity (asked, or the IKE identity), then the one the method authenticated."""
        self.msk: Secret | None = None
        self.method: ServerMethod | None = None
        self.tried: list[int] = []
        self.identifier = 1 + random(1)[0] % 255
        self.rounds = 0
        self.state: State = "continue"

    @property
    def method_name(self) -> str:
        return self.method.name if self.method is not None else "EAP"

    def _send(self, packet: EapPacket, delay: float = 0.0) -> EapStep:
        return EapStep(packet, "continue", delay=delay)

    def _fail(self, reason: str, identifier: int | None = None) -> EapStep:
        self.state = "failure"
        return EapStep(failure(self.identifier if identifier is None else identifier), "failure", reason)

    def _next_identifier(self) -> int:
        self.identifier = (self.identifier + 1) & 0xFF
        return self.identifier

    def _start(self, eap_type: int) -> EapStep:
        method = self.make(eap_type)
        self.tried.append(eap_type)
        if method is None:
            return self._fail(f"{method_name(eap_type)} is not usable here (missing credentials?)")
        self.method = method
        return self._send(method.start(self._next_identifier()))

    def start(self) -> EapStep:
        """The first request (for the IKE_AUTH response that answers the request without AUTH)."""
        if self.ask_identity:
            self.method = IdentityServer()
            return self._send(self.method.start(self._next_identifier()))
        return self._start(self.methods[0])

    def receive(self, message: EapPacket | EapPayload | bytes) -> EapStep:
        """The client's response (an EAP payload of its next IKE_AUTH request)."""
        if self.state != "continue" or self.method is None:
            return self._fail("EAP response after the conversation ended")
        self.rounds += 1
        if self.rounds > MAX_ROUNDS:
            return self._fail(f"more than {MAX_ROUNDS} EAP rounds")
        try:
            packet = _packet(message)
        except EapError as exc:
            return self._fail(f"malformed EAP packet: {exc.reason}")
        if packet.code != EapCode.RESPONSE:
            return self._fail(f"the client sent an EAP {EapCode(packet.code).name if packet.code in (1, 2, 3, 4) else packet.code}"
                              ", expected a response")
        if packet.identifier != self.identifier:
            return self._fail(f"EAP response with identifier {packet.identifier}, expected {self.identifier}")
        method = self.method
        if packet.type == EapType.NAK and method.type != EapType.NAK:
            return self._nak(packet)
        if packet.type != method.type:
            return self._fail(f"the client answered {method.name} with {method_name(packet.type or 0)}")
        step = method.process(packet, (self.identifier + 1) & 0xFF)
        if step.outcome is Outcome.WAIT:
            self.rounds -= 1  # the same response comes again: one round
            return EapStep(None, "wait", step.reason)
        if step.outcome is Outcome.CONTINUE and step.packet is not None:
            self._next_identifier()
            return self._send(step.packet, step.delay)
        if step.outcome is Outcome.SUCCESS:
            if isinstance(method, IdentityServer):
                self.identity = method.identity or self.identity
                if not self.accept_identity(self.identity or b""):
                    return self._fail(f"EAP identity '{printable(self.identity or b'')}' is not allowed by "
                                      "this connection's eap_id")
                return self._start(self.methods[0])
            if method.identity is not None:
                if not self.accept_identity(method.identity):
                    return self._fail(f"{method.name} authenticated '{printable(method.identity)}', which this "
                                      "connection's eap_id does not allow")
                self.identity = method.identity
            self.msk = method.msk
            self.state = "success"
            return EapStep(success(packet.identifier), "success")
        return self._fail(step.reason or f"{method.name} failed", packet.identifier)

    def _nak(self, packet: EapPacket) -> EapStep:
        if isinstance(self.method, IdentityServer):
            return self._fail("the client answered EAP-Identity with a Nak")
        wanted = nak_types(packet)
        for t in wanted:
            if t in self.methods and t not in self.tried:
                return self._start(t)
        offered = ", ".join(method_name(t) for t in wanted) or "none"
        ours = ", ".join(method_name(t) for t in self.methods)
        return self._fail(f"the client refuses {self.method_name} and wants {offered}; this connection allows "
                          f"{ours}", packet.identifier)


class EapPeer:
    """Our client's side."""

    def __init__(self, identity: bytes, methods: Sequence[int], make: PeerMethods) -> None:
        self.identity = identity
        self.methods = tuple(methods)
        self.make = make
        self.method: PeerMethod | None = None
        self.msk: Secret | None = None
        self.rounds = 0
        self.state: State = "continue"
        self.last_reason = ""
        self.notifications: list[str] = []
        """Texts of EAP Notification requests (shown to the admin, RFC 3748 §5.2)."""

    @property
    def method_name(self) -> str:
        return self.method.name if self.method is not None else "EAP"

    def _fail(self, reason: str, packet: EapPacket | None = None) -> EapStep:
        self.state = "failure"
        self.last_reason = reason
        return EapStep(packet, "failure", reason)

    def receive(self, message: EapPacket | EapPayload | bytes) -> EapStep:
        """A request, EAP-Success or EAP-Failure from the gateway (in an IKE_AUTH response)."""
        if self.state != "continue":
            return self._fail("EAP packet after the conversation ended")
        self.rounds += 1
        if self.rounds > MAX_ROUNDS:
            return self._fail(f"more than {MAX_ROUNDS} EAP rounds")
        try:
            packet = _packet(message)
        except EapError as exc:
            return self._fail(f"malformed EAP packet: {exc.reason}")
        if packet.code == EapCode.SUCCESS:
            if self.method is None or not self.method.may_succeed:
                return self._fail(f"the gateway sent EAP-Success before {self.method_name} finished "
                                  "(it did not prove its side)")
            self.msk = self.method.msk
            self.state = "success"
            return EapStep(None, "success")
        if packet.code == EapCode.FAILURE:
            reason = self.last_reason or f"the gateway refused {self.method_name} (EAP-Failure)"
            return self._fail(reason)
        if packet.code != EapCode.REQUEST:
            return self._fail("the gateway sent an EAP response")
        if packet.type == EapType.IDENTITY:
            return EapStep(IdentityPeer(self.identity).process(packet).packet, "continue")
        if packet.type == EapType.NOTIFICATION:
            self.notifications.append(printable(packet.type_data, 200))
            return EapStep(EapPacket(EapCode.RESPONSE, packet.identifier, EapType.NOTIFICATION), "continue")
        if self.method is None or self.method.type != packet.type:
            if self.method is not None:
                return self._fail(f"the gateway switched from {self.method.name} to "
                                  f"{method_name(packet.type or 0)} mid-conversation")
            method = self.make(packet.type or 0) if packet.type in self.methods else None
            if method is None:
                self.last_reason = (f"the gateway asked for {method_name(packet.type or 0)}; we are configured "
                                    f"for {', '.join(method_name(t) for t in self.methods)}")
                return EapStep(nak(packet.identifier, self.methods), "continue", self.last_reason)
            self.method = method
        step = self.method.process(packet)
        if step.outcome is Outcome.CONTINUE and step.packet is not None:
            return EapStep(step.packet, "continue")
        return self._fail(step.reason or f"{self.method.name} failed", step.packet)
