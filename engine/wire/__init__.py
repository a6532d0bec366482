"""IKEv2 message codec (RFC 7296 §3, RFC 7383 SKF, RFC 3948 framing).

Sans-IO and pure. ``decode_message(bytes) -> Message``; SK bodies are never
decrypted here: the IKE layer checks integrity over ``raw[:sk_aad_end]`` /
``raw[:-icv_len]``, decrypts, then ``decode_payloads(sk.next_payload, plain)``.
All decoding errors are ``WireError`` subclasses.
"""

from engine.wire.buffer import Buffer
from engine.wire.errors import (
    BufferReadError,
    InvalidMajorVersion,
    MalformedMessage,
    UnsupportedCriticalPayload,
    WireError,
)
from engine.wire.message import (
    IkeHeader,
    Message,
    decode_header,
    decode_message,
    decode_payloads,
    encode_message,
    encode_payloads,
    encode_sk_message,
    encode_skf_prefix,
)
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

__all__ = [
    "AuthPayload", "Buffer", "BufferReadError", "CertPayload", "CertReqPayload", "CpPayload",
    "DeletePayload", "EapPayload", "IdPayload", "IkeHeader", "InvalidMajorVersion", "KePayload",
    "MalformedMessage", "Message", "NoncePayload", "NotifyPayload", "Payload", "Proposal", "SaPayload",
    "SkPayload", "SkfPayload", "Transform", "TsPayload", "UnknownPayload", "UnknownTs",
    "UnsupportedCriticalPayload", "VendorIdPayload", "WireError", "WireTs", "decode_header",
    "decode_message", "decode_payloads", "encode_message", "encode_payloads", "encode_sk_message",
    "encode_skf_prefix",
]
