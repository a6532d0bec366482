"""The HTTP side of CRL fetching (engine.runtime.crlfetch) against hostile or odd servers: each
answer ends within the limits with a reason in plain words. Servers run on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.pki import ca
from engine.pki.credentials import load_credentials
from engine.pki.validate import validate_chain
from engine.runtime import crlfetch
from engine.runtime.crlfetch import CrlFetcher, FetchError, fetch_crl

from tests.engine.ike_pair import RIGHT
from tests.engine.test_crl_fetch import _crl, _fetch_all, _root
from tests.engine.test_crl_fetch import fetched_pki, server  # noqa: F401 (fixtures)
from tests.engine.test_ike_certs import cert_policy


def _serve(answer: bytes, *, keep_open: bool):
    """A server that answers every request with `answer`, then closes or keeps the connection."""
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        if keep_open:
            await asyncio.sleep(30)
        writer.close()
    return asyncio.start_server(handle, "127.0.0.1", 0)


def _run(answer: bytes, *, keep_open: bool = False, timeout: float = 2.0):
    async def go():
        srv = await _serve(answer, keep_open=keep_open)
        port = srv.sockets[0].getsockname()[1]
        try:
            return await fetch_crl(f"http://127.0.0.1:{port}/ca.crl", timeout=timeout)
        finally:
            srv.close()
    return asyncio.run(go())


@pytest.mark.parametrize("uri, needle", [("http://[::1/ca.crl", "not a valid URI"),
                                         ("http://a..b/ca.crl", "cannot connect"),
                                         ("http://" + "x" * 70 + ".example/ca.crl", "cannot connect")])
def test_a_malformed_uri_is_a_fetch_error(uri, needle):
    """urlsplit raises ValueError on an unclosed [, the IDNA codec UnicodeError on an empty or long
    label: both became "internal error" with a traceback in the log."""
    with pytest.raises(FetchError, match=needle):
        asyncio.run(fetch_crl(uri))


def test_a_bracketed_host_that_is_not_ipv6_is_a_fetch_error():
    with pytest.raises(FetchError, match="not a valid URI"):
        asyncio.run(fetch_crl("http://[::1/ca.crl"))
    f = CrlFetcher()

    async def go():
        f.want(["http://[::1/ca.crl"])
        while f.running:
            await asyncio.sleep(0.01)
    asyncio.run(go())
    assert "internal error" not in f.status("http://[::1/ca.crl")


def test_a_server_keeping_the_connection_open_after_content_length_is_not_waited_for():
    """A server ignoring Connection: close: the body is complete at Content-Length; reading on to the
    end of the connection ran into the time limit (and IKE_AUTH was held for it)."""
    der = _crl(_root()).public_bytes(serialization.Encoding.DER)
    start = time.monotonic()
    got = _run(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(der) + der, keep_open=True)
    assert len(got) == 1 and time.monotonic() - start < 1.5


def test_a_content_length_longer_than_the_body_is_a_fetch_error():
    der = _crl(_root()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(FetchError, match="closed the connection after"):
        _run(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(der) + 10) + der)


@pytest.mark.parametrize("header, needle", [
    (b"Transfer-Encoding: chunked", "Transfer-Encoding chunked"),
    (b"Content-Encoding: gzip", "Content-Encoding gzip"),
])
def test_an_encoded_body_is_named(header, needle):
    """We ask HTTP/1.0 without Accept-Encoding; a server answering chunked or compressed anyway got
    "neither a PEM nor a DER CRL", which sends the operator to look at the CRL itself."""
    with pytest.raises(FetchError, match=needle):
        _run(b"HTTP/1.1 200 OK\r\n" + header + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


# --- the cache must not keep what did not help --------------------------------------------------


def test_a_forged_crl_with_a_far_next_update_does_not_settle_the_uri(server, fetched_pki):  # noqa: F811
    """Whoever answers the plain-HTTP fetch once (a spoofed name, a path on the way) served a CRL that
    does not verify, with nextUpdate a year ahead: it was cached until then and the distribution
    point never fetched again, so under relaxed (the default) a revoked certificate passed for a
    year after the attack had ended. charon keeps only a fetched CRL that verifies. A cached CRL
    that did not give the certificate a good, current status is fetched again after FAILURE_HOLD."""
    d = fetched_pki
    ca_cert = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    left = x509.load_pem_x509_certificate((d / "certs" / "left.crt").read_bytes())
    real_now = datetime.now(timezone.utc)
    forged = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
              .last_update(real_now - timedelta(hours=1)).next_update(real_now + timedelta(days=365))
              .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    server.routes["/crl.pem"] = (200, forged.public_bytes(serialization.Encoding.PEM), 0.0)
    creds = load_credentials(cert_policy(d, "right.example", "left.example", RIGHT, crl=False))
    clock = [real_now.timestamp()]
    f = crlfetch.CrlFetcher(wall=lambda: clock[0])
    _fetch_all(f, creds=creds)
    uri = server.uri("/crl.pem")
    assert server.hits["/crl.pem"] == 1 and uri in creds.fetched_crls
    ca.revoke(d, "left", "key-compromise")
    ca.crl(d)
    server.routes["/crl.pem"] = (200, (d / "crl.pem").read_bytes(), 0.0)  # the attack is over

    clock[0] += crlfetch.FAILURE_HOLD + 1
    when = datetime.fromtimestamp(clock[0], timezone.utc)
    res = validate_chain(left, [], [ca_cert], creds.all_crls(), when)
    assert res.ok and res.crl_uris == (uri,)  # relaxed, the forged CRL ignored: the URI is wanted again
    assert creds.crl_settled[uri] <= clock[0]  # so IKE_AUTH holds for the fetch it asks for
    creds.want(res.crl_uris)
    _fetch_all(f)
    assert server.hits["/crl.pem"] == 2
    res = validate_chain(left, [], [ca_cert], creds.all_crls(), when)
    assert not res.ok and "revoked" in res.reason, res.reason
    # within FAILURE_HOLD of a fetch it is not fetched again, and a prefetch leaves a fresh one alone
    creds.want([uri])
    _fetch_all(f)
    f.attach(creds)
    _fetch_all(f)
    assert server.hits["/crl.pem"] == 2


def test_pem_markers_without_an_end_cost_linear_time():
    """A body of BEGIN lines without END: the PEM regex scanned to the end from each of them, 12 s for
    200 kB and over an hour for the 4 MB a fetch takes, on the event loop (the engine stood still)."""
    from engine.pki.errors import PkiError
    from engine.pki.validate import load_crls

    data = b"-----BEGIN X509 CRL-----\n" * 8000  # 200 kB
    start = time.monotonic()
    with pytest.raises(PkiError, match="no PEM X509 CRL block"):
        load_crls(data)
    assert time.monotonic() - start < 1.0



@pytest.mark.parametrize("uri", ["http://127.0.0.1:9/a b.crl", "http://127.0.0.1:9/a\r\nX-Injected: 1",
                                 "http://127.0.0.1:9/\u00e9.crl"])
def test_fetch_crl_itself_refuses_what_would_bend_the_request_line(uri):
    """crl_uris() filters a certificate's URIs, but fetch_crl is the fetcher's public door: a space or
    a control character reached the request line (urlsplit drops CR and LF, not the rest), and a
    non-ASCII one raised UnicodeEncodeError, an "internal error"."""
    with pytest.raises(FetchError, match="not a valid URI"):
        asyncio.run(fetch_crl(uri))
