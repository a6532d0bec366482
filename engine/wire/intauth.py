"""The octets of one IKE_INTERMEDIATE message that IntAuth covers (RFC 9242 §3.3.2).

    IntAuth_[i|r]N_A = the IKE header, the unencrypted payloads before SK, and the
                       SK payload's generic header
    IntAuth_[i|r]N_P = the inner payloads as plaintext (no IV, padding, pad length, ICV)

with the IKE header's Length and the SK header's Payload Length rewritten as if
the message held exactly A | P. A fragmented message (RFC 7383) counts as its
reassembled, unfragmented form: the header's Next Payload is SK (not SKF), the
SK header's Next Payload is the first inner payload (from fragment 1), and P is
the concatenated plaintext of all fragments. The Message ID, flags and SPIs
are the message's own.

strongSwan (message.c get_plain) assumes IKE_INTERMEDIATE carries no
unencrypted payloads, and so do we when sending: libreswan and strongSwan
disagree on them (libreswan issue 2510). `int_auth_octets` follows the RFC.
"""

from __future__ import annotations

from typing import Iterable

from engine.wire.message import encode_sk_message
from engine.wire.payloads import Payload


def int_auth_octets(exchange: int, mid: int, spi_i: bytes, spi_r: bytes, flags: int, inner_first_type: int,
                    inner_plaintext: bytes, unencrypted_payloads: Iterable[Payload] = ()) -> bytes:
    """IntAuth_[i|r]N_A | IntAuth_[i|r]N_P of one message, sent or received.

    ``inner_plaintext`` is the encoded inner payload chain exactly as encrypted
    (sent) or as decrypted without padding (received; for fragments, all of
    them in order), ``inner_first_type`` the type of its first payload.
    """
    inner_plaintext = bytes(inner_plaintext)
    prefix = encode_sk_message(exchange, mid, spi_i, spi_r, flags, inner_first_type, unencrypted_payloads,
                               body_len=len(inner_plaintext))
    return prefix + inner_plaintext
