"""Certificate authentication (RFC 7427) between two of our endpoints, with
certificates from our own `pki` (engine.pki.ca)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from engine.events import ChildSaInstalled, ExchangeReceived, NegotiationFailed
from engine.pki import ca
from engine.pki.credentials import load_credentials
from engine.policy.identity import parse_identity
from engine.policy.model import AuthConfig, EngineConfig, PrivateKeySecret, Secrets

from tests.engine.ike_pair import LEFT, RIGHT, Pair, connection, mirror, policy


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    out = {}
    for kt in ("ecdsa-p256", "rsa-2048"):
        d = tmp_path_factory.mktemp(f"pki-{kt}")
        ca.init_ca(d, "O=Test Lab, CN=Test CA", key_type=kt)
        ca.issue(d, "left.example", ["left.example"], kind="client", name="left")
        ca.issue(d, "right.example", ["right.example"], kind="server", name="right")
        ca.issue(d, "mallory.example", ["left.example"], kind="client", name="revoked")
        ca.revoke(d, "revoked", "key-compromise")
        out[kt] = d
    return out


def cert_policy(d, me: str, other: str, address: str, *, local_auth="pubkey", remote_auth="pubkey",
                cert_name: str | None = None, crl=True, ids=True):
    cert_name = cert_name or me.split(".")[0]
    conn = connection(local=address, remote=RIGHT if address == LEFT else LEFT, local_id=me, remote_id=other)
    conn = dataclasses.replace(
        conn,
        local=AuthConfig(local_auth, parse_identity(me) if ids else None,
                         certs=(str(d / "certs" / f"{cert_name}.crt"),) if local_auth == "pubkey" else ()),
        remote=AuthConfig(remote_auth, parse_identity(other), cacerts=(str(d / "ca.crt"),)
                          if remote_auth == "pubkey" else ()))
    if address == RIGHT:
        conn = dataclasses.replace(conn, children=mirror(connection()).children)
    base = policy(conn, address=address)
    return dataclasses.replace(
        base,
        engine=EngineConfig(datapath="lab", listen=(address,), crls=(str(d / "crl.pem"),) if crl else ()),
        secrets=Secrets(ike=base.secrets.ike,
                        private=(PrivateKeySecret(cert_name, str(d / "private" / f"{cert_name}.key")),),
                        path=str(d / "secrets.toml")),
        path=str(d / "policy.toml"))


def cert_pair(pa, pb) -> Pair:
    p = Pair(pa, pb)
    p.a.credentials = load_credentials(pa)
    p.b.credentials = load_credentials(pb)
    # certificates are valid now (wall clock), the engine's `now` starts at 1000
    p.a.wall_offset = p.b.wall_offset = time.time() - p.now
    return p


@pytest.mark.parametrize("kt", ["ecdsa-p256", "rsa-2048"])
def test_certificate_authentication_both_ways(pki, kt):
    d = pki[kt]
    p = cert_pair(cert_policy(d, "left.example", "right.example", LEFT),
                  cert_policy(d, "right.example", "left.example", RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert len(p.of("a", ChildSaInstalled)) == 1, p.of("a", NegotiationFailed)
    auth = [e.message for e in p.of("b", ExchangeReceived) if e.message.exchange == "IKE_AUTH"][0]
    assert "CERT" in auth.payloads and "CERTREQ" in auth.payloads
    fields = dict(next(d.fields for d in auth.details if d.name == "AUTH"))
    assert "14" in str(fields) or "DIGITAL_SIGNATURE" in str(fields)  # RFC 7427
    assert p.b.status(p.now)[0].remote_id == "left.example"


def test_rsa_ike_auth_is_fragmented(pki):
    d = pki["rsa-2048"]
    p = cert_pair(cert_policy(d, "left.example", "right.example", LEFT),
                  cert_policy(d, "right.example", "left.example", RIGHT))
    p.a.fragment_size = p.b.fragment_size = 576
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert len(p.of("a", ChildSaInstalled)) == 1
    frags = [e.message.fragments for e in p.of("b", ExchangeReceived) if e.message.exchange == "IKE_AUTH"]
    assert frags[0] > 1


def test_revoked_client_certificate_is_refused(pki):
    d = pki["ecdsa-p256"]
    p = cert_pair(cert_policy(d, "left.example", "right.example", LEFT, cert_name="revoked"),
                  cert_policy(d, "right.example", "left.example", RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(2)
    failed = p.of("b", NegotiationFailed)
    assert failed and failed[0].notify == "AUTHENTICATION_FAILED"
    assert "revoked" in failed[0].reason
    assert not p.of("a", ChildSaInstalled)


def test_wrong_ca_is_refused(pki):
    pa = cert_policy(pki["ecdsa-p256"], "left.example", "right.example", LEFT)
    pb = cert_policy(pki["rsa-2048"], "right.example", "left.example", RIGHT)
    p = cert_pair(pa, pb)
    p.a.initiate("tun", p.now)
    p.advance(2)
    failed = p.of("b", NegotiationFailed)
    assert failed and failed[0].notify == "AUTHENTICATION_FAILED"


def test_identity_must_be_in_the_certificate(pki):
    d = pki["ecdsa-p256"]
    pa = cert_policy(d, "left.example", "right.example", LEFT)
    pb = cert_policy(d, "right.example", "left.example", RIGHT)
    # left claims another identity than its certificate's SAN
    conn = pa.connections[0]
    pa = dataclasses.replace(pa, connections=(dataclasses.replace(
        conn, local=dataclasses.replace(conn.local, id=parse_identity("other.example"))),))
    conn_b = pb.connections[0]
    pb = dataclasses.replace(pb, connections=(dataclasses.replace(
        conn_b, remote=dataclasses.replace(conn_b.remote, id=parse_identity("other.example"))),))
    p = cert_pair(pa, pb)
    p.a.initiate("tun", p.now)
    p.advance(2)
    failed = p.of("b", NegotiationFailed)
    assert failed and "does not contain its identity" in failed[0].reason


def test_mixed_psk_and_certificate(pki):
    """One side signs with its certificate, the other uses a PSK (RFC 7296 allows it)."""
    d = pki["ecdsa-p256"]
    pa = cert_policy(d, "left.example", "right.example", LEFT, remote_auth="psk")
    pb = cert_policy(d, "right.example", "left.example", RIGHT, local_auth="psk")
    p = cert_pair(pa, pb)
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert len(p.of("a", ChildSaInstalled)) == 1, p.of("b", NegotiationFailed) + p.of("a", NegotiationFailed)


def test_subject_dn_identity_when_no_id_is_configured(pki):
    d = pki["ecdsa-p256"]
    pa = cert_policy(d, "left.example", "right.example", LEFT, ids=False)
    pb = cert_policy(d, "right.example", "left.example", RIGHT)
    conn_b = pb.connections[0]
    pb = dataclasses.replace(pb, connections=(dataclasses.replace(
        conn_b, remote=dataclasses.replace(conn_b.remote, id=parse_identity("O=Test Lab, CN=left.example"))),))
    p = cert_pair(pa, pb)
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert len(p.of("a", ChildSaInstalled)) == 1, p.of("b", NegotiationFailed)
    assert p.b.status(p.now)[0].remote_id.startswith("O=Test Lab")
