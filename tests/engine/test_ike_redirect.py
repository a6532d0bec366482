"""IKE redirect (RFC 5685) on the two-endpoint bench, both roles: our gateway sends clients
elsewhere, our client follows a REDIRECT in the IKE_SA_INIT answer, in the IKE_AUTH answer and
in an INFORMATIONAL of an established gateway, with charon's loop limit."""

from __future__ import annotations

import dataclasses

from engine.events import ChildSaDeleted, ChildSaInstalled, ExchangeSent, NegotiationFailed
from engine.ike.exchanges import redirect
from engine.ike.exchanges.informational import _Informational
from engine.wire.constants import FLAG_RESPONSE, ExchangeType
from engine.wire.message import decode_message, encode_message
from engine.wire.mobility import redirect as redirect_notify

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy
from tests.engine.test_ike_roadwarrior import POOL, eap_pair

OTHER = "192.0.2.4"


def gateways(*, first_to=OTHER, second_to=None, vips=("0.0.0.0",)):
    """a: a road-warrior client of RIGHT; b: one gateway answering on RIGHT (connection 'tun',
    redirect_to ``first_to``) and on OTHER (connection 'tun2', redirect_to ``second_to``)."""
    client = connection(children=(child(local_ts="dynamic", remote_ts="198.51.100.0/25"),), vips=vips)
    gw = mirror(client, remote_addrs=(), vips=(), pools=("rw",), redirect_to=first_to)
    gw2 = dataclasses.replace(gw, name="tun2", local_addrs=(OTHER,), redirect_to=second_to)
    pol_b = dataclasses.replace(policy(gw, gw2, address=RIGHT), pools=(POOL,))
    return Pair(policy(client, address=LEFT), pol_b)


def briefs(p, side, exchange):
    return [e.message.brief() for e in p.events[side] if isinstance(e, ExchangeSent)
            and e.message.exchange == exchange]


def test_client_follows_a_redirect_in_ike_auth_to_the_other_gateway():
    p = gateways()
    p.a.initiate("tun", p.now)
    p.advance(2)
    inits = briefs(p, "a", "IKE_SA_INIT")
    assert "N(REDIR_SUP)" in inits[0] and "N(REDIR_FROM)" in inits[1], inits
    (sa,) = p.a.sas
    assert sa.remote[0] == OTHER and sa.redirected_from == RIGHT and sa.state.value == "ESTABLISHED"
    (installed,) = p.of("a", ChildSaInstalled)
    assert installed.remote_addr == OTHER
    (gw_sa,) = p.b.sas
    assert gw_sa.name == "tun2" and len(gw_sa.children) == 1  # the first gateway kept nothing
    assert [u.used for u in p.b.vips.leases.usage()] == [1]  # one lease, at the gateway that serves
    assert not p.of("a", NegotiationFailed)


def test_a_redirect_loop_ends_after_five_redirects_with_a_reason():
    p = gateways(first_to=OTHER, second_to=RIGHT)
    p.a.initiate("tun", p.now)
    p.advance(5)
    assert len(briefs(p, "a", "IKE_SA_INIT")) == redirect.MAX_REDIRECTS + 1
    failed = p.of("a", NegotiationFailed)[-1]
    assert failed.notify == "REDIRECT" and "only 5 redirects are allowed within 300 s" in failed.reason
    assert not p.of("a", ChildSaInstalled)


def test_gateway_serves_a_client_that_cannot_follow_a_redirect(monkeypatch):
    monkeypatch.setattr(redirect, "init_notifies", lambda sa: [])  # a client without REDIRECT_SUPPORTED
    p = gateways()
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert len(p.of("b", ChildSaInstalled)) == 1 and p.b.sas[0].name == "tun"


def test_a_redirect_to_a_host_name_is_followed_once_the_runtime_resolved_it():
    p = gateways(first_to="vpn2.test")
    asked: list[str] = []
    p.a.names.resolve = asked.append
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert asked == ["vpn2.test"] and not p.a.sas  # the redirected SA went; the new one waits
    p.a.resolved("vpn2.test", ("2001:db8::4", OTHER), p.now)  # the family we came from wins
    p.advance(2)
    (sa,) = p.a.sas
    assert sa.remote[0] == OTHER and sa.redirected_from == RIGHT and sa.established
    assert not p.of("a", NegotiationFailed)


def test_a_redirect_to_a_host_name_that_does_not_resolve_fails_in_plain_words():
    p = gateways(first_to="vpn2.test")
    p.a.names.resolve = lambda name: None
    p.a.initiate("tun", p.now)
    p.advance(2)
    p.a.resolved("vpn2.test", (), p.now)
    p.advance(1)
    failed = p.of("a", NegotiationFailed)[-1]
    assert failed.notify == "REDIRECT" and failed.exchange == "IKE_AUTH"
    assert "vpn2.test" in failed.reason and "did not resolve" in failed.reason
    assert not p.a.sas


def _redirect_init_answers(p, nonce_of):
    """Replace the gateway's first IKE_SA_INIT answer by N(REDIRECT(OTHER, nonce)), as a gateway
    redirecting in IKE_SA_INIT (§4.2) does."""
    done = []

    def swap(side, d):
        if side != "b" or done:
            return True
        m = decode_message(d.data)
        if m.header.exchange != ExchangeType.IKE_SA_INIT:
            return True
        done.append(1)
        sa = p.a.sas[0]
        return encode_message(ExchangeType.IKE_SA_INIT, 0, m.header.spi_i, b"\1" * 8, FLAG_RESPONSE,
                              [redirect_notify(OTHER, nonce_of(sa))])
    return swap


def test_client_follows_a_redirect_in_the_ike_sa_init_answer():
    p = gateways(first_to=None)
    p.filter = _redirect_init_answers(p, lambda sa: sa.nonce_i)
    p.a.initiate("tun", p.now)
    p.advance(2)
    (sa,) = p.a.sas
    assert sa.remote[0] == OTHER and sa.redirected_from == RIGHT and sa.established
    assert [s.name for s in p.b.sas if s.established] == ["tun2"]


def test_a_redirect_without_our_nonce_is_not_followed():
    p = gateways(first_to=None)
    p.filter = _redirect_init_answers(p, lambda sa: b"\0" * 32)
    p.a.initiate("tun", p.now)
    p.advance(2)
    failed = p.of("a", NegotiationFailed)[0]
    assert "without our nonce" in failed.reason
    assert all(sa.remote[0] == RIGHT for sa in p.a.sas)


class _Redirect(_Informational):
    name = "INFORMATIONAL (redirect)"

    def build(self, now):
        return [redirect_notify(OTHER)]


def test_an_established_gateway_redirects_with_an_informational_and_the_old_sa_goes_after():
    p = gateways(first_to=None)
    p.a.initiate("tun", p.now)
    p.advance(1)
    old, gw = p.a.sas[0], p.b.sas[0]
    vip = old.local_vips
    gw.start(_Redirect(gw), p.now)
    p.advance(3)
    (new,) = p.a.sas
    assert new is not old and new.remote[0] == OTHER and new.established and not old.alive
    assert new.local_vips == vip  # the same address, from the other gateway's pool
    deleted = p.of("a", ChildSaDeleted)
    assert len(deleted) == 1 and "redirected to 192.0.2.4" in deleted[0].reason
    assert [e.remote_addr for e in p.of("a", ChildSaInstalled)] == [RIGHT, OTHER]
    # make before break: the virtual IP never left the device
    from engine.events import VirtualIpsChanged
    changes = [(e.ike_sa, e.assigned) for e in p.of("a", VirtualIpsChanged)]
    assert (old.unique_id, False) not in changes, changes
    assert [s.name for s in p.b.sas] == ["tun2"]


def test_an_eap_client_follows_a_redirect_sent_after_its_eap_rounds():
    """The gateway redirects once the EAP conversation authenticated the client (its last IKE_AUTH
    answer); our EAP client logs in again at the other gateway."""
    p = eap_pair()
    (gw,) = p.b.policy.connections
    first = dataclasses.replace(gw, redirect_to=OTHER)
    second = dataclasses.replace(gw, name="tun2", local_addrs=(OTHER,))
    p.b.policy = dataclasses.replace(p.b.policy, connections=(first, second))
    p.a.initiate("tun", p.now)
    p.advance(3)
    (sa,) = p.a.sas
    assert sa.remote[0] == OTHER and sa.established and sa.eap_method == "EAP-MSCHAPv2"
    assert [s.name for s in p.b.sas] == ["tun2"] and p.b.sas[0].eap_identity == "alice"
    assert len(p.of("a", ChildSaInstalled)) == 1 and not p.of("a", NegotiationFailed)
