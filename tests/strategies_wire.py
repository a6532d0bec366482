"""Hypothesis strategies for the IKEv2 wire codec, reusable by the IKE fuzzers.

Every strategy yields values the codec accepts both ways, so
``decode(encode(x)) == x`` holds for all of them: proposals numbered as
RFC 7296 §3.3.1 wants, SPI sizes matching their protocol, nonces of 16-256
bytes, notify data of the lengths RFCs fix, and so on.
"""

from __future__ import annotations

from hypothesis import strategies as st

from engine.wire import codec
from engine.wire.constants import (
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    ExchangeType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TsType,
)
from engine.wire.message import encode_message
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

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
crit = st.booleans()


def blob(max_size: int = 64, min_size: int = 0) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size)


# -- SA ---------------------------------------------------------------------------

transform_attribute = st.one_of(
    st.tuples(st.integers(0, 0x7FFF).filter(lambda t: t != codec.ATTR_KEY_LENGTH), u16),
    st.tuples(st.integers(0, 0x7FFF).filter(lambda t: t != codec.ATTR_KEY_LENGTH), blob(16)),
)

transforms = st.builds(
    Transform,
    type=st.one_of(st.integers(1, 5), u8),
    id=st.one_of(st.sampled_from([12, 20, 28, 5, 12, 14, 19, 31, 0, 1]), u16),
    key_length=st.one_of(st.none(), st.sampled_from([128, 192, 256]), u16),
    attributes=st.lists(transform_attribute, max_size=2).map(tuple),
)


@st.composite
def proposal_body(draw, number: int) -> Proposal:
    protocol = draw(st.sampled_from([1, 2, 3, 1, 3, 0, 7]))
    if protocol == ProtocolId.IKE:
        spi = draw(st.sampled_from([b"", b""]) | blob(8, 8))
    elif protocol in (ProtocolId.AH, ProtocolId.ESP):
        spi = draw(blob(4, 4))
    else:
        spi = draw(blob(8))
    return Proposal(number, protocol, spi, tuple(draw(st.lists(transforms, max_size=6))))


@st.composite
def sa_payloads(draw) -> SaPayload:
    count = draw(st.integers(1, 4))
    if count == 1:
        proposals = [draw(proposal_body(draw(st.integers(1, 255))))]
    else:
        proposals = [draw(proposal_body(i)) for i in range(1, count + 1)]
    return SaPayload(tuple(proposals), draw(crit))


# -- simple payloads ------------------------------------------------------------------

ke_payloads = st.builds(KePayload, group=st.one_of(st.sampled_from([14, 19, 31]), u16), data=blob(300), critical=crit)


@st.composite
def id_payloads(draw) -> IdPayload:
    id_type = draw(st.one_of(st.sampled_from([1, 2, 3, 5, 9, 11, 13]), u8))
    size = {1: 4, 5: 16}.get(id_type)
    data = draw(blob(size, size) if size is not None else blob(80))
    return IdPayload(draw(st.booleans()), id_type, data, draw(crit))


cert_payloads = st.builds(CertPayload, encoding=u8, data=blob(200), critical=crit)
certreq_payloads = st.builds(CertReqPayload, encoding=u8, data=blob(60), critical=crit)
auth_payloads = st.builds(AuthPayload, method=st.one_of(st.sampled_from([1, 2, 9, 14]), u8), data=blob(100), critical=crit)
nonce_payloads = st.builds(NoncePayload, data=blob(256, 16), critical=crit)
vendor_payloads = st.builds(VendorIdPayload, data=blob(40), critical=crit)

_NOTIFY_TYPES = st.one_of(st.sampled_from([int(t) for t in NotifyType]), u16)


@st.composite
def notify_payloads(draw) -> NotifyPayload:
    ntype = draw(_NOTIFY_TYPES)
    protocol = draw(st.sampled_from([0, 1, 2, 3, 0]))
    if protocol in (ProtocolId.AH, ProtocolId.ESP):
        spi = draw(st.sampled_from([b""]) | blob(4, 4))
    else:
        spi = draw(st.sampled_from([b""]) | blob(16))
    bounds = codec._NOTIFY_DATA_LEN.get(ntype)
    if bounds is not None:
        data = draw(blob(bounds[1], bounds[0]))
    elif ntype == NotifyType.SIGNATURE_HASH_ALGORITHMS:
        data = b"".join(x.to_bytes(2, "big") for x in draw(st.lists(st.integers(1, 5), max_size=5)))
    else:
        data = draw(blob(40))
    return NotifyPayload(ntype, protocol, spi, data, draw(crit))


@st.composite
def delete_payloads(draw) -> DeletePayload:
    protocol = draw(st.sampled_from([1, 2, 3]))
    spis = () if protocol == ProtocolId.IKE else tuple(draw(st.lists(blob(4, 4), max_size=12)))
    return DeletePayload(protocol, spis, draw(crit))


# -- traffic selectors -----------------------------------------------------------------


@st.composite
def wire_ts(draw) -> WireTs:
    ts_type = draw(st.sampled_from([TsType.IPV4_ADDR_RANGE, TsType.IPV6_ADDR_RANGE]))
    n = 4 if ts_type == TsType.IPV4_ADDR_RANGE else 16
    return WireTs(int(ts_type), draw(u8), draw(u16), draw(u16), draw(blob(n, n)), draw(blob(n, n)))


unknown_ts = st.builds(UnknownTs, ts_type=u8.filter(lambda t: t not in (7, 8)), data=blob(20))


@st.composite
def ts_payloads(draw, allow_unknown: bool = True) -> TsPayload:
    item = st.one_of(wire_ts(), unknown_ts) if allow_unknown else wire_ts()
    selectors = tuple(draw(st.lists(item, min_size=1, max_size=6)))
    return TsPayload(draw(st.booleans()), selectors, draw(crit))


# -- CP, EAP, SK, SKF ---------------------------------------------------------------------

cp_payloads = st.builds(
    CpPayload,
    cfg_type=st.one_of(st.integers(1, 4), u8),
    attributes=st.lists(st.tuples(st.integers(0, 0x7FFF), blob(20)), max_size=6).map(tuple),
    critical=crit,
)


@st.composite
def eap_payloads(draw) -> EapPayload:
    code = draw(st.one_of(st.integers(1, 4), u8))
    data = draw(blob(60, 1)) if code in (1, 2) else draw(st.sampled_from([b""]) | blob(20))
    return EapPayload(code, draw(u8), data, draw(crit))


sk_payloads = st.builds(SkPayload, next_payload=st.sampled_from([0, 35, 36, 41, 33, 42]) | u8, data=blob(200), critical=crit)


@st.composite
def skf_payloads(draw) -> SkfPayload:
    total = draw(st.integers(1, 0xFFFF))
    number = draw(st.integers(1, total))
    nxt = draw(st.sampled_from([35, 0]) | u8) if number == 1 else 0
    return SkfPayload(nxt, number, total, draw(blob(200)), draw(crit))


_KNOWN_TYPES = set(codec.DECODERS) | {PayloadType.SK, PayloadType.SKF}
unknown_payloads = st.builds(
    UnknownPayload, type=u8.filter(lambda t: t not in _KNOWN_TYPES and t != 0), data=blob(40), critical=st.just(False)
)

# -- messages ---------------------------------------------------------------------------

plain_payloads = st.one_of(
    sa_payloads(), ke_payloads, id_payloads(), cert_payloads, certreq_payloads, auth_payloads, nonce_payloads,
    notify_payloads(), delete_payloads(), vendor_payloads, ts_payloads(), cp_payloads, eap_payloads(),
)
"""Any payload that may appear in a plaintext chain (no SK/SKF, no unknown)."""

encrypted_payloads = st.one_of(sk_payloads, skf_payloads())

spis = blob(8, 8)
exchanges = st.one_of(st.sampled_from([int(e) for e in ExchangeType]), u8)
flags = st.sampled_from([0, FLAG_INITIATOR, FLAG_RESPONSE, FLAG_INITIATOR | FLAG_RESPONSE]) | u8


@st.composite
def payload_lists(draw, max_size: int = 8) -> list:
    """A payload chain: plain payloads, maybe ending with SK or SKF."""
    items = draw(st.lists(plain_payloads, max_size=max_size))
    if draw(st.booleans()):
        items.append(draw(encrypted_payloads))
    return items


@st.composite
def message_args(draw, max_payloads: int = 8) -> tuple:
    """(exchange, mid, spi_i, spi_r, flags, payloads) for encode_message."""
    return (draw(exchanges), draw(u32), draw(spis), draw(spis), draw(flags), draw(payload_lists(max_payloads)))


@st.composite
def encoded_messages(draw, max_payloads: int = 8) -> bytes:
    """A valid encoded IKE message of up to ``max_payloads`` plain payloads (and maybe SK/SKF)."""
    return encode_message(*draw(message_args(max_payloads)))
