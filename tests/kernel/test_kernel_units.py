"""Kernel datapath logic that needs no kernel: selectors, priorities,
templates, and the NEWSA messages built from ChildSaInstalled."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.datapath import kernel_policy as kp
from engine.datapath.kernel_spd import PolicyEntry, may_replace, policy_is_ours
from engine.datapath.kernel_sa import SaConfigError, build_sa
from engine.datapath.xfrm_netlink import (
    XFRM_INF,
    XFRM_POLICY_ALLOW,
    XFRM_POLICY_BLOCK,
    XFRM_POLICY_FWD,
    XFRM_POLICY_IN,
    XFRM_POLICY_OUT,
    XFRM_STATE_AF_UNSPEC,
    XFRM_STATE_ESN,
    encode_request,
    parse_messages,
    xfrm_userpolicy_info,
)
from engine.events import ChildKeys, ChildSaInstalled
from engine.policy.ts import TrafficSelector, parse_ts
from engine.secret import Secret

# ---------------------------------------------------------------- selectors

@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_port_blocks_cover_the_range_exactly(a, b):
    lo, hi = min(a, b), max(a, b)
    blocks = kp.port_blocks(lo, hi)
    covered = []
    for port, mask in blocks:
        size = (~mask & 0xFFFF) + 1
        assert port & ~mask & 0xFFFF == 0, "a block starts on its own alignment"
        covered.extend(range(port, port + size))
    assert covered == list(range(lo, hi + 1))
    assert len(blocks) <= 32


def test_selectors_for_ranges_ports_and_icmp():
    sels = kp.selectors(parse_ts("192.0.2.1-192.0.2.3"), parse_ts("198.51.100.0/24[tcp/1024-2047]"))
    assert [(s.saddr, s.prefixlen_s) for s in sels] == [("192.0.2.1", 32), ("192.0.2.2", 31)]
    assert {(s.proto, s.dport, s.dport_mask, s.sport_mask) for s in sels} == {(6, 1024, 0xFC00, 0)}

    (echo,) = kp.selectors(parse_ts("198.51.100.1[icmp/8]"), parse_ts("198.51.100.129"))
    assert (echo.proto, echo.sport, echo.sport_mask, echo.dport_mask) == (1, 8, 0xFFFF, 0)

    assert kp.selectors(parse_ts("192.0.2.1"), parse_ts("2001:db8::1")) == []
    assert kp.selectors(parse_ts("0.0.0.0/0[tcp]"), parse_ts("0.0.0.0/0[udp]")) == []
    with pytest.raises(kp.PolicyError, match="dynamic"):
        kp.selectors(TrafficSelector.dynamic_placeholder(), parse_ts("192.0.2.1"))


def test_more_specific_policies_get_lower_priorities():
    def prio(src, dst, kind=kp.KIND_PROTECT):
        (sel,) = kp.selectors(parse_ts(src), parse_ts(dst))
        return kp.priority(sel, kind)

    host = prio("198.51.100.1", "198.51.100.129")
    subnet = prio("198.51.100.0/25", "198.51.100.128/25")
    anyany = prio("0.0.0.0/0", "0.0.0.0/0")
    assert host < subnet < anyany
    assert prio("198.51.100.1[tcp]", "198.51.100.129") < host                # protocol is more specific
    assert prio("198.51.100.1[tcp]", "198.51.100.129[tcp/443]") < prio("198.51.100.1[tcp]", "198.51.100.129")
    # equal selectors: discard before bypass before protect
    assert prio("0.0.0.0/0", "0.0.0.0/0", kp.KIND_DISCARD) < prio("0.0.0.0/0", "0.0.0.0/0", kp.KIND_BYPASS) < anyany
    for p in (host, subnet, anyany):
        assert kp.is_our_priority(p)
    (sel,) = kp.selectors(parse_ts("0.0.0.0/0"), parse_ts("0.0.0.0/0"))
    assert kp.priority(sel, kp.KIND_PROTECT, explicit=10) == kp.PRIORITY_BASE + 10 < host
    with pytest.raises(kp.PolicyError):
        kp.priority(sel, kp.KIND_PROTECT, explicit=70000)


def test_reqid_mapping():
    assert kp.kernel_reqid(1) == 0x15E00001
    assert kp.engine_reqid(kp.kernel_reqid(4242)) == 4242
    assert kp.is_our_reqid(0x15E00001) and not kp.is_our_reqid(0x15E00000) and not kp.is_our_reqid(5)
    with pytest.raises(kp.PolicyError):
        kp.kernel_reqid(0)
    with pytest.raises(kp.PolicyError):
        kp.kernel_reqid(kp.REQID_SPAN)


def test_tunnel_policies():
    specs = kp.protect_policies([parse_ts("198.51.100.0/25")], [parse_ts("198.51.100.128/25")],
                                "192.0.2.1", "192.0.2.2", "esp", "tunnel", 0x15E00007)
    by_dir = {}
    for s in specs:
        by_dir.setdefault(s.dir, []).append(s)
    (out,) = by_dir[XFRM_POLICY_OUT]
    (inp,) = by_dir[XFRM_POLICY_IN]
    assert (out.sel.saddr, out.sel.daddr) == ("198.51.100.0", "198.51.100.128")
    assert (out.tmpl.src, out.tmpl.dst, out.tmpl.reqid, out.tmpl.mode) == ("192.0.2.1", "192.0.2.2", 0x15E00007, 1)
    assert (inp.sel.saddr, inp.tmpl.src, inp.tmpl.dst) == ("198.51.100.128", "192.0.2.2", "192.0.2.1")
    fwd = {(s.sel.saddr, s.tmpl is not None) for s in by_dir[XFRM_POLICY_FWD]}
    # inbound fwd with the template, outbound fwd allow-only (for discard rules on a gateway)
    assert fwd == {("198.51.100.128", True), ("198.51.100.0", False)}
    assert len({s.priority for s in specs}) == 1


def test_transport_policies_have_no_fwd():
    specs = kp.protect_policies([parse_ts("192.0.2.1")], [parse_ts("192.0.2.2[udp/1701]")],
                                "192.0.2.1", "192.0.2.2", "ah", "transport", 0x15E00001)
    assert sorted(s.dir for s in specs) == [XFRM_POLICY_IN, XFRM_POLICY_OUT]
    assert all(s.tmpl.proto == 51 and s.tmpl.mode == 0 for s in specs)
    out = next(s for s in specs if s.dir == XFRM_POLICY_OUT)
    assert (out.sel.dport, out.sel.sport_mask) == (1701, 0)


def test_rule_policies_cover_both_directions_and_forwarding():
    specs = kp.rule_policies("bypass", [TrafficSelector.any()], [parse_ts("0.0.0.0/0[udp/53]")])
    summary = sorted((s.dir, s.sel.sport, s.sel.dport) for s in specs)
    assert summary == [(XFRM_POLICY_IN, 53, 0), (XFRM_POLICY_OUT, 0, 53),
                       (XFRM_POLICY_FWD, 0, 53), (XFRM_POLICY_FWD, 53, 0)]
    assert {s.action for s in specs} == {XFRM_POLICY_ALLOW} and all(s.tmpl is None for s in specs)
    drop = kp.rule_policies("discard", [TrafficSelector.any()], [TrafficSelector.any()])
    assert len(drop) == 3 and {s.action for s in drop} == {XFRM_POLICY_BLOCK}  # fwd both ways is one selector
    with pytest.raises(kp.PolicyError):
        kp.rule_policies("protect", [TrafficSelector.any()], [TrafficSelector.any()])


def _policy_msg(priority, reqids=()):
    m = xfrm_userpolicy_info()
    m["priority"] = priority
    if reqids:
        m["attrs"] = [("XFRMA_TMPL", [{"reqid": r} for r in reqids])]
    (reply,) = list(parse_messages(encode_request(m, 0x13, 0, 1)))
    return reply.msg


def test_our_policies_are_recognised_by_band_and_reqid():
    assert policy_is_ours(_policy_msg(kp.PRIORITY_BASE + 5))
    assert policy_is_ours(_policy_msg(kp.PRIORITY_BASE + 0x10000, [0x15E00003]))
    assert not policy_is_ours(_policy_msg(375423, [0x15E00003]))          # charon's priority
    assert not policy_is_ours(_policy_msg(kp.PRIORITY_BASE + 5, [1]))      # someone else's reqid
    assert not policy_is_ours(_policy_msg(kp.PRIORITY_BASE + kp.PRIORITY_SPAN))


def test_who_may_change_a_shared_policy():
    spec = kp.rule_policies("discard", [TrafficSelector.any()], [TrafficSelector.any()])[0]
    child = ("child", 0x100, 0x15E00001)
    assert may_replace(PolicyEntry(spec, {child}), ("child", 0x200, 0x15E00001))   # rekey, same reqid
    assert may_replace(PolicyEntry(spec, {("trap", 1, 0x15E00001)}), child)
    assert not may_replace(PolicyEntry(spec, {child}), ("child", 0x300, 0x15E00002))
    assert not may_replace(PolicyEntry(spec, {child}), ("rule", "r", None))
    assert may_replace(PolicyEntry(spec, {("rule", "old", None)}), ("rule", "new", None))


# ---------------------------------------------------------------- SAs

def _ev(**changes) -> ChildSaInstalled:
    base = dict(ike_sa=1, connection="c", child="net", unique_id=3, reqid=2, protocol="esp", mode="tunnel",
                spi_in=0xC1000001, spi_out=0xC2000001, local_addr="192.0.2.1", remote_addr="192.0.2.2",
                local_ts=(parse_ts("198.51.100.1"),), remote_ts=(parse_ts("198.51.100.129"),),
                encr_id=20, encr_key_length=128, integ_id=None, esn=False,
                keys=ChildKeys(Secret(b"\x01" * 20), Secret(b""), Secret(b"\x02" * 20), Secret(b"")))
    base.update(changes)
    return ChildSaInstalled(**base)


def _attrs(msg) -> dict:
    (reply,) = list(parse_messages(encode_request(msg, 0x10, 0, 1)))
    return {name: value for name, value in reply.msg["attrs"]}, reply.msg


def test_inbound_and_outbound_gcm_sa():
    attrs, msg = _attrs(build_sa(_ev(), True, 0x15E00002))
    assert (msg["id"]["spi"], msg["reqid"], msg["mode"]) == (0xC1000001, 0x15E00002, 1)
    assert msg["flags"] & XFRM_STATE_AF_UNSPEC and msg["sel"]["family"] == 0
    assert attrs["XFRMA_ALG_AEAD"] == {"alg_name": "rfc4106(gcm(aes))", "alg_key_len": 160, "alg_icv_len": 128,
                                       "alg_key": b"\x01" * 20}
    # a 64-packet window does not fit the legacy u8 bitmap of 32
    assert attrs["XFRMA_REPLAY_ESN_VAL"]["replay_window"] == 64 and msg["replay_window"] == 0
    assert msg["lft"]["soft_byte_limit"] == XFRM_INF

    attrs, msg = _attrs(build_sa(_ev(), False, 0x15E00002))
    assert msg["id"]["spi"] == 0xC2000001 and attrs["XFRMA_ALG_AEAD"]["alg_key"] == b"\x02" * 20
    assert "XFRMA_REPLAY_ESN_VAL" not in attrs and msg["replay_window"] == 0


def test_esn_encap_and_limits():
    ev = _ev(esn=True, encap=True, local_port=4500, remote_port=4501, soft_bytes=1000, hard_packets=9,
             replay_window=32)
    attrs, msg = _attrs(build_sa(ev, True, 0x15E00002))
    assert msg["flags"] & XFRM_STATE_ESN
    assert attrs["XFRMA_REPLAY_ESN_VAL"]["bmp_len"] == 1 and attrs["XFRMA_REPLAY_ESN_VAL"]["replay_window"] == 32
    assert (attrs["XFRMA_ENCAP"]["encap_sport"], attrs["XFRMA_ENCAP"]["encap_dport"]) == (4501, 4500)
    assert (msg["lft"]["soft_byte_limit"], msg["lft"]["hard_packet_limit"]) == (1000, 9)
    attrs, _ = _attrs(build_sa(ev, False, 0x15E00002))
    assert (attrs["XFRMA_ENCAP"]["encap_sport"], attrs["XFRMA_ENCAP"]["encap_dport"]) == (4500, 4501)
    assert attrs["XFRMA_REPLAY_ESN_VAL"]["replay_window"] == 1  # the kernel refuses ESN with window 0


@pytest.mark.parametrize("encr, integ, names", [
    ((12, 256, 32), (14, 64), {"XFRMA_ALG_CRYPT": "cbc(aes)", "XFRMA_ALG_AUTH_TRUNC": "hmac(sha512)"}),
    ((28, None, 36), (None, 0), {"XFRMA_ALG_AEAD": "rfc7539esp(chacha20,poly1305)"}),
    ((16, 256, 35), (None, 0), {"XFRMA_ALG_AEAD": "rfc4309(ccm(aes))"}),
    ((13, 128, 20), (13, 48), {"XFRMA_ALG_CRYPT": "rfc3686(ctr(aes))", "XFRMA_ALG_AUTH_TRUNC": "hmac(sha384)"}),
])
def test_algorithm_names(encr, integ, names):
    (eid, bits, elen), (iid, ilen) = encr, integ
    keys = ChildKeys(Secret(b"k" * elen), Secret(b"i" * ilen), Secret(b"k" * elen), Secret(b"i" * ilen))
    attrs, _ = _attrs(build_sa(_ev(encr_id=eid, encr_key_length=bits, integ_id=iid, keys=keys), False, 0x15E00002))
    assert {k: v["alg_name"] for k, v in attrs.items() if k.startswith("XFRMA_ALG")} == names
    if "XFRMA_ALG_AUTH_TRUNC" in attrs:
        assert attrs["XFRMA_ALG_AUTH_TRUNC"]["alg_trunc_len"] == ilen * 4  # RFC 4868: half the key


def test_ah_transport_sa():
    keys = ChildKeys(Secret(b""), Secret(b"a" * 32), Secret(b""), Secret(b"b" * 32))
    attrs, msg = _attrs(build_sa(_ev(protocol="ah", mode="transport", encr_id=None, encr_key_length=None,
                                     integ_id=12, keys=keys), False, 0x15E00002))
    assert msg["id"]["proto"] == 51 and msg["mode"] == 0 and msg["sel"]["family"] == socket.AF_INET
    assert list(attrs) == ["XFRMA_ALG_AUTH_TRUNC"]  # outbound: no replay window
    assert attrs["XFRMA_ALG_AUTH_TRUNC"]["alg_key"] == b"b" * 32


@pytest.mark.parametrize("changes, message", [
    (dict(keys=ChildKeys(Secret(b"\x01" * 16), Secret(b""), Secret(b"\x02" * 16), Secret(b""))),
     "AES_GCM_16_128 needs a 20-byte key .16 \\+ 4 salt., got 16 bytes"),
    (dict(encr_id=3, encr_key_length=None), "needs a 24-byte key"),
    (dict(encr_id=7), "does not support ESP encryption BLOWFISH"),
    (dict(protocol="ah", integ_id=12), "AH has no encryption"),
    (dict(spi_in=0x10), "SPI 0x10 is outside"),
    (dict(remote_addr="2001:db8::2"), "different families"),
    (dict(replay_window=5000), "replay window 5000"),
    (dict(mode="beet"), "neither tunnel nor transport"),
    (dict(protocol="ah", encr_id=None, encr_key_length=None, integ_id=12, encap=True,
          keys=ChildKeys(Secret(b""), Secret(b"a" * 32), Secret(b""), Secret(b"b" * 32))), "UDP encapsulation"),
])
def test_bad_events_are_refused_with_a_reason(changes, message):
    with pytest.raises(SaConfigError, match=message):
        build_sa(_ev(**changes), True, 0x15E00002)


def test_an_outbound_sa_without_esn_is_rekeyed_before_its_sequence_numbers_run_out():
    """RFC 4303 §3.3.3: without ESN a new SA must be in place before the 2^32nd packet; the
    kernel only drops once oseq would wrap (no expire event), so the packet limits of the
    outbound SA ask for it, at the userspace datapath's margin (engine.esp.sa)."""
    from engine.esp.sa import SEQ_MAX_32, SEQ_SOFT_32

    _, out = _attrs(build_sa(_ev(), False, 0x15E00002))
    assert (out["lft"]["soft_packet_limit"], out["lft"]["hard_packet_limit"]) == (SEQ_SOFT_32, SEQ_MAX_32)
    _, out = _attrs(build_sa(_ev(soft_packets=1000, hard_packets=2000), False, 0x15E00002))
    assert (out["lft"]["soft_packet_limit"], out["lft"]["hard_packet_limit"]) == (1000, 2000)
    for ev, inbound in ((_ev(), True), (_ev(esn=True), False)):  # the peer's counter; 64-bit numbers
        _, msg = _attrs(build_sa(ev, inbound, 0x15E00002))
        assert (msg["lft"]["soft_packet_limit"], msg["lft"]["hard_packet_limit"]) == (XFRM_INF, XFRM_INF)


def test_selectors_that_need_too_many_kernel_policies_are_refused_before_they_are_built():
    """An address range becomes the networks that cover it and a port range (port, mask) blocks;
    a CHILD SA needs their product. Ranges a peer narrowed to (ours any, theirs awkward) would make
    millions of policies (IPv6 ranges with port ranges: 254 * 254 * 30 * 30 per pair of TS),
    built on the event loop: refused, with the count, before anything is built."""
    import time

    awkward = parse_ts("0.0.0.1-255.255.255.254")
    started = time.monotonic()
    with pytest.raises(kp.PolicyError, match=r"3844 kernel selectors .*at most 1024"):
        kp.protect_policies([awkward], [awkward], "192.0.2.1", "192.0.2.2", "esp", "tunnel", 0x15E00001)
    v6 = parse_ts("::1-ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe[tcp/1-65534]")
    with pytest.raises(kp.PolicyError, match="kernel selectors"):
        kp.protect_policies([v6], [v6], "2001:db8::1", "2001:db8::2", "esp", "tunnel", 0x15E00001)
    with pytest.raises(kp.PolicyError, match="kernel selectors"):  # many TS pairs add up too
        kp.protect_policies([parse_ts(f"10.0.{i}.1-10.0.{i}.6") for i in range(40)],
                            [parse_ts(f"10.1.{i}.1-10.1.{i}.6") for i in range(40)],
                            "192.0.2.1", "192.0.2.2", "esp", "tunnel", 0x15E00001)
    assert time.monotonic() - started < 2
    assert len(kp.protect_policies([parse_ts("10.0.0.1-10.0.0.254")], [TrafficSelector.any()],
                                   "192.0.2.1", "192.0.2.2", "esp", "tunnel", 0x15E00001)) == 4 * 14
