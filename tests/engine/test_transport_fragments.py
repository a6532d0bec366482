"""IPv4 datagrams larger than the TUN MTU through a transport-mode SA (RFC 4301 §7): the kernel
hands us fragments, which are reassembled and protected whole; the ESP/AH packet leaves as IPv4
fragments of the outer packet. scapy is the oracle: its defragment puts the outer fragments
together and its SecurityAssociation decrypts them to the original datagram. Tunnel mode still
carries fragments as inner packets. The reassembler's bounds, timeout and overlap rules."""

from __future__ import annotations

import dataclasses
import os
import socket
import struct

import pytest
from scapy.all import ICMP, IP, UDP, IPOption, Raw, raw
from scapy.layers.inet import defragment, fragment
from scapy.layers.ipsec import AH, ESP, SecurityAssociation

from engine.crypto.transforms import EncrId, IntegId
from engine.datapath.reassembly import DATAGRAM_COST, PART_COST, Reassembler
from engine.datapath.userspace_path import SaPath
from engine.esp import AhOutboundSa, EspOutboundSa, TransportFragment  # noqa
from engine.crypto.encr import make_cipher
from engine.crypto.integ import Integ
from engine.events import ChildKeys, ChildSaInstalled
from engine.policy.parse import parse_policy
from engine.policy.ts import parse_ts
from engine.secret import Secret

A, B = "192.0.2.1", "192.0.2.2"
POLICY = f"""
[engine]
datapath = "userspace"
listen = ["{A}"]

[connections.h]
local_addrs = ["{A}"]
remote_addrs = ["{B}"]
local = {{ auth = "psk", id = "a.example" }}
remote = {{ auth = "psk", id = "b.example" }}

[connections.h.children.t]
mode = "transport"
"""


class _Sender:
    def __init__(self, mtu, wire):
        self.mtu = mtu
        self.pmtu = 0
        self.add = wire.append


def transport_path(*, protocol="esp", mode="transport", remote_ts=f"{B}/32", encap=False, mtu=1500):
    """A SaPath with one pair A -> B; returns (path, wire list, scapy SA that reads our output)."""
    path = SaPath(parse_policy(POLICY, load_secrets=False))
    ekey, ikey = os.urandom(36), os.urandom(32)
    if protocol == "esp":
        keys = ChildKeys(Secret(os.urandom(36)), Secret(b""), Secret(ekey), Secret(b""))
        kw = dict(encr_id=EncrId.AES_GCM_16, encr_key_length=256, integ_id=None)
        sa = SecurityAssociation(ESP, spi=0xB1, crypt_algo="AES-GCM", crypt_key=ekey,
                                 tunnel_header=IP(src=A, dst=B) if mode == "tunnel" else None,
                                 nat_t_header=UDP(sport=4500, dport=4500) if encap else None)
    else:
        keys = ChildKeys(Secret(b""), Secret(os.urandom(32)), Secret(b""), Secret(ikey))
        kw = dict(encr_id=None, encr_key_length=None, integ_id=IntegId.HMAC_SHA2_256_128)
        sa = SecurityAssociation(AH, spi=0xB1, auth_algo="SHA2-256-128", auth_key=ikey)
    ev = ChildSaInstalled(
        ike_sa=1, connection="h", child="t", unique_id=1, reqid=1, protocol=protocol, mode=mode,
        spi_in=0xA1, spi_out=0xB1, local_addr=A, remote_addr=B, local_ts=(parse_ts(f"{A}/32"),),
        remote_ts=(parse_ts(remote_ts),), esn=False, keys=keys, rekeyed_from=None, initiator=True,
        encap=encap, local_port=4500, remote_port=4500, **kw)
    wire: list[bytes] = []
    pair = path.install(ev, lambda data, dest: wire.append(bytes(data)), (B, 0))
    pair.sender = _Sender(mtu, wire)
    path.ev = ev  # for tests that install a second pair
    return path, wire, sa


def big_udp(size=3000, ident=0x1234, dport=5000):
    return IP(src=A, dst=B, id=ident, flags=0) / UDP(sport=4000, dport=dport) / Raw(os.urandom(size))


def tun_fragments(pkt, mtu=1400):
    """What the kernel hands over for a datagram above the TUN device's MTU."""
    return [raw(f) for f in fragment(pkt, fragsize=mtu - 20)]


def opened(sa, wire):
    """scapy's view: the outer fragments reassembled, then decrypted."""
    outer = defragment([IP(w) for w in wire])
    assert len(outer) == 1
    return raw(sa.decrypt(outer[0]))


@pytest.mark.parametrize("protocol,encap", [("esp", False), ("esp", True), ("ah", False)])
def test_fragments_are_protected_whole_and_the_outer_packet_fragmented(protocol, encap):
    path, wire, sa = transport_path(protocol=protocol, encap=encap)
    pkt = big_udp()
    frags = tun_fragments(pkt)
    assert len(frags) == 3
    assert [path.output(f, 1.0) for f in frags] == [False, False, True]
    assert len(wire) == 3 and all(len(w) <= 1500 for w in wire)  # cut to the route's MTU
    ident = IP(wire[0]).id  # one of ours for the whole datagram (see the review tests below)
    assert ident and all(IP(w).id == ident and IP(w).proto == (51 if protocol == "ah" else 17 if encap else 50)
                         for w in wire)
    got = IP(opened(sa, wire))
    assert raw(got[UDP]) == raw(pkt[UDP])
    assert (got.src, got.dst, got.id, got.frag, got.flags.MF) == (A, B, ident, 0, 0)
    sas, drops = path.counters()
    assert drops == {}
    assert [(c.direction, c.packets) for c in sas if c.direction == "out"] == [("out", 1)]


def test_a_whole_datagram_below_the_mtu_leaves_in_one_piece():
    path, wire, sa = transport_path(mtu=9000)
    pkt = big_udp()
    for f in tun_fragments(pkt):
        path.output(f, 1.0)
    assert len(wire) == 1
    assert raw(IP(opened(sa, wire))[UDP]) == raw(pkt[UDP])


def test_out_of_order_fragments_and_ping():
    path, wire, sa = transport_path()
    pkt = IP(src=A, dst=B, id=7) / ICMP(id=1, seq=1) / Raw(b"p" * 3000)
    frags = tun_fragments(pkt)
    for f in reversed(frags):
        path.output(f, 1.0)
    assert raw(IP(opened(sa, wire))[ICMP]) == raw(pkt[ICMP])


def test_port_selector_non_first_fragments_join_their_datagram():
    # The non-first fragments have no ports: on their own they match no udp/5000 selector.
    path, wire, sa = transport_path(remote_ts=f"{B}/32[udp/5000]")
    pkt = big_udp(dport=5000)
    for f in tun_fragments(pkt):
        path.output(f, 1.0)
    assert raw(IP(opened(sa, wire))[UDP]) == raw(pkt[UDP])
    assert path.counters()[1] == {}
    # Another port: the first fragment finds no SA, nor do the others (nothing kept).
    wire.clear()
    for f in tun_fragments(big_udp(dport=53, ident=9)):
        assert not path.output(f, 1.0)
    assert wire == [] and path.counters()[1] == {"no_sa": 3} and not path.frags.pending
    # A whole datagram that happens to share a pending datagram's ID is no piece of it.
    first, *rest = tun_fragments(big_udp(dport=5000, ident=11))
    path.output(first, 1.0)
    assert not path.output(raw(IP(src=A, dst=B, id=11) / UDP(sport=1, dport=53)), 1.0)
    for f in rest:
        path.output(f, 1.0)
    assert len(wire) == 3 and path.counters()[1] == {"no_sa": 4}


def test_fragments_meeting_an_expired_sa_go_whole_through_the_other_pair():
    path, wire, sa = transport_path()
    newer = path.install(dataclasses.replace(path.ev, spi_in=0xA2, spi_out=0xB2, unique_id=2),
                         lambda data, dest: wire.append(bytes(data)), (B, 0))
    newer.sender = _Sender(1500, wire)
    assert path.output(raw(IP(src=A, dst=B) / UDP(sport=1, dport=2)), 1.0)  # the flow now goes to the newer
    newer.outbound._expire("hard lifetime")  # runs out with the flow still cached to it
    wire.clear()
    pkt = big_udp()
    for f in tun_fragments(pkt):
        path.output(f, 2.0)  # the first meets the expired SA: its retry is refused as a fragment
    assert raw(IP(opened(sa, wire))[UDP]) == raw(pkt[UDP])


def test_the_sa_refuses_a_fragment_in_transport_mode_only():
    f = tun_fragments(big_udp())[1]
    for mode, refused in (("transport", True), ("tunnel", False)):
        sa = EspOutboundSa(1, cipher=make_cipher(EncrId.AES_GCM_16, 256, os.urandom(36)), local_addr=A,
                           remote_addr=B, mode=mode)
        if refused:
            with pytest.raises(TransportFragment):
                sa.protect(f, 1.0)
            assert sa.seq == 0  # no sequence number spent
        else:
            sa.protect(f, 1.0)


def test_tunnel_mode_still_carries_each_fragment():
    path, wire, sa = transport_path(mode="tunnel")
    frags = tun_fragments(big_udp())
    assert all(path.output(f, 1.0) for f in frags)
    # Tunnel-mode output is the ESP payload (the socket adds the outer header).
    assert [raw(sa.decrypt(IP(raw(IP(src=A, dst=B, proto=50) / Raw(w))))) for w in wire] == frags
    assert not path.frags.pending


@pytest.mark.parametrize("protocol", ["esp", "ah"])
def test_a_transport_sa_refuses_a_datagram_with_no_room_left(protocol):
    # struct.error (not a ValueError) escaped protect() and with it the TUN read loop.
    if protocol == "esp":
        sa = EspOutboundSa(1, cipher=make_cipher(EncrId.AES_GCM_16, 256, os.urandom(36)), local_addr=A,
                           remote_addr=B, mode="transport")
    else:
        sa = AhOutboundSa(1, integ=Integ(IntegId.HMAC_SHA2_256_128, os.urandom(32)), local_addr=A,
                          remote_addr=B, mode="transport")
    huge = raw(IP(src=A, dst=B) / UDP(sport=1, dport=2) / Raw(b"x" * (65535 - 28)))
    with pytest.raises(ValueError):
        sa.protect(huge, 1.0)
    assert sa.seq == 0


def test_an_esp_packet_past_the_ipv4_length_is_refused_not_raised():
    path, wire, sa = transport_path()
    huge = IP(src=A, dst=B, id=3) / UDP(sport=1, dport=2) / Raw(b"x" * (65535 - 28))
    assert len(raw(huge)) == 65535
    for f in tun_fragments(huge):
        path.output(f, 1.0)
    assert wire == [] and path.counters()[1] == {"malformed": 1}


# ------------------------------------------------------------------ the reassembler


def frag(ident, offset, data, more, proto=17):
    p = IP(src=A, dst=B, id=ident, frag=offset // 8, flags="MF" if more else 0, proto=proto) / Raw(data)
    return raw(p)


def test_overlap_drops_the_datagram_and_a_duplicate_only_itself():
    drops: dict = {}
    r = Reassembler(drops)
    assert r.add(frag(1, 0, b"a" * 16, True), 0.0) is None
    assert r.add(frag(1, 0, b"a" * 16, True), 0.0) is None  # duplicate
    assert drops == {"frag_duplicate": 1} and len(r.pending) == 1
    assert r.add(frag(1, 8, b"b" * 16, True), 0.0) is None  # overlaps bytes 8..16
    assert drops == {"frag_duplicate": 1, "frag_overlap": 1} and not r.pending and r.bytes == 0
    r.add(frag(2, 0, b"a" * 16, True), 0.0)
    r.add(frag(2, 24, b"c" * 8, False), 0.0)
    assert r.add(frag(2, 16, b"x" * 8, False), 0.0) is None  # a second last fragment
    assert drops["frag_overlap"] == 2
    r.add(frag(3, 16, b"c" * 8, False), 0.0)
    assert r.add(frag(3, 16, b"c" * 16, True), 0.0) is None  # data past the end
    assert drops["frag_overlap"] == 3 and not r.pending
    assert r.add(frag(4, 8, b"b" * 8, False), 0.0) is None
    whole, largest = r.add(frag(4, 0, b"a" * 8, True), 0.0)
    got = IP(whole)
    assert raw(got)[20:] == b"a" * 8 + b"b" * 8 and largest == 28 and (got.flags, got.frag, got.len) == (0, 0, 36)
    assert got.id == r.ident != 0
    assert got.chksum == IP(raw(IP(src=A, dst=B, id=got.id, proto=17) / Raw(b"a" * 8 + b"b" * 8))).chksum


def test_malformed_fragments():
    drops: dict = {}
    r = Reassembler(drops)
    assert r.add(frag(1, 0, b"a" * 12, True), 0.0) is None  # MF with a length not a multiple of 8
    assert r.add(frag(1, 65528, b"a" * 16, False), 0.0) is None  # ends past 65535
    assert r.add(b"\x45" + bytes(19), 0.0) is None  # total length 0
    assert drops == {"malformed": 3} and not r.pending
    r.add(frag(2, 0, b"a" * 8, True), 0.0)
    assert r.add(frag(2, 8, b"", False), 0.0) is None  # empty: the datagram goes
    assert drops == {"malformed": 4} and not r.pending
    # Options in the first fragment only (not copied), the last one ending at 65535 without them.
    first = raw(IP(src=A, dst=B, id=5, flags="MF", proto=17, options=IPOption(b"\x07\x07\x04" + bytes(5)))
                / Raw(b"a" * 8))
    assert len(first) == 36
    assert r.add(first, 0.0) is None
    assert r.add(frag(5, 8, b"b" * 65496, True), 0.0) is None
    assert r.add(frag(5, 65504, b"c" * 11, False), 0.0) is None  # 28 + 65515 bytes: no IPv4 length for it
    assert drops == {"malformed": 5} and not r.pending and r.bytes == 0


def test_timeout_and_bounds():
    drops: dict = {}
    each = PART_COST + DATAGRAM_COST  # a datagram's first piece costs its data and these
    r = Reassembler(drops, max_datagrams=3, max_bytes=2200, timeout=30.0)
    for i in range(3):
        r.add(frag(i, 0, b"a" * 8, True), float(i))
    assert r.bytes == 3 * (8 + each)
    r.add(frag(9, 0, b"a" * 8, True), 3.0)  # one too many: the oldest goes
    assert list(r.pending) and drops == {"frag_limit": 1} and len(r.pending) == 3
    r.add(frag(10, 0, b"a" * 8, True), 31.5)  # id 1 (born 1.0) expired, 2 (2.0) not yet; 0 went already
    assert drops == {"frag_limit": 1, "frag_timeout": 1}
    assert r.add(frag(11, 0, b"a" * 2200, True), 31.9) is None  # alone above the byte cap
    assert drops["frag_limit"] == 2
    r.add(frag(12, 0, b"a" * 800, True), 31.9)  # pushes the oldest out until it fits
    assert drops["frag_limit"] == 4 and len(r.pending) == 2 and r.bytes == (8 + each) + (800 + each)
    assert r.add(frag(12, 800, b"a" * 800, True), 31.9) is None  # its datagram outgrows the cap
    assert drops["frag_limit"] == 5 and len(r.pending) == 1 and r.bytes == 8 + each


def test_datapath_counters_show_the_drops():
    path, wire, sa = transport_path()
    f0, f1, _ = tun_fragments(big_udp())
    path.output(f0, 1.0)
    path.output(f1, 1.0)
    path.output(tun_fragments(big_udp(ident=2))[0], 40.0)  # the first datagram timed out meanwhile
    assert path.counters()[1] == {"frag_timeout": 1}


class _Runtime:
    def now(self):
        return 1.0


class _Dp:
    def __init__(self, path):
        self.path = path
        self.runtime = _Runtime()
        self.loop = None

    def flush_events(self):
        self.path.drain()


def test_the_tun_read_loop_hands_fragments_to_the_reassembler():
    # Through TunIO.readable: the SA refuses the first fragment on the fast path; the others
    # match no udp/5000 selector on their own and join it from the drop branch.
    from engine.datapath.userspace_io import TunIO

    path, wire, sa = transport_path(remote_ts=f"{B}/32[udp/5000]")
    kernel, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        ours.setblocking(False)
        io = TunIO(_Dp(path), ours.fileno(), vnet=False, udp_gro=False)
        pkt = big_udp()
        for f in tun_fragments(pkt):
            kernel.send(f)
        io.readable()
        assert raw(IP(opened(sa, wire))[UDP]) == raw(pkt[UDP])
        assert path.counters()[1] == {}
    finally:
        kernel.close()
        ours.close()


def test_the_datapaths_sampling_tick_gives_up_stale_datagrams():
    # Without a next fragment, a datagram still times out (and is counted) on the periodic tick.
    import asyncio

    from engine.datapath.userspace import UserspaceDatapath

    dp = UserspaceDatapath(parse_policy(POLICY, load_secrets=False))
    dp.loop = asyncio.new_event_loop()
    try:
        dp.runtime = _Runtime()
        dp.path.frags.add(tun_fragments(big_udp())[0], -40.0)
        dp._arm_samples()
        assert not dp.path.frags.pending and dp.path.counters()[1] == {"frag_timeout": 1}
    finally:
        dp._sampler.cancel()
        dp.loop.close()


# ------------------------------------------------------------------ review (revfrag14)


def outer_ids(wire):
    return [IP(w).id for w in wire]


@pytest.mark.parametrize("protocol", ["esp", "ah"])
def test_a_datagram_with_ip_id_0_leaves_under_one_nonzero_id(protocol):
    # A header-including raw socket replaces an IP ID of 0 in a packet without DF (Linux raw.c
    # raw_send_hdrinc: ip_select_ident), a new one for each outer fragment: the peer could never
    # put them together (and AH covers the ID: its ICV would fail even unfragmented).
    path, wire, sa = transport_path(protocol=protocol)
    pkt = big_udp(ident=0)
    for f in tun_fragments(pkt):
        path.output(f, 1.0)
    ids = outer_ids(wire)
    assert len(wire) == 3 and len(set(ids)) == 1 and ids[0] != 0
    assert raw(IP(opened(sa, wire))[UDP]) == raw(pkt[UDP])  # AH: the ICV covers the ID we set


def test_outer_fragments_of_datagrams_of_different_protocols_do_not_share_an_id():
    # The kernel numbers each (src, dst, protocol) on its own: a UDP and an ICMP datagram may
    # carry the same ID; as ESP both are protocol 50 and the peer's reassembly mixes them up.
    path, wire, sa = transport_path()
    udp = big_udp(ident=77)
    icmp = IP(src=A, dst=B, id=77) / ICMP(id=1, seq=1) / Raw(b"p" * 3000)
    for f in tun_fragments(udp) + tun_fragments(icmp):
        path.output(f, 1.0)
    assert len(wire) == 6
    first, second = set(outer_ids(wire[:3])), set(outer_ids(wire[3:]))
    assert len(first) == len(second) == 1 and first != second
    assert raw(IP(opened(sa, wire[:3]))[UDP]) == raw(udp[UDP])
    assert raw(IP(opened(sa, wire[3:]))[ICMP]) == raw(icmp[ICMP])


def test_a_route_mtu_that_shrank_since_the_sender_was_made_is_asked_again():
    # sender.mtu is probed once, when the sender is made; a route or link MTU lowered later had the
    # raw socket refuse every outer fragment (EMSGSIZE above the device MTU) for good.
    import errno

    path, wire, sa = transport_path(mtu=1500)
    pair = path.pairs[0xA1]
    asked = []

    def send(data, dest):
        if len(data) > 1280:
            raise OSError(errno.EMSGSIZE, "Message too long")
        wire.append(bytes(data))

    def route_mtu():
        asked.append(1)
        pair.sender.mtu = 1280
        return 1280

    pair.send = send
    pair.sender.route_mtu = route_mtu
    pkt = big_udp()
    assert [path.output(f, 1.0) for f in tun_fragments(pkt)] == [False, False, True]
    assert asked == [1] and wire and all(len(w) <= 1280 for w in wire)
    assert raw(IP(opened(sa, wire))[UDP]) == raw(pkt[UDP])
    assert path.send_failed == 0
    # The next datagram is cut right away.
    wire.clear()
    for f in tun_fragments(big_udp(ident=2)):
        path.output(f, 1.0)
    assert asked == [1] and all(len(w) <= 1280 for w in wire)


def test_a_raw_sender_asks_the_datapath_for_the_route_mtu_again(monkeypatch):
    from types import SimpleNamespace

    from engine.datapath import pmtu
    from engine.datapath.userspace import UserspaceDatapath
    from engine.datapath.userspace_io import RawSender

    dp = UserspaceDatapath(parse_policy(POLICY, load_secrets=False))
    sender = RawSender(SimpleNamespace(dp=dp), None, (B, 0))
    asked = []
    monkeypatch.setattr(pmtu, "probe", lambda remote, port, mark: asked.append(remote) or 1280)
    assert sender.route_mtu() == sender.mtu == 1280 and asked == [B]
    monkeypatch.setattr(pmtu, "probe", lambda remote, port, mark: None)
    assert sender.route_mtu() == sender.mtu == 0


def test_tiny_fragments_hold_no_more_memory_than_the_byte_cap():
    # The cap counts each fragment's data plus PART_COST; an 8-byte fragment costs Python far more
    # than 8 + 64 bytes (its bytes object, two int offsets, three list slots): the 4 MiB cap held
    # 7.5 MB.
    import tracemalloc

    cap = 128 << 10
    r = Reassembler({}, max_bytes=cap)
    head = bytearray(frag(0, 0, b"x" * 8, True))
    pieces = []
    for ident in range(1, 41):
        for off in range(0, 1600, 16):  # 100 of 8 bytes each, with holes between them
            struct.pack_into("!HH", head, 4, ident, 0x2000 | off // 8)
            struct.pack_into("!H", head, 10, 0)
            pieces.append(bytes(head))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        held = 0
        for ident in range(40):
            for p in pieces[ident * 100:(ident + 1) * 100]:
                r.add(p, 0.0)
            if r.drops:
                break  # the cap is reached: the oldest datagram went
            held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert r.drops["frag_limit"] and r.bytes <= cap
    assert cap * 0.7 < held <= cap, held


def _ah(mode):
    key = os.urandom(32)
    out = AhOutboundSa(0xB1, integ=Integ(IntegId.HMAC_SHA2_256_128, key), local_addr=A, remote_addr=B, mode=mode)
    oracle = SecurityAssociation(AH, spi=0xB1, auth_algo="SHA2-256-128", auth_key=key,
                                 tunnel_header=IP(src=A, dst=B) if mode == "tunnel" else None)
    return out, oracle


def test_an_ah_tunnel_packet_never_leaves_with_ip_id_0():
    # The outer ID was the sequence number's low 16 bits: every 65536th packet had ID 0 without DF,
    # which the header-including raw socket replaces (Linux raw_send_hdrinc: ip_select_ident)
    # after AH signed it; the peer's ICV check then dropped it.
    out, oracle = _ah("tunnel")
    out.seq = 65535
    inner = raw(IP(src=A, dst=B) / UDP(sport=1, dport=2) / Raw(b"x" * 20))
    ids = []
    for _ in range(3):
        pkt = out.protect(inner, 1.0)
        ids.append(IP(pkt).id)
        assert raw(oracle.decrypt(IP(pkt))) == inner
    assert 0 not in ids and len(set(ids)) == 3


def test_an_ah_transport_packet_without_df_and_with_ip_id_0_gets_an_id_before_signing():
    out, oracle = _ah("transport")
    for flags, want_zero in ((0, False), ("DF", True)):
        pkt = IP(src=A, dst=B, id=0, flags=flags) / UDP(sport=1, dport=2) / Raw(b"x" * 20)
        sent = out.protect(raw(pkt), 1.0)
        assert (IP(sent).id == 0) is want_zero  # with DF the kernel leaves ID 0 alone
        assert raw(IP(raw(oracle.decrypt(IP(sent))))[UDP]) == raw(pkt[UDP])


def test_outer_fragments_after_the_first_carry_only_the_options_marked_copied():
    # RFC 791 §3.1 / 3.2 (fragmentation): an option whose copied flag is clear (record route,
    # timestamp) stays in the first fragment only; Linux's ip_options_fragment overwrites it with
    # NOPs in the others, so every fragment keeps the header length.
    from engine.datapath.offload import fragment_ipv4
    from engine.esp.ip import checksum as ip_checksum

    rr = b"\x07\x07\x04" + bytes(4)       # record route: not copied
    sec = b"\x94\x04\x00\x00"              # router alert: copied
    pkt = raw(IP(src=A, dst=B, id=5, options=[IPOption(rr), IPOption(sec), IPOption(b"\x00")])
              / UDP(sport=1, dport=2) / Raw(b"x" * 3000))
    frags = fragment_ipv4(pkt, 1500)
    assert len(frags) == 3
    assert bytes(frags[0][20:32]) == rr + sec + b"\x00"
    for f in frags[1:]:
        assert bytes(f[20:32]) == b"\x01" * 7 + sec + b"\x00"
        assert ip_checksum(bytes(f[:32])) == 0  # the header checksum covers the NOPs
    whole = defragment([IP(bytes(f)) for f in frags])[0]
    assert raw(whole[UDP]) == raw(IP(pkt)[UDP])
