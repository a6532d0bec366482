"""EAP-TLS: the client's IKE identity is its claim, checked against its certificate as written (a
wildcard in it is no pattern), the server identity the client is configured with stays a pattern;
a certificate OpenSSL reads and cryptography does not fails the conversation, nothing raises."""

from __future__ import annotations

import pytest

from tests.engine.test_eap_tls import converse, creds, pair, pki  # noqa: F401 (pki is a fixture)


def test_a_wildcard_client_identity_is_not_in_the_clients_certificate(pki):  # noqa: F811
    d, _ = pki["ecdsa-p256"]
    server, peer = pair(creds(d, "gw"), creds(d, "alice"), peer_identity="*@example.org")
    _, end, _ = converse(server, peer)
    assert end.state == "failure" and "does not name '*@example.org'" in end.reason


def test_a_configured_server_identity_pattern_still_matches(pki):  # noqa: F811
    d, _ = pki["ecdsa-p256"]
    server, peer = pair(creds(d, "gw"), creds(d, "alice"), server_identity="*.example.org")
    _, end, pend = converse(server, peer)
    assert end.state == "success" and pend.state == "success", (end, pend)


def _with_unreadable_extra(c):
    """The side's credentials with a copy of its CA of version 7 (v3 is 2) sent as an intermediate:
    OpenSSL reads it, cryptography raises InvalidVersion (no ValueError) converting it."""
    import dataclasses

    from cryptography.hazmat.primitives import serialization
    from OpenSSL import crypto

    der = c.cas[0].public_bytes(serialization.Encoding.DER)
    v3 = bytes.fromhex("a003020102")
    assert der.count(v3) == 1
    bad = crypto.load_certificate(crypto.FILETYPE_ASN1, der.replace(v3, bytes.fromhex("a003020106")))
    return dataclasses.replace(c, certs=(c.certs[0], bad))


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL X509:DeprecationWarning")  # the only way to send it
def test_a_client_certificate_cryptography_cannot_read_fails_the_conversation(pki):  # noqa: F811
    d, _ = pki["ecdsa-p256"]
    server, peer = pair(creds(d, "gw"), _with_unreadable_extra(creds(d, "alice")))
    _, end, _ = converse(server, peer)
    assert end.state == "failure" and "cannot be read" in end.reason, end


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL X509:DeprecationWarning")
def test_a_server_certificate_cryptography_cannot_read_fails_the_conversation(pki):  # noqa: F811
    d, _ = pki["ecdsa-p256"]
    server, peer = pair(_with_unreadable_extra(creds(d, "gw")), creds(d, "alice"))
    _, _, pend = converse(server, peer)
    assert pend.state == "failure" and "cannot be read" in pend.reason, pend
