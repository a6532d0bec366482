"""Who set the connection up survives an IKE rekey (charon's COND_ORIGINAL_INITIATOR, copied by
ike_sa.c inherit_pre), while the header role of the new IKE SA goes to the rekey's initiator
(RFC 7296 §2.18). And implicit address updates from authenticated IKE messages follow the peer
only when it is behind a NAT (charon's update_hosts without force flags: COND_NAT_THERE).
Sans-IO pairs."""

from __future__ import annotations

import dataclasses

from engine.events import ChildSaInstalled, ChildSaMoved
from engine.ike import close_action
from engine.ike.exchanges import CATALOG, mobike
from engine.ike.exchanges.informational import Dpd
from engine.wire.constants import FLAG_INITIATOR, NON_ESP_MARKER

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, ike_data, mirror, policy
from tests.engine.test_ike_mobike import MOVED, pair
from tests.engine.test_ike_redirect import OTHER, _Redirect, gateways
from tests.engine.test_mobike_nat_mapping_dpd import PUBLIC, Nat
from tests.engine.test_nat_mapping_esp import natted


def _rekeyed(p, side):
    """``side`` rekeys its IKE SA; the new established SAs (client's, gateway's)."""
    old = p.ep(side).sas[0]
    assert p.ep(side).rekey("tun", p.now, ike=True, unique_id=old.unique_id) == 1
    p.advance(5)
    (a,) = [s for s in p.a.sas if s.established]
    (b,) = [s for s in p.b.sas if s.established]
    assert a is not old and b is not old
    return a, b


def test_a_mobike_client_still_roams_after_the_gateway_rekeyed_the_ike_sa():
    p = pair()
    client, gw = _rekeyed(p, "b")
    # The header role is the rekey's (§2.18): the gateway is the new SA's initiator ...
    assert gw.original_initiator and not client.original_initiator
    since = len(p.log)
    client.start(Dpd(client), p.now)
    p.advance(1)
    sent = [ike_data(d.data) for side, d in p.log[since:] if side == "a"]
    assert sent and all(m is not None and not m[19] & FLAG_INITIATOR for m in sent)
    # ... but the client is still the side that moves.
    assert p.a.roam(p.now, address=MOVED) == 1, "the client stopped roaming after the gateway's rekey"
    p.advance(3)
    assert client.local[0] == MOVED and gw.remote[0] == MOVED and client.mobike_moves == 1
    assert isinstance(CATALOG.dpd(client), mobike.Dpd)  # NAT detection in its DPDs (RFC 4555 §3.8)
    assert not isinstance(CATALOG.dpd(gw), mobike.Dpd)


def test_the_gateway_does_not_become_the_mobike_client_after_its_own_rekey():
    p = pair()
    client, gw = _rekeyed(p, "b")
    assert not mobike.roam(gw, "192.0.2.77", p.now), "the gateway moved as if it were the client"
    assert not isinstance(CATALOG.dpd(gw), mobike.Dpd)


def test_a_client_follows_a_redirect_after_the_gateway_rekeyed():
    p = gateways(first_to=None)
    p.a.initiate("tun", p.now)
    p.advance(1)
    client, gw = _rekeyed(p, "b")
    gw.start(_Redirect(gw), p.now)
    p.advance(3)
    (new,) = [s for s in p.a.sas if s.established]
    assert new is not client and new.remote[0] == OTHER, "the REDIRECT was ignored after the rekey"


def test_a_gateway_still_counts_as_responder_for_reestablishing_after_its_own_rekey():
    # charon's reestablish: "unable to reestablish IKE_SA due to asymmetric setup" unless
    # COND_ORIGINAL_INITIATOR, which a rekey does not give the gateway.
    p = gateways(first_to=None)
    p.a.initiate("tun", p.now)
    p.advance(1)
    client, gw = _rekeyed(p, "b")
    assert gw.remote_vips  # a virtual IP of ours: the gateway cannot set this up again
    assert close_action.asymmetric(gw, "close_action = start")
    assert not close_action.asymmetric(client, "close_action = start")


def _from_elsewhere(p, nat, source):
    """The NAT filter, but the gateway's next IKE message reaches the client from ``source``."""
    sent = []

    def f(side, d):
        if side == "b" and not sent and d.data.startswith(NON_ESP_MARKER):
            sent.append(d)
            p.a.receive_datagram(d.data[len(NON_ESP_MARKER):], (LEFT, 4500), source, p.now)
            return False
        return nat(side, d)

    p.filter = f
    return sent


def _both_natted():
    """The client behind a NAT; the gateway forces encapsulation, whose faked NAT detection puts
    it "behind a NAT" for the client. The gateway has rekeyed the IKE SA."""
    client_conn = connection(children=(child(),), mobike=False, local="%any")
    gw_conn = dataclasses.replace(mirror(client_conn, remote_addrs=(), local_addrs=(RIGHT,)), encap=True)
    p = Pair(policy(client_conn, address=LEFT), policy(gw_conn, address=RIGHT))
    p.a.source_address = lambda remote: LEFT
    nat = Nat(p)
    p.filter = nat
    p.a.initiate("tun", p.now)
    p.advance(1)
    client, gw = _rekeyed(p, "b")
    assert client.nat.local_behind and client.nat.remote_behind
    return p, nat, client, gw


def test_a_client_behind_a_nat_ignores_an_esp_mapping_report_after_the_gateway_rekeyed():
    # engine.ike.nat_mapping: charon's update_sa_job goes through the same update_hosts rule.
    p, _, client, _ = _both_natted()
    (ev,) = [e for e in p.of("a", ChildSaInstalled) if e.spi_in in {c.spi_in_int for c in client.children.values()}]
    p.a.nat_mapping_changed(ev.spi_in, ("192.0.2.50", 4500), p.now)
    p.collect()
    assert client.remote == (RIGHT, 4500) and not p.of("a", ChildSaMoved)


def test_a_client_behind_a_nat_keeps_its_gateway_after_the_gateway_rekeyed():
    # §2.23 "A host behind a NAT SHOULD NOT do this type of dynamic address update"; charon's
    # update_hosts: not when NAT_HERE and ORIGINAL_INITIATOR, the latter kept across the rekey.
    p, nat, client, gw = _both_natted()
    sent = _from_elsewhere(p, nat, ("192.0.2.50", 4500))
    gw.start(Dpd(gw), p.now)
    p.advance(1)
    assert sent and client.remote == (RIGHT, 4500), "the client behind a NAT followed the gateway"
    assert not p.of("a", ChildSaMoved)


def _plain_pair():
    a = connection(mobike=False)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def test_no_implicit_port_update_when_the_peer_is_not_behind_a_nat():
    # charon's update_hosts (flags 0 after IKE_AUTH): the other end moves only with COND_NAT_THERE;
    # a port change alone from a peer that is not behind a NAT moves nothing.
    p = _plain_pair()
    sa_a, sa_b = p.a.sas[0], p.b.sas[0]
    assert not sa_a.nat.any and sa_a.remote == (RIGHT, 500) and not sa_a.floated
    sent = []

    def other_port(side, d):
        if side == "b" and not sent:
            sent.append(d)
            p.a.receive_datagram(d.data, d.remote, (RIGHT, 1500), p.now)
            return False
        return True

    p.filter = other_port
    sa_b.start(Dpd(sa_b), p.now)
    p.advance(1)
    assert sent and sa_a.remote == (RIGHT, 500), "followed a port change of a peer not behind a NAT"
    assert sa_a.established and not p.of("a", ChildSaMoved)


def test_a_peer_behind_a_nat_is_still_followed():
    p, nat = natted(False)
    gw = p.b.sas[0]
    assert gw.nat.remote_behind and gw.remote == (PUBLIC, 24500)
    nat.rebind(31000)
    client = p.a.sas[0]
    client.start(Dpd(client), p.now)
    p.advance(1)
    assert gw.remote == (PUBLIC, 31000)
    assert p.of("b", ChildSaMoved)


def test_a_nat_t_message_from_elsewhere_neither_moves_nor_floats_an_sa_without_a_nat():
    # Not moved (no NAT there), so IKE stays on the IKE port: floating anyway would send the
    # non-ESP marker to the peer's port 500.
    p = _plain_pair()
    sa_a, sa_b = p.a.sas[0], p.b.sas[0]
    sent = []

    def natt_from_elsewhere(side, d):
        if side == "b" and not sent:
            sent.append(d)
            p.a.receive_datagram(d.data, (LEFT, 4500), ("192.0.2.60", 4500), p.now)
            return False
        return True

    p.filter = natt_from_elsewhere
    sa_b.start(Dpd(sa_b), p.now)
    p.advance(1)
    assert sent and sa_a.remote == (RIGHT, 500)
    assert not sa_a.floated and sa_a.local == (LEFT, 500), "floated to 4500 while the peer stays on 500"


def test_the_first_nat_t_message_in_ike_auth_is_followed_from_another_address():
    # charon forces the update on the IKE_AUTH request (task_manager_v2: mid == 1 ?
    # UPDATE_HOSTS_FORCE_ADDRS): the float to the NAT-T port goes where that request came from.
    client_conn = connection(children=(child(),), mobike=False, local="%any")
    gw_conn = dataclasses.replace(mirror(client_conn, remote_addrs=(), local_addrs=(RIGHT,)), encap=True)
    p = Pair(policy(client_conn, address=LEFT), policy(gw_conn, address=RIGHT))
    p.a.source_address = lambda remote: LEFT
    sent = []

    def auth_from_elsewhere(side, d):
        if side == "a" and not sent and d.local[1] == 4500:
            sent.append(d)
            p.b.receive_datagram(d.data[len(NON_ESP_MARKER):], d.remote, ("192.0.2.60", 4500), p.now)
            return False
        return True

    p.filter = auth_from_elsewhere
    p.a.initiate("tun", p.now)
    p.advance(1)
    gw = p.b.sas[0]
    assert sent and not gw.nat.remote_behind
    assert gw.remote == ("192.0.2.60", 4500) and gw.floated
