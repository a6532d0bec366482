"""With MOBIKE, an IKE SA's addresses change only by UPDATE_SA_ADDRESSES (RFC 4555 §3.8: "The host
not behind a NAT MUST NOT use these dynamic updates for IKEv2 packets", so that an INFORMATIONAL
without UPDATE_SA_ADDRESSES can test a path and move nothing; charon's task_manager_v2
process_message does no implicit update once MOBIKE is on). Without MOBIKE a NATed peer's
authenticated message still moves the IKE SA (RFC 7296 §2.23). Sans-IO pairs."""

from __future__ import annotations

from engine.events import ExchangeSent
from engine.ike.exchanges.informational import Dpd

from tests.engine.ike_pair import ike_data
from tests.engine.test_ike_mobike import pair

NEW_SOURCE = ("198.51.100.9", 40001)


def _dpd_from(p, side: str, source):
    """``side`` sends a DPD; its request reaches the other side from ``source``."""
    sa = p.ep(side).sas[0]
    other = p.b if side == "a" else p.a
    seen = []

    def rewrite(s, d):
        m = ike_data(d.data)
        if s == side and not seen and m is not None and not m[19] & 0x20 and m[18] == 37:
            seen.append(True)
            other.receive_datagram(m, d.remote, source, p.now)
            return False
        return True

    p.filter = rewrite
    sa.start(Dpd(sa), p.now)
    p.advance(1)
    p.filter = None
    assert seen


def test_a_mobike_gateway_answers_a_dpd_from_a_new_source_there_and_stays_where_it_was():
    p = pair()
    client, gw = p.a.sas[0], p.b.sas[0]
    before = (gw.local, gw.remote)
    since = len(p.events["b"])
    _dpd_from(p, "a", NEW_SOURCE)
    answers = [e for e in p.events["b"][since:] if isinstance(e, ExchangeSent) and e.message.response]
    assert answers and answers[0].remote == NEW_SOURCE  # answered where the request came from (§2.11)
    assert (gw.local, gw.remote) == before, "a DPD moved a MOBIKE SA (RFC 4555 §3.8)"
    assert gw.mobike_moves == 0 and gw.established and client.established


def test_a_mobike_client_stays_where_it_was_when_the_gateways_request_comes_from_elsewhere():
    p = pair()
    client = p.a.sas[0]
    before = (client.local, client.remote)
    _dpd_from(p, "b", NEW_SOURCE)
    assert (client.local, client.remote) == before, "a request moved a MOBIKE SA (RFC 4555 §3.8)"


def test_without_mobike_a_natted_peers_dpd_from_a_new_port_still_moves_the_ike_sa():
    p = pair(client_mobike=False)
    client, gw = p.a.sas[0], p.b.sas[0]
    assert not gw.mobike
    gw.nat.remote_behind = True  # the client is behind a NAT (§2.23 follows NATed peers only)
    _dpd_from(p, "a", (gw.remote[0], 40001))
    assert gw.remote == (gw.remote[0], 40001)


def test_without_mobike_the_child_sas_follow_the_natted_peers_new_port():
    """charon's update_hosts moves every CHILD SA with the IKE SA: the IKE SA alone following the
    peer's new NAT mapping left our ESP going to the old one (a one-way tunnel DPD never sees)."""
    from engine.events import ChildSaMoved

    p = pair(client_mobike=False)
    gw = p.b.sas[0]
    gw.nat.remote_behind = True
    (child,) = gw.children.values()
    _dpd_from(p, "a", (gw.remote[0], 40001))
    moves = p.of("b", ChildSaMoved)
    assert [(m.spi_in, m.remote_addr, m.remote_port) for m in moves] == [(child.spi_in_int, gw.remote[0], 40001)]


def test_with_mobike_no_child_sa_follows_a_dpd_from_a_new_source():
    from engine.events import ChildSaMoved

    p = pair()
    _dpd_from(p, "a", NEW_SOURCE)
    assert not p.of("b", ChildSaMoved)
