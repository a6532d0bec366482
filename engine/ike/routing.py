"""A datagram to the IKE SA it belongs to (RFC 7296 §2.1, §3.1), read from the header's SPIs
without decoding the rest: IKE_SA_INIT requests go to the front door, everything else to the
SA our SPI names; a request on the IKE SA our rekey is creating hurries that rekey, a
retransmitted DELETE of an SA already gone gets its kept answer, other unknown SPIs go to the
front door's rate-limited notice. Bound in endpoint.py as IkeEndpoint.receive_datagram.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from engine.ike import sa_timers
from engine.ike.host import Addr
from engine.ike.registry import ZERO_SPI
from engine.wire.constants import FLAG_INITIATOR, FLAG_RESPONSE, IKE_HEADER_SIZE, NON_ESP_MARKER, ExchangeType
from engine.wire.errors import WireError
from engine.wire.message import decode_header, decode_message

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_IKE_SA_INIT = ExchangeType.IKE_SA_INIT

if TYPE_CHECKING:
    from engine.ike.endpoint import IkeEndpoint

log = logging.getLogger("engine.ike")
_ROUTE = struct.Struct("!8s8sBBBBII")
"""The IKE header (RFC 7296 §3.1): SPIs, next payload, version, exchange, flags, MID, length."""


def receive_datagram(ep: IkeEndpoint, data: bytes, local: Addr, remote: Addr, now: float) -> None:
    """An IKE message (non-ESP marker already removed) that arrived on ``local`` from ``remote``."""
    if len(data) > ep.engine.max_packet:
        ep.count("oversize")
        return
    if len(data) < IKE_HEADER_SIZE:
        ep.count("malformed")
        return
    # The fields that route the datagram, read without building a header
    # (decode_message builds the one the SA uses).
    spi_i, spi_r, _, version, exchange, flags, mid, _ = _ROUTE.unpack_from(data)
    if exchange == _IKE_SA_INIT and not flags & FLAG_RESPONSE:
        try:
            header = decode_header(data)
        except WireError:
            ep.count("malformed")
            return
        ep.front_door.receive(data, header, local, remote, now)
        return
    # Our SPI: the responder's if the peer is the original initiator.
    ours = spi_r if flags & FLAG_INITIATOR else spi_i
    sa = ep.registry.get(ours) if ours != ZERO_SPI else None
    if sa is None:
        rekeyed = ep.registry.rekeying_to(ours) if not flags & FLAG_RESPONSE else None
        if rekeyed is not None:
            # A request on the IKE SA our rekey creates: the peer has it, our answer was lost.
            ep.count("request_before_rekey_answer")
            sa_timers.hurry(rekeyed, now)
            return
        kept = ep.registry.kept_answer(ours, now) if not flags & FLAG_RESPONSE else None
        if kept is not None and kept.answers(spi_i, spi_r, mid, remote[0]):
            kept.replays += 1
            ep.count("retransmitted_request")
            marker = local[1] == ep.engine.natt_port
            for d in kept.datagrams:
                ep.send(NON_ESP_MARKER + d if marker else d, local, remote)
            return
        if version >> 4 == 2:
            ep.front_door.unknown_spi((spi_i, spi_r), exchange, flags, mid, local, remote, now)
        else:
            ep.count("unknown_spi")
        return
    if exchange != _IKE_SA_INIT and sa.spi_r != spi_r and sa.spi_i != spi_i:
        ep.count("unknown_spi")
        return
    try:
        message = decode_message(data)
    except WireError as exc:
        ep.count("malformed")
        log.debug("malformed message from %s:%d: %s", remote[0], remote[1], exc)
        return
    sa.receive(message, local, remote, now)
    ep.scheduler.touch(sa)
