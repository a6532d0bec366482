"""Readable summaries of IKE messages for the negotiation view and the logs.

Names follow strongSwan's logs so an admin can put ours beside charon's:
``IKE_SA_INIT request 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP) N(FRAG_SUP) ]``,
proposals as ``IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519``, traffic
selectors as ``198.51.100.0/24[tcp/80]``.

Nothing secret reaches a summary: AUTH shows its method only, nonces and KE
values their length only, EAP its code and type only; and a summary keeps no
AUTH value or EAP message (they are described at once, see _keep).

Bounded: a hostile message (255 proposals, 16,000 Vendor IDs, a 60 KB
identity) is described in bounded bytes. At most MAX_PAYLOADS payloads,
MAX_PROPOSALS proposals of MAX_TRANSFORMS transforms, MAX_ITEMS selectors,
CP attributes or SPIs per payload, and MAX_VALUE characters per value
(non-printable characters escaped, engine.printable) are kept; what is left
out is counted where it was (``+N more``). A lazy summary keeps at most
about MAX_RETAINED bytes of decoded payloads for later formatting; beyond
that, payloads are described at once and dropped.
"""

from __future__ import annotations

import dataclasses

import ipaddress
from typing import Iterable

from engine.crypto.transforms import AdditionalKeType, TransformType, additional_ke_number, transform_name
from engine.events import MessageSummary, PayloadDetail
from engine.pki.dn import dn_from_der as dn_text  # the policy reads back what the screen shows
from engine.printable import clean
from engine.policy.ts import TrafficSelector
from engine.wire.constants import (
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    CFG_ATTR_SHORT,
    PAYLOAD_SHORT,
    AuthMethod,
    CertEncoding,
    CfgAttr,
    CfgType,
    EapCode,
    HashAlgorithm,
    IdType,
    NotifyType,
    ProtocolId,
    exchange_name,
    notify_name,
    short_name,
)
from engine.wire.errors import WireError
from engine.wire.message import IkeHeader, Message
from engine.wire.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    SkfPayload,
    SkPayload,
    TsPayload,
    UnknownPayload,
    VendorIdPayload,
    WireTs,
)
from engine.wire.ppk import decode_ppk_identity

_HEX_LIMIT = 64  # bytes of notify/vendor data shown before eliding
MAX_PAYLOADS = 48
"""Payloads named and described per message; a normal one has fewer than 20."""
MAX_PROPOSALS = 16
"""Proposals described per SA payload (charon sends one to four)."""
MAX_TRANSFORMS = 64
"""Transforms listed per proposal (charon's default IKE proposal has about 30)."""
MAX_ITEMS = 32
"""Selectors, CP attributes or SPIs described per payload."""
MAX_VALUE = 1024
"""Characters of one described value (an identity, a Vendor ID...)."""
MAX_RETAINED = 32 * 1024
"""Estimated bytes of decoded payloads one lazy summary may keep for later formatting."""
_LARGE_PAYLOAD = 8 * 1024  # estimated bytes above which a payload is described at once
_PAYLOAD_BYTES = 160  # estimated bytes of one decoded payload object, without its data
_DETAIL_BYTES = 450  # estimated bytes of one payload's description, once it is formatted
_CP_PREFIX = {CfgType.CFG_REQUEST: "RQ", CfgType.CFG_REPLY: "RP", CfgType.CFG_SET: "S", CfgType.CFG_ACK: "A"}
_EAP_CODE = {1: "REQ", 2: "RES", 3: "SUCC", 4: "FAIL"}
_EAP_TYPE = {1: "ID", 2: "NTF", 3: "NAK", 4: "MD5", 5: "OTP", 6: "GTC", 13: "TLS", 18: "SIM", 21: "TTLS",
             23: "AKA", 25: "PEAP", 26: "MSCHAPV2", 33: "MSTLV", 38: "TNC", 254: "EXP"}
# strongSwan's order inside a proposal string: ENCR, INTEG, PRF, KE, ESN, KE1..KE7 (RFC 9370).
_TRANSFORM_ORDER = {TransformType.ENCR: 0, TransformType.INTEG: 1, TransformType.PRF: 2,
                    TransformType.KE: 3, TransformType.ESN: 4, **{t: int(t) - 1 for t in AdditionalKeType}}
_STRONGSWAN_NAMES = {"CURVE25519": "CURVE_25519", "CURVE448": "CURVE_448", "NO_ESN": "NO_EXT_SEQ", "ESN": "EXT_SEQ"}


def _enum_name(enum_cls, value: int) -> str:
    try:
        return enum_cls(value).name
    except ValueError:
        return str(value)


def _hex(data: bytes) -> str:
    if len(data) > _HEX_LIMIT:
        return f"{data[:_HEX_LIMIT].hex()}... ({len(data)} bytes)"
    return data.hex()


def strongswan_transform_name(ttype: int, tid: int, key_length: int | None = None) -> str:
    """A transform as strongSwan names it: AES_GCM_16_256, PRF_HMAC_SHA2_256, CURVE_25519, NO_EXT_SEQ,
    KE1_ML_KEM_768 (an RFC 9370 additional key exchange)."""
    number = additional_ke_number(ttype)
    if number is not None:
        return f"KE{number}_{group_name(tid)}"
    name = transform_name(ttype, tid, key_length)
    name = _STRONGSWAN_NAMES.get(name, name)
    if ttype == TransformType.PRF and ":" not in name:
        name = "PRF_" + name
    return name


def group_name(group: int) -> str:
    """A key exchange method as strongSwan names it (CURVE_25519, MODP_2048, ECP_256)."""
    return strongswan_transform_name(TransformType.KE, group)


def proposal_text(proposal: Proposal) -> str:
    """``IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519``, as charon logs proposals."""
    transforms = sorted(proposal.transforms, key=lambda t: _TRANSFORM_ORDER.get(t.type, 5))  # type: ignore[call-overload]
    names = "/".join(strongswan_transform_name(t.type, t.id, t.key_length) for t in transforms)
    return f"{_enum_name(ProtocolId, proposal.protocol)}:{names}"


# ---------------------------------------------------------------- names


def payload_name(p: Payload) -> str:
    """The payload as it appears in charon's ``[ ... ]`` list."""
    if isinstance(p, NotifyPayload):
        return f"N({short_name(p.type)})"
    if isinstance(p, SkfPayload):
        return f"EF({p.fragment_number}/{p.total_fragments})"
    if isinstance(p, CpPayload):
        attrs = " ".join(CFG_ATTR_SHORT.get(t, str(t)) for t, _ in p.attributes[:MAX_ITEMS])
        if len(p.attributes) > MAX_ITEMS:
            attrs += f" +{len(p.attributes) - MAX_ITEMS}"
        return f"CP{_CP_PREFIX.get(p.cfg_type, '')}({attrs})" if attrs else "CP"  # type: ignore[call-overload]
    if isinstance(p, EapPayload):
        name = f"EAP/{_EAP_CODE.get(p.code, str(p.code))}"
        if p.code in (1, 2) and p.data:
            name += f"/{_EAP_TYPE.get(p.data[0], str(p.data[0]))}"
        return name
    if isinstance(p, UnknownPayload):
        return f"UNKN({p.type})"
    return PAYLOAD_SHORT.get(p.payload_type, str(p.payload_type))


# ---------------------------------------------------------------- ID values


def id_text(id_type: int, data: bytes) -> str:
    """An identity as charon prints it; hex when it cannot be read."""
    try:
        if id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            return str(ipaddress.ip_address(data))
        if id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return data.decode("ascii")
        if id_type == IdType.DER_ASN1_DN:
            return dn_text(data)
        if id_type == IdType.NULL:
            return "(null)"
    except (ValueError, IndexError, UnicodeDecodeError):
        pass
    return data.hex()


def ts_text(s) -> str:
    """A selector in strongSwan syntax (``198.51.100.0/24[tcp/80]``)."""
    if not isinstance(s, WireTs):
        return f"type {s.ts_type} ({len(s.data)} bytes)"
    try:
        ts = s.to_ts()
    except ValueError:
        return f"type {s.ts_type}"
    if ts.start > ts.end:
        return f"{ts.start}-{ts.end} (empty range)"
    return str(TrafficSelector(ts.start, ts.end, ts.protocol, ts.start_port, ts.end_port))


# ---------------------------------------------------------------- details


def _notify_data(p: NotifyPayload) -> str | None:
    data = p.data
    if not data:
        return None
    t = p.type
    if t == NotifyType.INVALID_KE_PAYLOAD and len(data) == 2:
        return group_name(int.from_bytes(data, "big"))
    if t == NotifyType.SIGNATURE_HASH_ALGORITHMS:
        algs = [int.from_bytes(data[i:i + 2], "big") for i in range(0, min(len(data), 2 * MAX_ITEMS) - 1, 2)]
        return " ".join(_enum_name(HashAlgorithm, a) for a in algs)
    if t == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD and len(data) == 1:
        return f"payload type {data[0]}"
    if t in (NotifyType.ADDITIONAL_IP4_ADDRESS, NotifyType.ADDITIONAL_IP6_ADDRESS) and len(data) in (4, 16):
        return str(ipaddress.ip_address(data))
    if t in (NotifyType.SET_WINDOW_SIZE, NotifyType.AUTH_LIFETIME) and len(data) == 4:
        return str(int.from_bytes(data, "big"))
    if t == NotifyType.IPCOMP_SUPPORTED and len(data) == 3:
        return f"CPI {data[:2].hex()} transform {data[2]}"
    if t == NotifyType.NO_PPK_AUTH:
        return f"{len(data)} bytes"  # an AUTH value: never shown
    if t == NotifyType.PPK_IDENTITY:
        try:
            ident = decode_ppk_identity(data)
        except WireError:
            return f"malformed ({len(data)} bytes)"
        return f"{ident.id_type.name} {_bounded(str(ident))}"
    return _hex(data)


def _bounded(text: str) -> str:
    return text if len(text) <= _HEX_LIMIT else f"{text[:_HEX_LIMIT]}... ({len(text)} characters)"


def _cp_value(attr: int, value: bytes) -> str:
    if not value:
        return "(requested)"
    try:
        if len(value) in (4, 16) and attr in (1, 2, 3, 4, 6, 8, 10, 12, 20, 21, 19):
            return str(ipaddress.ip_address(value))
        if attr == CfgAttr.INTERNAL_IP6_ADDRESS and len(value) == 17:
            return f"{ipaddress.ip_address(value[:16])}/{value[16]}"
        if attr == CfgAttr.INTERNAL_IP4_SUBNET and len(value) == 8:
            return str(ipaddress.ip_network(f"{ipaddress.ip_address(value[:4])}/{ipaddress.ip_address(value[4:])}",
                                            strict=False))
        if attr == CfgAttr.INTERNAL_IP6_SUBNET and len(value) == 17:
            return str(ipaddress.ip_network((value[:16], value[16]), strict=False))
        if attr in (CfgAttr.APPLICATION_VERSION, CfgAttr.INTERNAL_DNS_DOMAIN):
            return value.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        pass
    return _hex(value)


def payload_detail(p: Payload) -> PayloadDetail:
    """(label, value) pairs for one payload, without secrets."""
    f: list[tuple[str, str]] = []
    if isinstance(p, SaPayload):
        for prop in p.proposals[:MAX_PROPOSALS]:
            f.append((f"proposal {prop.number}", _capped_proposal_text(prop)))
            if prop.spi:
                f.append((f"proposal {prop.number} SPI", _hex(prop.spi)))
        _left_out(f, len(p.proposals), MAX_PROPOSALS, "proposals")
    elif isinstance(p, KePayload):
        f += [("group", group_name(p.group)), ("length", f"{len(p.data)} bytes")]
    elif isinstance(p, IdPayload):
        f += [("type", _enum_name(IdType, p.id_type)), ("id", id_text(p.id_type, p.data))]
    elif isinstance(p, CertPayload):
        f += [("encoding", _enum_name(CertEncoding, p.encoding)), ("length", f"{len(p.data)} bytes")]
    elif isinstance(p, CertReqPayload):
        f.append(("encoding", _enum_name(CertEncoding, p.encoding)))
        if p.data and len(p.data) % 20 == 0:
            f.append(("CAs", str(len(p.data) // 20)))
    elif isinstance(p, AuthPayload):
        f.append(("method", _enum_name(AuthMethod, p.method)))
    elif isinstance(p, NoncePayload):
        f.append(("length", f"{len(p.data)} bytes"))
    elif isinstance(p, NotifyPayload):
        f.append(("type", notify_name(p.type)))
        if p.protocol:
            f.append(("protocol", _enum_name(ProtocolId, p.protocol)))
        if p.spi:
            f.append(("SPI", p.spi.hex()))
        data = _notify_data(p)
        if data is not None:
            f.append(("data", data))
    elif isinstance(p, DeletePayload):
        f.append(("protocol", _enum_name(ProtocolId, p.protocol)))
        if p.spis:
            f.append(("SPIs", " ".join(_hex(s) for s in p.spis[:MAX_ITEMS])))
        _left_out(f, len(p.spis), MAX_ITEMS, "SPIs")
    elif isinstance(p, VendorIdPayload):
        text = p.data.decode("ascii", "replace") if p.data.isascii() and p.data.decode("ascii").isprintable() else None
        f.append(("id", text if text else _hex(p.data)))
    elif isinstance(p, TsPayload):
        f += [("selector", ts_text(s)) for s in p.selectors[:MAX_ITEMS]]
        _left_out(f, len(p.selectors), MAX_ITEMS, "selectors")
    elif isinstance(p, CpPayload):
        f.append(("type", _enum_name(CfgType, p.cfg_type)))
        f += [(_enum_name(CfgAttr, t), _cp_value(t, v)) for t, v in p.attributes[:MAX_ITEMS]]
        _left_out(f, len(p.attributes), MAX_ITEMS, "attributes")
    elif isinstance(p, EapPayload):
        f += [("code", _enum_name(EapCode, p.code)), ("identifier", str(p.identifier))]
        if p.code in (1, 2) and p.data:
            f += [("type", _EAP_TYPE.get(p.data[0], str(p.data[0]))), ("length", f"{len(p.data)} bytes")]
    elif isinstance(p, SkPayload):
        f += [("first inner", PAYLOAD_SHORT.get(p.next_payload, str(p.next_payload))),
              ("length", f"{len(p.data)} bytes")]
    elif isinstance(p, SkfPayload):
        f += [("fragment", f"{p.fragment_number}/{p.total_fragments}"), ("length", f"{len(p.data)} bytes")]
    elif isinstance(p, UnknownPayload):
        f += [("type", str(p.type)), ("length", f"{len(p.data)} bytes")]
    if getattr(p, "critical", False):
        f.append(("critical", "yes"))
    return PayloadDetail(payload_name(p), tuple((label, clean(value, MAX_VALUE)) for label, value in f))


def _capped_proposal_text(prop: Proposal) -> str:
    more = len(prop.transforms) - MAX_TRANSFORMS
    if more <= 0:
        return proposal_text(prop)
    short = dataclasses.replace(prop, transforms=prop.transforms[:MAX_TRANSFORMS])
    return f"{proposal_text(short)}/(+{more} more transforms)"


def _left_out(f: list[tuple[str, str]], count: int, kept: int, what: str) -> None:
    if count > kept:
        f.append(("left out", f"{count - kept} more {what}"))


def summarize(message_or_header: Message | IkeHeader, payloads: Iterable[Payload] | None = None, *,
              length: int | None = None, retransmit: int = 0, fragments: int = 1) -> MessageSummary:
    """A MessageSummary of a message.

    ``payloads`` are the payloads to show: for an encrypted message, the
    decrypted inner ones (after any unencrypted ones); by default those of
    the Message. ``length`` is the bytes on the wire over all fragments
    (default: the header's length).
    """
    if isinstance(message_or_header, Message):
        header = message_or_header.header
        items = message_or_header.payloads if payloads is None else payloads
    else:
        header = message_or_header
        items = payloads or ()
    kept, omitted, _ = _keep(items)
    return MessageSummary(
        exchange=exchange_name(header.exchange),
        mid=header.mid,
        response=header.response,
        initiator_flag=header.initiator,
        spi_i=int.from_bytes(header.spi_i, "big"),
        spi_r=int.from_bytes(header.spi_r, "big"),
        length=header.length if length is None else length,
        payloads=_names(kept, omitted),
        notifies=_notifies(kept),
        details=_details(kept, omitted),
        retransmit=retransmit,
        fragments=fragments,
    )


def _estimate(p: Payload) -> int:
    """Bytes a decoded payload object keeps alive (a cheap upper estimate); more
    than MAX_RETAINED when it holds more items than a description shows."""
    # Dispatched on the exact class (a dozen payloads per handshake go through here).
    size = _ESTIMATORS.get(type(p))
    if size is None:
        size = _ESTIMATORS[type(p)] = _estimator_for(p)
    return size(p)


_TOO_MANY = MAX_RETAINED + 1


def _sa_size(p: SaPayload) -> int:
    proposals = p.proposals
    if len(proposals) > MAX_PROPOSALS:
        return _TOO_MANY
    n = 0
    for prop in proposals:  # a loop, not sum() over a generator: half the time for one to four proposals
        n += len(prop.transforms)
    return _PAYLOAD_BYTES * (1 + len(proposals)) + 120 * n


def _ts_size(p: TsPayload) -> int:
    return _TOO_MANY if len(p.selectors) > MAX_ITEMS else _PAYLOAD_BYTES + 250 * len(p.selectors)


def _cp_size(p: CpPayload) -> int:
    if len(p.attributes) > MAX_ITEMS:
        return _TOO_MANY
    return _PAYLOAD_BYTES + sum(90 + len(v) for _, v in p.attributes)


def _delete_size(p: DeletePayload) -> int:
    return _TOO_MANY if len(p.spis) > MAX_ITEMS else _PAYLOAD_BYTES + 45 * len(p.spis)


def _data_size(p: Payload) -> int:
    return _PAYLOAD_BYTES + len(getattr(p, "data", b""))


_AT_ONCE = _TOO_MANY
"""The estimate of a payload carrying authentication data: described at once (_authentication_detail)."""
_NO_PPK_AUTH = int(NotifyType.NO_PPK_AUTH)


def _notify_size(p: NotifyPayload) -> int:
    return _AT_ONCE if p.type == _NO_PPK_AUTH else _PAYLOAD_BYTES + len(p.data) + len(p.spi)


def _estimator_for(p: Payload):
    for cls, size in ((SaPayload, _sa_size), (TsPayload, _ts_size), (CpPayload, _cp_size),
                      (DeletePayload, _delete_size), (NotifyPayload, _notify_size),
                      (AuthPayload, lambda p: _AT_ONCE), (EapPayload, lambda p: _AT_ONCE)):
        if isinstance(p, cls):
            return size
    return _data_size


_ESTIMATORS: dict[type, object] = {}


def _detail_bytes(d: PayloadDetail) -> int:
    return 200 + sum(130 + len(label) + len(value) for label, value in d.fields)


_auth_details: dict[tuple[int, bool], PayloadDetail] = {}  # at most 256 methods x critical or not


def _authentication_detail(p: Payload) -> PayloadDetail | None:
    """The description of a payload carrying authentication data (an AUTH value, an EAP message:
    MSCHAPv2's NT-Response, a GTC password; NO_PPK_AUTH's AUTH value), made at once so that no
    summary keeps that data: a summary lives on in the runtime's history and crosses to the
    embedded console's process. None for any other payload."""
    t = type(p)
    if t is AuthPayload:
        key = (p.method, p.critical)
        detail = _auth_details.get(key)
        if detail is None:
            detail = _auth_details[key] = payload_detail(p)  # the method only: shared, as it is
        return detail
    if t is EapPayload or (t is NotifyPayload and p.type == _NO_PPK_AUTH):
        return payload_detail(p)
    return None


def _keep(payloads: Iterable[Payload]) -> tuple[tuple, int, int]:
    """(what a summary keeps, payloads left out, estimated bytes kept).

    Kept items are payloads, for formatting later, or PayloadDetails made at
    once for payloads too large to keep (see MAX_RETAINED) or carrying
    authentication data (see _authentication_detail: their estimate is
    _AT_ONCE)."""
    items = payloads if isinstance(payloads, (tuple, list)) else tuple(payloads)
    omitted = len(items) - MAX_PAYLOADS
    if omitted > 0:
        items = items[:MAX_PAYLOADS]
    else:
        omitted = 0
    retained = 0
    estimators = _ESTIMATORS
    n = 0
    for p in items:
        # _estimate() inline: six messages of about six payloads per handshake come through here.
        size = estimators.get(type(p))
        size = size(p) if size is not None else _estimate(p)
        if size > _LARGE_PAYLOAD or retained + size > MAX_RETAINED:
            break
        retained += size
        n += 1
    else:
        return tuple(items), omitted, retained
    kept = list(items[:n])
    for p in items[n:]:
        size = estimators.get(type(p))
        size = size(p) if size is not None else _estimate(p)
        if size > _LARGE_PAYLOAD or retained + size > MAX_RETAINED:
            p = _authentication_detail(p) or payload_detail(p)
            size = _detail_bytes(p)
        retained += size
        kept.append(p)
    return tuple(kept), omitted, retained


def _names(kept: tuple, omitted: int) -> tuple[str, ...]:
    names = tuple(p.name if isinstance(p, PayloadDetail) else payload_name(p) for p in kept)
    return names + (f"+{omitted} more",) if omitted else names


def _notifies(kept: tuple) -> tuple[str, ...]:
    out = []
    for p in kept:
        if isinstance(p, NotifyPayload):
            out.append(notify_name(p.type))
        elif isinstance(p, PayloadDetail) and p.name.startswith("N("):
            out.append(dict(p.fields).get("type", p.name[2:-1]))
    return tuple(out)


def _details(kept: tuple, omitted: int) -> tuple[PayloadDetail, ...]:
    details = tuple(p if isinstance(p, PayloadDetail) else payload_detail(p) for p in kept)
    if omitted:
        details += (PayloadDetail(f"+{omitted} more", (("left out", f"{omitted} more payloads"),)),)
    return details


class LazySummary(MessageSummary):
    """A MessageSummary computed when first read: the engine describes every
    message, but most of them are never looked at (no console attached, a
    benchmark), and formatting costs more than the rest of the exchange.

    The payload names come first (cheap; log lines use them); the decoded
    details only when ``details`` itself is read (the negotiation view, JSON).
    Equality, hashing, repr, pickling and dataclasses.fields() behave as for
    MessageSummary.
    """

    def __init__(self, header, payloads, *, length: int | None = None, retransmit: int = 0,
                 fragments: int = 1) -> None:  # noqa: D107  (no dataclass __init__: fields are filled lazily)
        # ``header``: an IkeHeader, or (spi_i, spi_r, exchange, flags, mid) to spare building one.
        kept, omitted, retained = _keep(payloads)
        # Into __dict__ directly (the dataclass is frozen): three object.__setattr__ calls were a
        # visible part of describing each of the six messages of a handshake.
        d = self.__dict__
        d["_src"] = (header, kept, omitted, length, retransmit, fragments)
        d["_done"] = {}
        d["retained"] = retained + _DETAIL_BYTES * len(kept) + 1000
        """Estimated bytes this summary keeps alive (the runtime bounds its history by it)."""

    def _get(self, name: str):
        done = self._done
        if name in done:
            return done[name]
        header, items, omitted, length, retransmit, fragments = self._src
        if name == "details":
            done["details"] = _details(items, omitted)
        elif "payloads" not in done:
            if isinstance(header, IkeHeader):
                spi_i, spi_r, exchange, flags, mid = (header.spi_i, header.spi_r, header.exchange,
                                                      header.flags, header.mid)
                length = header.length if length is None else length
            else:
                spi_i, spi_r, exchange, flags, mid = header
            done.update(
                exchange=exchange_name(exchange),
                mid=mid,
                response=bool(flags & FLAG_RESPONSE),
                initiator_flag=bool(flags & FLAG_INITIATOR),
                spi_i=int.from_bytes(spi_i, "big"),
                spi_r=int.from_bytes(spi_r, "big"),
                length=length or 0,
                payloads=_names(items, omitted),
                notifies=_notifies(items),
                retransmit=retransmit,
                fragments=fragments,
            )
        return done[name]

    def _values(self) -> tuple:
        return tuple(self._get(f.name) for f in dataclasses.fields(MessageSummary))

    def __eq__(self, other):
        if not isinstance(other, MessageSummary):
            return NotImplemented
        return self._values() == tuple(getattr(other, f.name) for f in dataclasses.fields(MessageSummary))

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return repr(MessageSummary(*self._values()))

    def __reduce__(self):
        return (MessageSummary, self._values())

    def parts(self) -> tuple:
        """What `from_parts` needs to rebuild this summary still unformatted (the embedded
        console's engine process sends these, so formatting stays on the console's side)."""
        return self._src, self.retained

    @classmethod
    def from_parts(cls, src: tuple, retained: int) -> LazySummary:
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_src", src)
        object.__setattr__(obj, "_done", {})
        object.__setattr__(obj, "retained", retained)
        return obj


for _f in dataclasses.fields(MessageSummary):
    # Properties shadow the dataclass defaults, so every field read goes through _get.
    setattr(LazySummary, _f.name, property(lambda self, _n=_f.name: self._get(_n)))
del _f


def summarize_lazy(header: IkeHeader, payloads: Iterable[Payload], *, length: int | None = None,
                   retransmit: int = 0, fragments: int = 1) -> MessageSummary:
    """Like summarize(header, payloads, ...) but paid for only when read."""
    return LazySummary(header, payloads, length=length, retransmit=retransmit, fragments=fragments)
