"""RFC 9370 additional key exchanges in IKE_INTERMEDIATE (RFC 9242) between two
of our endpoints: proposals, the rounds, key updates, IntAuth in AUTH,
fragmentation and loss."""

from __future__ import annotations

import dataclasses

import pytest

from engine.crypto.kem import mlkem_available
from engine.crypto.transforms import KeId
from engine.events import ChildSaInstalled, ExchangeSent, IkeState, NegotiationFailed
from engine.ike import proposals as props
from engine.policy.proposals import parse_proposal

from tests.engine.ike_pair import LEFT, RIGHT, Network, Pair, connection, mirror, policy

needs_mlkem = pytest.mark.skipif(not (mlkem_available(KeId.ML_KEM_768) and mlkem_available(KeId.ML_KEM_1024)),
                                 reason="cryptography without ML-KEM")

HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"


def make_pair(ike_a=(HYBRID,), ike_b=None, **conn_kw):
    a = connection(ike=ike_a, **conn_kw)
    b = mirror(a, proposals=tuple(parse_proposal(p, "ike") for p in (ike_b or ike_a)))
    return Pair(policy(a, address=LEFT), policy(b, address=RIGHT))


def exchanges(p: Pair, side: str) -> list[tuple[str, bool]]:
    return [(e.message.exchange, e.message.response) for e in p.of(side, ExchangeSent)]


def up(p: Pair) -> None:
    p.a.initiate("tun", p.now)
    p.advance(1)


# ---------------------------------------------------------------- proposals
def wire(text):
    return props.to_wire([parse_proposal(text, "ike")], b"")


def test_additional_ke_transforms_are_offered_and_chosen():
    offer = wire("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024-ke2_none")
    assert {(int(t.type), t.id) for t in offer[0].transforms} >= {(6, 36), (7, 37), (7, 0)}
    chosen = props.select(offer, [parse_proposal("aes256gcm16-prfsha384-x25519-ke1_mlkem768", "ike")])
    assert chosen.additional == ((6, 36), (7, 0)) and chosen.additional_rounds == ((6, 36),)
    back = props.accept_response(chosen.to_wire(), offer)
    assert back == chosen


def test_required_additional_ke_is_not_dropped_in_silence():
    classic = wire("aes256gcm16-prfsha384-x25519")
    hybrid = parse_proposal(HYBRID, "ike")
    assert props.select(classic, [hybrid]) is None  # we require ML-KEM, the peer does not offer it
    assert props.select(wire(HYBRID), [parse_proposal("aes256gcm16-prfsha384-x25519", "ike")]) is None
    assert props.select(wire(HYBRID), [hybrid], with_additional=False) is None
    optional = wire("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none")
    assert props.select(optional, [parse_proposal("aes256gcm16-prfsha384-x25519", "ike")]).additional == ((6, 0),)


def test_response_must_answer_each_additional_ke_we_offered():
    offer = wire(HYBRID)
    chosen = props.select(offer, [parse_proposal(HYBRID, "ike")])
    stripped = dataclasses.replace(chosen, additional=())
    assert props.accept_response(stripped.to_wire(), offer) is None


# ---------------------------------------------------------------- handshakes
@needs_mlkem
@pytest.mark.parametrize("ike", [HYBRID, "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024",
                                 "aes256gcm16-prfsha256-x25519-ke1_mlkem768-ke2_mlkem1024",
                                 "aes128-sha256-modp2048-ke1_ecp256"])
def test_hybrid_handshake_runs_one_intermediate_round_per_additional_ke(ike):
    p = make_pair((ike,))
    up(p)
    ia, ib = p.of("a", ChildSaInstalled), p.of("b", ChildSaInstalled)
    assert len(ia) == 1 and len(ib) == 1, (p.of("a", NegotiationFailed), p.of("b", NegotiationFailed))
    assert ia[0].keys.encr_out == ib[0].keys.encr_in
    rounds = ike.count("-ke")
    sent = exchanges(p, "a")
    assert sent[:1 + rounds + 1] == [("IKE_SA_INIT", False)] + \
        [("IKE_INTERMEDIATE", False)] * rounds + [("IKE_AUTH", False)]
    sa_a, sa_b = p.a.sas[0], p.b.sas[0]
    assert sa_a.state == IkeState.ESTABLISHED and sa_a.intermediate.done == rounds
    assert sa_a.keys.sk_d.reveal() == sa_b.keys.sk_d.reveal()
    for ep in (p.a, p.b):
        [info] = ep.status(p.now)
        assert info.quantum_safe == ("mlkem" in ike) and info.children[0].quantum_safe == info.quantum_safe
        assert len(info.additional_ke) == rounds and info.additional_ke[0].startswith("KE1_")


@needs_mlkem
def test_keys_change_after_each_round():
    """The keys after IKE_INTERMEDIATE are not those IKE_SA_INIT alone gives."""
    p = make_pair()
    seen = []

    p.a.initiate("tun", p.now)
    p.collect()
    # Deliver IKE_SA_INIT both ways only.
    for _ in range(2):
        side, d = p.wire.pop(0)
        (p.b if side == "a" else p.a).receive_datagram(d.data, d.remote, d.local, p.now)
        p.collect()
    sa = p.a.sas[0]
    seen.append(sa.keys.sk_d.reveal())
    p.advance(1)
    seen.append(sa.keys.sk_d.reveal())
    assert seen[0] != seen[1]
    assert p.of("a", ChildSaInstalled)


@needs_mlkem
def test_intauth_binds_the_intermediate_messages_into_auth():
    """A responder that chained other IntAuth octets fails AUTH: both sides really sign IntAuth."""
    p = make_pair()
    p.a.initiate("tun", p.now)
    tampered = []

    def filt(side, d):
        sa = p.b.sas[0] if p.b.sas else None
        if sa is not None and sa.intermediate is not None and sa.intermediate.complete and not tampered:
            st = sa.intermediate
            st.chain = dataclasses.replace(st.chain, int_auth_i=bytes(len(st.chain.int_auth_i)))
            tampered.append(True)
        return True

    p.filter = filt
    p.advance(1)
    assert tampered
    assert not p.of("a", ChildSaInstalled)
    assert [e.notify for e in p.of("b", NegotiationFailed)] == ["AUTHENTICATION_FAILED"]


@needs_mlkem
def test_mlkem1024_intermediate_is_fragmented_and_survives_loss():
    """ML-KEM-1024 (1,568-byte KE) goes in IKE fragments; a lost fragment each way is recovered."""
    p = make_pair(("aes256gcm16-prfsha384-ecp384-ke1_mlkem1024",), fragmentation=True)
    seen = {"a": 0, "b": 0}

    def lose_first_fragment(side, d):
        if len(d.data) > 900:  # the large fragments of IKE_INTERMEDIATE
            seen[side] += 1
            if seen[side] == 1:
                return False
        return True

    p.filter = lose_first_fragment
    p.a.initiate("tun", p.now)
    p.advance(30)
    assert p.a.sas[0].state == IkeState.ESTABLISHED and p.b.sas[0].state == IkeState.ESTABLISHED
    assert p.of("a", ChildSaInstalled) and p.of("b", ChildSaInstalled)
    inter = [e.message for e in p.of("a", ExchangeSent) if e.message.exchange == "IKE_INTERMEDIATE"]
    assert inter and inter[0].fragments > 1
    assert seen["a"] >= 3 and seen["b"] >= 2  # both messages went again after the loss


@needs_mlkem
def test_schedule_with_drops_and_duplicates_establishes():
    p = make_pair(("aes256gcm16-prfsha256-x25519-ke1_mlkem768-ke2_mlkem1024",))
    fates = [("ok", 0), ("dup", 0.2), ("drop", 0), ("ok", 0), ("dup", 0.1), ("drop", 0), ("ok", 0.3)] * 3
    net = Network(p, fates)
    p.a.initiate("tun", p.now)
    net.run_until(p.now + 60)
    assert p.a.sas[0].state == IkeState.ESTABLISHED and p.b.sas[0].state == IkeState.ESTABLISHED
    assert p.a.sas[0].keys.sk_d.reveal() == p.b.sas[0].keys.sk_d.reveal()


def test_peer_without_intermediate_support_gets_no_additional_ke():
    """A classic peer (no INTERMEDIATE_EXCHANGE_SUPPORTED) offering optional ML-KEM: classic SA."""
    p = make_pair(("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none",), ("aes256gcm16-prfsha384-x25519",))
    up(p)
    assert p.of("a", ChildSaInstalled)
    assert "IKE_INTERMEDIATE" not in [x for x, _ in exchanges(p, "a")]


@needs_mlkem
def test_kem_mismatch_is_no_proposal_chosen_naming_both_lists():
    p = make_pair((HYBRID,), ("aes256gcm16-prfsha384-x25519-ke1_mlkem1024",))
    up(p)
    fail = p.of("b", NegotiationFailed)[0]
    assert fail.notify == "NO_PROPOSAL_CHOSEN"
    assert any("KE1_ML_KEM_768" in x for x in fail.remote_proposals), fail
    assert any("KE1_ML_KEM_1024" in x for x in fail.local_proposals), fail
    assert "peer KE1_ML_KEM_768 <> ours KE1_ML_KEM_1024" in fail.reason, fail.reason


# ---------------------------------------------------------------- IKE rekey with IKE_FOLLOWUP_KE
@needs_mlkem
@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize("ike", [HYBRID, "aes256gcm16-prfsha256-x25519-ke1_mlkem768-ke2_mlkem1024"])
def test_ike_rekey_runs_followup_rounds_by_either_side(side, ike):
    p = make_pair((ike,))
    up(p)
    old_a, old_b = p.a.sas[0].keys.sk_d.reveal(), p.b.sas[0].keys.sk_d.reveal()
    p.ep(side).rekey("tun", p.now, ike=True)
    p.advance(5)
    rounds = ike.count("-ke")
    sent = [x for x, resp in exchanges(p, side) if not resp]
    assert sent.count("CREATE_CHILD_SA") == 1 and sent.count("IKE_FOLLOWUP_KE") == rounds
    [sa_a], [sa_b] = p.a.sas, p.b.sas
    assert sa_a.state == IkeState.ESTABLISHED and sa_b.state == IkeState.ESTABLISHED
    assert sa_a.keys.sk_d.reveal() == sa_b.keys.sk_d.reveal() != old_a == old_b
    for ep in (p.a, p.b):
        [info] = ep.status(p.now)
        assert len(info.additional_ke) == rounds and info.quantum_safe and info.children
    # The new IKE SA works: a CHILD SA comes up on it.
    p.a.rekey("tun", p.now)
    p.advance(5)
    assert len(p.of("a", ChildSaInstalled)) == 2 and len(p.of("b", ChildSaInstalled)) == 2


@needs_mlkem
def test_followup_with_wrong_link_is_state_not_found():
    from engine.ike.errors import RemoteError
    from engine.ike.followup import FollowupResponder
    from engine.wire.payloads import KePayload
    from engine.wire.ppk import additional_key_exchange

    r = FollowupResponder(((6, KeId.ML_KEM_768),), b"s" * 32, lambda n: b"L" * n)
    with pytest.raises(RemoteError) as exc:
        r.answer([additional_key_exchange(b"x" * 8), KePayload(KeId.ML_KEM_768, b"\0" * 1184)])
    assert exc.value.notify == 47  # STATE_NOT_FOUND


@needs_mlkem
def test_ike_rekey_keeps_an_optional_additional_ke():
    """ke1_mlkem768-ke1_none on both sides: the rekey chooses ML-KEM again (configured order)."""
    optional = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none"
    p = make_pair((optional,), (optional,))
    up(p)
    assert p.a.sas[0].intermediate.done == 1
    p.a.rekey("tun", p.now, ike=True)
    p.advance(5)
    assert [x for x, r in exchanges(p, "a") if not r].count("IKE_FOLLOWUP_KE") == 1


# ---------------------------------------------------------------- CHILD rekey with IKE_FOLLOWUP_KE
@needs_mlkem
@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize("esp", ["aes256gcm16-x25519-ke1_mlkem768", "aes256gcm16-ecp384-ke1_mlkem768-ke2_mlkem1024"])
def test_child_rekey_runs_followup_rounds_by_either_side(side, esp):
    from tests.engine.ike_pair import child

    p = make_pair((HYBRID,), children=(child(esp=(esp,)),))
    up(p)
    first = p.of("a", ChildSaInstalled)[0]
    p.ep(side).rekey("tun", p.now)
    p.advance(5)
    rounds = esp.count("-ke")
    sent = [x for x, resp in exchanges(p, side) if not resp]
    assert sent.count("IKE_FOLLOWUP_KE") == rounds and sent.count("CREATE_CHILD_SA") == 1
    ia, ib = p.of("a", ChildSaInstalled), p.of("b", ChildSaInstalled)
    assert len(ia) == 2 and len(ib) == 2
    assert ia[1].keys.encr_out == ib[1].keys.encr_in and ia[1].keys.encr_in == ib[1].keys.encr_out
    assert ia[1].keys.encr_out != first.keys.encr_out and ia[1].rekeyed_from == first.spi_in
    for ep in (p.a, p.b):
        [info] = ep.status(p.now)
        assert len(info.children) == 1 and info.children[0].quantum_safe


@needs_mlkem
def test_child_followup_keys_use_every_secret():
    """Two endpoints that agree but drop the last secret would derive other keys: the
    KEYMAT really takes SK(1)..SK(n) (recomputed here from the CHILD's own derivation)."""
    from engine.ike.child import derive_child_keys
    from engine.ike.proposals import Chosen

    chosen = Chosen(3, 1, b"\0" * 4, (20, 256))
    one = derive_child_keys(5, b"d" * 32, chosen, b"i" * 32, b"r" * 32, True, [b"a" * 32])
    two = derive_child_keys(5, b"d" * 32, chosen, b"i" * 32, b"r" * 32, True, [b"a" * 32, b"b" * 32])
    assert one.encr_out.reveal() != two.encr_out.reveal()


# ---------------------------------------------------------------- ML-KEM as the only key exchange
@needs_mlkem
@pytest.mark.parametrize("ike", ["aes256gcm16-prfsha256-mlkem768", "aes256gcm16-prfsha384-mlkem1024"])
def test_ml_kem_as_the_primary_key_exchange(ike):
    """IKE_SA_INIT carries the encapsulation key and the ciphertext; rekeys and PFS too."""
    from tests.engine.ike_pair import child

    p = make_pair((ike,), children=(child(esp=("aes256gcm16-mlkem768",)),))
    up(p)
    assert "IKE_INTERMEDIATE" not in [x for x, _ in exchanges(p, "a")]
    [info] = p.a.status(p.now)
    assert info.ke.startswith("ML_KEM") and info.quantum_safe
    p.b.rekey("tun", p.now, ike=True)
    p.advance(5)
    p.a.rekey("tun", p.now)
    p.advance(5)
    ia, ib = p.of("a", ChildSaInstalled), p.of("b", ChildSaInstalled)
    assert len(ia) == 2 and ia[1].keys.encr_out == ib[1].keys.encr_in
    assert p.a.sas[0].keys.sk_d.reveal() == p.b.sas[0].keys.sk_d.reveal()
    assert p.a.status(p.now)[0].children[0].quantum_safe



@needs_mlkem
def test_ike_auth_before_the_intermediate_rounds_is_refused_and_auth_mid_is_the_first():
    from engine.ike.errors import RemoteError
    from engine.ike.exchanges import CATALOG
    from engine.ike import intermediate

    p = make_pair()
    p.a.initiate("tun", p.now)
    for _ in range(2):  # IKE_SA_INIT there and back only
        p.collect()
        side, d = p.wire.pop(0)
        (p.b if side == "a" else p.a).receive_datagram(d.data, d.remote, d.local, p.now)
    sa_b = p.b.sas[0]
    assert intermediate.pending(sa_b)
    with pytest.raises(RemoteError) as exc:
        CATALOG.responder(sa_b, 35, [])  # IKE_AUTH
    assert exc.value.notify == 7  # INVALID_SYNTAX: a skipped ML-KEM round is never accepted
    p.advance(1)
    assert p.b.sas[0].intermediate.auth_mid == 2 == p.a.sas[0].intermediate.auth_mid
