"""IKEv2 messages: the header (RFC 7296 §3.1), the payload chain (§3.2) and the
framing of the Encrypted payloads SK (§3.14) and SKF (RFC 7383 §2.5).

Sans-IO and pure: bytes in, values out. SK bodies stay opaque; the IKE layer
checks integrity on the raw bytes, decrypts, then calls ``decode_payloads`` on
the plaintext with the SK payload's ``next_payload``.

Where the integrity check starts and ends:
  * AEAD (RFC 5282): associated data = ``raw[:message.sk_aad_end]`` (header,
    unencrypted payloads, the SK/SKF generic header), then IV | ct | tag.
  * Non-AEAD: the ICV covers ``raw[:-icv_len]``.
``encode_sk_message``/``encode_skf_prefix`` return exactly ``raw[:sk_aad_end]``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable

from engine.frozen import fast_init_module
from engine.wire.codec import DECODERS, ENCODERS, decode_skf_fields, malformed_at
from engine.wire.constants import (
    CRITICAL_BIT,
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    GENERIC_HEADER_SIZE,
    IKE_HEADER_SIZE,
    IKE_VERSION,
    PayloadType,
)
from engine.wire.errors import InvalidMajorVersion, MalformedMessage, UnsupportedCriticalPayload
from engine.wire.payloads import Payload, SkfPayload, SkPayload, UnknownPayload
from engine.wire.shared import SHARED_TABLES, decode_shared

_HEADER = struct.Struct("!8s8sBBBBII")
_GENERIC = struct.Struct("!BBH")
_SKF_FIELDS = struct.Struct("!HH")
_SK = PayloadType.SK
_SKF = PayloadType.SKF
_MAX_PAYLOAD = 0xFFFF
_NONE = int(PayloadType.NONE)


@dataclass(frozen=True)
class IkeHeader:
    """The fixed IKE header (RFC 7296 §3.1)."""

    spi_i: bytes
    """Initiator's IKE SPI, 8 bytes."""
    spi_r: bytes
    """Responder's IKE SPI, 8 bytes (zero in the first IKE_SA_INIT request)."""
    next_payload: int
    """Type of the first payload."""
    major: int
    """Major version (2)."""
    minor: int
    """Minor version (0; ignored on receipt)."""
    exchange: int
    """Exchange type (ExchangeType)."""
    flags: int
    """FLAG_INITIATOR | FLAG_VERSION | FLAG_RESPONSE; other bits ignored."""
    mid: int
    """Message ID."""
    length: int
    """Length of the whole message in octets, as the header says."""

    @property
    def initiator(self) -> bool:
        """The I flag: sent by the original initiator of the IKE SA."""
        return bool(self.flags & FLAG_INITIATOR)

    @property
    def response(self) -> bool:
        """The R flag: this message is a response."""
        return bool(self.flags & FLAG_RESPONSE)

    def encode(self) -> bytes:
        return _HEADER.pack(self.spi_i, self.spi_r, self.next_payload, (self.major << 4) | (self.minor & 0xF),
                            self.exchange, self.flags, self.mid, self.length)


@dataclass(frozen=True)
class Message:
    """A decoded IKE message; SK/SKF payloads still encrypted."""

    header: IkeHeader
    """The IKE header."""
    payloads: tuple[Payload, ...]
    """The payloads in order; an SkPayload or SkfPayload can only be the last."""
    raw: bytes
    """The message as received (without the RFC 3948 non-ESP marker)."""
    sk_aad_end: int | None = None
    """Offset in ``raw`` where the SK/SKF body (IV...) starts; None without SK/SKF."""

    @property
    def encrypted(self) -> SkPayload | SkfPayload | None:
        """The SK or SKF payload, if the message has one."""
        if self.payloads and isinstance(self.payloads[-1], (SkPayload, SkfPayload)):
            return self.payloads[-1]  # type: ignore[return-value]
        return None


# ---------------------------------------------------------------- header


def decode_header(data: bytes) -> IkeHeader:
    """Read the IKE header at the start of ``data`` (the rest is not examined).

    Raises MalformedMessage when fewer than 28 bytes are present or the length
    field is below 28, InvalidMajorVersion (carrying the header) when the major
    version is not 2.
    """
    if len(data) < IKE_HEADER_SIZE:
        raise MalformedMessage(f"IKE header truncated: {len(data)} bytes, need {IKE_HEADER_SIZE}", offset=0, payload="HDR")
    spi_i, spi_r, nxt, version, exchange, flags, mid, length = _HEADER.unpack_from(data)
    header = IkeHeader(spi_i, spi_r, nxt, version >> 4, version & 0xF, exchange, flags, mid, length)
    if header.major != 2:
        raise InvalidMajorVersion(header.major, header)
    if length < IKE_HEADER_SIZE:
        raise MalformedMessage(f"IKE header length {length} is below {IKE_HEADER_SIZE}", offset=24, payload="HDR")
    return header


# ---------------------------------------------------------------- payload chain


def _walk(first_type: int, data: bytes, pos: int, end: int, offset_base: int, keep_unknown: bool):
    """Decode the chain in data[pos:end]; returns (payloads, offset of the SK/SKF body or None)."""
    payloads: list[Payload] = []
    append = payloads.append
    ptype = first_type
    unpack = _GENERIC.unpack_from
    decoders = DECODERS
    shareable = SHARED_TABLES
    while ptype:
        if end - pos < GENERIC_HEADER_SIZE:
            raise malformed_at(ptype, offset_base + pos, f"generic header truncated ({end - pos} bytes left)")
        nxt, flags, plen = unpack(data, pos)
        if plen < GENERIC_HEADER_SIZE or pos + plen > end:
            raise malformed_at(ptype, offset_base + pos, f"payload length {plen} does not fit ({end - pos} bytes left)")
        critical = (flags & CRITICAL_BIT) != 0
        if ptype == _SK or ptype == _SKF:
            here = offset_base + pos
            if pos + plen != end:
                raise malformed_at(ptype, here, f"{end - pos - plen} bytes follow the encrypted payload (it must be last)")
            body_at = pos + GENERIC_HEADER_SIZE
            if ptype == _SK:
                append(SkPayload(nxt, data[body_at:end], critical))
            else:
                number, total = decode_skf_fields(ptype, data[body_at:body_at + 4], here)
                body_at += 4
                append(SkfPayload(nxt, number, total, data[body_at:end], critical))
            return payloads, body_at
        body = data[pos + GENERIC_HEADER_SIZE:pos + plen]
        entry = shareable.get(ptype)
        if entry is not None and plen - GENERIC_HEADER_SIZE <= entry[0] and not critical:
            # The peer's offer, identities, selectors... as in its last message: one frozen value.
            table = entry[1]
            payload = table.get(body)
            append(payload if payload is not None else decode_shared(ptype, body, offset_base + pos, table))
        else:
            decoder = decoders.get(ptype)
            if decoder is not None:
                append(decoder(ptype, body, critical, offset_base + pos))
            elif critical:
                raise UnsupportedCriticalPayload(ptype, offset_base + pos)
            elif keep_unknown:
                append(UnknownPayload(ptype, body, critical))
        pos += plen
        ptype = nxt
    if pos != end:
        raise MalformedMessage(f"{end - pos} bytes after the last payload at offset {offset_base + pos}",
                               offset=offset_base + pos)
    return payloads, None


def decode_payloads(first_type: int, data: bytes, offset_base: int = 0, *, keep_unknown: bool = False) -> list[Payload]:
    """Decode a payload chain starting with ``first_type`` that fills ``data`` exactly.

    Non-critical unknown payloads are skipped (RFC 7296 §2.5), or kept as
    UnknownPayload with ``keep_unknown``; a critical unknown one raises
    UnsupportedCriticalPayload. ``offset_base`` is added to offsets in errors
    (e.g. where the decrypted SK body sat in the message). An SK/SKF payload
    ends the chain wherever it appears; inside a decrypted SK body it is the
    IKE layer's to refuse.
    """
    return _walk(first_type, data, 0, len(data), offset_base, keep_unknown)[0]


def _chain(items: Iterable[Payload], parts: list) -> tuple[int, int]:
    """Append each payload's generic header and body to ``parts``; returns (the first's type,
    the bytes appended).

    One pass: a payload's header and body are appended once the next payload's type is known.
    """
    append = parts.append
    pack = _GENERIC.pack
    table = _ENCODE
    first = _NONE
    body = sealed = None
    flags = length = total = 0
    for p in items:
        if sealed is not None:
            raise ValueError(f"{type(sealed).__name__} must be the last payload")
        encoder, ptype = table[type(p)]
        if ptype is None:
            ptype = p.payload_type
        if body is None:
            first = ptype
        else:
            append(pack(ptype, flags, length))
            append(body)
        body = encoder(p)
        length = GENERIC_HEADER_SIZE + len(body)
        if length > _MAX_PAYLOAD:
            raise ValueError(f"{type(p).__name__} of {length} bytes exceeds the 65535-byte payload limit")
        total += length
        flags = CRITICAL_BIT if p.critical else 0
        if ptype == _SK or ptype == _SKF:
            sealed = p
    if body is not None:
        append(pack(_NONE if sealed is None else sealed.next_payload, flags, length))
        append(body)
    return first, total


def encode_payloads(payloads: Iterable[Payload]) -> tuple[int, bytes]:
    """Chain payloads: returns (type of the first, bytes). SK/SKF may only be last."""
    parts: list = []
    first, _ = _chain(payloads, parts)
    return first, b"".join(parts)


# ---------------------------------------------------------------- messages


def _check_spis(spi_i: bytes, spi_r: bytes) -> None:
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise ValueError(f"IKE SPIs must be 8 bytes, got {len(spi_i)} and {len(spi_r)}")


def encode_message(exchange: int, mid: int, spi_i: bytes, spi_r: bytes, flags: int,
                   payloads: Iterable[Payload]) -> bytes:
    """A whole IKE message (header with its final length, then the payloads)."""
    if len(spi_i) != 8 or len(spi_r) != 8:
        _check_spis(spi_i, spi_r)
    parts: list = [b""]
    first, length = _chain(payloads, parts)
    parts[0] = _HEADER.pack(spi_i, spi_r, first, IKE_VERSION, exchange, flags, mid, IKE_HEADER_SIZE + length)
    return b"".join(parts)


def decode_message(data: bytes, *, header: IkeHeader | None = None) -> Message:
    """Decode a whole IKE message (without the non-ESP marker).

    The header length must equal ``len(data)``. SK and SKF can only be the
    last payload; ``Message.sk_aad_end`` tells where their body starts.
    Raises MalformedMessage, UnsupportedCriticalPayload or InvalidMajorVersion.
    ``header``: decode_header(data) when the caller already has it (the endpoint
    routes an IKE_SA_INIT request on it), so it is not decoded twice.
    """
    if type(data) is not bytes:
        data = bytes(data)
    if header is None:
        header = decode_header(data)
    if header.length != len(data):
        raise MalformedMessage(f"IKE header says {header.length} bytes, datagram has {len(data)}",
                               offset=24, payload="HDR")
    payloads, sk_at = _walk(header.next_payload, data, IKE_HEADER_SIZE, len(data), 0, False)
    return Message(header, tuple(payloads), data, sk_at)


def encode_sk_message(exchange: int, mid: int, spi_i: bytes, spi_r: bytes, flags: int, inner_first_type: int,
                      unencrypted_payloads: Iterable[Payload] = (), *, body_len: int) -> bytes:
    """The bytes before an SK body: the header (final length), unencrypted payloads, SK's generic header.

    The IKE layer appends IV | ciphertext | ICV of exactly ``body_len`` bytes;
    the returned prefix is the AEAD associated data (RFC 5282 §5.1).
    """
    if len(spi_i) != 8 or len(spi_r) != 8:
        _check_spis(spi_i, spi_r)
    sk_len = GENERIC_HEADER_SIZE + body_len
    if body_len < 0 or sk_len > _MAX_PAYLOAD:
        raise ValueError(f"SK body of {body_len} bytes does not fit a payload")
    sk_header = _GENERIC.pack(inner_first_type, 0, sk_len)
    items = list(unencrypted_payloads) if unencrypted_payloads else ()
    if not items:
        return _HEADER.pack(spi_i, spi_r, _SK, IKE_VERSION, exchange, flags, mid,
                            IKE_HEADER_SIZE + sk_len) + sk_header
    if any(isinstance(p, (SkPayload, SkfPayload)) for p in items):
        raise ValueError("unencrypted payloads cannot contain SK or SKF")
    # Chain the unencrypted payloads to a placeholder SK so the last one points at SK.
    parts: list = [b""]
    first, length = _chain([*items, SkPayload(inner_first_type, b"")], parts)
    parts[-2] = sk_header  # the placeholder's header, with the real length
    parts[0] = _HEADER.pack(spi_i, spi_r, first, IKE_VERSION, exchange, flags, mid,
                            IKE_HEADER_SIZE + length + body_len)
    return b"".join(parts)


def encode_skf_prefix(exchange: int, mid: int, spi_i: bytes, spi_r: bytes, flags: int, fragment_number: int,
                      total_fragments: int, inner_first_type: int, body_len: int) -> bytes:
    """The bytes before one SKF body (RFC 7383 §2.5): header, SKF generic header, numbers.

    ``inner_first_type`` is written in fragment 1 only; the others carry 0.
    The returned prefix is the AEAD associated data of this fragment.
    """
    _check_spis(spi_i, spi_r)
    if not 1 <= fragment_number <= total_fragments <= 0xFFFF:
        raise ValueError(f"fragment {fragment_number} of {total_fragments}")
    skf_len = GENERIC_HEADER_SIZE + 4 + body_len
    if body_len < 0 or skf_len > _MAX_PAYLOAD:
        raise ValueError(f"SKF body of {body_len} bytes does not fit a payload")
    nxt = inner_first_type if fragment_number == 1 else PayloadType.NONE
    length = IKE_HEADER_SIZE + skf_len
    return (_HEADER.pack(spi_i, spi_r, _SKF, IKE_VERSION, exchange, flags, mid, length)
            + _GENERIC.pack(nxt, 0, skf_len) + _SKF_FIELDS.pack(fragment_number, total_fragments))


_ENCODE: dict[type, tuple] = {cls: (encoder, cls.__dict__.get("PAYLOAD_TYPE"))
                               for cls, encoder in ENCODERS.items()}
"""Encoder and fixed payload type (None: the ``payload_type`` property decides) by class."""

fast_init_module(globals())  # built per message: see engine.frozen
