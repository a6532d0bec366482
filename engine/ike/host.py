"""What an IKE SA needs from the endpoint that holds it: one small typed
interface instead of calls back into the endpoint's internals.

The endpoint implements ``Host``; tests can implement it too. Everything an
IKE SA asks of the world goes through here (send a datagram, emit an event,
count, allocate identifiers, authenticate), and the endpoint learns of an
SA's life only through ``changed``, ``adopt``, ``established`` and ``ended``.
"""

from __future__ import annotations

from random import Random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from engine.events import Event
from engine.policy.model import ChildConfig, EngineConfig

if TYPE_CHECKING:
    from engine.crypto.keypool import KeyPool
    from engine.ike.authenticator import Authenticator
    from engine.ike.config_payload import VirtualIps
    from engine.ike.child import ChildSa
    from engine.ike.exchange import Initiator, Responder
    from engine.ike.ratelimit import RateLimit
    from engine.ike.sa import IkeSa

Addr = tuple[str, int]


@dataclass(frozen=True)
class Ended:
    """Why an IKE SA was destroyed, and what the endpoint should do about it."""

    kind: Literal["deleted", "failed", "peer_gone", "closed"]
    """deleted: by us, the peer, a rekey or a timeout that needs nothing more;
    failed: our attempt to set it up failed (keyingtries may retry);
    peer_gone: retransmissions exhausted on an established SA (dpd_action);
    closed: the peer deleted it and CHILD SAs with ``close_action = "start"`` were up."""
    reason: str
    action: str = "clear"
    """peer_gone: the children's dpd_action (clear, trap, restart); closed: start."""
    children: tuple[ChildConfig, ...] = ()
    """peer_gone: the CHILD configs that were up; closed: those to start again."""


class Ids(Protocol):
    """Identifiers an IKE SA allocates (the registry implements it)."""

    def new_ike_spi(self, rekeyed: IkeSa | None = None) -> bytes: ...
    def release_ike_spi(self, spi: bytes) -> None: ...
    def allocate_spi(self) -> bytes: ...
    def release_spi(self, spi: bytes) -> None: ...
    def next_ike_id(self) -> int: ...
    def next_child_id(self) -> int: ...
    def reqid(self, connection: str, child: str) -> int: ...


class Catalog(Protocol):
    """The exchanges an IKE SA starts on its own (timers) and answers
    (engine.ike.exchanges implements it)."""

    def responder(self, sa: IkeSa, exchange: int, payloads: list) -> Responder: ...
    def ike_rekey(self, sa: IkeSa) -> Initiator: ...
    def ike_delete(self, sa: IkeSa, reason: str) -> Initiator: ...
    def child_rekey(self, sa: IkeSa, child: ChildSa) -> Initiator: ...
    def create_child(self, sa: IkeSa, cfg: ChildConfig) -> Initiator: ...
    def child_delete(self, sa: IkeSa, child: ChildSa, reason: str) -> Initiator: ...
    def dpd(self, sa: IkeSa) -> Initiator: ...


class Host(Protocol):
    """The endpoint, as its IKE SAs see it."""

    rng: Callable[[int], bytes]
    random: Random
    fragment_size: int | None
    ids: Ids
    auth: Authenticator
    exchanges: Catalog
    vips: VirtualIps
    key_pool: KeyPool | None
    """Key pairs made ahead for IKE_SA_INIT as responder (engine.crypto.keypool), or None."""
    delete_log: RateLimit
    """The budget of log lines about Deletes we ignore (what is left out counts as
    ``delete_logs_suppressed``)."""

    @property
    def engine(self) -> EngineConfig: ...

    def send(self, data: bytes, local: Addr, remote: Addr) -> None: ...
    def emit(self, event: Event) -> None: ...
    def count(self, what: str) -> None: ...

    def changed(self, sa: IkeSa) -> None:
        """``sa``'s state, timers or addresses may have moved."""

    def adopt(self, sa: IkeSa) -> None:
        """A new IKE SA born from a rekey of one of ours: register it."""

    def established(self, sa: IkeSa, now: float, *, initial_contact: bool) -> None:
        """IKE_AUTH completed (``initial_contact``: the peer sent INITIAL_CONTACT)."""

    def unique_refuses(self, sa: IkeSa, initial_contact: bool) -> str | None:
        """Responder: why the connection's uniqueness policy (``unique = keep``) refuses the
        authenticated ``sa``, or None."""

    def initial_contact(self, sa: IkeSa) -> bool:
        """Whether our IKE_AUTH should carry INITIAL_CONTACT."""

    def ended(self, sa: IkeSa, ended: Ended, now: float) -> None:
        """``sa`` was destroyed: forget it and follow up."""

    def keep_answer(self, sa: IkeSa, now: float) -> None:
        """``sa`` answered the peer's DELETE of it and goes: replay that answer to a
        retransmission of the DELETE for a while (the answer may be lost)."""

    def redirect(self, sa: IkeSa, gateway: str, children, now: float) -> str | None:
        """Start ``sa``'s connection over at ``gateway`` (RFC 5685); None, or why not."""
