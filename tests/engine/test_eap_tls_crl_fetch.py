"""EAP-TLS asks the runtime's CRL fetcher for the CRLs of the other side's chain, as IKE_AUTH with
certificates does (engine.runtime.crlfetch; charon's revocation plugin fetches for EAP-TLS too, its
tls_peer/tls_server validating through the same credential manager): the gateway holds the client's
IKE_AUTH request while a CRL it needs is being fetched, then decides with it. Sans-IO pairs, the
HTTP server in the test on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timezone

import pytest

from engine.events import ChildSaInstalled, NegotiationFailed
from engine.pki import ca
from engine.policy.identity import parse_identity
from engine.policy.model import AuthConfig
from engine.runtime.crlfetch import CrlFetcher

from tests.engine.ike_pair import LEFT, RIGHT
from tests.engine.test_crl_fetch import _fetch_all, _serve_crl, server  # noqa: F401 (fixture)
from tests.engine.test_ike_certs import cert_pair, cert_policy


@pytest.fixture
def pki(server, tmp_path):  # noqa: F811
    d = tmp_path / "ca"
    ca.init_ca(d, "O=EAP Lab, CN=EAP CA", crl_uri=server.uri("/crl.pem"))
    ca.issue(d, "left.example", ["left.example"], kind="client", name="left")
    ca.issue(d, "right.example", ["right.example"], kind="server", name="right")
    return d


def _eap_tls_pair(d, revocation="relaxed"):
    """a: an EAP-TLS client with its certificate; b: the gateway (certificate AUTH, EAP-TLS for the client)."""
    pa = cert_policy(d, "left.example", "right.example", LEFT, crl=False)
    pb = cert_policy(d, "right.example", "left.example", RIGHT, crl=False)
    ca_file = (str(d / "ca.crt"),)
    ca_, cb = pa.connections[0], pb.connections[0]
    ca_ = dataclasses.replace(ca_, local=AuthConfig("eap-tls", parse_identity("left.example"),
                                                    certs=ca_.local.certs))
    cb = dataclasses.replace(cb, remote=AuthConfig("eap-tls", None, cacerts=ca_file, eap_id="%any",
                                                   revocation=revocation))
    pa = dataclasses.replace(pa, connections=(ca_,))
    pb = dataclasses.replace(pb, connections=(cb,))
    p = cert_pair(pa, pb)
    p.b.credentials.fetching = True  # as a runtime's fetcher sets it
    return p


def _held(p) -> int:
    return p.b.stats.get("held_requests", 0)


def test_eap_tls_succeeds_with_a_crl_that_revokes_nothing(server, pki):  # noqa: F811
    p = _eap_tls_pair(pki, "strict")
    _serve_crl(server, pki)
    f = CrlFetcher()
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert _held(p) >= 1, "the gateway decided without asking for the client's CRL"
    _fetch_all(f, creds=p.b.credentials)
    p.b.retry_held(p.now)
    p.advance(2)
    assert p.of("a", ChildSaInstalled) and p.of("b", ChildSaInstalled), p.of("b", NegotiationFailed)
    assert p.b.status(p.now)[0].eap_method == "EAP-TLS"


def test_the_held_eap_tls_round_is_decided_with_the_fetched_crl(server, pki):  # noqa: F811
    """The client's certificate is revoked in the CRL its distribution point serves: the gateway
    waits for it (the client's retransmissions held too), then refuses with the CRL's word."""
    d = pki
    ca.revoke(d, "left", "key-compromise")
    p = _eap_tls_pair(d, "relaxed")
    f = CrlFetcher()

    async def go():
        p.a.initiate("tun", p.now)
        p.advance(0.5)
        assert not p.of("b", NegotiationFailed) and not p.of("b", ChildSaInstalled)
        assert _held(p) == 1
        f.attach(p.b.credentials)
        f.drain()
        assert f.running and server.uri("/crl.pem") in p.b.credentials.crl_pending
        p.advance(5)  # retransmissions while the fetch runs are held too
        assert _held(p) >= 2 and not p.of("b", NegotiationFailed)
        _serve_crl(server, d)
        while f.running:
            await asyncio.sleep(0.01)

    server.routes["/crl.pem"] = (200, b"", 0.5)  # slow: answered once the test serves the CRL
    asyncio.run(go())
    p.b.retry_held(p.now)
    p.advance(10)
    assert not p.of("b", ChildSaInstalled) and not p.of("a", ChildSaInstalled)
    reason = p.of("b", NegotiationFailed)[-1].reason
    assert "EAP-TLS" in reason and "revoked" in reason and "key compromise" in reason, reason


def test_after_a_failed_fetch_the_revocation_setting_decides(server, pki):  # noqa: F811
    for revocation, accepted in (("relaxed", True), ("strict", False)):
        p = _eap_tls_pair(pki, revocation)
        f = CrlFetcher()
        p.a.initiate("tun", p.now)
        p.advance(0.5)
        assert _held(p) == 1
        _fetch_all(f, creds=p.b.credentials)  # 404
        p.b.retry_held(p.now)
        p.advance(10)
        assert bool(p.of("b", ChildSaInstalled)) is accepted, (revocation, p.of("b", NegotiationFailed))
        if not accepted:
            reason = p.of("b", NegotiationFailed)[-1].reason
            assert server.uri("/crl.pem") in reason and "HTTP 404" in reason, reason


def test_without_a_fetcher_nothing_is_held(pki):
    p = _eap_tls_pair(pki, "strict")
    p.b.credentials.fetching = False
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert _held(p) == 0
    assert "revocation = strict" in p.of("b", NegotiationFailed)[-1].reason


class _Source:
    """A CrlSource stub: no CRL; the first ``waits`` checks find the URI being fetched."""

    def __init__(self, waits: int = 0) -> None:
        self.wanted: list = []
        self.waits = waits

    def crls(self):
        return []

    def want(self, uris):
        self.wanted += list(uris)

    def pending(self, uris):
        if self.waits:
            self.waits -= 1
            return list(uris)
        return []

    def status(self, uris):
        return ""


def _methods(d, server_source, peer_source, version):
    from engine import eap
    from engine.crypto.tls import TlsCredentials
    from engine.eap.session import EapPeer, EapServer
    from engine.pki.certs import load_certificate_file
    from engine.pki.keys import load_private_key_file
    now = datetime.now(timezone.utc)  # the certificates were just issued

    def creds(name):
        return TlsCredentials(certs=tuple(load_certificate_file(d / "certs" / f"{name}.crt")),
                              key=load_private_key_file(d / "private" / f"{name}.key"),
                              cas=tuple(load_certificate_file(d / "ca.crt")), min_version=version,
                              max_version=version)

    server = EapServer((13,), eap.server_methods(tls=creds("right"), now=now, crl_source=server_source,
                                                 peer_identity=parse_identity("left.example")), ask_identity=False)
    peer = EapPeer(b"left.example", (13,), eap.peer_methods(b"left.example", tls=creds("left"), now=now,
                                                            server_identity=parse_identity("right.example"),
                                                            crl_source=peer_source))
    return server, peer


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_the_server_waits_and_the_same_response_given_again_goes_on(pki, version):
    """The method level: WAIT, no packet; the same client response again (the IKE request held and
    taken again) is not fed to TLS twice, and the conversation ends in success with one MSK."""
    ss, ps = _Source(waits=2), _Source()
    server, peer = _methods(pki, ss, ps, version)
    step = server.start()
    waited = 0
    for _ in range(60):
        pstep = peer.receive(step.packet.encode())
        if pstep.state == "success":
            break
        assert pstep.state == "continue", pstep.reason
        step = server.receive(pstep.packet.to_payload())
        while step.state == "wait":
            waited += 1
            assert step.packet is None and "waiting for the CRL" in step.reason
            step = server.receive(pstep.packet.to_payload())
        assert step.state in ("continue", "success"), step.reason
    else:
        raise AssertionError("no end")
    assert waited == 2 and server.state == "success" and peer.msk == server.msk
    assert ss.wanted and ps.wanted  # both sides asked for the other's CRL (each names the same URI here)


def test_another_response_while_waiting_fails(pki):
    ss = _Source(waits=1)
    server, peer = _methods(pki, ss, _Source(), "1.3")
    step = server.start()
    for _ in range(60):
        pstep = peer.receive(step.packet.encode())
        step = server.receive(pstep.packet.to_payload())
        if step.state == "wait":
            break
    else:
        raise AssertionError("never waited")
    forged = dataclasses.replace(pstep.packet, type_data=pstep.packet.type_data[:1] + b"x")
    step = server.receive(forged.to_payload())
    assert step.state == "failure" and "another EAP-TLS response" in step.reason
