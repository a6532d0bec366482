"""CRLs fetched over HTTP from certificates' distribution points (engine.runtime.crlfetch), as
charon's revocation plugin and curl fetcher do. The HTTP server runs in the test on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.events import ChildSaInstalled, NegotiationFailed
from engine.pki import ca
from engine.pki.credentials import load_credentials
from engine.pki.validate import crl_uris, validate_chain
from engine.runtime import crlfetch
from engine.runtime.crlfetch import CrlFetcher, FetchError, fetch_crl

from tests.engine.ike_pair import LEFT, RIGHT
from tests.engine.test_ike_certs import cert_pair, cert_policy
from tests.engine.test_pki_validate import NOW, _name


class _Server:
    """Paths -> (status, body, delay); counts the requests of each path."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, float]] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):  # noqa: N802
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                status, body, delay = server.routes.get(self.path, (404, b"not here", 0.0))
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def uri(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _root():
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("Fetch Root")).issuer_name(_name("Fetch Root"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(root, uri: str):
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateBuilder().subject_name(_name("leaf")).issuer_name(root[0].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(uri)], None, None, None)]), critical=False)
            .sign(root[1], hashes.SHA256()))


def _crl(root, revoked=(), *, next_update=NOW + timedelta(days=1)) -> x509.CertificateRevocationList:
    b = (x509.CertificateRevocationListBuilder().issuer_name(root[0].subject)
         .last_update(NOW - timedelta(hours=1)).next_update(next_update))
    for serial in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(NOW - timedelta(minutes=5)).build())
    return b.sign(root[1], hashes.SHA256())


def _fetch_all(fetcher: CrlFetcher, uris=(), creds=None):
    async def go():
        if creds is not None:
            fetcher.attach(creds)
        fetcher.want(uris)
        fetcher.drain()
        while fetcher.running:
            await asyncio.sleep(0.01)
    asyncio.run(go())


# --- the fetch itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [serialization.Encoding.DER, serialization.Encoding.PEM])
def test_a_crl_is_fetched_in_der_or_pem(server, encoding):
    root = _root()
    crl = _crl(root, [7])
    server.routes["/ca.crl"] = (200, crl.public_bytes(encoding), 0.0)
    got = asyncio.run(fetch_crl(server.uri("/ca.crl")))
    assert [c.fingerprint(hashes.SHA256()) for c in got] == [crl.fingerprint(hashes.SHA256())]


@pytest.mark.parametrize("status, body, delay, needle", [
    (404, b"", 0.0, "HTTP 404"),
    (302, b"", 0.0, "redirects are not followed"),
    (200, b"x" * 5000, 0.0, "more than the 4096"),
    (200, b"<html>maintenance</html>", 0.0, "neither a PEM nor a DER CRL"),
    (200, b"", 2.0, "within 0.3 s"),
    (200, b"".join([b"-----BEGIN X509 CRL-----\nAA==\n-----END X509 CRL-----\n"] * 5), 0.0, "neither"),
], ids=["404", "redirect", "too-large", "not-a-crl", "timeout", "garbage-pem"])
def test_a_fetch_is_bounded_and_says_why_it_failed(server, status, body, delay, needle):
    server.routes["/ca.crl"] = (status, body, delay)
    with pytest.raises(FetchError, match=needle):
        asyncio.run(fetch_crl(server.uri("/ca.crl"), timeout=0.3, max_bytes=4096))


def test_one_uri_gives_at_most_a_few_crls(server):
    root = _root()
    server.routes["/many.crl"] = (200, b"".join(_crl(root).public_bytes(serialization.Encoding.PEM)
                                                for _ in range(crlfetch.MAX_CRLS_PER_URI + 1)), 0.0)
    with pytest.raises(FetchError, match="CRLs; at most"):
        asyncio.run(fetch_crl(server.uri("/many.crl")))


def test_a_body_without_length_is_cut_at_the_limit():
    async def go():
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n")
            for _ in range(100):  # 6.4 MB unless the client stops reading
                writer.write(b"y" * 65536)
                try:
                    await writer.drain()
                except OSError:
                    break
            writer.close()
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            with pytest.raises(FetchError, match="larger than the 100000 bytes"):
                await fetch_crl(f"http://127.0.0.1:{port}/x", max_bytes=100000)
        finally:
            srv.close()
    asyncio.run(go())


# --- the cache --------------------------------------------------------------------------------


def test_the_cache_honours_next_update_and_failures_are_held(server):
    root = _root()
    server.routes["/ca.crl"] = (200, _crl(root, next_update=NOW + timedelta(hours=2)).public_bytes(
        serialization.Encoding.DER), 0.0)
    clock = [NOW.timestamp()]
    f = CrlFetcher(wall=lambda: clock[0])
    uri = server.uri("/ca.crl")
    _fetch_all(f, [uri])
    _fetch_all(f, [uri])  # fresh: not fetched again
    assert server.hits["/ca.crl"] == 1 and len(f.cache[uri].crls) == 1
    clock[0] += 3 * 3600  # past nextUpdate
    asyncio.run(_refresh(f))
    assert server.hits["/ca.crl"] == 2
    missing = server.uri("/gone.crl")
    _fetch_all(f, [missing])
    _fetch_all(f, [missing])  # held after a failure (charon degrades a failing URI)
    assert server.hits["/gone.crl"] == 1 and "HTTP 404" in f.status(missing)
    clock[0] += crlfetch.FAILURE_HOLD + 1
    _fetch_all(f, [missing])
    assert server.hits["/gone.crl"] == 2


async def _refresh(f: CrlFetcher) -> None:
    f.refresh()
    while f.running:
        await asyncio.sleep(0.01)


def test_concurrent_fetches_are_bounded(server):
    async def go():
        f = CrlFetcher(timeout=5)
        for i in range(crlfetch.MAX_CONCURRENT + crlfetch.MAX_QUEUED + 5):
            server.routes[f"/{i}.crl"] = (404, b"", 0.2)
        f.want([server.uri(f"/{i}.crl") for i in range(crlfetch.MAX_CONCURRENT + crlfetch.MAX_QUEUED + 5)])
        assert len(f.running) == crlfetch.MAX_CONCURRENT and len(f.queued) == crlfetch.MAX_QUEUED
        f.close()
    asyncio.run(go())


# --- what validation asks for -------------------------------------------------------------------


def test_only_a_validated_path_names_uris_to_fetch():
    root, other = _root(), _root()
    leaf = _leaf(root, "http://127.0.0.1:9/ca.crl")
    assert crl_uris(leaf) == ("http://127.0.0.1:9/ca.crl",)
    assert validate_chain(leaf, [], [root[0]], [], NOW).crl_uris == ("http://127.0.0.1:9/ca.crl",)
    assert validate_chain(leaf, [], [other[0]], [], NOW).crl_uris == ()  # not our CA: nothing fetched
    # a current CRL covers it: nothing to fetch
    assert validate_chain(leaf, [], [root[0]], [_crl(root)], NOW).crl_uris == ()
    ldap = _leaf(root, "ldap://ldap.example/cn=CA?certificateRevocationList")
    assert crl_uris(ldap) == ()


# --- in IKE_AUTH, with the runtime's fetcher -------------------------------------------------------


@pytest.fixture
def fetched_pki(server, tmp_path):
    d = tmp_path / "ca"
    ca.init_ca(d, "O=Fetch Lab, CN=Fetch CA", crl_uri=server.uri("/crl.pem"))
    ca.issue(d, "left.example", ["left.example"], kind="client", name="left")
    ca.issue(d, "right.example", ["right.example"], kind="server", name="right")
    # The CRL exists before any pair fixes its wall clock (cert_pair): made later, on a loaded
    # machine, its thisUpdate could lie after the engine's time, and it would not be current yet.
    ca.crl(d)
    return d


def _with_revocation(policy, value):
    conn = policy.connections[0]
    return dataclasses.replace(policy, connections=(dataclasses.replace(
        conn, remote=dataclasses.replace(conn.remote, revocation=value)),))


def _serve_crl(server, d):
    if not (d / "crl.pem").exists():
        ca.crl(d)
    server.routes["/crl.pem"] = (200, (d / "crl.pem").read_bytes(), 0.0)


def _pair(d, revocation="relaxed", **kw):
    pa = cert_policy(d, "left.example", "right.example", LEFT, crl=False)
    pb = _with_revocation(cert_policy(d, "right.example", "left.example", RIGHT, crl=False), revocation)
    p = cert_pair(pa, pb)
    p.b.credentials.fetching = True  # as a runtime's fetcher sets it
    return p


def _held(p) -> int:
    return p.b.stats.get("held_requests", 0)


@pytest.mark.parametrize("revocation, fragment_size", [("relaxed", None), ("ifuri", None), ("strict", None),
                                                       ("ifuri", 300)])
def test_ike_auth_waits_for_the_crl_then_it_counts(server, fetched_pki, revocation, fragment_size):
    """The peer's IKE_AUTH names a distribution point we have no CRL of: it is held unanswered while
    the runtime fetches (its retransmissions too, fragmented or not), then checked against the CRL fetched."""
    d = fetched_pki
    ca.revoke(d, "left", "key-compromise")
    p = _pair(d, revocation)
    if fragment_size:
        p.a.fragment_size = p.b.fragment_size = fragment_size
    f = CrlFetcher()

    async def go():
        p.a.initiate("tun", p.now)
        p.advance(0.5)
        assert not p.of("b", NegotiationFailed) and not p.of("b", ChildSaInstalled)
        assert _held(p) == 1
        f.attach(p.b.credentials)  # (a runtime's fetcher is attached before: the same)
        f.drain()
        assert f.running and server.uri("/crl.pem") in p.b.credentials.crl_pending
        p.advance(5)  # retransmissions while the fetch runs are held too
        assert _held(p) >= 2 and not p.of("b", NegotiationFailed)
        _serve_crl(server, d)
        while f.running:
            await asyncio.sleep(0.01)
    server.routes["/crl.pem"] = (200, b"", 0.5)  # slow: answered once the test serves the CRL
    asyncio.run(go())
    p.advance(10)
    assert not p.of("b", ChildSaInstalled)
    reason = p.of("b", NegotiationFailed)[-1].reason
    assert "revoked" in reason and "key compromise" in reason, reason


def test_after_a_failed_fetch_the_policy_decides(server, fetched_pki):
    for revocation, accepted in (("relaxed", True), ("ifuri", False), ("strict", False)):
        p = _pair(fetched_pki, revocation)
        f = CrlFetcher()
        p.a.initiate("tun", p.now)
        p.advance(0.5)
        assert _held(p) == 1
        _fetch_all(f, creds=p.b.credentials)  # 404
        p.advance(10)
        assert bool(p.of("b", ChildSaInstalled)) is accepted, revocation
        if not accepted:
            reason = p.of("b", NegotiationFailed)[-1].reason
            assert server.uri("/crl.pem") in reason and "HTTP 404" in reason, reason


def test_a_peer_without_the_key_is_not_held(server, fetched_pki):
    """The wait comes after the AUTH signature: a peer that only copied a certificate waits for nothing."""
    p = _pair(fetched_pki, "ifuri")
    p.a.credentials.local["tun"].key = ec.generate_private_key(ec.SECP256R1())  # not its certificate's
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert _held(p) == 0
    assert "does not verify" in p.of("b", NegotiationFailed)[-1].reason


def test_without_a_fetcher_nothing_is_held(fetched_pki):
    p = _pair(fetched_pki, "ifuri")
    p.b.credentials.fetching = False
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert _held(p) == 0
    assert "revocation = ifuri" in p.of("b", NegotiationFailed)[-1].reason


def test_a_fetched_crl_revokes_and_our_own_certificate_prefetches_it(server, fetched_pki):
    d = fetched_pki
    ca.revoke(d, "left", "key-compromise")
    _serve_crl(server, d)
    pa = cert_policy(d, "left.example", "right.example", LEFT, crl=False)
    pb = cert_policy(d, "right.example", "left.example", RIGHT, crl=False)  # relaxed
    p = cert_pair(pa, pb)
    # started before any peer came: our certificate names the distribution point, so it is fetched
    _fetch_all(CrlFetcher(), creds=p.b.credentials)
    assert server.hits["/crl.pem"] == 1
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert not p.of("b", ChildSaInstalled)
    assert "revoked" in p.of("b", NegotiationFailed)[-1].reason


def test_a_fetched_crl_is_checked_like_a_loaded_one(server, fetched_pki):
    """A CRL at the distribution point signed by someone else lists nothing for us."""
    d = fetched_pki
    forger = ec.generate_private_key(ec.SECP256R1())
    ca_cert = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    left = x509.load_pem_x509_certificate((d / "certs" / "left.crt").read_bytes())
    forged = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
              .last_update(datetime.now(timezone.utc) - timedelta(hours=1))
              .next_update(datetime.now(timezone.utc) + timedelta(days=1))
              .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(left.serial_number)
                                       .revocation_date(datetime.now(timezone.utc)).build())
              .sign(forger, hashes.SHA256()))
    server.routes["/crl.pem"] = (200, forged.public_bytes(serialization.Encoding.PEM), 0.0)
    creds = load_credentials(cert_policy(d, "right.example", "left.example", RIGHT, crl=False))
    _fetch_all(CrlFetcher(), creds=creds)
    assert creds.fetched_crls
    res = validate_chain(left, [], [ca_cert], creds.all_crls(), datetime.now(timezone.utc), revocation="ifuri")
    assert not res.ok and "no valid CRL" in res.reason
    assert any("not signed by that CA" in w for w in res.warnings)


# --- the runtime --------------------------------------------------------------------------------


async def test_the_runtime_fetches_at_start_on_request_and_keeps_the_cache_across_a_policy_change(server, fetched_pki):
    from engine.datapath.base import NullDatapath
    from engine.runtime.engine import EngineRuntime
    from tests.loopback import addr

    d = fetched_pki
    _serve_crl(server, d)
    pol = cert_policy(d, "right.example", "left.example", RIGHT, crl=False)
    conn = dataclasses.replace(pol.connections[0], local_addrs=(addr(2),), remote_addrs=(addr(1),))
    pol = dataclasses.replace(pol, connections=(conn,), engine=dataclasses.replace(
        pol.engine, listen=(addr(2),), ike_port=25610, natt_port=25611))
    rt = EngineRuntime(pol, datapath=NullDatapath())
    await rt.start()
    try:
        async def settled():
            for _ in range(200):
                if not rt.crl_fetcher.running:
                    return
                await asyncio.sleep(0.01)
        await settled()
        uri = server.uri("/crl.pem")
        assert list(rt.endpoint.credentials.fetched_crls) == [uri]  # our certificate's CDP, at start
        # a URI IKE_AUTH asked for is fetched after the datagram that asked
        server.routes["/other.crl"] = (200, (d / "crl.pem").read_bytes(), 0.0)
        rt.endpoint.credentials.want([server.uri("/other.crl")])
        rt._after()
        await settled()
        assert server.hits["/other.crl"] == 1
        rt.apply_policy(dataclasses.replace(pol, connections=(dataclasses.replace(conn, rekey_time=1234),)))
        creds = rt.endpoint.credentials
        assert creds.fetching and set(creds.fetched_crls) == {uri, server.uri("/other.crl")}
        assert server.hits["/crl.pem"] == 1  # from the cache, not fetched again
    finally:
        await rt.stop(delete=False)


def test_a_result_waiting_for_a_crl_still_names_the_valid_policies():
    """IKE_AUTH checks remote.cert_policy while the revocation status is still open (then holds the
    request): the policies must be there, or a peer holding them is refused for lacking them."""
    root = _root()
    policy = "1.3.6.1.4.1.55555.1.1"
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name("leaf")).issuer_name(root[0].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier("http://127.0.0.1:9/ca.crl")], None, None, None)]), critical=False)
            .add_extension(x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(policy), None)]),
                           critical=False)
            .sign(root[1], hashes.SHA256()))
    res = validate_chain(leaf, [], [root[0]], [], NOW, revocation="ifuri")
    assert not res.ok and res.needs_crl and res.crl_uris and res.policies == {policy}


def test_the_held_ike_auth_is_answered_as_soon_as_the_fetch_ends(server, fetched_pki):
    """As charon, whose worker thread waits for the fetch and answers then: the held request is
    taken again when the fetch ends (`retry_held`, which the runtime calls on every fetch that ends),
    not at the peer's next retransmission (charon's first one comes 4 s later, then 7.2, 12.96...)."""
    d = fetched_pki
    p = _pair(d, "strict")
    f = CrlFetcher()
    p.a.initiate("tun", p.now)
    p.advance(0.5)
    assert _held(p) == 1
    _serve_crl(server, d)
    _fetch_all(f, creds=p.b.credentials)
    held = _held(p)
    p.b.retry_held(p.now)
    p.deliver()  # no time passes: no retransmission brings the request back
    assert _held(p) == held
    assert p.of("b", ChildSaInstalled) and p.of("a", ChildSaInstalled)


def test_a_held_request_is_not_taken_again_once_answered_or_gone(server, fetched_pki):
    d = fetched_pki
    p = _pair(d, "strict")
    f = CrlFetcher()
    p.a.initiate("tun", p.now)
    p.advance(0.5)
    _serve_crl(server, d)
    _fetch_all(f, creds=p.b.credentials)
    p.advance(10)  # the retransmission was answered
    assert p.of("b", ChildSaInstalled)
    assert not p.b.datagrams_to_send()
    p.b.retry_held(p.now)
    assert not p.b.datagrams_to_send()
    assert len(p.of("b", ChildSaInstalled)) == 1
