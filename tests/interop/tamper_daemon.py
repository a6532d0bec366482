"""Test-only: our daemon, but the first empty INFORMATIONAL request (a DPD)
the peer sends is changed on its way in: a critical payload of an unknown
type is added and the message re-encrypted with the peer's own keys, as if
the peer (a newer implementation) had sent it. The peer keeps its Message
IDs: the answer it gets is the answer to its own request, so the test sees
whether our daemon expects the right Message ID afterwards (RFC 7296
§2.21.2, §3.2). The product has no such hook.

With IPSEC_CONSOLE_TAMPER_KIND=malformed the payload added is a Notify of one
byte instead: a request that cannot be decoded, which is answered with
INVALID_SYNTAX (RFC 7296 §2.21.3: fatal to the IKE SA on both ends).

usage: python -m tests.interop.tamper_daemon DAEMON-ARGS...   (as `console daemon`)
Writes the tampered Message ID to $IPSEC_CONSOLE_TAMPER_RECORD.
"""

from __future__ import annotations

import os
import sys

from console.cli import main
from engine.ike.endpoint import IkeEndpoint
from engine.ike.registry import ZERO_SPI
from engine.wire.constants import FLAG_INITIATOR, FLAG_RESPONSE, ExchangeType, PayloadType
from engine.wire.message import decode_message, decode_payloads
from engine.wire.payloads import UnknownPayload

UNKNOWN_TYPE = 200
RECORD = os.environ.get("IPSEC_CONSOLE_TAMPER_RECORD", "")
MALFORMED = os.environ.get("IPSEC_CONSOLE_TAMPER_KIND", "critical") == "malformed"
_original = IkeEndpoint.receive_datagram
_done = False


def _sealed_as_peer(sa, exchange: int, mid: int, flags: int, payloads: list) -> bytes:
    """Encrypt with the keys the peer sends with (our inbound direction). Only
    CBC proposals are used here: GCM's counter IVs of the two ends would collide."""
    codec = sa.sk
    assert not codec.aead, "tamper_daemon needs a CBC+HMAC IKE proposal"
    codec.out, codec.inn = codec.inn, codec.out
    try:
        (data,) = codec.seal(exchange, mid, sa.spi_i, sa.spi_r, flags, payloads)
    finally:
        codec.out, codec.inn = codec.inn, codec.out
    return data


def receive_datagram(self: IkeEndpoint, data: bytes, local, remote, now: float) -> None:
    global _done
    if not _done and len(data) >= 28:
        message = decode_message(data)
        h = message.header
        ours = h.spi_r if h.flags & FLAG_INITIATOR else h.spi_i
        sa = self.registry.get(ours) if ours != ZERO_SPI else None
        if (sa is not None and sa.sk is not None and h.exchange == ExchangeType.INFORMATIONAL
                and not h.flags & FLAG_RESPONSE):
            first, inner = sa.sk.open(message)
            payloads = decode_payloads(first, inner)
            if not payloads:  # a DPD: the peer sends nothing else that is empty
                payloads = [UnknownPayload(PayloadType.NOTIFY, b"\x00") if MALFORMED else
                            UnknownPayload(UNKNOWN_TYPE, b"from a newer peer", critical=True)]
                data = _sealed_as_peer(sa, h.exchange, h.mid, h.flags, payloads)
                _done = True
                if RECORD:
                    with open(RECORD, "w") as f:
                        f.write(str(h.mid))
    _original(self, data, local, remote, now)


IkeEndpoint.receive_datagram = receive_datagram

if __name__ == "__main__":
    sys.argv[0] = "ipsec-console"
    sys.exit(main(["daemon", *sys.argv[1:]]))
