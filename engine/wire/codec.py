"""One encode/decode pair per IKEv2 payload body (RFC 7296 §3.3-§3.16, RFC 7383).

A body is the payload after its 4-octet generic header; chaining the bodies
into a message is ``engine.wire.message``'s job. Decoders check every length
and count against the bytes present and raise ``MalformedMessage`` naming the
payload and its offset in the message; they never raise anything else.
Encoders trust their (frozen, typed) input and raise ValueError on values
that cannot be represented.

Bodies are read with precompiled ``struct.Struct.unpack_from`` on the
immutable input rather than field by field through ``Buffer``: IKE payloads
are fixed records, and one unpack per record is about six times faster than a
pull_* call per field on this per-message path.

Payloads are frozen, so a body a peer repeats from handshake to handshake (its offer, identities,
status notifies, selectors) decodes to one shared value (``engine.wire.shared``), and an encoded
transform list is kept by the identity of its tuple (``_TRANSFORMS_MEMO``); every such table is
bounded and holds only what decoded, or encoded, without error.
"""

from __future__ import annotations

import struct
from typing import Callable

from engine.wire.constants import PAYLOAD_SHORT, NotifyType, PayloadType, ProtocolId, TsType
from engine.wire.errors import MalformedMessage
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
    Transform,
    TsPayload,
    UnknownPayload,
    UnknownTs,
    VendorIdPayload,
    WireTs,
)

_B = struct.Struct("!B")
_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_B3x = struct.Struct("!B3x")
_BBH = struct.Struct("!BBH")
_PROPOSAL = struct.Struct("!BxHBBBB")  # last, length, number, protocol, spi size, #transforms
_TRANSFORM = struct.Struct("!BxHBxH")  # last, length, type, id
_TS_IP = struct.Struct("!BBHHH")  # type, protocol, length, start port, end port

ATTR_KEY_LENGTH = 14
_TV = 0x8000
_LAST_PROPOSAL, _MORE_PROPOSALS = 0, 2
_LAST_TRANSFORM, _MORE_TRANSFORMS = 0, 3
_TS_LEN = {int(TsType.IPV4_ADDR_RANGE): 16, int(TsType.IPV6_ADDR_RANGE): 40}
# A whole IPv4/IPv6 range selector in one pack: (struct, address length, selector length).
_TS_WHOLE = {int(TsType.IPV4_ADDR_RANGE): (struct.Struct("!BBHHH4s4s"), 4, 16),
             int(TsType.IPV6_ADDR_RANGE): (struct.Struct("!BBHHH16s16s"), 16, 40)}
_ID_ADDR_LEN = {1: 4, 5: 16}  # ID_IPV4_ADDR, ID_IPV6_ADDR
_CHILD_PROTOCOLS = (int(ProtocolId.AH), int(ProtocolId.ESP))
# Plain ints: an IntEnum member read through its class costs a descriptor call per use.
_PROTO_IKE = int(ProtocolId.IKE)
_NO_SPI_DELETE = (0, _PROTO_IKE)
"""Delete protocols without SPIs: IKE, and 0 (read like IKE, as charon does)."""
_IDI, _CERT, _TSI = int(PayloadType.IDi), int(PayloadType.CERT), int(PayloadType.TSi)
_SIGNATURE_HASH_ALGORITHMS = int(NotifyType.SIGNATURE_HASH_ALGORITHMS)

# Notify data whose length RFCs fix: (min, max), checked so the IKE layer can trust it.
_NOTIFY_DATA_LEN: dict[int, tuple[int, int]] = {
    NotifyType.INVALID_KE_PAYLOAD: (2, 2),  # the accepted group (§3.10.1)
    NotifyType.NAT_DETECTION_SOURCE_IP: (20, 20),  # SHA-1 (§2.23)
    NotifyType.NAT_DETECTION_DESTINATION_IP: (20, 20),
    NotifyType.COOKIE: (1, 64),  # §2.6
    NotifyType.SET_WINDOW_SIZE: (4, 4),
    NotifyType.ADDITIONAL_IP4_ADDRESS: (4, 4),
    NotifyType.ADDITIONAL_IP6_ADDRESS: (16, 16),
    NotifyType.AUTH_LIFETIME: (4, 4),
    NotifyType.IPCOMP_SUPPORTED: (3, 3),  # CPI and transform ID (§3.10.1)
}


def payload_label(ptype: int) -> str:
    """Short payload name for error messages: SA, KE, N... or the number."""
    return PAYLOAD_SHORT.get(ptype) or f"payload {ptype}"


def malformed_at(ptype: int, offset: int, reason: str) -> MalformedMessage:
    """The error for a payload of type ``ptype`` whose generic header sits at ``offset``."""
    name = payload_label(ptype)
    return MalformedMessage(f"{name} at offset {offset}: {reason}", offset=offset, payload=name)


# ---------------------------------------------------------------- SA


def _encode_attributes(t: Transform) -> bytes:
    parts = []
    if t.key_length is not None:
        parts.append(_HH.pack(_TV | ATTR_KEY_LENGTH, t.key_length))
    for atype, value in t.attributes:
        if atype == ATTR_KEY_LENGTH:
            raise ValueError("KEY_LENGTH goes in Transform.key_length, not in attributes")
        if not 0 <= atype <= 0x7FFF:
            raise ValueError(f"transform attribute type {atype} does not fit in 15 bits")
        if isinstance(value, int):
            parts.append(_HH.pack(_TV | atype, value))
        else:
            parts.append(_HH.pack(atype, len(value)))
            parts.append(value)
    return b"".join(parts)


TRANSFORMS_MEMO_MAX = 256
"""Encoded transform lists kept at most (then the memo starts afresh)."""
_TRANSFORMS_MEMO: dict[int, tuple[tuple[Transform, ...], bytes]] = {}
"""id(transforms tuple) -> (that tuple, its encoding). The entry holds the tuple, so no other object
can take its id while the entry lives; tuple and transforms are immutable, so the bytes stay right.
A responder answers every handshake with the same chosen proposal's tuple (engine.ike.proposals
caches it, with or without a SPI), so the lookup (no hashing of the transforms) nearly always hits."""


def _transforms_bytes(transforms: tuple[Transform, ...]) -> bytes:
    memo = _TRANSFORMS_MEMO
    hit = memo.get(id(transforms))
    if hit is not None and hit[0] is transforms:
        return hit[1]
    encoded = _encode_transforms(transforms)
    if len(memo) >= TRANSFORMS_MEMO_MAX:
        memo.clear()
    memo[id(transforms)] = (transforms, encoded)
    return encoded


def _encode_transforms(transforms: tuple[Transform, ...]) -> bytes:
    tparts = []
    last_index = len(transforms) - 1
    pack = _TRANSFORM.pack
    for j, t in enumerate(transforms):
        last = _MORE_TRANSFORMS if j < last_index else _LAST_TRANSFORM
        if t.key_length is None and not t.attributes:
            tparts.append(pack(last, 8, t.type, t.id))
        else:
            attrs = _encode_attributes(t)
            tparts.append(pack(last, 8 + len(attrs), t.type, t.id))
            tparts.append(attrs)
    return b"".join(tparts)


def encode_sa(p: SaPayload) -> bytes:
    out = []
    last_index = len(p.proposals) - 1
    for i, prop in enumerate(p.proposals):
        transforms = prop.transforms
        tbytes = _transforms_bytes(transforms)
        last = _MORE_PROPOSALS if i < last_index else _LAST_PROPOSAL
        spi = prop.spi
        out.append(_PROPOSAL.pack(last, 8 + len(spi) + len(tbytes), prop.number, prop.protocol, len(spi),
                                  len(transforms)))
        out.append(spi)
        out.append(tbytes)
    return b"".join(out)


def _decode_attributes(body: bytes, start: int, end: int) -> tuple[int | None, tuple]:
    """(KEY_LENGTH or None, other attributes) of one transform; ValueError says what is wrong."""
    key_length = None
    attrs: list[tuple[int, bytes | int]] = []
    pos = start
    while pos < end:
        if end - pos < 4:
            raise ValueError(f"attribute header truncated ({end - pos} bytes left)")
        af_type, value = _HH.unpack_from(body, pos)
        pos += 4
        atype = af_type & 0x7FFF
        if af_type & _TV:
            if atype == ATTR_KEY_LENGTH:
                if key_length is not None:
                    raise ValueError("KEY_LENGTH attribute given twice")
                key_length = value
            else:
                attrs.append((atype, value))
        else:
            if atype == ATTR_KEY_LENGTH:
                raise ValueError("KEY_LENGTH attribute in TLV format (must be TV)")
            if pos + value > end:
                raise ValueError(f"attribute {atype} length {value} overruns its transform")
            attrs.append((atype, body[pos:pos + value]))
            pos += value
    return key_length, tuple(attrs)


SHARED_TRANSFORMS_MAX = 1024
"""Decoded attribute-free transforms kept for reuse at most."""
_SHARED_TRANSFORMS: dict[tuple[int, int, int | None], Transform] = {}


def _decode_transforms(ptype: int, offset: int, at: int, body: bytes, pos: int, end: int,
                       count: int) -> tuple[Transform, ...]:
    """``at``: the offset of the proposal, for errors."""
    transforms = []
    for j in range(count):
        if end - pos < 8:
            raise malformed_at(ptype, offset, f"proposal at {at}: transform {j + 1} of {count} truncated")
        last, length, ttype, tid = _TRANSFORM.unpack_from(body, pos)
        tend = pos + length
        if length < 8 or tend > end:
            raise malformed_at(ptype, offset, f"proposal at {at}: transform {j + 1} length {length} does not fit")
        if last != (_MORE_TRANSFORMS if j < count - 1 else _LAST_TRANSFORM):
            raise malformed_at(ptype, offset, f"proposal at {at}: transform {j + 1} of {count} has 'last substruc' {last}")
        if tend == pos + 8:
            key_length, attrs = None, ()
        else:
            try:
                key_length, attrs = _decode_attributes(body, pos + 8, tend)
            except ValueError as exc:
                raise malformed_at(ptype, offset, f"proposal at {at}: transform {j + 1}: {exc}") from None
        if attrs:
            transforms.append(Transform(ttype, tid, key_length, attrs))
        else:
            # Frozen, so one object serves every message naming this transform (a handshake's two
            # SA payloads carry five or so); bounded: a peer's made-up transforms are built each time.
            key = (ttype, tid, key_length)
            t = _SHARED_TRANSFORMS.get(key)
            if t is None:
                t = Transform(ttype, tid, key_length)
                if len(_SHARED_TRANSFORMS) < SHARED_TRANSFORMS_MAX:
                    _SHARED_TRANSFORMS[key] = t
            transforms.append(t)
        pos = tend
    if pos != end:
        raise malformed_at(ptype, offset, f"proposal at {at}: {end - pos} bytes after the {count} transforms announced")
    return tuple(transforms)


SHARED_TRANSFORM_LIST_BYTES = 512
"""The largest transform list (the bytes after a proposal's SPI) shared between messages."""
SHARED_TRANSFORM_LISTS_MAX = 128
"""Transform lists kept at most (then the table starts afresh)."""
_SHARED_TRANSFORM_LISTS: dict[bytes, tuple[int, tuple[Transform, ...]]] = {}
"""A proposal's transform bytes -> (the count announced, the decoded tuple), for bodies that decoded
without error; bounded by SHARED_TRANSFORM_LISTS_MAX. A CHILD SA's offer differs from the last one only
in its SPI, so its SA payload is decoded anew (not shared whole) but its transforms are not."""


def decode_sa(ptype: int, body: bytes, critical: bool, offset: int) -> SaPayload:
    n = len(body)
    pos = 0
    proposals = []
    while pos < n:
        at = offset + 4 + pos  # named in errors only: formatted then
        if n - pos < 8:
            raise malformed_at(ptype, offset, f"proposal at {at}: truncated proposal header")
        last, plen, number, protocol, spi_size, tcount = _PROPOSAL.unpack_from(body, pos)
        pend = pos + plen
        if plen < 8 + spi_size or pend > n:
            raise malformed_at(ptype, offset, f"proposal at {at}: proposal length {plen} does not fit "
                                              f"(SPI size {spi_size}, {n - pos} bytes left)")
        if last not in (_LAST_PROPOSAL, _MORE_PROPOSALS) or (last == _LAST_PROPOSAL) != (pend == n):
            raise malformed_at(ptype, offset, f"proposal at {at}: 'last substruc' {last} disagrees with the SA length")
        if protocol == _PROTO_IKE and spi_size not in (0, 8):
            raise malformed_at(ptype, offset, f"proposal at {at}: IKE proposal with SPI size {spi_size} (must be 0 or 8)")
        if protocol in _CHILD_PROTOCOLS and spi_size != 4:
            raise malformed_at(ptype, offset, f"proposal at {at}: {ProtocolId(protocol).name} proposal with SPI size "
                                              f"{spi_size} (must be 4)")
        tpos = pos + 8 + spi_size
        if pend - tpos <= SHARED_TRANSFORM_LIST_BYTES:
            tkey = body[tpos:pend]
            hit = _SHARED_TRANSFORM_LISTS.get(tkey)
            if hit is not None and hit[0] == tcount:
                transforms = hit[1]
            else:
                transforms = _decode_transforms(ptype, offset, at, body, tpos, pend, tcount)
                if len(_SHARED_TRANSFORM_LISTS) >= SHARED_TRANSFORM_LISTS_MAX:
                    _SHARED_TRANSFORM_LISTS.clear()
                _SHARED_TRANSFORM_LISTS[tkey] = (tcount, transforms)
        else:
            transforms = _decode_transforms(ptype, offset, at, body, tpos, pend, tcount)
        proposals.append(Proposal(number, protocol, body[pos + 8:tpos], transforms))
        pos = pend
    if not proposals:
        raise malformed_at(ptype, offset, "no proposal")
    # RFC 7296 §3.3.1 has senders number an offer 1, 2, 3...; like charon (sa_payload.c verify) we
    # only insist that the numbers start at 1 or above and never go down: gaps are harmless, and
    # proposals sharing a number (an AH+ESP bundle) are left to the IKE layer to skip.
    previous = 1
    for i, prop in enumerate(proposals, 1):
        if prop.number < previous:
            below = "" if prop.number == 0 else f", below proposal {i - 1}'s {previous}"
            raise malformed_at(ptype, offset, f"proposal {i} is numbered {prop.number}{below}")
        previous = prop.number
    return SaPayload(tuple(proposals), critical)


# ---------------------------------------------------------------- simple payloads


def encode_ke(p: KePayload) -> bytes:
    return _HH.pack(p.group, 0) + p.data


def decode_ke(ptype: int, body: bytes, critical: bool, offset: int) -> KePayload:
    if len(body) < 4:
        raise malformed_at(ptype, offset, f"body of {len(body)} bytes, need at least 4")
    return KePayload(_H.unpack_from(body)[0], body[4:], critical)


def encode_id(p: IdPayload) -> bytes:
    return bytes((p.id_type,)) + p.reserved + p.data


def decode_id(ptype: int, body: bytes, critical: bool, offset: int) -> IdPayload:
    if len(body) < 4:
        raise malformed_at(ptype, offset, f"body of {len(body)} bytes, need at least 4")
    id_type = body[0]
    data = body[4:]
    want = _ID_ADDR_LEN.get(id_type)
    if want is not None and len(data) != want:
        raise malformed_at(ptype, offset, f"ID type {id_type} with {len(data)} bytes of address (need {want})")
    return IdPayload(ptype == _IDI, id_type, data, critical, body[1:4])


def encode_cert(p: CertPayload | CertReqPayload) -> bytes:
    return _B.pack(p.encoding) + p.data


def decode_cert(ptype: int, body: bytes, critical: bool, offset: int) -> CertPayload | CertReqPayload:
    if not body:
        raise malformed_at(ptype, offset, "empty body, need the encoding octet")
    cls = CertPayload if ptype == _CERT else CertReqPayload
    return cls(body[0], body[1:], critical)


def encode_auth(p: AuthPayload) -> bytes:
    return _B3x.pack(p.method) + p.data


def decode_auth(ptype: int, body: bytes, critical: bool, offset: int) -> AuthPayload:
    if len(body) < 4:
        raise malformed_at(ptype, offset, f"body of {len(body)} bytes, need at least 4")
    return AuthPayload(body[0], body[4:], critical)


def encode_nonce(p: NoncePayload) -> bytes:
    return p.data


def decode_nonce(ptype: int, body: bytes, critical: bool, offset: int) -> NoncePayload:
    if not 16 <= len(body) <= 256:
        raise malformed_at(ptype, offset, f"nonce of {len(body)} bytes (RFC 7296 §3.9: 16 to 256)")
    return NoncePayload(body, critical)


def encode_notify(p: NotifyPayload) -> bytes:
    return _BBH.pack(p.protocol, len(p.spi), p.type) + p.spi + p.data


def decode_notify(ptype: int, body: bytes, critical: bool, offset: int) -> NotifyPayload:
    n = len(body)
    if n < 4:
        raise malformed_at(ptype, offset, f"body of {n} bytes, need at least 4")
    protocol, spi_size, ntype = _BBH.unpack_from(body)
    if 4 + spi_size > n:
        raise malformed_at(ptype, offset, f"SPI size {spi_size} overruns the payload")
    # An SPI size that does not fit the protocol is kept as sent, as charon does (notify_payload.c
    # verify() never compares them): the IKE layer finds no SA by such an SPI, and one odd notify
    # must not make the whole exchange INVALID_SYNTAX.
    data = body[4 + spi_size:]
    bounds = _NOTIFY_DATA_LEN.get(ntype)
    if bounds is not None and not bounds[0] <= len(data) <= bounds[1]:
        want = str(bounds[0]) if bounds[0] == bounds[1] else f"{bounds[0]}-{bounds[1]}"
        raise malformed_at(ptype, offset, f"{NotifyType(ntype).name} with {len(data)} bytes of data (need {want})")
    if ntype == _SIGNATURE_HASH_ALGORITHMS and len(data) % 2:
        raise malformed_at(ptype, offset, "SIGNATURE_HASH_ALGORITHMS data of odd length")
    return NotifyPayload(ntype, protocol, body[4:4 + spi_size], data, critical)


def encode_delete(p: DeletePayload) -> bytes:
    size = 0 if p.protocol in _NO_SPI_DELETE else 4
    for spi in p.spis:
        if len(spi) != size:
            raise ValueError(f"Delete of protocol {p.protocol} needs {size}-byte SPIs, got {len(spi)}")
    return _BBH.pack(p.protocol, size, len(p.spis)) + b"".join(p.spis)


def decode_delete(ptype: int, body: bytes, critical: bool, offset: int) -> DeletePayload:
    n = len(body)
    if n < 4:
        raise malformed_at(ptype, offset, f"body of {n} bytes, need at least 4")
    protocol, spi_size, count = _BBH.unpack_from(body)
    if protocol in _NO_SPI_DELETE:
        # Protocol 0 is read like IKE, as charon does (delete_payload.c verify); the IKE layer
        # ignores such a Delete (it names no SA).
        name = "IKE" if protocol == _PROTO_IKE else f"protocol {protocol}"
        if spi_size != 0:
            raise malformed_at(ptype, offset, f"{name} Delete with SPI size {spi_size} (must be 0)")
        if n != 4:
            raise malformed_at(ptype, offset, f"{n - 4} bytes after an {name} Delete")
        return DeletePayload(protocol, (), critical)
    if protocol not in _CHILD_PROTOCOLS:
        raise malformed_at(ptype, offset, f"Delete of unknown protocol {protocol}")
    if spi_size != 4:
        raise malformed_at(ptype, offset, f"{ProtocolId(protocol).name} Delete with SPI size {spi_size} (must be 4)")
    if n != 4 + 4 * count:
        raise malformed_at(ptype, offset, f"{count} SPIs announced, {n - 4} bytes of SPIs present")
    spis = tuple(body[i:i + 4] for i in range(4, n, 4))
    return DeletePayload(protocol, spis, critical)


def encode_vendor(p: VendorIdPayload) -> bytes:
    return p.data


def decode_vendor(ptype: int, body: bytes, critical: bool, offset: int) -> VendorIdPayload:
    return VendorIdPayload(body, critical)


# ---------------------------------------------------------------- TS


def encode_ts(p: TsPayload) -> bytes:
    selectors = p.selectors
    count = len(selectors)
    if not 1 <= count <= 255:
        raise ValueError(f"{count} traffic selectors (1-255 fit in a TS payload)")
    parts = [_B3x.pack(count)]
    for s in selectors:
        if isinstance(s, UnknownTs):
            parts.append(_BBH.pack(s.ts_type, 0, 4 + len(s.data)))
            parts.append(s.data)
            continue
        ts_type, start, end = s.ts_type, s.start_addr, s.end_addr
        whole = _TS_WHOLE.get(ts_type)  # type: ignore[call-overload]
        # The address fields are checked here: struct's "4s" would pad or cut silently.
        if whole is None or len(start) != whole[1] or len(end) != whole[1]:
            raise ValueError(f"traffic selector type {ts_type} with {len(start)}-byte addresses")
        parts.append(whole[0].pack(ts_type, s.ip_protocol, whole[2], s.start_port, s.end_port, start, end))
    return b"".join(parts)


def decode_ts(ptype: int, body: bytes, critical: bool, offset: int) -> TsPayload:
    n = len(body)
    if n < 4:
        raise malformed_at(ptype, offset, f"body of {n} bytes, need at least 4")
    count = body[0]
    if count == 0:
        raise malformed_at(ptype, offset, "no traffic selector")
    pos = 4
    selectors: list[WireTs | UnknownTs] = []
    for i in range(count):
        if n - pos < 4:
            raise malformed_at(ptype, offset, f"selector {i + 1} of {count} truncated")
        ts_type, proto, slen = _BBH.unpack_from(body, pos)
        if slen < 4 or pos + slen > n:
            raise malformed_at(ptype, offset, f"selector {i + 1} length {slen} does not fit")
        want = _TS_LEN.get(ts_type)  # type: ignore[call-overload]
        if want is None:
            selectors.append(UnknownTs(ts_type, body[pos + 4:pos + slen]))
        else:
            if slen != want:
                raise malformed_at(ptype, offset, f"selector {i + 1} of type {ts_type} is {slen} bytes (must be {want})")
            alen = (want - 8) // 2
            _, _, _, sport, eport = _TS_IP.unpack_from(body, pos)
            a = pos + 8
            selectors.append(WireTs(ts_type, proto, sport, eport, body[a:a + alen], body[a + alen:a + 2 * alen]))
        pos += slen
    if pos != n:
        raise malformed_at(ptype, offset, f"{n - pos} bytes after the {count} selectors announced")
    return TsPayload(ptype == _TSI, tuple(selectors), critical)


# ---------------------------------------------------------------- CP, EAP


def encode_cp(p: CpPayload) -> bytes:
    parts = [_B3x.pack(p.cfg_type)]
    for atype, value in p.attributes:
        if not 0 <= atype <= 0x7FFF:
            raise ValueError(f"configuration attribute type {atype} does not fit in 15 bits")
        parts.append(_HH.pack(atype, len(value)))
        parts.append(value)
    return b"".join(parts)


def decode_cp(ptype: int, body: bytes, critical: bool, offset: int) -> CpPayload:
    n = len(body)
    if n < 4:
        raise malformed_at(ptype, offset, f"body of {n} bytes, need at least 4")
    pos = 4
    attrs = []
    while pos < n:
        if n - pos < 4:
            raise malformed_at(ptype, offset, f"attribute header truncated at {offset + 4 + pos}")
        atype, alen = _HH.unpack_from(body, pos)
        if pos + 4 + alen > n:
            raise malformed_at(ptype, offset, f"attribute {atype & 0x7FFF} length {alen} overruns the payload")
        # The top bit is reserved: ignored on receipt (§3.15.1).
        attrs.append((atype & 0x7FFF, body[pos + 4:pos + 4 + alen]))
        pos += 4 + alen
    return CpPayload(body[0], tuple(attrs), critical)


def encode_eap(p: EapPayload) -> bytes:
    return _BBH.pack(p.code, p.identifier, 4 + len(p.data)) + p.data


def decode_eap(ptype: int, body: bytes, critical: bool, offset: int) -> EapPayload:
    n = len(body)
    if n < 4:
        raise malformed_at(ptype, offset, f"body of {n} bytes, need an EAP header")
    code, ident, elen = _BBH.unpack_from(body)
    if elen != n:
        raise malformed_at(ptype, offset, f"EAP length {elen} but {n} bytes in the payload")
    if code in (1, 2) and n < 5:
        raise malformed_at(ptype, offset, "EAP request/response without a type")
    return EapPayload(code, ident, body[4:], critical)


# ---------------------------------------------------------------- SK, SKF, unknown


def encode_sk(p: SkPayload) -> bytes:
    return p.data


def encode_skf(p: SkfPayload) -> bytes:
    return _HH.pack(p.fragment_number, p.total_fragments) + p.data


def decode_skf_fields(ptype: int, body: bytes, offset: int) -> tuple[int, int]:
    if len(body) < 4:
        raise malformed_at(ptype, offset, f"body of {len(body)} bytes, need at least 4")
    number, total = _HH.unpack_from(body)
    if number == 0 or total == 0 or number > total:
        raise malformed_at(ptype, offset, f"fragment {number} of {total}")
    return number, total


def encode_unknown(p: UnknownPayload) -> bytes:
    return p.data


Decoder = Callable[[int, bytes, bool, int], Payload]

DECODERS: dict[int, Decoder] = {
    PayloadType.SA: decode_sa,
    PayloadType.KE: decode_ke,
    PayloadType.IDi: decode_id,
    PayloadType.IDr: decode_id,
    PayloadType.CERT: decode_cert,
    PayloadType.CERTREQ: decode_cert,
    PayloadType.AUTH: decode_auth,
    PayloadType.NONCE: decode_nonce,
    PayloadType.NOTIFY: decode_notify,
    PayloadType.DELETE: decode_delete,
    PayloadType.VENDOR: decode_vendor,
    PayloadType.TSi: decode_ts,
    PayloadType.TSr: decode_ts,
    PayloadType.CP: decode_cp,
    PayloadType.EAP: decode_eap,
}
"""Body decoders by payload type; SK and SKF are handled by the chain walker."""

ENCODERS: dict[type, Callable] = {
    SaPayload: encode_sa,
    KePayload: encode_ke,
    IdPayload: encode_id,
    CertPayload: encode_cert,
    CertReqPayload: encode_cert,
    AuthPayload: encode_auth,
    NoncePayload: encode_nonce,
    NotifyPayload: encode_notify,
    DeletePayload: encode_delete,
    VendorIdPayload: encode_vendor,
    TsPayload: encode_ts,
    CpPayload: encode_cp,
    EapPayload: encode_eap,
    SkPayload: encode_sk,
    SkfPayload: encode_skf,
    UnknownPayload: encode_unknown,
}
"""Body encoders by payload class."""
