"""Uniqueness of a road warrior's IKE SAs (swanctl's unique), as charon's ike_sa_manager
check_uniqueness / enforce_replace: the EAP identity is the peer, a reauthentication from the
same host is replaced 10 s later, unique = keep refuses a second login from elsewhere."""

from __future__ import annotations

import dataclasses

from engine.events import NegotiationFailed
from engine.policy.identity import parse_identity
from engine.policy.model import EapSecret
from engine.secret import Secret

from tests.engine.ike_pair import Pair
from tests.engine.test_ike_roadwarrior import eap_pair, rw_pair


def _gateway_unique(p: Pair, unique: str) -> None:
    pb = p.b.policy
    p.b.apply_policy(dataclasses.replace(pb, connections=tuple(
        dataclasses.replace(c, unique=unique) for c in pb.connections)), p.now)


def _second_device(*, unique: str = "no", initial_contact: bool = False, ike_id: str = "phone.example",
                   user: str = "alice"):
    """alice up from ``p.a``; then a second device ``q.a`` at another address with another IKE
    identity logs in to the same gateway as EAP user ``user``."""
    p = eap_pair()
    pb = p.b.policy
    p.b.apply_policy(dataclasses.replace(pb, secrets=dataclasses.replace(
        pb.secrets, eap=pb.secrets.eap + (EapSecret("bob", ("bob",), Secret("bob-password-0123")),))), p.now)
    _gateway_unique(p, unique)
    p.a.initiate("tun", p.now)
    p.advance(1)
    (first,) = p.b.sas
    pa = p.a.policy
    (conn,) = pa.connections
    password = "alice-password-0123" if user == "alice" else "bob-password-0123"
    second = dataclasses.replace(conn, local=dataclasses.replace(conn.local, id=parse_identity(ike_id), eap_id=user),
                                 local_addrs=("192.0.2.3",))
    q = Pair(dataclasses.replace(pa, connections=(second,), secrets=dataclasses.replace(
        pa.secrets, eap=(EapSecret("me", (user,), Secret(password)),))), p.b.policy)
    q.b, q.now = p.b, p.now
    if not initial_contact:
        q.a.initial_contact = lambda sa: False
    q.a.initiate("tun", q.now)
    q.advance(1)
    p.now = q.now
    return p, q, first


# ---------------------------------------------------------------- item 4: the EAP identity is the peer
def test_unique_replace_ends_the_same_eap_users_sa_from_another_ike_identity():
    """charon's check_uniqueness looks the peer up by get_other_eap_id: the EAP identity replaces the
    IKE identity. Ours keyed on both, so alice on her phone (another IKE identity) kept both SAs."""
    p, q, first = _second_device(unique="replace")
    (second,) = [s for s in p.b.sas if s is not first and s.alive]
    assert second.established and second.eap_identity == "alice"
    # (its Delete goes out through q's link, to the wrong client: what counts is that it goes)
    assert not first.established, "the first IKE SA of the same EAP user stayed (unique = replace)"


def test_initial_contact_of_the_same_eap_user_from_another_ike_identity_ends_the_first():
    p, q, first = _second_device(initial_contact=True)
    assert not first.alive


def test_another_eap_user_from_another_ike_identity_keeps_both():
    p, q, first = _second_device(unique="replace", user="bob")
    q.advance(1)
    assert first.alive and first.established
    assert sorted(s.eap_identity for s in p.b.sas if s.established) == ["alice", "bob"]


def test_psk_peers_are_still_told_apart_by_ike_identity():
    from engine.ike.registry import Registry

    p = rw_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    (sa,) = p.b.sas
    assert Registry.identity_of(sa) == ("tun", "ike", str(sa.remote_id))


# ---------------------------------------------------------------- item 4: unique = keep
def test_unique_keep_refuses_the_same_user_from_another_address():
    """charon (check_uniqueness UNIQUE_KEEP, ike_auth build_r): the first IKE SA stays, the new one
    gets AUTHENTICATION_FAILED ("canceling IKE_SA setup due to uniqueness policy")."""
    p, q, first = _second_device(unique="keep")
    assert first.alive and first.established
    assert not [s for s in p.b.sas if s is not first and s.established]
    (failed,) = [e for e in q.of("b", NegotiationFailed) if "unique = keep" in e.reason]
    assert failed.notify == "AUTHENTICATION_FAILED"
    assert not [s for s in q.a.sas if s.established]


def test_unique_keep_yields_to_initial_contact():
    p, q, first = _second_device(unique="keep", initial_contact=True)
    assert not first.alive
    assert [s for s in p.b.sas if s.established]


def _reauthenticate(p: Pair) -> None:
    """A make-before-break reauthentication of the client: a second IKE SA from the same address and
    port, without INITIAL_CONTACT."""
    p.a.initial_contact = lambda sa: False
    p.a.registry.current = lambda name: None
    p.a.initiate("tun", p.now)


def test_unique_keep_lets_the_same_host_reauthenticate():
    p = rw_pair()
    _gateway_unique(p, "keep")
    p.a.initiate("tun", p.now)
    p.advance(1)
    (first,) = p.b.sas
    _reauthenticate(p)
    p.advance(1)
    assert len([s for s in p.b.sas if s.established]) == 2 and first.established
    assert not p.of("b", NegotiationFailed)


# ---------------------------------------------------------------- item 5: replace waits on a reauthentication
def test_unique_replace_deletes_a_reauthenticated_sa_10_seconds_later():
    """charon's enforce_replace: from the same host (address and port) it is a suspected
    reauthentication; the duplicate is deleted in 10 s so the CHILD SAs overlap. Ours deleted it at
    once, and the client's traffic dropped until its new CHILD SAs were up."""
    p = rw_pair()
    _gateway_unique(p, "replace")
    p.a.initiate("tun", p.now)
    p.advance(1)
    (first,) = p.b.sas
    _reauthenticate(p)
    p.advance(1)
    assert first.established, "the reauthenticated IKE SA went at once"
    p.advance(5)
    assert first.established
    p.advance(5)
    assert not first.alive
    assert [s for s in p.b.sas if s.established]


def test_unique_replace_from_another_address_deletes_at_once():
    p, q, first = _second_device(unique="replace", ike_id="left.example")
    assert not first.established
