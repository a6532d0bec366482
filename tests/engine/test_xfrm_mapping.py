"""XFRM_MSG_MAPPING (the kernel saw authenticated ESP-in-UDP of an SA with an encap template from a
new source; XFRMNLGRP_MAPPING) as the engine's NatMappingChanged, as charon's kernel_netlink_ipsec
process_mapping: ESP only, an SA of ours (reqid band, our inbound SA), not a per-CPU SA with source
port 0, once per SA per change (the kernel repeats it for every packet until the SA moves). The
messages are built here byte by byte from include/uapi/linux/xfrm.h (struct xfrm_user_mapping, 64
bytes: usersa_id 24, reqid 4, old_saddr 16, new_saddr 16, be16 old_sport, be16 new_sport), so the
decoder under test plays no part in them. The kernel raising them is left to the qemu guest."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from engine.datapath import natmap
from engine.datapath import xfrm_netlink as x
from engine.datapath.kernel import KernelDatapath
from engine.datapath.kernel_policy import REQID_BASE
from engine.events import NatMappingChanged

OURS = REQID_BASE + 5
SPI_IN = 0xC0FFEE01


def mapping_bytes(*, spi=SPI_IN, daddr="192.0.2.1", family=socket.AF_INET, proto=50, reqid=OURS,
                  old=("198.51.100.7", 24500), new=("198.51.100.7", 31000), seq=0) -> bytes:
    packed = (lambda a: socket.inet_pton(family, a).ljust(16, b"\0"))
    body = (packed(daddr) + struct.pack(">I", spi) + struct.pack("=HBx", family, proto) + struct.pack("=I", reqid)
            + packed(old[0]) + packed(new[0]) + struct.pack(">HH", old[1], new[1]))
    assert len(body) == 64
    return struct.pack("=IHHII", 16 + len(body), 0x26, 0, seq, 0) + body


def test_the_message_type_group_and_size_are_the_uapis():
    assert x.XFRM_MSG_MAPPING == 0x26 and x.MSG_NAMES[0x26] == "MAPPING"
    assert x.XFRMNLGRP_MAPPING == 8
    assert x.BODY_SIZES[x.xfrm_user_mapping] == 64


def test_a_mapping_message_decodes():
    (reply,) = x.parse_messages(mapping_bytes())
    m = reply.msg
    assert isinstance(m, x.xfrm_user_mapping)
    assert (m["spi"], m["family"], m["proto"], m["reqid"]) == (SPI_IN, socket.AF_INET, 50, OURS)
    assert x.address_text(m["daddr"], m["family"]) == "192.0.2.1"
    assert x.address_text(m["old_saddr"], m["family"]) == "198.51.100.7" and m["old_sport"] == 24500
    assert x.address_text(m["new_saddr"], m["family"]) == "198.51.100.7" and m["new_sport"] == 31000


def test_a_cut_mapping_message_is_not_decoded():
    data = mapping_bytes()
    cut = struct.pack("=I", 16 + 40) + data[4:16 + 40]
    (reply,) = x.parse_messages(cut)
    assert reply.msg is None


class _Events:
    def __init__(self, data: bytes):
        self.data = data

    def read(self, timeout):
        return list(x.parse_messages(self.data)), False


def datapath(data: bytes = b"", family: str = "192.0.2.1") -> KernelDatapath:
    """A KernelDatapath without netlink sockets that knows one inbound ESP SA (SPI_IN at ``family``)."""
    d = KernelDatapath.__new__(KernelDatapath)
    d._lock = threading.RLock()
    d._sa_index = {(SPI_IN, family, 50): (SPI_IN, "in"), (0xD00D, "198.51.100.7", 50): (SPI_IN, "out")}
    d._mappings = natmap.MappingWatch()
    d._events = _Events(data)
    return d


def test_read_events_turns_a_mapping_into_the_engines_event():
    d = datapath(mapping_bytes())
    assert d.read_events(0) == [NatMappingChanged(spi_in=SPI_IN, remote_addr="198.51.100.7", remote_port=31000)]


def test_ipv6():
    data = mapping_bytes(daddr="2001:db8::1", family=socket.AF_INET6, old=("2001:db8::7", 4500),
                         new=("2001:db8::8", 4500))
    d = datapath(data, family="2001:db8::1")
    assert d.read_events(0) == [NatMappingChanged(spi_in=SPI_IN, remote_addr="2001:db8::8", remote_port=4500)]


def test_the_kernels_per_packet_repeats_become_one_event_per_change():
    d = datapath(mapping_bytes() * 5)
    assert len(d.read_events(0)) == 1
    (reply,) = x.parse_messages(mapping_bytes(new=("198.51.100.7", 32000)))
    assert d._mapping_event(reply.msg) is not None, "another change is reported at once"
    (again,) = x.parse_messages(mapping_bytes())
    assert d._mapping_event(again.msg, now=1e12) is not None, "the same change again after MAPPING_HOLD"


@pytest.mark.parametrize("kw", [
    {"reqid": 7},                # not our reqid band: another daemon's SA
    {"proto": 51},               # AH: never UDP-encapsulated
    {"old": ("198.51.100.7", 0)},  # charon: a per-CPU SA with source port 0
    {"spi": 0xD00D, "daddr": "198.51.100.7"},  # our outbound SA: not a peer's source
    {"spi": 0x1234},             # an SA we do not know
    {"family": 99},              # garbage family
])
def test_what_is_not_followed(kw):
    d = datapath(mapping_bytes(**kw) if kw.get("family") != 99 else _bad_family())
    assert d.read_events(0) == []


def _bad_family() -> bytes:
    data = bytearray(mapping_bytes())
    struct.pack_into("=H", data, 16 + 20, 99)
    return bytes(data)


def test_the_event_socket_subscribes_to_the_mapping_group(monkeypatch):
    groups = []

    class FakeSocket:
        def __init__(self, netns=None, groups=0, timeout=10.0):
            groups_seen.append(groups)

        def close(self):
            pass

    groups_seen = groups
    monkeypatch.setattr("engine.datapath.kernel.XfrmSocket", FakeSocket)
    KernelDatapath()
    assert groups[1] & (1 << (x.XFRMNLGRP_MAPPING - 1))
    assert groups[1] & (1 << (x.XFRMNLGRP_EXPIRE - 1)) and groups[1] & (1 << (x.XFRMNLGRP_ACQUIRE - 1))


def test_a_removed_child_forgets_its_reported_change():
    from engine.events import ChildSaDeleted
    d = datapath(mapping_bytes())
    d._children, d._waiting = {}, {}
    assert len(d.read_events(0)) == 1
    assert d.read_events(0) == []
    d.remove_child(ChildSaDeleted(1, "c", "k", 1, 1, "esp", SPI_IN, 0xD00D))
    assert d._mappings._told == {}


def test_the_inbound_encap_sa_asks_the_kernel_to_rate_limit_its_mapping_messages():
    # XFRMA_MTIMER_THRESH (Linux 5.17+): one XFRM_MSG_MAPPING per new source port, else one per
    # threshold; the kernel wants it with an encap template only (and on inbound SAs).
    from engine.datapath.kernel_sa import build_sa
    from tests.kernel.test_kernel_units import _attrs, _ev

    ev = _ev(encap=True, local_port=4500, remote_port=4500)
    inbound, _ = _attrs(build_sa(ev, True, REQID_BASE + 2))
    outbound, _ = _attrs(build_sa(ev, False, REQID_BASE + 2))
    plain, _ = _attrs(build_sa(_ev(), True, REQID_BASE + 2))
    assert inbound["XFRMA_MTIMER_THRESH"] == natmap.MAPPING_HOLD
    assert "XFRMA_MTIMER_THRESH" not in outbound and "XFRMA_MTIMER_THRESH" not in plain


def test_a_flush_forgets_the_reported_changes():
    # flush_ours empties every table of SAs; the changes told for them must go too (a later SA
    # with the same SPI would have its first change held back, and the entries stay forever).
    d = datapath(mapping_bytes())
    d._policies, d._children, d._traps, d._rules, d._waiting, d._lingering = {}, {}, {}, {}, {}, {}
    d._request = lambda *a, **k: []
    assert len(d.read_events(0)) == 1
    d.flush_ours()
    assert d._mappings._told == {} and d._mappings.expect == {}
