"""Review of the gateway's return routability check (RFC 4555 §3.7): the check moves the CHILD
SAs to the addresses it checked, whatever source its answer comes from (no dynamic update of a
MOBIKE SA, §3.8), and only the last update's check does."""

from __future__ import annotations

from engine.events import ChildSaMoved, ExchangeSent
from engine.ike.exchanges import mobike

from tests.engine.ike_pair import ike_data
from tests.engine.test_ike_mobike import MOVED, pair


def test_the_child_sas_go_to_the_checked_address_when_the_checks_answer_comes_from_a_new_nat_port():
    # The client's NAT on its new path maps it anew between its update and its answer to the
    # check: the echo proves the client receives at the checked address, so the CHILD SAs go
    # there; the answer's new port moves nothing (RFC 4555 §3.8: no dynamic updates of a MOBIKE
    # SA; the client's DPD NAT detection finds the new mapping and sends an update for it).
    p = pair()
    gw = p.b.sas[0]
    p.a.roam(p.now, address=MOVED)
    natted = (MOVED, 40001)

    def rebind(side, d):
        m = ike_data(d.data)
        if side == "a" and m is not None and m[19] & 0x20 and m[18] == 37 \
                and gw.mobike_addrs is not None and gw.mobike_addrs[1][0] == MOVED and gw.remote[0] == MOVED:
            p.b.receive_datagram(d.data[4:], d.remote, natted, p.now)  # the answer to the check
            return False
        return True

    p.filter = rebind
    p.advance(3)
    moves = p.of("b", ChildSaMoved)
    assert gw.remote == (MOVED, 4500)
    assert len(moves) == 1, "the CHILD SAs stayed on the old path"
    assert (moves[0].remote_addr, moves[0].remote_port) == (MOVED, 4500)
    assert gw.mobike_moves == 1 and gw.established


def test_an_ike_rekey_by_the_client_during_the_check_does_not_strand_the_child_sas():
    # The client rekeys the IKE SA while the gateway's check is in flight: the CHILD SAs go to
    # the new IKE SA at once, the check's answer arrives on the old one (RFC 7296 §2.25.2: the
    # rekey must wait while an exchange moves CHILD SAs).
    p = pair()
    gw = p.b.sas[0]
    p.a.roam(p.now, address=MOVED)
    fired = []

    def rekey_during_check(side, d):
        m = ike_data(d.data)
        if side == "b" and not fired and m is not None and not m[19] & 0x20 and m[18] == 37 \
                and isinstance(gw.active, mobike.Check):
            fired.append(p.now)
            p.a.rekey("tun", p.now, ike=True)
        return True

    p.filter = rekey_during_check
    p.advance(30)
    assert fired
    moves = p.of("b", ChildSaMoved)
    assert len(moves) == 1 and moves[0].remote_addr == MOVED, "the CHILD SAs stayed on the old path"
    (sa,) = [s for s in p.b.sas if s.established]
    assert sa is not gw and sa.children and sa.mobike_moves == 1


def test_an_ike_rekey_by_the_gateway_during_our_update_does_not_strand_our_child_sas():
    # The same on the client: the gateway rekeys the IKE SA while our UPDATE_SA_ADDRESSES is in
    # flight; its answer (on the old IKE SA) must still find the CHILD SAs to move.
    p = pair()
    client, gw = p.a.sas[0], p.b.sas[0]
    fired = []

    def rekey_during_update(side, d):
        m = ike_data(d.data)
        if side == "a" and not fired and m is not None and not m[19] & 0x20 and m[18] == 37 \
                and isinstance(client.active, mobike.Update):
            fired.append(p.now)
            p.b.rekey("tun", p.now, ike=True, unique_id=gw.unique_id)
        return True

    p.a.roam(p.now, address=MOVED)
    p.filter = rekey_during_update
    p.advance(30)
    assert fired
    moves = p.of("a", ChildSaMoved)
    assert moves and moves[-1].local_addr == MOVED, "our CHILD SAs stayed on the old path"
    (sa,) = [s for s in p.a.sas if s.established]
    assert sa is not client and sa.children and sa.mobike_addrs[0][0] == MOVED


def test_updates_while_a_check_goes_unanswered_queue_one_check_not_one_each():
    # A client that keeps announcing new addresses while it does not answer the check in flight:
    # only the last addresses need checking, the gateway's queue must not grow with each update.
    p = pair()
    gw = p.b.sas[0]

    def drop_checks(side, d):
        m = ike_data(d.data)
        return not (side == "b" and m is not None and not m[19] & 0x20 and m[18] == 37)

    p.filter = drop_checks
    for i in range(40):
        p.a.roam(p.now, address=MOVED if i % 2 == 0 else "192.0.2.4")
        p.advance(0.2)
    checks = [ex for ex in gw.queue if isinstance(ex, mobike.Check)]
    assert len(checks) <= 1, f"{len(checks)} checks queued"
    assert isinstance(gw.active, mobike.Check)
    p.filter = None
    p.advance(30)
    moves = p.of("b", ChildSaMoved)
    assert moves and moves[-1].remote_addr == "192.0.2.4" and gw.remote[0] == "192.0.2.4"
    assert gw.established



def test_a_checks_answer_from_another_address_moves_nothing_there():
    # The answer (authenticated, but its outer addresses are not) comes from an address the check
    # did not go to (a NAT with an address pool maps the client anew; or an on-path rewrite): the
    # CHILD SAs go to the checked address, and nothing, IKE or ESP, to the answer's source
    # (§3.8: no dynamic updates of a MOBIKE SA; §5.2: no ESP to an address that did not ask).
    p = pair()
    gw = p.b.sas[0]
    p.a.roam(p.now, address=MOVED)
    elsewhere = ("198.51.100.77", 40001)
    natted = []

    def nat(side, d):
        m = ike_data(d.data)
        if side == "a" and not natted and m is not None and m[19] & 0x20 and m[18] == 37 \
                and gw.mobike_addrs is not None and gw.mobike_addrs[1][0] == MOVED and gw.remote[0] == MOVED:
            natted.append(len(p.events["b"]))  # from now on the client is seen at ``elsewhere``
        if natted and side == "a":
            p.b.receive_datagram(d.data[4:] if m is not None else d.data, d.remote, elsewhere, p.now)
            return False
        return True

    p.filter = nat
    p.advance(10)
    assert natted
    events = p.events["b"][natted[0]:]
    moves = [e for e in events if isinstance(e, ChildSaMoved)]
    assert [(m.remote_addr, m.remote_port) for m in moves] == [(MOVED, 4500)]
    assert not [e for e in events if isinstance(e, ExchangeSent) and e.remote == elsewhere
                and not e.message.response], "a request went to an address no update named"
    assert gw.remote == (MOVED, 4500) and gw.established
