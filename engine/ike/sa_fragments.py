"""An IKE SA's inbound protection (RFC 7296 §3.14) and fragment reassembly
(RFC 7383): decrypting SK, collecting SKF fragments per Message ID, and the
max_packet limit on what reassembly may hold. Functions of the IKE SA."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.ike.errors import RemoteError
from engine.ike.protection import MAX_FRAGMENTS, Reassembly
from engine.ike.text import exchange_name
from engine.wire.constants import ExchangeType
from engine.wire.message import Message, decode_payloads
from engine.wire.payloads import SkfPayload, SkPayload

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_IKE_INTERMEDIATE = ExchangeType.IKE_INTERMEDIATE
_IKE_SA_INIT = ExchangeType.IKE_SA_INIT

if TYPE_CHECKING:
    from engine.ike.sa import IkeSa


def open_message(sa: IkeSa, message: Message) -> tuple[list | None, int, int]:
    """Decrypt (SK) or reassemble (SKF); returns (payloads or None, wire length, fragments)."""
    h = message.header
    last = message.payloads[-1] if message.payloads else None
    if h.exchange == _IKE_SA_INIT and not isinstance(last, (SkPayload, SkfPayload)):
        return list(message.payloads), len(message.raw), 1
    if sa.sk is None:
        raise RemoteError(None, "encrypted message before keys exist")
    if isinstance(last, SkPayload):
        first, inner = sa.sk.open(message)
        if h.exchange == _IKE_INTERMEDIATE:
            sa.intermediate_plain = (first, inner)
        return decode_payloads(first, inner), len(message.raw), 1
    if isinstance(last, SkfPayload):
        if not (1 <= last.fragment_number <= last.total_fragments <= MAX_FRAGMENTS):
            raise RemoteError(None, "bad fragment numbering")
        skf, plaintext = sa.sk.open_fragment(message)
        key = (h.response, h.mid)
        r = sa.reassembly.get(key)
        if r is None:
            r = sa.reassembly[key] = Reassembly(h.mid, skf.total_fragments)
        if not r.add(skf, plaintext, len(message.raw)):
            if r.size() > sa.host.engine.max_packet:
                # Reassembled messages obey the same limit as datagrams.
                del sa.reassembly[key]
                raise RemoteError(None, f"fragments exceed max_packet ({sa.host.engine.max_packet} bytes)")
            return None, 0, 0
        del sa.reassembly[key]
        first, inner = r.assemble()
        if len(inner) > sa.host.engine.max_packet:
            raise RemoteError(None, f"reassembled message exceeds max_packet ({sa.host.engine.max_packet} bytes)")
        if h.exchange == ExchangeType.IKE_INTERMEDIATE:
            sa.intermediate_plain = (first, inner)
        return decode_payloads(first, inner), r.length, r.total
    raise RemoteError(None, f"unprotected {exchange_name(h.exchange)}")


def drop_reassembly(sa: IkeSa, response: bool) -> None:
    """Fragments of messages that can no longer be the one we expect."""
    for key in [k for k in sa.reassembly if k[0] == response]:
        del sa.reassembly[key]
