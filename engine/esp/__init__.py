"""Sans-IO ESP (RFC 4303) and AH (RFC 4302) SAs: encapsulation, sequence
numbers, ESN, anti-replay, lifetimes and counters.

Typical use by a datapath::

    sad = Sad()
    inbound, outbound = sad.install_event(child_sa_installed)
    wire = outbound.protect(ip_packet, now)          # -> send
    inner = sad.unprotect_esp(esp_payload, now)      # <- received; raises EspDrop
    while (ev := sad.next_event()) is not None: ...  # RekeyRequested, PacketSample
"""

from engine.esp.ah import AhInboundSa, AhOutboundSa
from engine.esp.errors import DROP_REASONS, EspDrop, EspError, SaExpired, TransportFragment
from engine.esp.esp import EspOutboundSa
from engine.esp.esp_inbound import EspInboundSa
from engine.esp.sa import InboundSa, Lifetime, OutboundSa
from engine.esp.sad import Sad, SaConfigError, sa_pair_from_event

__all__ = [
    "AhInboundSa", "AhOutboundSa", "DROP_REASONS", "EspDrop", "EspError", "EspInboundSa",
    "EspOutboundSa", "InboundSa", "Lifetime", "OutboundSa", "Sad", "SaConfigError", "SaExpired",
    "TransportFragment", "sa_pair_from_event",
]
