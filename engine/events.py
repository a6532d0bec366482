"""Engine events: the contract between the IKE engine, the datapaths, the
runtime and the console.

All events are frozen dataclasses. ``to_dict``/``from_dict`` give the JSON
form used by the control socket (``ipsec-console events`` and the attached
console); keys (``Secret`` fields) never appear in it.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass, field

from engine.frozen import fast_init_module
from engine.jsonable import from_jsonable, to_jsonable
from engine.policy.ts import TrafficSelector
from engine.secret import Secret


class IkeState(str, enum.Enum):
    """IKE SA states (named like charon's, so admins recognise them)."""

    CREATED = "CREATED"
    CONNECTING = "CONNECTING"
    ESTABLISHED = "ESTABLISHED"
    REKEYING = "REKEYING"
    REKEYED = "REKEYED"
    DELETING = "DELETING"
    DESTROYED = "DESTROYED"


class ChildState(str, enum.Enum):
    CREATED = "CREATED"
    INSTALLING = "INSTALLING"
    INSTALLED = "INSTALLED"
    REKEYING = "REKEYING"
    REKEYED = "REKEYED"
    DELETING = "DELETING"
    DELETED = "DELETED"


@dataclass(frozen=True)
class Event:
    """Base class of every engine event."""


@dataclass(frozen=True)
class PayloadDetail:
    """One decoded payload of a message, for the negotiation view."""

    name: str
    """Short payload name as strongSwan logs it: SA, KE, No, IDi, AUTH, N(NAT_D_S), TSi, ..."""
    fields: tuple[tuple[str, str], ...] = ()
    """Readable (label, value) pairs: proposals, KE group, notify data, IDs, selectors."""


@dataclass(frozen=True)
class MessageSummary:
    """A decoded IKE message (after decryption), without any secret."""

    exchange: str
    """IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL, ..."""
    mid: int
    """Message ID."""
    response: bool
    """True for a response (R flag)."""
    initiator_flag: bool
    """The I flag: set by the original initiator of the IKE SA."""
    spi_i: int
    spi_r: int
    length: int
    """Bytes on the wire (all fragments)."""
    payloads: tuple[str, ...] = ()
    """Payload names in order, as in ``[ SA KE No N(NATD_S_IP) ]``."""
    notifies: tuple[str, ...] = ()
    """Notify type names (errors and status)."""
    details: tuple[PayloadDetail, ...] = ()
    retransmit: int = 0
    """0 for the first transmission, n for the n-th retransmission."""
    fragments: int = 1
    """How many IKE fragments (RFC 7383) carried it."""

    def brief(self) -> str:
        kind = "response" if self.response else "request"
        return f"{self.exchange} {kind} {self.mid} [ {' '.join(self.payloads)} ]"


@dataclass(frozen=True)
class IkeSaStateChanged(Event):
    ike_sa: int
    """Unique IKE SA number in this engine (like charon's #n)."""
    connection: str
    old: IkeState
    new: IkeState
    reason: str = ""


@dataclass(frozen=True)
class ExchangeSent(Event):
    ike_sa: int
    connection: str
    message: MessageSummary
    time: float
    """When it was sent: the engine's ``now`` inside the engine, Unix time once published
    (engine.runtime.wallclock)."""
    local: tuple[str, int] = ("", 0)
    remote: tuple[str, int] = ("", 0)


@dataclass(frozen=True)
class ExchangeReceived(Event):
    ike_sa: int
    connection: str
    message: MessageSummary
    time: float
    local: tuple[str, int] = ("", 0)
    remote: tuple[str, int] = ("", 0)


@dataclass(frozen=True)
class ChildKeys:
    """Keying material of one CHILD SA (RFC 7296 §2.17). Never logged or exported."""

    __secret__ = True

    encr_in: Secret
    integ_in: Secret
    encr_out: Secret
    integ_out: Secret


@dataclass(frozen=True)
class ChildSaInstalled(Event):
    """A CHILD SA pair is ready: the datapath installs it."""

    ike_sa: int
    connection: str
    child: str
    """Child config name."""
    unique_id: int
    """Unique CHILD SA number in this engine (like charon's {n})."""
    reqid: int
    """Stable per child config and IKE SA: ties SAs to policies across rekeys."""
    protocol: str
    """``esp`` or ``ah``."""
    mode: str
    """``tunnel`` or ``transport``."""
    spi_in: int
    """SPI of the inbound SA (we chose it)."""
    spi_out: int
    """SPI of the outbound SA (the peer chose it)."""
    local_addr: str
    remote_addr: str
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    encr_id: int | None
    """ENCR transform ID (None for AH)."""
    encr_key_length: int | None
    integ_id: int | None
    """INTEG transform ID (None or 0 with AEAD)."""
    esn: bool
    keys: ChildKeys | None = field(repr=False)
    """None in copies kept for history (``without_keys``)."""
    encap: bool = False
    """UDP encapsulation (RFC 3948)."""
    local_port: int = 0
    """UDP ports when encapsulated (our natt_port, the peer's port)."""
    remote_port: int = 0
    replay_window: int = 64
    soft_bytes: int = 0
    hard_bytes: int = 0
    soft_packets: int = 0
    hard_packets: int = 0
    rekeyed_from: int | None = None
    """spi_in of the SA this one replaces, when it comes from a rekey."""
    initiator: bool = True
    """Whether we initiated the exchange that created it."""
    peer_is_ours: bool = False
    """The peer announced itself as ipsec-console (Vendor ID): it accepts whole TCP
    super-packets in one ESP packet (the userspace datapath's offload)."""

    def without_keys(self) -> ChildSaInstalled:
        """This event for history and subscribers: everything but the keys
        (only the datapath needs them)."""
        return dataclasses.replace(self, keys=None)


@dataclass(frozen=True)
class ChildSaDeleted(Event):
    ike_sa: int
    connection: str
    child: str
    unique_id: int
    reqid: int
    protocol: str
    spi_in: int
    spi_out: int
    local_addr: str = ""
    remote_addr: str = ""
    reason: str = ""
    """rekeyed, deleted by peer, terminated, expired, ike_sa_deleted, ..."""


@dataclass(frozen=True)
class NegotiationFailed(Event):
    """A negotiation ended in failure, explained in plain words."""

    ike_sa: int
    connection: str
    exchange: str
    notify: str
    """The notify that ended it (sent or received), e.g. NO_PROPOSAL_CHOSEN, or TIMEOUT, or UNRESOLVED
    (the peer's host name did not resolve, or ours in local_addrs: the reason names the key;
    nothing was sent; ``ike_sa`` is then an id no SA has)."""
    reason: str
    """Plain words: what went wrong and what to change."""
    child: str | None = None
    sent_by_peer: bool = False
    """True when the peer sent the error notify, False when we rejected."""
    local_proposals: tuple[str, ...] = ()
    remote_proposals: tuple[str, ...] = ()
    local_ts: tuple[str, ...] = ()
    remote_ts: tuple[str, ...] = ()


@dataclass(frozen=True)
class DpdTimeout(Event):
    """The peer did not answer liveness checks; ``action`` is what we did."""

    ike_sa: int
    connection: str
    action: str


@dataclass(frozen=True)
class SaCounters:
    """Datapath counters of one SA direction."""

    spi: int
    direction: str
    """``in`` or ``out``."""
    bytes: int = 0
    packets: int = 0
    drops: tuple[tuple[str, int], ...] = ()
    """(reason, count): replay, icv, malformed, no_sa, policy_mismatch, discard_rule."""
    last_used: float | None = None
    """When a packet last used the SA: the engine's clock (the runtime's ``now``) inside the engine,
    Unix time in published events (engine.runtime.wallclock)."""


@dataclass(frozen=True)
class CountersSnapshot(Event):
    """Periodic datapath counters (bytes, packets, drops by reason)."""

    time: float
    sas: tuple[SaCounters, ...] = ()
    drops: tuple[tuple[str, int], ...] = ()
    """Drops not tied to one SA (no_sa, discard_rule, ...), totals since start."""


@dataclass(frozen=True)
class PacketSample(Event):
    """A recent packet, for the console's Packets screen: outer beside inner."""

    time: float
    direction: str
    """``out`` (we encrypted), ``in`` (we decrypted) or ``drop``."""
    spi: int
    seq: int
    outer: bytes
    """The packet as on the wire (ESP: only SPI and sequence readable)."""
    inner: bytes = b""
    """The protected IP packet (empty when dropped before decryption)."""
    verdict: str = ""
    """Drop reason for ``drop``."""


@dataclass(frozen=True)
class RekeyRequested(Event):
    """The datapath asks for a CHILD rekey (soft byte/packet limit, sequence exhaustion)."""

    spi_in: int
    hard: bool = False
    """True when the hard limit was reached: the SA must go now."""
    reason: str = ""


@dataclass(frozen=True)
class AcquireRequested(Event):
    """The kernel saw traffic for a trap policy (start_action = trap)."""

    reqid: int
    local_addr: str = ""
    remote_addr: str = ""


@dataclass(frozen=True)
class TrapRequested(Event):
    """The engine asks the datapath for the trap policy of a CHILD config that is not
    ``start_action = "trap"``: traffic it protects negotiates the CHILD SA again on demand
    (``close_action`` or ``dpd_action`` = ``trap``; charon's traps->install). It stays until the
    policy no longer has that child."""

    connection: str
    child: str
    why: str
    """The option that asked for it: ``close_action`` or ``dpd_action``."""


@dataclass(frozen=True)
class LogMessage(Event):
    """An engine log line, for the console's log screen and ``events``."""

    time: float
    level: str
    source: str
    """Logger name, e.g. engine.ike."""
    text: str
    connection: str = ""


@dataclass(frozen=True)
class PolicyApplied(Event):
    """A new policy is running; lists what changed."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class VirtualIpsChanged(Event):
    """A gateway assigned us virtual IPs (RFC 7296 §3.15), or they went with the IKE SA:
    the datapath puts them on (or takes them off) the tunnel device."""

    ike_sa: int
    connection: str
    addresses: tuple[str, ...]
    assigned: bool
    """True: assigned now; False: released (the IKE SA ended)."""
    dns: tuple[str, ...] = ()
    subnets: tuple[str, ...] = ()
    """Networks the gateway said are behind it (INTERNAL_IP4/6_SUBNET)."""


@dataclass(frozen=True)
class ChildSaMoved(Event):
    """MOBIKE (RFC 4555): the peer moved; a CHILD SA pair keeps its SPIs, keys and sequence
    numbers and now goes between these outer addresses."""

    ike_sa: int
    connection: str
    child: str
    spi_in: int
    spi_out: int
    local_addr: str
    remote_addr: str
    local_port: int = 0
    remote_port: int = 0
    encap: bool = False


@dataclass(frozen=True)
class NatMappingChanged(Event):
    """Authenticated ESP-in-UDP of an inbound CHILD SA came from another address or port than the
    SA's peer: the peer's NAT mapping changed (the kernel's XFRM_MSG_MAPPING, or the userspace
    datapath's own check). The engine decides whether the IKE SA and its CHILD SAs follow
    (engine.ike.nat_mapping)."""

    spi_in: int
    """Inbound SPI of the CHILD SA the packet authenticated on."""
    remote_addr: str
    """The packet's source address (the peer's new NAT mapping)."""
    remote_port: int
    """The packet's UDP source port."""


# ---------------------------------------------------------------- JSON form

EVENT_TYPES: dict[str, type[Event]] = {}


def _register() -> None:
    for name, obj in list(globals().items()):
        if isinstance(obj, type) and issubclass(obj, Event) and obj is not Event:
            EVENT_TYPES[name] = obj


def to_dict(event: Event) -> dict:
    """The JSON object of an event: ``{"type": "ChildSaInstalled", ...}``. Keys are dropped."""
    d = to_jsonable(event)
    d = {"type": type(event).__name__, **d}
    if isinstance(event, ChildSaInstalled):
        d.pop("keys", None)
    return d


def from_dict(data: dict) -> Event:
    """Inverse of to_dict. ChildSaInstalled comes back with empty keys."""
    cls = EVENT_TYPES[data["type"]]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name == "keys" and cls is ChildSaInstalled:
            empty = Secret(b"")
            kwargs["keys"] = ChildKeys(empty, empty, empty, empty)
            continue
        if f.name in data:
            kwargs[f.name] = from_jsonable(hints[f.name], data[f.name])
    return cls(**kwargs)


_register()


fast_init_module(globals())  # built per message: see engine.frozen
