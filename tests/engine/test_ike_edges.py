"""IKE edge cases compared with RFC 7296 and charon (strongSwan's libcharon/sa/ikev2/tasks):
SAs named by protocol and SPI, error notifies in requests and answers, answers we refuse
after the peer made its SA, rekey and delete orderings, proposal numbering, PFS hints,
ignored Deletes. Sans-IO pairs with explicit time (tests/engine/ike_pair.py)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.events import ChildSaDeleted, ChildState, IkeState, NegotiationFailed
from engine.ike import proposals as props
from engine.policy.proposals import parse_proposal
from engine.wire.constants import NON_ESP_MARKER, ExchangeType, NotifyType, ProtocolId
from engine.wire.message import decode_message, decode_payloads
from engine.wire.payloads import DeletePayload, NotifyPayload, SaPayload

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, live, mirror, policy
from tests.engine.ike_pair import started as make


def strip(data: bytes) -> bytes:
    return data[len(NON_ESP_MARKER):] if data.startswith(NON_ESP_MARKER) else data


def request(p: Pair, side: str, payloads: list, exchange=ExchangeType.INFORMATIONAL) -> list:
    """A hand-made request from ``side`` with its next Message ID, encrypted with its keys and
    delivered to the other side; returns the other side's answer, decrypted."""
    src, dst = p.ep(side), p.ep("b" if side == "a" else "a")
    sa = live(p, side)[0]
    mid = sa.mid_out
    sa.mid_out += 1  # as if it had had its answer
    here, there = (LEFT, RIGHT) if side == "a" else (RIGHT, LEFT)
    for d in sa.encode(exchange, mid, payloads, response=False):
        dst.receive_datagram(strip(d), (there, 4500), (here, 4500), p.now)  # at the receiver: local, remote
    answers = [strip(x.data) for x in dst.datagrams_to_send()]
    out = []
    for raw in answers:
        message = decode_message(raw)
        first, inner = sa.sk.open(message)
        out.append(decode_payloads(first, inner))
    del src
    return out


# ====================================================================== proposal numbering (item 11)
ESP = parse_proposal("aes256gcm16", "esp")


def test_an_offer_numbered_with_gaps_is_answered_with_the_number_offered():
    offer = props.to_wire([ESP], b"\1\2\3\4")
    gapped = (dataclasses.replace(offer[0], number=1, transforms=offer[0].transforms[1:]),
              dataclasses.replace(offer[0], number=3))
    chosen = props.select(gapped, (ESP,))
    assert chosen is not None and chosen.number == 3 and chosen.spi == b"\1\2\3\4"


def test_proposals_sharing_a_number_are_skipped_as_charon_does():
    """An AH+ESP bundle (two proposals, one number) is not taken apart: charon skips it."""
    esp = props.to_wire([ESP], b"\1\2\3\4")[0]
    ah = props.to_wire([parse_proposal("sha256", "ah")], b"\5\6\7\x08")[0]
    bundle = (esp, dataclasses.replace(ah, number=1), dataclasses.replace(esp, number=2, spi=b"\x09\x09\x09\x09"))
    chosen = props.select(bundle, (ESP,))
    assert chosen is not None and chosen.number == 2 and chosen.spi == b"\x09\x09\x09\x09"
    assert props.select(bundle[:2], (ESP,)) is None


# ====================================================================== SAs named by protocol and SPI (item 1)
def only_child(p: Pair, side: str):
    (c,) = live(p, side)[0].children.values()
    return c


def test_an_ah_delete_does_not_delete_our_esp_sa_with_that_spi():
    p = make()
    theirs = only_child(p, "b")
    (answer,) = request(p, "b", [DeletePayload(ProtocolId.AH, (theirs.spi_in,))])
    assert answer == []
    mine = only_child(p, "a")
    assert mine.state == ChildState.INSTALLED and mine.spi_out == theirs.spi_in
    assert not p.of("a", ChildSaDeleted)
    # The ESP Delete of the same SPI does delete it (and names ours back).
    (answer,) = request(p, "b", [DeletePayload(ProtocolId.ESP, (theirs.spi_in,))])
    assert answer == [DeletePayload(ProtocolId.ESP, (mine.spi_in,))]
    assert not live(p, "a")[0].children


def test_an_esp_delete_does_not_delete_our_ah_sa_with_that_spi():
    ah = child(protocol="ah")
    ah = dataclasses.replace(ah, proposals=(parse_proposal("sha256", "ah"),))
    p = make(connection(children=[ah]))
    theirs = only_child(p, "b")
    assert theirs.protocol == "ah"
    (answer,) = request(p, "b", [DeletePayload(ProtocolId.ESP, (theirs.spi_in,))])
    assert answer == [] and only_child(p, "a").state == ChildState.INSTALLED


def test_a_rekey_sa_naming_another_protocol_finds_no_sa():
    p = make(connection(children=[child(esp=("aes256gcm16-x25519",))]))
    theirs = only_child(p, "b")
    sa_b = live(p, "b")[0]
    from engine.ike.exchanges.child_sa import ChildOffer
    offer = ChildOffer(sa_b, theirs.config, with_ke=True, rekey=theirs)
    payloads = [pl if not (isinstance(pl, NotifyPayload) and pl.type == NotifyType.REKEY_SA)
                else dataclasses.replace(pl, protocol=ProtocolId.AH) for pl in offer.payloads(nonce=True)]
    (answer,) = request(p, "b", payloads, ExchangeType.CREATE_CHILD_SA)
    assert [n.type for n in answer if isinstance(n, NotifyPayload)] == [NotifyType.CHILD_SA_NOT_FOUND]
    assert only_child(p, "a").state == ChildState.INSTALLED and len(live(p, "a")[0].children) == 1


# ====================================================================== Deletes we ignore (items 9, 12)
def ignored_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "ignored a Delete" in r.getMessage()]


@pytest.mark.parametrize("delete, why", [
    (DeletePayload(0, ()), "protocol 0"),
    (DeletePayload(ProtocolId.ESP, (b"\0\0\0\0",)), "SPI 0"),
    (DeletePayload(ProtocolId.ESP, (b"\xde\xad\xbe\xef",)), "no ESP CHILD SA"),
    (DeletePayload(ProtocolId.AH, (b"\xde\xad\xbe\xef",)), "no AH CHILD SA"),
])
def test_a_delete_naming_no_sa_is_answered_empty_and_logged_once(caplog, delete, why):
    p = make()
    caplog.set_level("INFO", logger="engine.ike")
    (answer,) = request(p, "b", [delete])
    assert answer == []
    assert only_child(p, "a").state == ChildState.INSTALLED
    assert all(sa.state == IkeState.ESTABLISHED for sa in live(p, "a") + live(p, "b"))
    (line,) = ignored_lines(caplog)
    assert why in line


def test_ignored_deletes_are_logged_at_a_bounded_rate_and_counted(caplog):
    p = make()
    caplog.set_level("INFO", logger="engine.ike")
    for _ in range(40):
        request(p, "b", [DeletePayload(ProtocolId.ESP, (b"\xde\xad\xbe\xef",))])
    logged = len(ignored_lines(caplog))
    assert 1 <= logged < 40
    assert p.a.stats["delete_logs_suppressed"] == 40 - logged
    caplog.clear()
    p.now += 3600  # later on, the next one is logged and says how many were left out
    request(p, "b", [DeletePayload(0, ())])
    (line,) = ignored_lines(caplog)
    assert f"{40 - logged} similar" in line


# ====================================================================== answers we refuse (items 3, 6)
def rewrite_answers(p: Pair, side: str, exchange: int, change, count: int = 1):
    """A link filter: the first ``count`` answers of ``exchange`` that ``side`` sends are
    decrypted, changed by ``change(payloads) -> payloads`` and sealed again with its keys."""
    left = {"n": count}
    other = "b" if side == "a" else "a"

    def f(s, d):
        if s != side or left["n"] == 0 or d.data == b"\xff":
            return True
        raw = strip(d.data)
        message = decode_message(raw)
        h = message.header
        if h.exchange != exchange or not h.response:
            return True
        sender = next(sa for sa in p.ep(side).sas if (sa.spi_i, sa.spi_r) == (h.spi_i, h.spi_r))
        receiver = next(sa for sa in p.ep(other).sas if (sa.spi_i, sa.spi_r) == (h.spi_i, h.spi_r))
        first, inner = receiver.sk.open(message)
        payloads = change(decode_payloads(first, inner))
        left["n"] -= 1
        (new,) = sender.encode(h.exchange, h.mid, payloads, response=True)
        return NON_ESP_MARKER + new if d.data.startswith(NON_ESP_MARKER) else new

    return f


def wider_tsr(payloads):
    from engine.wire.payloads import TsPayload, WireTs
    from engine.policy.ts import parse_ts
    return [TsPayload(False, (WireTs.from_ts(parse_ts("198.51.100.0/24")),)) if isinstance(x, TsPayload)
            and not x.initiator else x for x in payloads]


def other_proposal(payloads):
    from engine.wire.payloads import Transform
    out = []
    for x in payloads:
        if isinstance(x, SaPayload):
            (prop,) = x.proposals
            x = SaPayload((dataclasses.replace(prop, transforms=(Transform(1, 12, 128),) + tuple(
                t for t in prop.transforms if t.type != 1)),))
        out.append(x)
    return out


def transport_mode(payloads):
    return [NotifyPayload(NotifyType.USE_TRANSPORT_MODE)] + list(payloads)


def error_beside_sa(payloads):
    return list(payloads) + [NotifyPayload(NotifyType.INTERNAL_ADDRESS_FAILURE)]


def second_child() -> tuple:
    return (child(), child("second", local_ts="198.51.100.2/32", remote_ts="198.51.100.130/32"))


def children_named(p: Pair, side: str, name: str):
    return [c for sa in live(p, side) for c in sa.children.values() if c.config.name == name]


@pytest.mark.parametrize("change, notify", [
    (wider_tsr, "TS_UNACCEPTABLE"), (other_proposal, "NO_PROPOSAL_CHOSEN"), (transport_mode, None),
])
def test_a_create_child_answer_we_refuse_is_followed_by_a_delete_of_the_peer_sa(change, notify):
    """charon's delete_failed_sa: the peer made its SA when it answered; refusing that answer
    alone would leave its half installed for good."""
    a = connection(children=second_child()[:1])
    peer = mirror(connection(children=second_child()))
    p = make(a, peer)
    p.filter = rewrite_answers(p, "b", ExchangeType.CREATE_CHILD_SA, change)
    sa = live(p, "a")[0]
    from engine.ike.exchanges.create_child import CreateChild
    cfg = mirror(peer).children[1]
    sa.start(CreateChild(sa, cfg), p.now)
    p.a.scheduler.touch(sa)
    p.advance(5)
    failed = [e for e in p.of("a", NegotiationFailed) if e.exchange == "CREATE_CHILD_SA"]
    assert len(failed) == 1 and (notify is None or failed[0].notify == notify), failed
    assert not children_named(p, "a", "second")
    assert not children_named(p, "b", "second"), "the peer's half stays installed"
    assert len(live(p, "a")[0].children) == 1 and len(live(p, "b")[0].children) == 1


def test_an_ike_auth_answer_whose_child_we_refuse_is_followed_by_a_delete_of_the_peer_sa():
    a = connection()
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.filter = rewrite_answers(p, "b", ExchangeType.IKE_AUTH, wider_tsr)
    p.a.initiate("tun", p.now)
    p.advance(5)
    assert all(sa.state == IkeState.ESTABLISHED for sa in live(p, "a") + live(p, "b"))
    assert not live(p, "a")[0].children
    assert not live(p, "b")[0].children, "the peer's half stays installed"


def test_an_error_notify_beside_an_sa_payload_is_a_failure():
    """RFC 7296 §3.10.1: an error type in a response means the request failed entirely."""
    a = connection(children=second_child()[:1])
    peer = mirror(connection(children=second_child()))
    p = make(a, peer)
    p.filter = rewrite_answers(p, "b", ExchangeType.CREATE_CHILD_SA, error_beside_sa)
    sa = live(p, "a")[0]
    from engine.ike.exchanges.create_child import CreateChild
    sa.start(CreateChild(sa, mirror(peer).children[1]), p.now)
    p.a.scheduler.touch(sa)
    p.advance(5)
    failed = [e for e in p.of("a", NegotiationFailed) if e.exchange == "CREATE_CHILD_SA"]
    assert [e.notify for e in failed] == ["INTERNAL_ADDRESS_FAILURE"]
    assert not children_named(p, "a", "second")


# ====================================================================== INVALID_SYNTAX in a request (item 2)
def test_an_informational_request_with_invalid_syntax_ends_the_ike_sa():
    """RFC 7296 §2.21.3, as charon (task_manager_v2.c: INVALID_SYNTAX starts ike_delete):
    the peer could not parse a message of ours; answered empty, then the IKE SA goes."""
    p = make()
    (answer,) = request(p, "b", [NotifyPayload(NotifyType.INVALID_SYNTAX)])
    assert answer == []
    assert not live(p, "a")
    assert any(isinstance(e, ChildSaDeleted) for e in p.events["a"] + [p.a.next_event() for _ in range(50)])


# The other direction (our INVALID_SYNTAX answer ends our IKE SA too): test_invalid_syntax.py.


# ====================================================================== PFS-only mismatch hint (item 7)
def test_pfs_mismatch_names_both_sides_groups_and_the_fix():
    offered = props.to_wire([parse_proposal("aes256gcm16-x25519", "esp")], b"\1\2\3\4")
    hint = props.pfs_mismatch(offered, [parse_proposal("aes256gcm16", "esp")])
    assert hint is not None and "only the key exchange" in hint
    assert "CURVE_25519" in hint and "aes256gcm16-x25519" in hint and "pfs=no" in hint
    ours_only = props.pfs_mismatch(props.to_wire([parse_proposal("aes256gcm16", "esp")], b"\1\2\3\4"),
                                   [parse_proposal("aes256gcm16-ecp256", "esp")])
    assert ours_only is not None and "ECP_256" in ours_only and "no PFS" in ours_only
    both = props.pfs_mismatch(offered, [parse_proposal("aes256gcm16-ecp384", "esp")])
    assert both is not None and "CURVE_25519" in both and "ECP_384" in both
    # Not a PFS-only mismatch: the ciphers differ too, or it matches.
    assert props.pfs_mismatch(offered, [parse_proposal("aes128-sha256", "esp")]) is None
    assert props.pfs_mismatch(offered, [parse_proposal("aes256gcm16-x25519", "esp")]) is None


@pytest.mark.parametrize("how", ["rekey", "create"])
def test_a_child_refused_only_for_pfs_says_so(how):
    """IKE_AUTH's CHILD SA has no KE (both sides agree), the rekey or the next CREATE_CHILD_SA
    then fails on the PFS group alone: the refusal says that, and what to change."""
    a = connection(children=[child(esp=("aes256gcm16-x25519",)), child("second", local_ts="198.51.100.2/32",
                                                                     remote_ts="198.51.100.130/32",
                                                                     esp=("aes256gcm16-x25519",))])
    peer = mirror(a)
    peer = dataclasses.replace(peer, children=tuple(dataclasses.replace(c, proposals=(
        parse_proposal("aes256gcm16", "esp"),)) for c in peer.children))
    p = make(a, peer)
    if how == "rekey":
        p.a.rekey("tun", p.now)
    p.advance(5)
    failed = [e for e in p.of("b", NegotiationFailed) if e.exchange == "CREATE_CHILD_SA"]
    assert failed and failed[0].notify == "NO_PROPOSAL_CHOSEN"
    assert "only the key exchange" in failed[0].reason and "pfs=no" in failed[0].reason, failed[0].reason


# ====================================================================== starting on the NAT-T port (item 8)
def test_an_ike_sa_started_on_the_natt_port_sends_the_marker_from_ike_sa_init_on():
    """RFC 3948 §2.2: on port 4500 every IKE message carries the non-ESP marker, the first
    IKE_SA_INIT included (swanctl: local_port = 4500, remote_port = 4500)."""
    a = connection(local_port=4500, remote_port=4500)
    p = Pair(policy(a, address=LEFT), policy(mirror(a, local_port=4500, remote_port=4500), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.collect()
    (side, first), = p.wire
    assert first.local[1] == 4500 and first.remote[1] == 4500
    assert first.data.startswith(NON_ESP_MARKER), "IKE_SA_INIT on port 4500 without the non-ESP marker"
    p.advance(5)
    assert not p.esp
    assert [sa.state for sa in live(p, "a") + live(p, "b")] == [IkeState.ESTABLISHED] * 2
    assert all(d.data.startswith(NON_ESP_MARKER) for _, d in p.log if d.data != b"\xff")


# ====================================================================== the peer deletes its own rekey's SA (item 4)
def test_the_peer_deleting_the_sa_its_rekey_made_closes_the_child_sa():
    """b rekeys the CHILD SA, a answers (its old SA now waits for b's Delete of it), and b then
    deletes the SA its rekey made instead: b closes the CHILD SA, as charon reads it
    (child_delete.c destroy_and_reestablish concludes the rekeying and never uses the old SA
    again). a must not put the old SA back in use (and rekey it into a CHILD SA b closed): it
    stays replaced until its deadline, and both ends end up with no pair."""
    p = make(connection(children=[child(esp=("aes256gcm16-x25519",))]))
    from engine.ike.exchanges.child_sa import ChildOffer
    old_b = only_child(p, "b")
    offer = ChildOffer(live(p, "b")[0], old_b.config, with_ke=True, rekey=old_b)
    (answer,) = request(p, "b", offer.payloads(nonce=True), ExchangeType.CREATE_CHILD_SA)
    assert any(isinstance(x, SaPayload) for x in answer)
    sa_a = live(p, "a")[0]
    old_a = next(c for c in sa_a.children.values() if c.spi_out == old_b.spi_in)
    assert old_a.state == ChildState.REKEYED and len(sa_a.children) == 2
    (answer,) = request(p, "b", [DeletePayload(ProtocolId.ESP, (offer.spi_in,))])
    assert len(answer) == 1  # a names its half of the new SA back
    assert old_a.state == ChildState.REKEYED and old_a.rekey_at is None, "the replaced SA was put back in use"
    p.advance(400)
    pairs_a = {(c.spi_in, c.spi_out) for sa in live(p, "a") for c in sa.children.values()}
    pairs_b = {(c.spi_out, c.spi_in) for sa in live(p, "b") for c in sa.children.values()}
    assert pairs_a == pairs_b == set()
    from engine.events import ChildSaInstalled
    assert len(p.of("a", ChildSaInstalled)) == 2, "a rekeyed or recreated the CHILD SA b closed"


# ====================================================================== the peer's IKE rekey completes first (item 5)
@pytest.mark.parametrize("kem", [False, True])
@pytest.mark.parametrize("late", [0.5, 2.5, 7.0])
def test_the_peers_delete_of_the_old_ike_sa_before_our_late_answer_keeps_the_children(kem, late):
    """b rekeys the IKE SA (with an IKE_FOLLOWUP_KE round when ``kem``); a's first answer is
    late, so b's retransmission gets the replayed answer, completes, and deletes the old IKE SA
    before the late answer arrives: the CHILD SA lives on, on the new IKE SA at both ends."""
    from tests.engine.ike_pair import Network
    ike = ("aes256gcm16-prfsha256-x25519-ke1_mlkem768",) if kem else ("aes256gcm16-prfsha256-x25519",)
    p = make(connection(children=[child(esp=("aes256gcm16-x25519",))], ike=ike))
    old = (live(p, "a")[0].spi_i, live(p, "a")[0].spi_r)
    net = Network(p)
    delayed = {"n": 0}

    def launch(side, d, _orig=net._launch):
        raw = strip(d.data)
        h = decode_message(raw).header if d.data != b"\xff" else None
        if side == "a" and h is not None and h.response and delayed["n"] == 0 \
                and h.exchange == ExchangeType.CREATE_CHILD_SA:
            delayed["n"] = 1
            net.fates.insert(0, ("delay", late))
        _orig(side, d)

    net._launch = launch
    p.b.rekey("tun", p.now, ike=True)
    net.run_until(p.now + 120)
    net.settle()
    for side in "ab":
        (sa,) = live(p, side)
        assert (sa.spi_i, sa.spi_r) != old and sa.state == IkeState.ESTABLISHED
        assert len(sa.children) == 1
    assert only_child(p, "a").spi_in == only_child(p, "b").spi_out


@pytest.mark.parametrize("change", [wider_tsr, other_proposal, transport_mode])
def test_a_rekey_answer_we_refuse_is_followed_by_a_delete_of_the_peer_sa(change):
    """The same for a CHILD rekey: the peer's new SA is deleted, the old pair goes on (the
    peer puts it back in use and rekeys it itself soon after): one pair at both ends."""
    p = make(connection(children=[child(esp=("aes256gcm16-x25519",))]))
    refused: list[bytes] = []

    def change_and_note(payloads):
        refused.extend(x.proposals[0].spi for x in payloads if isinstance(x, SaPayload))
        return change(payloads)

    p.filter = rewrite_answers(p, "b", ExchangeType.CREATE_CHILD_SA, change_and_note)
    p.a.rekey("tun", p.now)
    p.advance(1)
    assert [e.exchange for e in p.of("a", NegotiationFailed)] == ["CREATE_CHILD_SA"]
    assert refused and all(c.spi_in not in refused for c in live(p, "b")[0].children.values()), \
        "the peer's new SA stays installed"
    p.advance(60)
    pairs_a = {(c.spi_in, c.spi_out) for c in live(p, "a")[0].children.values()}
    pairs_b = {(c.spi_out, c.spi_in) for c in live(p, "b")[0].children.values()}
    assert pairs_a == pairs_b and len(pairs_a) == 1


def test_an_error_notify_beside_an_sa_payload_fails_a_rekey_too():
    p = make(connection(children=[child(esp=("aes256gcm16-x25519",))]))
    old_a = only_child(p, "a")
    p.filter = rewrite_answers(p, "b", ExchangeType.CREATE_CHILD_SA, error_beside_sa)
    p.a.rekey("tun", p.now)
    p.advance(5)
    assert [e.notify for e in p.of("a", NegotiationFailed)] == ["INTERNAL_ADDRESS_FAILURE"]
    assert list(live(p, "a")[0].children.values()) == [old_a] and old_a.state == ChildState.INSTALLED


def test_the_spi_of_a_refused_answer_is_given_back_after_the_delete():
    a = connection(children=second_child()[:1])
    peer = mirror(connection(children=second_child()))
    p = make(a, peer)
    p.filter = rewrite_answers(p, "b", ExchangeType.CREATE_CHILD_SA, wider_tsr)
    sa = live(p, "a")[0]
    from engine.ike.exchanges.create_child import CreateChild
    released: list[bytes] = []
    original = p.a.ids.release_spi
    p.a.ids.release_spi = lambda spi: (released.append(spi), original(spi))[1]
    sa.start(CreateChild(sa, mirror(peer).children[1]), p.now)
    p.a.scheduler.touch(sa)
    p.advance(5)
    assert len(released) == 1 and released[0] not in live(p, "a")[0].children
    assert not children_named(p, "b", "second")  # the Delete went out first, naming that SPI


def test_a_delete_naming_a_known_and_an_unknown_sa_deletes_the_known_and_logs_the_other(caplog):
    p = make()
    caplog.set_level("INFO", logger="engine.ike")
    theirs, mine = only_child(p, "b"), only_child(p, "a")
    (answer,) = request(p, "b", [DeletePayload(ProtocolId.ESP, (b"\xde\xad\xbe\xef", theirs.spi_in)),
                                 DeletePayload(ProtocolId.AH, (theirs.spi_in,))])
    assert answer == [DeletePayload(ProtocolId.ESP, (mine.spi_in,))]
    assert not live(p, "a")[0].children
    (line,) = ignored_lines(caplog)
    assert "deadbeef" in line and "no AH CHILD SA" in line


def test_invalid_syntax_on_a_rekeyed_ike_sa_is_ignored_as_charon_does():
    """The old IKE SA after the peer's rekey only waits for the peer's Delete: a notify on it
    (charon: 'received unexpected notify for rekeyed IKE_SA, ignored') ends nothing."""
    p = make()
    old_b = live(p, "b")[0]
    # b rekeys the IKE SA; its Delete of the old one is lost for good.
    p.filter = lambda side, d: not (side == "b" and d.data != b"\xff"
                                    and decode_message(strip(d.data)).header.exchange == ExchangeType.INFORMATIONAL
                                    and not decode_message(strip(d.data)).header.response)
    p.b.rekey("tun", p.now, ike=True)
    p.advance(1)
    old_a = next(sa for sa in p.a.sas if (sa.spi_i, sa.spi_r) == (old_b.spi_i, old_b.spi_r))
    assert old_a.state == IkeState.REKEYED
    # The Message ID old_a expects next (b's lost Delete took the one after its rekey): a request
    # with another one is dropped before it is read, and would prove nothing.
    mid = old_a.mid_in
    for d in old_b.encode(ExchangeType.INFORMATIONAL, mid, [NotifyPayload(NotifyType.INVALID_SYNTAX)], False):
        p.a.receive_datagram(strip(d), (RIGHT, 4500), (LEFT, 4500), p.now)
    assert old_a.mid_in == mid + 1, "the request was not taken"
    assert old_a.state == IkeState.REKEYED
    new_a = [sa for sa in live(p, "a") if sa is not old_a]
    assert len(new_a) == 1 and new_a[0].state == IkeState.ESTABLISHED and len(new_a[0].children) == 1
