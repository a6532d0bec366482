"""ESP/AH datapath corner cases found in review (RFC 4303/4302/4301 against what the code did)."""

from __future__ import annotations

import pytest

from engine.esp import EspDrop, Sad
from tests.engine.test_esp_sad import events


@pytest.mark.parametrize("size", [65515, 65516, 65527])
def test_an_oversized_datagram_for_an_ipv4_transport_sa_is_a_counted_drop(size):
    # SPIs are looked up whatever socket a datagram came in on: an ESP-in-UDP datagram on the IPv6
    # NAT-T socket can be up to 65527 bytes and name an IPv4 transport-mode SA. The IPv4 header the
    # SAD rebuilds for it cannot hold that much: a drop (main raised IpError out of the datapath,
    # and the runtime's reader lost the rest of the receive batch with it).
    ours, _peer = events(mode="transport")
    sad = Sad()
    inbound, _out = sad.install_event(ours)
    data = inbound.spi.to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(size - 8)
    with pytest.raises(EspDrop) as info:
        sad.unprotect_esp(data, 1.0)
    # 65515 bytes still fit an IPv4 packet (and fail their ICV); past that, the header cannot be built.
    assert info.value.reason == ("icv" if size == 65515 else "malformed")
    assert inbound.dropped + sum(sad.drops.values()) == 1
