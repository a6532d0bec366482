"""IKE_AUTH with certificates: the identity the peer claims must be one its certificate carries,
as written (pki17 review)."""

from __future__ import annotations

import dataclasses

from engine.events import ChildSaInstalled, NegotiationFailed
from engine.policy.identity import parse_identity

from tests.engine.ike_pair import LEFT, RIGHT
from tests.engine.test_ike_certs import cert_pair, cert_policy, pki  # noqa: F401 (pki is a fixture)


def _with_ids(pol, *, local=None, remote=None):
    conn = pol.connections[0]
    if local is not None:
        conn = dataclasses.replace(conn, local=dataclasses.replace(conn.local, id=parse_identity(local)))
    if remote is not None:
        conn = dataclasses.replace(conn, remote=dataclasses.replace(conn.remote, id=parse_identity(remote)))
    return dataclasses.replace(pol, connections=(conn,))


def test_a_wildcard_id_from_the_peer_is_refused(pki):  # noqa: F811
    """left holds left.example's certificate and claims ID_FQDN *.example; right accepts any peer under
    .example (remote.id = *.example): the SA must not be set up for the identity '*.example'."""
    d = pki["ecdsa-p256"]
    pa = _with_ids(cert_policy(d, "left.example", "right.example", LEFT), local="*.example")
    pb = _with_ids(cert_policy(d, "right.example", "left.example", RIGHT), remote="*.example")
    p = cert_pair(pa, pb)
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert not p.of("a", ChildSaInstalled)
    failed = p.of("b", NegotiationFailed)
    assert failed and "does not contain its identity" in failed[0].reason, failed


def test_the_same_pattern_accepts_the_name_the_certificate_carries(pki):  # noqa: F811
    d = pki["ecdsa-p256"]
    pa = cert_policy(d, "left.example", "right.example", LEFT)
    pb = _with_ids(cert_policy(d, "right.example", "left.example", RIGHT), remote="*.example")
    p = cert_pair(pa, pb)
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert len(p.of("a", ChildSaInstalled)) == 1, p.of("b", NegotiationFailed)
    assert p.b.status(p.now)[0].remote_id == "left.example"


def test_the_refusal_shows_the_claimed_identity_escaped_and_capped(pki):  # noqa: F811
    """The ID is unauthenticated peer text (ID_FQDN takes any ASCII, control characters included): the
    reason carries it as every other reason does (engine.ike.text.short), not a line break nor 4 KB."""
    from engine.policy.model import Identity

    d = pki["ecdsa-p256"]
    pa = cert_policy(d, "left.example", "right.example", LEFT)
    conn = pa.connections[0]
    claimed = Identity("fqdn", "x" * 4000 + ".example\n2026-12-07 22:00:00 INFO forged line")
    pa = dataclasses.replace(pa, connections=(dataclasses.replace(
        conn, local=dataclasses.replace(conn.local, id=claimed)),))
    pb = _with_ids(cert_policy(d, "right.example", "left.example", RIGHT), remote="%any")
    p = cert_pair(pa, pb)
    p.a.fragment_size = 1280
    p.a.initiate("tun", p.now)
    p.advance(2)
    failed = p.of("b", NegotiationFailed)
    assert failed and "does not contain its identity" in failed[0].reason, failed
    assert "\n" not in failed[0].reason and len(failed[0].reason) < 600, failed[0].reason
