"""The HTTP side of CRL fetching (engine.runtime.crlfetch) against hostile or odd servers: each
answer ends within the limits with a reason in plain words. Servers run on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.runtime.crlfetch import CrlFetcher, FetchError, fetch_crl

from tests.engine.test_crl_fetch import _crl, _root
from cryptography.hazmat.primitives import serialization


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


def test_a_bracketed_host_that_is_not_ipv6_is_a_fetch_error():
    """urlsplit raises ValueError on it: that became "internal error" with a traceback in the log."""
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
