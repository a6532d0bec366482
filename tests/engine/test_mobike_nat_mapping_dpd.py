"""Our MOBIKE client behind a NAT puts NAT detection in its DPDs and sends UPDATE_SA_ADDRESSES when
the gateway's NAT_DETECTION_DESTINATION_IP changes (RFC 4555 §3.8; charon's ike_mobike dpd() and
process_i): a MOBIKE gateway follows no implicit update, so a NAT rebinding on the client's side is
only repaired that way. Sans-IO pair, the client behind a port-mapping NAT."""

from __future__ import annotations

import dataclasses

from engine.events import ChildSaInstalled, ChildSaMoved, ExchangeSent
from engine.wire.constants import NON_ESP_MARKER

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy

PUBLIC = "198.51.100.7"


class Nat:
    """The client's NAT: (LEFT, port) <-> (PUBLIC, mapped port); ``rebind`` maps 4500 anew."""

    def __init__(self, p: Pair) -> None:
        self.p = p
        self.out = {(LEFT, 500): (PUBLIC, 1500), (LEFT, 4500): (PUBLIC, 24500)}

    def rebind(self, port: int) -> None:
        self.out[(LEFT, 4500)] = (PUBLIC, port)

    def __call__(self, side, d):
        p = self.p
        data = d.data
        natt = d.local[1] == 4500 or d.remote[1] == 4500
        if natt:
            if data == b"\xff" or not data.startswith(NON_ESP_MARKER):
                return False  # keepalives and ESP: not this test's business
            data = data[len(NON_ESP_MARKER):]
        if side == "a":
            p.b.receive_datagram(data, d.remote, self.out[d.local], p.now)
            return False
        back = {pub: priv for priv, pub in self.out.items()}
        if d.remote[0] == PUBLIC:
            if d.remote in back:
                p.a.receive_datagram(data, back[d.remote], d.local, p.now)
            return False  # to a mapping the NAT no longer has: dropped
        return True


def natted_pair():
    client = connection(children=(child(),), mobike=True, local="%any", dpd_delay=30)
    gw = dataclasses.replace(mirror(client, remote_addrs=(), local_addrs=(RIGHT,)), dpd_delay=0)
    p = Pair(policy(client, address=LEFT), policy(gw, address=RIGHT))
    p.a.source_address = lambda remote: LEFT
    nat = Nat(p)
    p.filter = nat
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert len(p.of("a", ChildSaInstalled)) == 1
    return p, nat


def _dpds(p, since):
    return [e for e in p.events["a"][since:] if isinstance(e, ExchangeSent) and not e.message.response
            and e.message.exchange == "INFORMATIONAL"]


def test_a_nat_rebinding_seen_in_the_dpds_nat_detection_sends_an_update_and_the_gateway_follows():
    p, nat = natted_pair()
    client, gw = p.a.sas[0], p.b.sas[0]
    assert client.mobike and gw.mobike and client.nat.local_behind
    assert gw.remote == (PUBLIC, 24500)
    since = len(p.events["a"])
    p.advance(35)  # the first DPD: the gateway's view of us becomes the reference
    (dpd,) = _dpds(p, since)
    assert "N(NATD_S_IP)" in dpd.message.payloads and "N(NATD_D_IP)" in dpd.message.payloads, \
        dpd.message.payloads
    assert not p.of("b", ChildSaMoved) and gw.remote == (PUBLIC, 24500)
    nat.rebind(31000)
    p.advance(35)  # the next DPD goes out through the new mapping
    assert gw.remote == (PUBLIC, 31000), "the gateway still sends to the old NAT mapping"
    moves = p.of("b", ChildSaMoved)
    assert [(m.remote_addr, m.remote_port) for m in moves] == [(PUBLIC, 31000)]
    assert client.established and gw.established and p.a.sas == [client]


def test_an_unchanged_mapping_sends_no_update():
    p, nat = natted_pair()
    client, gw = p.a.sas[0], p.b.sas[0]
    since = len(p.events["a"])
    p.advance(100)
    sent = _dpds(p, since)
    assert len(sent) >= 3
    assert not [e for e in sent if "N(UPD_SA_ADDR)" in e.message.payloads]
    assert client.mobike_moves == 0 and gw.mobike_moves == 0


def test_without_a_nat_the_mobike_dpd_is_empty():
    from tests.engine.test_ike_mobike import pair
    p = pair(dpd_delay=30)
    since = len(p.events["a"])
    p.advance(35)
    (dpd,) = _dpds(p, since)
    assert dpd.message.payloads == ()


def test_an_ike_rekey_starts_the_reference_anew():
    # The gateway's NAT detection hashes the IKE SPIs (RFC 4555 §3.8): the new IKE SA must not
    # compare its first DPD answer with the old SA's, nor share its NAT state object.
    p, nat = natted_pair()
    client = p.a.sas[0]
    p.advance(35)
    assert client.nat.mapped is not None
    p.a.rekey("tun", p.now, ike=True)
    p.advance(5)
    (new,) = [sa for sa in p.a.sas if sa.established]
    assert new is not client and new.nat.mapped is None and new.nat is not client.nat
    assert new.nat.local_behind
    since = len(p.events["a"])
    p.advance(35)
    assert not [e for e in _dpds(p, since) if "N(UPD_SA_ADDR)" in e.message.payloads]
    assert new.nat.mapped is not None
