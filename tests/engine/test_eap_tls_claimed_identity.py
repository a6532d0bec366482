"""EAP-TLS server: the client's IKE identity is its claim, checked against its certificate as written
(a wildcard in it is no pattern); the server identity the client is configured with stays a pattern."""

from __future__ import annotations

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
