"""IKE_SA_INIT + IKE_AUTH between two of our endpoints over a fake link."""

from __future__ import annotations

from engine.events import ChildSaInstalled, IkeSaStateChanged, IkeState

from tests.engine.ike_pair import LEFT, RIGHT, Pair, connection, mirror, policy


def make_pair(**conn_kw):
    a = connection(**conn_kw)
    b = mirror(a)
    return Pair(policy(a, address=LEFT), policy(b, address=RIGHT))


def test_psk_handshake_installs_matching_child_sas():
    p = make_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    ia = p.of("a", ChildSaInstalled)
    ib = p.of("b", ChildSaInstalled)
    assert len(ia) == 1 and len(ib) == 1
    a, b = ia[0], ib[0]
    assert a.spi_in == b.spi_out and a.spi_out == b.spi_in
    assert a.keys.encr_out == b.keys.encr_in and a.keys.encr_in == b.keys.encr_out
    assert a.keys.encr_out != a.keys.encr_in
    assert str(a.local_ts[0]) == "198.51.100.1/32" and str(b.local_ts[0]) == "198.51.100.129/32"
    assert [e.new for e in p.of("a", IkeSaStateChanged)] == [IkeState.CONNECTING, IkeState.ESTABLISHED]
    assert p.a.status(p.now)[0].state == "ESTABLISHED"
    assert p.b.status(p.now)[0].remote_id == "left.example"


def test_two_ipsec_consoles_recognise_each_other():
    """Our Vendor ID: the datapath may send whole TCP super-packets to its own kind."""
    p = make_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert p.of("a", ChildSaInstalled)[0].peer_is_ours
    assert p.of("b", ChildSaInstalled)[0].peer_is_ours
