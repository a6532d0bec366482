"""IKEv2 payloads as frozen dataclasses (RFC 7296 §3.3-§3.16, RFC 7383 §2.5).

Values only: ``engine.wire.codec`` turns them into bytes and back, and
``engine.wire.message`` chains them into a message. Every payload has a
``critical`` flag (the C bit, kept as received so ``decode(encode(x)) == x``)
and a ``payload_type`` property.

Integer fields hold plain ints rather than enums, so values from the future
(an unknown transform or notify type) survive a round trip; compare them with
the IntEnums of ``engine.wire.constants`` and ``engine.crypto.transforms``.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import ClassVar, Union

from engine.frozen import fast_init_module
from engine.policy.ts import TrafficSelector
from engine.wire.constants import PayloadType, TsType

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_IDi = PayloadType.IDi
_IDr = PayloadType.IDr
_TSi = PayloadType.TSi
_TSr = PayloadType.TSr

# -- SA ------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """One transform substructure of a proposal (RFC 7296 §3.3.2)."""

    type: int
    """Transform type (engine.crypto.transforms.TransformType): ENCR, PRF, INTEG, KE, ESN."""
    id: int
    """Transform ID within its type (EncrId, PrfId, IntegId, KeId, EsnId)."""
    key_length: int | None = None
    """The KEY_LENGTH attribute (14, TV format) in bits, or None when absent."""
    attributes: tuple[tuple[int, bytes | int], ...] = ()
    """Other attributes as received, in order: (type, int) for TV format, (type, bytes) for TLV."""


@dataclass(frozen=True)
class Proposal:
    """One proposal substructure of an SA payload (RFC 7296 §3.3.1)."""

    number: int
    """Proposal number: 1, 2, 3... in an offer; the chosen one's number in an answer."""
    protocol: int
    """Protocol ID (ProtocolId): IKE, AH or ESP."""
    spi: bytes
    """SPI: empty for IKE_SA_INIT, 8 bytes for an IKE rekey, 4 bytes for AH/ESP."""
    transforms: tuple[Transform, ...]
    """The transforms, in the order sent."""


@dataclass(frozen=True)
class SaPayload:
    """Security Association payload (RFC 7296 §3.3)."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.SA
    proposals: tuple[Proposal, ...]
    """The proposals, in preference order."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


# -- simple payloads -------------------------------------------------------------------


@dataclass(frozen=True)
class KePayload:
    """Key Exchange payload (RFC 7296 §3.4). The data length is checked by the IKE layer."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.KE
    group: int
    """Key exchange method (KeId) the data belongs to."""
    data: bytes
    """Public key exchange value."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


@dataclass(frozen=True)
class IdPayload:
    """Identification payload, IDi or IDr (RFC 7296 §3.5)."""

    initiator: bool
    """True for IDi (payload type 35), False for IDr (36)."""
    id_type: int
    """ID type (IdType): IPV4_ADDR, FQDN, RFC822_ADDR, IPV6_ADDR, DER_ASN1_DN, KEY_ID, ..."""
    data: bytes
    """Identification data as on the wire (the AUTH computation signs these bytes)."""
    critical: bool = False
    """The critical bit as sent or received."""
    reserved: bytes = b"\0\0\0"
    """The three RESERVED bytes as sent or received: ignored on receipt (§3.5) but signed, the AUTH
    payload covers the body as sent (§2.15). We send zero."""

    @property
    def payload_type(self) -> int:
        return _IDi if self.initiator else _IDr


@dataclass(frozen=True)
class CertPayload:
    """Certificate payload (RFC 7296 §3.6)."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.CERT
    encoding: int
    """Certificate encoding (CertEncoding), usually X509_SIGNATURE (DER)."""
    data: bytes
    """The certificate data."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


@dataclass(frozen=True)
class CertReqPayload:
    """Certificate Request payload (RFC 7296 §3.7)."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.CERTREQ
    encoding: int
    """Certificate encoding requested (CertEncoding)."""
    data: bytes
    """Certification authority: concatenated SHA-1 hashes of trusted CAs' public keys."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


@dataclass(frozen=True)
class AuthPayload:
    """Authentication payload (RFC 7296 §3.8). Its data is never displayed."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.AUTH
    method: int
    """Authentication method (AuthMethod)."""
    data: bytes
    """Signature or MAC; for DIGITAL_SIGNATURE it starts with the ASN.1 algorithm identifier."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


@dataclass(frozen=True)
class NoncePayload:
    """Nonce payload (RFC 7296 §3.9): 16 to 256 octets, checked on decode."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.NONCE
    data: bytes
    """The nonce."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


@dataclass(frozen=True)
class NotifyPayload:
    """Notify payload (RFC 7296 §3.10)."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.NOTIFY
    type: int
    """Notify message type (NotifyType); below 16384 an error."""
    protocol: int = 0
    """Protocol ID of the SA concerned (ProtocolId), 0 when there is no SPI."""
    spi: bytes = b""
    """SPI of the SA concerned (REKEY_SA, INVALID_SELECTORS, CHILD_SA_NOT_FOUND), else empty."""
    data: bytes = b""
    """Notification data."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


@dataclass(frozen=True)
class DeletePayload:
    """Delete payload (RFC 7296 §3.11). The SPI size follows from the protocol:
    0 for IKE (no SPIs: the IKE SA of the message), 4 for ESP and AH."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.DELETE
    protocol: int
    """Protocol ID (ProtocolId) of the SAs deleted."""
    spis: tuple[bytes, ...] = ()
    """The inbound SPIs (of the sender) of the CHILD SAs deleted; empty for IKE."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


@dataclass(frozen=True)
class VendorIdPayload:
    """Vendor ID payload (RFC 7296 §3.12)."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.VENDOR
    data: bytes
    """The vendor ID (usually a hash)."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


# -- traffic selectors ----------------------------------------------------------------

_ADDR_LEN = {TsType.IPV4_ADDR_RANGE: 4, TsType.IPV6_ADDR_RANGE: 16}


@dataclass(frozen=True)
class WireTs:
    """One traffic selector as on the wire (RFC 7296 §3.13.1): IPv4 or IPv6 range.

    Start greater than end is representable (the wire allows it); the IKE
    layer rejects such selectors when narrowing.
    """

    ts_type: int
    """TsType.IPV4_ADDR_RANGE (4-byte addresses) or IPV6_ADDR_RANGE (16-byte)."""
    ip_protocol: int
    """IP protocol number, 0 for any."""
    start_port: int
    """First port (ICMP: type << 8 | code)."""
    end_port: int
    """Last port, inclusive (OPAQUE: start 65535, end 0)."""
    start_addr: bytes
    """First address, packed."""
    end_addr: bytes
    """Last address, packed."""

    @classmethod
    def from_ts(cls, ts: TrafficSelector) -> "WireTs":
        """The wire form of a resolved selector; ``dynamic`` must be resolved first."""
        if cls is WireTs:
            hit = _FROM_TS.get(id(ts))
            if hit is not None and hit[0] is ts:
                return hit[1]
        if ts.dynamic:
            raise ValueError("a 'dynamic' traffic selector must be resolved before it is sent")
        ts_type = _IPV4_RANGE if ts.start.version == 4 else _IPV6_RANGE
        wire = cls(ts_type, ts.protocol, ts.start_port, ts.end_port, ts.start.packed, ts.end.packed)
        if cls is WireTs:
            if len(_FROM_TS) >= FROM_TS_MEMO_MAX:
                _FROM_TS.clear()
            _FROM_TS[id(ts)] = (ts, wire)
        return wire

    def to_ts(self) -> TrafficSelector:
        """The engine's value type. Raises ValueError for a type other than IPv4/IPv6 range."""
        n = _ADDR_LEN.get(self.ts_type)  # type: ignore[call-overload]
        if n is None or len(self.start_addr) != n or len(self.end_addr) != n:
            raise ValueError(f"traffic selector type {self.ts_type} has no address range form")
        return _traffic_selector(self.start_addr, self.end_addr, self.ip_protocol, self.start_port, self.end_port)


_IPV4_RANGE, _IPV6_RANGE = int(TsType.IPV4_ADDR_RANGE), int(TsType.IPV6_ADDR_RANGE)
FROM_TS_MEMO_MAX = 256
"""Wire forms of selectors kept at most (then the memo starts afresh)."""
_FROM_TS: dict[int, tuple[TrafficSelector, WireTs]] = {}
"""id(selector) -> (that selector, its wire form): the engine sends the same few selector objects
(configured, or narrowed and cached) in every handshake; the entry holds the selector, so its id
cannot be reused while the entry lives, and both are frozen."""


@functools.lru_cache(maxsize=4096)
def _traffic_selector(start: bytes, end: bytes, protocol: int, start_port: int, end_port: int) -> TrafficSelector:
    # Selectors repeat from message to message (every client of a gateway proposes the same ones), and
    # parsing two addresses was a visible share of a handshake; a TrafficSelector is immutable, so one
    # may be shared. Bounded: a peer that varies them only recycles the cache.
    return TrafficSelector(ipaddress.ip_address(start), ipaddress.ip_address(end), protocol, start_port, end_port)


@dataclass(frozen=True)
class UnknownTs:
    """A traffic selector of a type we do not parse (TS_FC_ADDR_RANGE, TS_SECLABEL, ...).

    Kept so a narrowing responder can see what was offered and answer
    TS_UNACCEPTABLE rather than dropping the message.
    """

    ts_type: int
    """Traffic selector type."""
    data: bytes
    """The selector after its 4-octet header (type, a reserved octet, length)."""


@dataclass(frozen=True)
class TsPayload:
    """Traffic Selector payload, TSi or TSr (RFC 7296 §3.13)."""

    initiator: bool
    """True for TSi (payload type 44), False for TSr (45)."""
    selectors: tuple[WireTs | UnknownTs, ...]
    """The selectors in order; UnknownTs only for types other than 7 and 8."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return _TSi if self.initiator else _TSr

    def traffic_selectors(self) -> tuple[TrafficSelector, ...]:
        """The IPv4/IPv6 selectors as engine values (unknown types left out)."""
        return tuple(s.to_ts() for s in self.selectors if isinstance(s, WireTs))


# -- CP, EAP -------------------------------------------------------------------------


@dataclass(frozen=True)
class CpPayload:
    """Configuration payload (RFC 7296 §3.15)."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.CP
    cfg_type: int
    """CfgType: CFG_REQUEST, CFG_REPLY, CFG_SET, CFG_ACK."""
    attributes: tuple[tuple[int, bytes], ...] = ()
    """(attribute type (CfgAttr), value) in order; an empty value asks for one."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


@dataclass(frozen=True)
class EapPayload:
    """EAP payload (RFC 7296 §3.16) carrying one EAP message (RFC 3748)."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.EAP
    code: int
    """EapCode: REQUEST, RESPONSE, SUCCESS, FAILURE."""
    identifier: int
    """EAP identifier, matches responses to requests."""
    data: bytes = b""
    """Type octet and type data (empty for SUCCESS and FAILURE)."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


# -- encrypted -------------------------------------------------------------------------


@dataclass(frozen=True)
class SkPayload:
    """Encrypted and Authenticated payload (RFC 7296 §3.14): opaque here.

    Always the last payload of a message. ``engine.wire`` never decrypts it.
    """

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.SK
    next_payload: int
    """Type of the first payload inside (the generic header's Next Payload)."""
    data: bytes
    """IV | ciphertext (with padding and pad length) | ICV."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


@dataclass(frozen=True)
class SkfPayload:
    """Encrypted Fragment payload (RFC 7383 §2.5): one fragment of an SK payload."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.SKF
    next_payload: int
    """First inner payload type in fragment 1, 0 in the others."""
    fragment_number: int
    """1-based fragment number."""
    total_fragments: int
    """How many fragments the message was cut into."""
    data: bytes
    """IV | ciphertext | ICV of this fragment."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE


@dataclass(frozen=True)
class UnknownPayload:
    """A payload type we do not parse.

    ``decode_payloads`` skips non-critical unknown payloads (RFC 7296 §2.5:
    "MUST skip") unless asked to keep them for diagnostics
    (``keep_unknown=True``); a critical one raises UnsupportedCriticalPayload.
    Tests and the summary use this class to build and show such payloads.
    """

    type: int
    """The payload type number."""
    data: bytes
    """The payload body after the generic header."""
    critical: bool = False
    """The critical bit as sent or received."""

    @property
    def payload_type(self) -> int:
        return self.type


Payload = Union[
    SaPayload, KePayload, IdPayload, CertPayload, CertReqPayload, AuthPayload, NoncePayload,
    NotifyPayload, DeletePayload, VendorIdPayload, TsPayload, CpPayload, EapPayload,
    SkPayload, SkfPayload, UnknownPayload,
]
"""Any payload the codec encodes or decodes."""


fast_init_module(globals())  # built per message: see engine.frozen
