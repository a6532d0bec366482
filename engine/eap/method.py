"""What every EAP method offers the conversation that runs it (``engine.eap.session``).

A method is a state machine for one role:

- ``ServerMethod`` (our gateway authenticates a client): ``start(identifier)``
  gives the first request; ``process(response)`` gives the next request
  (``CONTINUE``), ``SUCCESS`` (the session then sends EAP-Success),
  ``FAILURE`` (EAP-Failure) or ``WAIT`` (no answer yet: the caller holds the
  message that carried the response and gives the same response again).
- ``PeerMethod`` (we are the client): ``process(request)`` gives the
  response (``CONTINUE``) or ``FAILURE``; ``may_succeed`` says whether an
  EAP-Success may be believed yet (a mutual method must first have checked
  the server).

After success ``msk`` holds the Master Session Key (RFC 3748 §7.10), or None
for a method that makes none (the IKE AUTH then uses SK_pi/SK_pr, RFC 7296
§2.16). ``identity`` is the name the method authenticated. Methods never
raise for what a peer sends: a malformed or unexpected packet is a FAILURE
step whose reason names it.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass

from engine.eap.packet import EapPacket
from engine.secret import Secret

Random = Callable[[int], bytes]
"""Where challenges come from: os.urandom, or a fixed source in tests."""


class Outcome(enum.Enum):
    CONTINUE = "continue"
    SUCCESS = "success"
    FAILURE = "failure"
    WAIT = "wait"
    """Not decided yet (EAP-TLS waits for a CRL the runtime fetches): the same packet comes again."""


@dataclass(frozen=True)
class MethodStep:
    """What a method decided about one packet."""

    outcome: Outcome
    packet: EapPacket | None = None
    """The packet to send (a request, or a response); None with SUCCESS and most FAILUREs."""
    reason: str = ""
    """Plain words for the log and the Negotiations screen when it failed; never a secret."""
    delay: float = 0.0
    """Seconds the answer should be held back (MS-CHAPv2 retries slow down password guessing)."""


def fail(reason: str, packet: EapPacket | None = None) -> MethodStep:
    return MethodStep(Outcome.FAILURE, packet, reason)


def more(packet: EapPacket, delay: float = 0.0) -> MethodStep:
    return MethodStep(Outcome.CONTINUE, packet, delay=delay)


class _Method:
    type: int = 0
    name: str = "EAP"

    def __init__(self, random: Random = os.urandom) -> None:
        self.random = random
        self.msk: Secret | None = None
        """The Master Session Key once the method succeeded (None: the method makes none)."""
        self.identity: bytes | None = None
        """The identity the method authenticated (or presented, for a peer)."""


class ServerMethod(_Method):
    """The authenticator's side."""

    def start(self, identifier: int) -> EapPacket:
        raise NotImplementedError

    def process(self, response: EapPacket, identifier: int) -> MethodStep:
        """Handle a response; ``identifier`` is the one to use for a further request."""
        raise NotImplementedError


class PeerMethod(_Method):
    """The client's side."""

    def process(self, request: EapPacket) -> MethodStep:
        raise NotImplementedError

    @property
    def may_succeed(self) -> bool:
        """Whether an EAP-Success now means success (the method finished its part)."""
        return False
