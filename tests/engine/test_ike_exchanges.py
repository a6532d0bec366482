"""The IKE engine against itself over a fake link: every exchange, both roles,
with explicit time (no sockets, no clock)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.events import (
    ChildSaDeleted,
    ChildSaInstalled,
    DpdTimeout,
    ExchangeReceived,
    ExchangeSent,
    IkeSaStateChanged,
    IkeState,
    NegotiationFailed,
)
from engine.policy.model import EngineConfig
from engine.wire.constants import NON_ESP_MARKER
from engine.wire.message import decode_header

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy


def pair(a_kw=None, b_kw=None, *, pol_a=None, pol_b=None, **conn_kw):
    a = connection(**conn_kw)
    b = mirror(a, **(b_kw or {}))
    if a_kw:
        a = dataclasses.replace(a, **a_kw)
    return Pair(pol_a or policy(a, address=LEFT), pol_b or policy(b, address=RIGHT))


def up(p: Pair, seconds: float = 1.0) -> None:
    p.a.initiate("tun", p.now)
    p.advance(seconds)


def children(p: Pair, side: str):
    return [c for sa in p.ep(side).sas for c in sa.children.values()]


def established(p: Pair, side: str):
    return [sa for sa in p.ep(side).sas if sa.state == IkeState.ESTABLISHED]


def assert_consistent(p: Pair) -> None:
    """Each side's CHILD SAs pair up with the peer's: same SPIs crossed, same keys."""
    ca = {c.spi_in: c for c in children(p, "a")}
    cb = {c.spi_in: c for c in children(p, "b")}
    assert len(ca) == len(cb)
    for spi, c in ca.items():
        peer = cb[c.spi_out]
        assert peer.spi_out == spi
        assert peer.keys.encr_in == c.keys.encr_out and peer.keys.encr_out == c.keys.encr_in


@pytest.mark.parametrize("ike,esp", [
    ("aes256gcm16-prfsha256-x25519", "aes256gcm16"),
    ("aes128-sha256-modp2048", "aes128-sha256"),
    ("aes256-sha384-ecp384", "aes256-sha512"),
    ("chacha20poly1305-prfsha512-x448", "chacha20poly1305"),
    ("aes128gcm16-prfsha384-ecp256", "aes128gcm16-esn"),
])
def test_handshake_for_each_suite(ike, esp):
    p = pair(ike=(ike,), children=[child(esp=(esp,))])
    up(p)
    assert len(established(p, "a")) == 1 and len(established(p, "b")) == 1
    assert_consistent(p)
    info = p.a.status(p.now)[0]
    assert info.children[0].state == "INSTALLED"


def test_invalid_ke_payload_then_retry_with_the_peers_group():
    a = connection(ike=("aes256gcm16-prfsha256-x25519-ecp256",))
    b = mirror(a, proposals=connection(ike=("aes256gcm16-prfsha256-ecp256",)).proposals)
    p = Pair(policy(a, address=LEFT), policy(b, address=RIGHT))
    up(p)
    sent = [e.message for e in p.of("a", ExchangeSent) if e.message.exchange == "IKE_SA_INIT"]
    recv = [e.message for e in p.of("a", ExchangeReceived) if e.message.exchange == "IKE_SA_INIT"]
    assert len(sent) == 2 and "N(INVAL_KE)" in recv[0].payloads
    assert p.a.sas[0].chosen.ke == 19
    assert_consistent(p)


def test_cookie_demanded_above_the_half_open_threshold():
    a = connection()
    pol_b = policy(mirror(a), address=RIGHT)
    pol_b = dataclasses.replace(pol_b, engine=dataclasses.replace(pol_b.engine, half_open_threshold=0))
    p = Pair(policy(a, address=LEFT), pol_b)
    up(p)
    recv = [e.message for e in p.of("a", ExchangeReceived) if e.message.exchange == "IKE_SA_INIT"]
    assert recv[0].payloads == ("N(COOKIE)",)
    assert p.b.stats["cookies_sent"] == 1
    assert len(established(p, "b")) == 1
    assert_consistent(p)


def test_no_proposal_chosen_names_both_lists():
    p = pair(b_kw={"proposals": connection(ike=("aes128-sha256-modp2048",)).proposals})
    up(p, 5)
    fb = p.of("b", NegotiationFailed)
    assert fb and fb[0].notify == "NO_PROPOSAL_CHOSEN"
    assert any("AES_GCM_16_256" in x for x in fb[0].remote_proposals)
    assert any("AES_CBC_128" in x for x in fb[0].local_proposals)
    fa = p.of("a", NegotiationFailed)
    assert fa and fa[0].notify == "NO_PROPOSAL_CHOSEN" and fa[0].sent_by_peer
    assert "AES_GCM_16_256" in fa[0].reason
    assert not established(p, "a")


def test_wrong_psk_fails_authentication_on_both_sides():
    a = connection()
    p = Pair(policy(a, address=LEFT), policy(mirror(a), psk="another-secret-entirely-0987654321", address=RIGHT))
    up(p)
    fb = p.of("b", NegotiationFailed)
    assert fb[0].notify == "AUTHENTICATION_FAILED" and "pre-shared key" in fb[0].reason
    fa = p.of("a", NegotiationFailed)
    assert fa[0].notify == "AUTHENTICATION_FAILED" and fa[0].sent_by_peer
    assert not p.a.sas and not p.b.sas


def test_unknown_peer_id_is_refused():
    p = pair(b_kw={"remote": dataclasses.replace(connection().local, id=None)})
    b_conn = p.b.policy.connections[0]
    from engine.policy.identity import parse_identity

    p.b.policy = dataclasses.replace(p.b.policy, connections=(dataclasses.replace(
        b_conn, remote=dataclasses.replace(b_conn.remote, id=parse_identity("someone.else.example"))),))
    up(p)
    fb = p.of("b", NegotiationFailed)
    assert fb[0].notify == "AUTHENTICATION_FAILED" and "left.example" in fb[0].reason


def test_responder_narrows_traffic_selectors():
    a = connection(children=[child(local_ts="198.51.100.0/24", remote_ts="198.51.100.128/25")])
    b = dataclasses.replace(mirror(a), children=(child(local_ts="198.51.100.128/26[tcp/443]",
                                                       remote_ts="198.51.100.0/25"),))
    p = Pair(policy(a, address=LEFT), policy(b, address=RIGHT))
    up(p)
    ca = children(p, "a")[0]
    assert [str(t) for t in ca.local_ts] == ["198.51.100.0/25"]
    assert [str(t) for t in ca.remote_ts] == ["198.51.100.128/26[tcp/443]"]


def test_ts_unacceptable_keeps_the_ike_sa():
    a = connection(children=[child(local_ts="198.51.100.1/32", remote_ts="198.51.100.129/32")])
    b = dataclasses.replace(mirror(a), children=(child(local_ts="198.51.100.200/32", remote_ts="198.51.100.1/32"),))
    p = Pair(policy(a, address=LEFT), policy(b, address=RIGHT))
    up(p)
    assert len(established(p, "a")) == 1 and not children(p, "a")
    fa = p.of("a", NegotiationFailed)
    assert fa[0].notify == "TS_UNACCEPTABLE" and "198.51.100.129/32" in fa[0].reason
    fb = p.of("b", NegotiationFailed)
    assert fb[0].notify == "TS_UNACCEPTABLE"


def test_child_proposal_mismatch_in_ike_auth():
    a = connection(children=[child(esp=("aes256gcm16",))])
    b = dataclasses.replace(mirror(a), children=(child(esp=("aes128-sha256",), local_ts="198.51.100.129/32",
                                                       remote_ts="198.51.100.1/32"),))
    p = Pair(policy(a, address=LEFT), policy(b, address=RIGHT))
    up(p)
    fb = p.of("b", NegotiationFailed)
    assert fb[0].notify == "NO_PROPOSAL_CHOSEN"
    assert any("AES_GCM_16_256" in x for x in fb[0].remote_proposals)
    assert any("AES_CBC_128" in x for x in fb[0].local_proposals)
    assert len(established(p, "a")) == 1


@pytest.mark.parametrize("side", ["a", "b"])
def test_child_rekey_by_either_side(side):
    p = pair(children=[child(esp=("aes256gcm16-x25519",))])
    up(p)
    old = children(p, "a")[0]
    p.ep(side).rekey("tun", p.now)
    p.advance(1)
    now = children(p, "a")
    assert len(now) == 1 and now[0].spi_in != old.spi_in
    assert now[0].ke_group == 31  # PFS with the configured group
    assert_consistent(p)
    for s in ("a", "b"):
        inst = p.of(s, ChildSaInstalled)
        dele = p.of(s, ChildSaDeleted)
        assert len(inst) == 2 and inst[1].rekeyed_from == inst[0].spi_in
        assert len(dele) == 1 and dele[0].spi_in == inst[0].spi_in and dele[0].reason == "rekeyed"


@pytest.mark.parametrize("side", ["a", "b"])
def test_ike_rekey_by_either_side_keeps_children(side):
    p = pair()
    up(p)
    old = p.ep(side).sas[0]
    kid = children(p, "a")[0]
    p.ep(side).rekey("tun", p.now, ike=True)
    p.advance(1)
    for s in ("a", "b"):
        sas = p.ep(s).sas
        assert len(sas) == 1 and sas[0].state == IkeState.ESTABLISHED
        assert sas[0].spi_i != old.spi_i
    assert children(p, "a")[0] is kid
    assert not p.of("a", ChildSaDeleted)
    # The new IKE SA works: a CHILD rekey on it succeeds.
    p.a.rekey("tun", p.now)
    p.advance(1)
    assert_consistent(p)
    assert children(p, "a")[0].spi_in != kid.spi_in


def test_simultaneous_child_rekey_leaves_one_pair():
    p = pair()
    up(p)
    p.a.rekey("tun", p.now)
    p.b.rekey("tun", p.now)
    p.advance(5)
    assert len(children(p, "a")) == 1 and len(children(p, "b")) == 1
    assert_consistent(p)


def test_simultaneous_ike_rekey_leaves_one_ike_sa():
    p = pair()
    up(p)
    kid = children(p, "a")[0]
    p.a.rekey("tun", p.now, ike=True)
    p.b.rekey("tun", p.now, ike=True)
    p.advance(5)
    sa_a = [sa for sa in p.a.sas if sa.state != IkeState.DESTROYED]
    sa_b = [sa for sa in p.b.sas if sa.state != IkeState.DESTROYED]
    assert len(sa_a) == 1 and len(sa_b) == 1
    assert sa_a[0].spi_i == sa_b[0].spi_i and sa_a[0].spi_r == sa_b[0].spi_r
    assert children(p, "a") == [kid]
    p.b.rekey("tun", p.now)
    p.advance(1)
    assert_consistent(p)


@pytest.mark.parametrize("side", ["a", "b"])
def test_terminate_from_either_side(side):
    p = pair()
    up(p)
    p.ep(side).terminate("tun", p.now)
    p.advance(1)
    assert not p.a.sas and not p.b.sas
    for s in ("a", "b"):
        assert len(p.of(s, ChildSaDeleted)) == 1
        assert p.of(s, IkeSaStateChanged)[-1].new == IkeState.DESTROYED


def test_dpd_detects_a_dead_peer_and_restarts():
    a = connection(dpd_delay=30.0, children=[child(dpd_action="restart")])
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    up(p)
    p.filter = lambda side, d: False  # the peer dies
    p.advance(30 + 4 * (1 + 1.8 + 1.8 ** 2 + 1.8 ** 3 + 1.8 ** 4 + 1.8 ** 5) + 1)
    dpd = p.of("a", DpdTimeout)
    assert dpd and dpd[0].action == "restart"
    sent = [e for e in p.of("a", ExchangeSent) if e.message.exchange == "INFORMATIONAL"]
    assert [e.message.retransmit for e in sent][:6] == [0, 1, 2, 3, 4, 5]
    assert sent[0].time == 1030.0  # dpd_delay after the last message
    # restart: a new IKE_SA_INIT went out after the peer was declared gone
    assert p.a.sas and p.a.sas[0].state == IkeState.CONNECTING
    # the peer comes back with no memory of us
    from engine.ike.endpoint import IkeEndpoint

    p.b = IkeEndpoint(p.b.policy, seed=7)
    p.filter = None
    p.advance(120)
    assert len(established(p, "a")) == 1 and len(children(p, "a")) == 1
    assert_consistent(p)


def test_dpd_clear_removes_everything():
    a = connection(dpd_delay=10.0, children=[child(dpd_action="clear")])
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    up(p)
    p.filter = lambda side, d: False
    p.advance(400)
    assert p.of("a", DpdTimeout)[0].action == "clear"
    assert not p.a.sas and len(p.of("a", ChildSaDeleted)) == 1


def test_retransmissions_survive_loss():
    p = pair()
    dropped = {"n": 0}

    def lossy(side, d):
        if side == "b" and dropped["n"] < 2:
            dropped["n"] += 1
            return False
        return True

    p.filter = lossy
    up(p, 30)
    assert established(p, "a")
    retx = [e.message.retransmit for e in p.of("a", ExchangeSent)]
    assert max(retx) >= 1
    assert_consistent(p)


def test_responder_replays_its_cached_response():
    p = pair()
    seen = []
    p.filter = lambda side, d: seen.append((side, d)) or True
    up(p)
    auth_req = [d for side, d in seen if side == "a"][1]
    before = len(p.b.datagrams_to_send())
    data = auth_req.data[4:] if auth_req.data.startswith(NON_ESP_MARKER) else auth_req.data
    p.b.receive_datagram(data, auth_req.remote, auth_req.local, p.now)
    out = p.b.datagrams_to_send()
    assert before == 0 and len(out) == 1
    raw = out[0].data[4:] if out[0].data.startswith(NON_ESP_MARKER) else out[0].data
    assert decode_header(raw).mid == 1
    assert p.b.stats["retransmitted_request"] == 1
    assert len(p.of("b", ChildSaInstalled)) == 1  # processed once


def test_ike_fragmentation_both_ways():
    a = connection()
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.fragment_size = p.b.fragment_size = 200
    up(p)
    frag = [e.message for e in p.of("b", ExchangeReceived) if e.message.exchange == "IKE_AUTH"]
    assert frag[0].fragments > 1
    assert_consistent(p)


def test_forced_encap_moves_to_natt_port():
    p = pair(encap=True, b_kw={"encap": False})
    up(p)
    sa = p.a.sas[0]
    assert sa.floated and sa.remote[1] == 4500 and sa.nat.remote_behind is False
    # our fake NAT-D source makes the peer think we are behind a NAT, so it encapsulates too
    assert p.b.sas[0].nat.remote_behind
    inst = p.of("a", ChildSaInstalled)[0]
    assert inst.encap and inst.local_port == 4500 and inst.remote_port == 4500


def test_lifetimes_rekey_child_and_ike_without_commands():
    a = connection(rekey_time=600.0, over_time=60.0, rand_time=0.0,
                   children=[child(rekey_time=100.0, life_time=120.0, rand_time=0.0)])
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    up(p)
    p.advance(700)
    assert len(p.of("a", ChildSaInstalled)) >= 6
    assert_consistent(p)
    assert len([sa for sa in p.a.sas if sa.state == IkeState.ESTABLISHED]) == 1
    assert any(e.new == IkeState.REKEYED for e in p.of("a", IkeSaStateChanged) + p.of("b", IkeSaStateChanged))


def test_second_child_and_transport_mode():
    a = connection(children=[child("one"), child("two", local_ts="192.0.2.1/32", remote_ts="192.0.2.2/32",
                                                     mode="transport", esp=("aes128gcm16-modp2048",))])
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    up(p)
    kids = {c.config.name: c for c in children(p, "a")}
    assert set(kids) == {"one", "two"}
    assert kids["two"].mode == "transport" and kids["two"].ke_group == 14
    assert_consistent(p)


def test_garbage_and_truncated_input_never_raises():
    p = pair()
    up(p)
    good = [d for side, d in p.log if side == "a"]
    for d in good:
        raw = d.data[4:] if d.data.startswith(NON_ESP_MARKER) else d.data
        for cut in range(0, len(raw), 7):
            p.b.receive_datagram(raw[:cut], d.remote, d.local, p.now)
        p.b.receive_datagram(raw[:-1] + bytes([raw[-1] ^ 1]), d.remote, d.local, p.now)
    assert established(p, "b")
    assert p.b.stats.get("malformed", 0) + p.b.stats.get("integrity", 0) > 0


def test_engine_config_retransmit_settings_are_used():
    a = connection()
    pol = policy(a, address=LEFT)
    pol = dataclasses.replace(pol, engine=EngineConfig(datapath="lab", listen=(LEFT,), retransmit_timeout=1.0,
                                                       retransmit_base=2.0, retransmit_tries=2))
    p = Pair(pol, policy(mirror(a), address=RIGHT))
    p.filter = lambda side, d: False
    p.a.initiate("tun", p.now)
    start = p.now
    p.advance(20)
    sends = [e.time - start for e in p.of("a", ExchangeSent)]
    assert sends[:3] == [0.0, 1.0, 3.0]
    failed = p.of("a", NegotiationFailed)
    assert failed and failed[0].notify == "TIMEOUT"


def test_a_child_the_datapath_refuses_is_deleted_with_the_peer():
    p = pair()
    up(p)
    kid = children(p, "a")[0]
    p.a.child_install_failed(int.from_bytes(kid.spi_in, "big"), p.now, "policy conflict")
    p.advance(1)
    assert not children(p, "a") and not children(p, "b")
    failed = p.of("a", NegotiationFailed)
    assert failed and failed[-1].notify == "DATAPATH" and "policy conflict" in failed[-1].reason
    assert established(p, "a")  # the IKE SA stays


def test_stateless_answers_and_the_sa_that_follows_are_one_negotiation():
    """COOKIE / INVALID_KE_PAYLOAD / NO_PROPOSAL_CHOSEN are answered without state, but
    the negotiation view must see them under the same IKE SA number as what follows."""
    a = connection(ike=("aes256gcm16-prfsha256-x25519-ecp256",))
    b = mirror(a, proposals=connection(ike=("aes256gcm16-prfsha256-ecp256",)).proposals)
    p = Pair(policy(a, address=LEFT), policy(b, address=RIGHT))
    up(p)
    ids = {e.ike_sa for e in p.of("b", ExchangeReceived) + p.of("b", ExchangeSent)}
    assert ids == {p.b.sas[0].unique_id}

    p = pair(b_kw={"proposals": connection(ike=("aes128-sha256-modp2048",)).proposals})
    up(p, 2)
    failed = p.of("b", NegotiationFailed)[0]
    assert {e.ike_sa for e in p.of("b", ExchangeReceived)} == {failed.ike_sa}


def test_initiator_checks_nat_detection_against_the_answers_source():
    """RFC 7296 §2.23: NAT_DETECTION_SOURCE_IP is compared with the source in the IP header of
    the packet that carries it. An IKE_SA_INIT answer from another address than the one we sent
    to (a NAT rewrote it, or a multi-homed peer answered from another address) means the peer is
    behind a NAT; comparing with the address we sent to saw none."""
    p = pair()
    p.a.initiate("tun", p.now)
    p.collect()
    side, req = p.wire.pop(0)
    assert side == "a"
    p.b.receive_datagram(req.data, req.remote, req.local, p.now)
    p.collect()
    side, answer = p.wire.pop(0)
    assert side == "b"
    p.wire.clear()
    p.a.receive_datagram(answer.data, answer.remote, ("192.0.2.9", answer.local[1]), p.now)
    sa = p.a.sas[0]
    assert sa.spi_r != b"\0" * 8, "the answer was not taken"
    assert sa.nat.remote_behind is True and sa.nat.local_behind is False
    assert sa.floated  # so IKE_AUTH goes to the NAT-T port


def test_a_child_we_refuse_is_not_reported_as_the_peers_refusal(monkeypatch):
    """A peer that answers with selectors wider than we proposed: we refuse its answer. That was
    reported with sent_by_peer=True ("the peer rejected us" in the console) like a refusal it sent."""
    from engine.ike.exchanges import child_sa as child_sa_module

    a = connection(children=[child(local_ts="198.51.100.1/32", remote_ts="198.51.100.129/32")])
    b = dataclasses.replace(mirror(a), children=(child(local_ts="198.51.100.128/25", remote_ts="198.51.100.0/25"),))
    monkeypatch.setattr(child_sa_module, "narrow", lambda proposed, configured: list(configured))  # a lax peer
    p = Pair(policy(a, address=LEFT), policy(b, address=RIGHT))
    up(p)
    fa = p.of("a", NegotiationFailed)
    assert fa and fa[0].notify == "TS_UNACCEPTABLE" and "wider than we proposed" in fa[0].reason
    assert not fa[0].sent_by_peer
    assert len(established(p, "a")) == 1 and not children(p, "a")


def test_a_child_the_peer_refuses_is_reported_as_its_refusal():
    a = connection(children=[child(local_ts="198.51.100.1/32", remote_ts="198.51.100.129/32")])
    b = dataclasses.replace(mirror(a), children=(child(local_ts="198.51.100.200/32", remote_ts="198.51.100.1/32"),))
    p = Pair(policy(a, address=LEFT), policy(b, address=RIGHT))
    up(p)
    fa = p.of("a", NegotiationFailed)
    assert fa[0].notify == "TS_UNACCEPTABLE" and fa[0].sent_by_peer
