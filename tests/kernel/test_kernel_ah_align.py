"""AH over IPv4 asks the kernel for the RFC 4302 32-bit alignment
(XFRM_STATE_ALIGN4), as charon and pluto do; without it Linux pads the AH
header to 64 bits and no packet passes between us and them (found by
tests/kernel/guest/test_engine_vs_strongswan.py)."""

from __future__ import annotations

import pytest

from engine.datapath.kernel_sa import build_sa
from engine.datapath.xfrm_netlink import XFRM_STATE_ALIGN4
from engine.events import ChildKeys, ChildSaInstalled
from engine.policy.ts import parse_ts
from engine.secret import Secret


def _ev(protocol: str, local: str, remote: str, mode: str = "tunnel") -> ChildSaInstalled:
    ah = protocol == "ah"
    encr = b"" if ah else b"\x01" * 36
    return ChildSaInstalled(
        ike_sa=1, connection="c", child="net", unique_id=1, reqid=1, protocol=protocol, mode=mode,
        spi_in=0xC1000001, spi_out=0xC2000001, local_addr=local, remote_addr=remote,
        local_ts=(parse_ts("198.51.100.1"),), remote_ts=(parse_ts("198.51.100.129"),),
        encr_id=None if ah else 20, encr_key_length=None if ah else 256, integ_id=12 if ah else None, esn=False,
        keys=ChildKeys(Secret(encr), Secret(b"\x02" * 32 if ah else b""), Secret(encr),
                       Secret(b"\x03" * 32 if ah else b"")))


@pytest.mark.parametrize("protocol, local, remote, mode, align4", [
    ("ah", "192.0.2.1", "192.0.2.2", "tunnel", True),
    ("ah", "192.0.2.1", "192.0.2.2", "transport", True),
    ("ah", "2001:db8::1", "2001:db8::2", "tunnel", False),   # IPv6 AH is 64-bit aligned anyway
    ("esp", "192.0.2.1", "192.0.2.2", "tunnel", False),
])
def test_ah_over_ipv4_is_32_bit_aligned(protocol, local, remote, mode, align4):
    for inbound in (True, False):
        msg = build_sa(_ev(protocol, local, remote, mode), inbound, 0x15E00001)
        assert bool(msg["flags"] & XFRM_STATE_ALIGN4) is align4
