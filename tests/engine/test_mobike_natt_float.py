"""RFC 4555 §3.3 (MUST, for implementations of MOBIKE and NAT-T) and charon's ike_natd
process_i: with MOBIKE on, the initiator moves IKE to the NAT-T ports right after IKE_SA_INIT
when the peer does NAT-T, NAT or not; ESP stays bare without a NAT."""

from __future__ import annotations

from engine.events import ChildSaInstalled, ExchangeSent

from tests.engine.ike_pair import Pair, connection, mirror, policy


def _up(mobike: bool):
    a = connection(mobike=mobike)
    p = Pair(policy(a), policy(mirror(a), address="192.0.2.2"))
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def _ports(p, exchange):
    return [(e.local[1], e.remote[1]) for e in p.of("a", ExchangeSent) if e.message.exchange == exchange]


def test_with_mobike_ike_auth_goes_to_the_natt_port_without_a_nat():
    p = _up(True)
    assert _ports(p, "IKE_SA_INIT") == [(500, 500)]
    assert _ports(p, "IKE_AUTH") == [(4500, 4500)]
    (installed,) = p.of("a", ChildSaInstalled)
    assert not installed.encap  # no NAT: ESP is not put into UDP
    assert p.a.sas[0].remote == ("192.0.2.2", 4500) and p.b.sas[0].remote[1] == 4500


def test_without_mobike_ike_stays_on_port_500():
    p = _up(False)
    assert _ports(p, "IKE_AUTH") == [(500, 500)]
