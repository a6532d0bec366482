"""Issue 16 on the two-endpoint bench: what real-world peers (cloud gateways,
routers, rebooting peers) hit on day one."""

from __future__ import annotations

import dataclasses

from engine.events import ChildSaInstalled, IkeState, NegotiationFailed
from engine.policy.identity import parse_identity
from engine.policy.model import IkeSecret, Secrets
from engine.secret import Secret

from tests.engine.ike_pair import LEFT, PSK, RIGHT, Pair, connection, mirror, policy


def ip_secrets(psk: str = PSK) -> Secrets:
    """A secret named by the two addresses, as for a cloud gateway (no `id` anywhere)."""
    return Secrets(ike=(IkeSecret("cloud", (parse_identity(LEFT), parse_identity(RIGHT)), Secret(psk)),))


def ip_pair(**conn_kw) -> Pair:
    a = connection(local_id=None, remote_id=None, **conn_kw)
    pa = dataclasses.replace(policy(a, address=LEFT), secrets=ip_secrets())
    pb = dataclasses.replace(policy(mirror(a), address=RIGHT), secrets=ip_secrets())
    return Pair(pa, pb)


# ------------------------------------------------------------------ 1. PSK with IP-address identities
def test_psk_initiator_with_ip_identities_comes_up():
    p = ip_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert p.of("a", ChildSaInstalled) and p.of("b", ChildSaInstalled)
    (a,), (b,) = p.a.status(p.now), p.b.status(p.now)
    assert (a.local_id, a.remote_id) == (LEFT, RIGHT)
    assert (b.local_id, b.remote_id) == (RIGHT, LEFT)


def test_missing_psk_as_initiator_is_a_failure_not_a_stuck_sa():
    p = ip_pair()
    p.a.policy = dataclasses.replace(p.a.policy, secrets=Secrets(ike=(
        IkeSecret("other", (parse_identity("192.0.2.99"),), Secret(PSK)),)))
    sa = p.a.initiate("tun", p.now)
    p.advance(1)
    failed = p.of("a", NegotiationFailed)
    assert failed and "no pre-shared key" in failed[0].reason
    assert sa.state == IkeState.DESTROYED
    assert not p.a.status(p.now)
