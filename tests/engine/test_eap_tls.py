"""EAP-TLS: our server and our peer against each other (TLS 1.2 and 1.3, fragments, both RSA and
ECDSA certificates from engine.pki), the MSK recomputed independently from the TLS secrets, and the
refusals (unknown CA, wrong name, no client certificate, malformed framing)."""

from __future__ import annotations

import hashlib
import hmac
import struct
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from OpenSSL import SSL

from engine import eap
from engine.crypto import tls as tls_mod
from engine.crypto.tls import TlsCredentials
from engine.eap import packet as pk
from engine.eap.session import EapPeer, EapServer
from engine.eap.tls import FLAG_L, FLAG_M, FLAG_S, MAX_MESSAGE, EapTlsPeer, EapTlsServer
from engine.pki import ca
from engine.pki.certs import load_certificate_file
from engine.pki.keys import load_private_key_file
from engine.policy.identity import parse_identity
from engine.wire.constants import EapCode

NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    # The engine's clock is taken when the certificates are issued (they are valid from 5 minutes
    # before that), not at import: in a long CI run this file imports many minutes before it runs.
    global NOW
    NOW = datetime.now(timezone.utc)
    out = {}
    for kt in ("ecdsa-p256", "rsa-2048"):
        d = tmp_path_factory.mktemp(kt)
        ca.init_ca(d, "O=Test Lab, CN=Test CA", key_type=kt)
        ca.issue(d, "gw.example.org", ["gw.example.org"], kind="server", name="gw")
        ca.issue(d, "alice@example.org", ["alice@example.org"], kind="client", name="alice")
        other = tmp_path_factory.mktemp(kt + "-other")
        ca.init_ca(other, "O=Elsewhere, CN=Other CA", key_type=kt)
        ca.issue(other, "alice@example.org", ["alice@example.org"], kind="client", name="alice")
        out[kt] = (d, other)
    return out


def creds(d, name, *, trust=None, **kw) -> TlsCredentials:
    return TlsCredentials(certs=tuple(load_certificate_file(d / "certs" / f"{name}.crt")),
                          key=load_private_key_file(d / "private" / f"{name}.key"),
                          cas=tuple(load_certificate_file((trust or d) / "ca.crt")), **kw)


def pair(server_creds, peer_creds, *, peer_identity="alice@example.org", server_identity="gw.example.org"):
    server = EapServer((13,), eap.server_methods(tls=server_creds, now=NOW,
                                                 peer_identity=parse_identity(peer_identity)),
                       ask_identity=True)
    peer = EapPeer(b"alice@example.org", (13,), eap.peer_methods(b"alice@example.org", tls=peer_creds, now=NOW,
                                                                 server_identity=parse_identity(server_identity)))
    return server, peer


def converse(server, peer, limit=100):
    trail = []
    step = server.start()
    for _ in range(limit):
        trail.append(step.packet)
        pstep = peer.receive(step.packet.encode())
        if pstep.state != "continue":
            return trail, step, pstep
        trail.append(pstep.packet)
        step = server.receive(pstep.packet.to_payload())
        if step.state != "continue":
            trail.append(step.packet)
            return trail, step, peer.receive(step.packet)
    raise AssertionError("no end")


@pytest.mark.parametrize("kt", ["ecdsa-p256", "rsa-2048"])
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_eap_tls_pair_agrees_on_the_msk(pki, kt, version):
    d, _ = pki[kt]
    server, peer = pair(creds(d, "gw", min_version=version, max_version=version),
                        creds(d, "alice", min_version=version, max_version=version))
    trail, end, pend = converse(server, peer)
    assert (end.state, pend.state) == ("success", "success"), (end.reason, pend.reason)
    assert len(server.msk) == 64 and server.msk == peer.msk
    assert server.method.tls.version == version
    assert server.method.subject.endswith("CN=alice@example.org")
    assert trail[0].type == 1 and trail[2].type_data == bytes((FLAG_S,))  # Identity, then the TLS Start


def test_fragments_carry_l_and_m_and_are_acknowledged(pki):
    d, _ = pki["rsa-2048"]
    server, peer = pair(creds(d, "gw", fragment_size=200), creds(d, "alice", fragment_size=300))
    trail, end, pend = converse(server, peer)
    assert (end.state, pend.state) == ("success", "success")
    tls = [p for p in trail if p.type == 13]
    assert max(len(p.encode()) for p in tls) <= 300 + 5
    firsts = [p for p in tls if p.type_data[0] == FLAG_L | FLAG_M]
    assert firsts and all(struct.unpack("!I", p.type_data[1:5])[0] > 200 for p in firsts)
    acks = [p for p in tls if p.type_data == b"\0"]
    assert len(acks) >= 4


def _p_hash(digest, secret, seed, length):
    out, a = b"", seed
    while len(out) < length:
        a = hmac.new(secret, a, digest).digest()
        out += hmac.new(secret, a + seed, digest).digest()
    return out[:length]


def _expand_label(algorithm, secret, label, context, length):
    info = struct.pack("!H", length) + bytes((len(b"tls13 " + label),)) + b"tls13 " + label + bytes((len(context),)) + context
    return HKDFExpand(algorithm, length, info).derive(secret)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_msk_is_the_rfc5216_or_rfc9190_exporter(pki, version, monkeypatch):
    """Recompute Key_Material from the TLS secrets (keylog) with our own PRF/HKDF code."""
    lines = []

    class LoggingContext(SSL.Context):
        def __init__(self, method):
            super().__init__(method)
            self.set_keylog_callback(lambda conn, line: lines.append(line.decode()))

    monkeypatch.setattr(tls_mod.SSL, "Context", LoggingContext)
    d, _ = pki["ecdsa-p256"]
    server, peer = pair(creds(d, "gw", min_version=version, max_version=version),
                        creds(d, "alice", min_version=version, max_version=version))
    _, step, _ = converse(server, peer)
    assert step.state == "success"
    conn = server.method.tls.conn
    cipher = conn.get_cipher_name()
    digest, algorithm = (hashlib.sha384, hashes.SHA384()) if "SHA384" in cipher else (hashlib.sha256, hashes.SHA256())
    if version == "1.2":
        master = bytes.fromhex(next(l for l in lines if l.startswith("CLIENT_RANDOM")).split()[2])
        seed = b"client EAP encryption" + conn.client_random() + conn.server_random()
        want = _p_hash(digest, master, seed, 128)
    else:
        secret = bytes.fromhex(next(l for l in lines if l.startswith("EXPORTER_SECRET")).split()[2])
        derived = _expand_label(algorithm, secret, b"EXPORTER_EAP_TLS_Key_Material", digest(b"").digest(),
                                algorithm.digest_size)
        want = _expand_label(algorithm, derived, b"exporter", digest(b"\x0d").digest(), 128)
    assert server.msk.reveal() == want[:64]


def test_client_from_another_ca_is_refused_with_the_reason(pki):
    d, other = pki["ecdsa-p256"]
    server, peer = pair(creds(d, "gw"), creds(other, "alice", trust=d))
    _, end, pend = converse(server, peer)
    assert end.state == "failure" and "client's certificate is not acceptable" in end.reason
    assert pend.state == "failure" and server.msk is None


def test_server_from_another_ca_is_refused_by_the_peer_before_it_sends_its_certificate(pki):
    d, other = pki["ecdsa-p256"]
    server, peer = pair(creds(d, "gw"), creds(d, "alice", trust=other))
    trail, end, pend = converse(server, peer)
    assert pend.state == "failure" and "server's certificate is not acceptable" in pend.reason
    # After the ClientHello the peer only acknowledged fragments of the server's flight: its own
    # certificate never left, and the last packet is the server's.
    flight = next(i for i, p in enumerate(trail) if p.code == EapCode.REQUEST and len(p.type_data) > 1)
    after_hello = [p for p in trail[flight:] if p.code == EapCode.RESPONSE]
    assert after_hello and all(p.type_data == b"\0" for p in after_hello)
    assert pend.packet is None and trail[-1].code == EapCode.REQUEST


def test_certificate_must_name_the_expected_identities(pki):
    d, _ = pki["ecdsa-p256"]
    server, peer = pair(creds(d, "gw"), creds(d, "alice"), server_identity="vpn.example.com")
    _, _, pend = converse(server, peer)
    assert pend.state == "failure" and "does not name 'vpn.example.com'" in pend.reason
    server, peer = pair(creds(d, "gw"), creds(d, "alice"), peer_identity="bob@example.org")
    _, end, _ = converse(server, peer)
    assert end.state == "failure" and "does not name 'bob@example.org'" in end.reason


def test_expired_at_the_engines_now(pki):
    d, _ = pki["ecdsa-p256"]
    later = NOW + timedelta(days=3650 * 2)
    server = EapServer((13,), eap.server_methods(tls=creds(d, "gw"), now=later), ask_identity=False)
    peer = EapPeer(b"alice", (13,), eap.peer_methods(b"alice", tls=creds(d, "alice"), now=NOW))
    _, end, _ = converse(server, peer)
    assert end.state == "failure" and "expired" in end.reason


@pytest.mark.parametrize("body, words", [
    (b"", "without its flags"),
    (bytes((FLAG_L,)) + b"\0\0", "without the 4-byte"),
    (bytes((FLAG_L | FLAG_M,)) + struct.pack("!I", MAX_MESSAGE + 1) + b"x", "at most"),
])
def test_malformed_framing_fails_in_words(pki, body, words):
    d, _ = pki["ecdsa-p256"]
    method = EapTlsServer(creds(d, "gw"), NOW)
    method.start(1)
    step = method.process(pk.EapPacket(EapCode.RESPONSE, 1, 13, body), 2)
    assert step.outcome is eap.Outcome.FAILURE and words in step.reason


def test_fragments_beyond_the_announced_length_and_too_many_packets(pki):
    d, _ = pki["ecdsa-p256"]
    method = EapTlsServer(creds(d, "gw"), NOW)
    method.start(1)
    step = method.process(pk.EapPacket(EapCode.RESPONSE, 1, 13, bytes((FLAG_L | FLAG_M,)) + struct.pack("!I", 10)
                                       + b"x" * 8), 2)
    assert step.outcome is eap.Outcome.CONTINUE and step.packet.type_data == b"\0"
    step = method.process(pk.EapPacket(EapCode.RESPONSE, 2, 13, bytes((FLAG_M,)) + b"x" * 8), 3)
    assert step.outcome is eap.Outcome.FAILURE and "exceed the announced length" in step.reason
    method = EapTlsServer(creds(d, "gw"), NOW)
    for i in range(100):
        step = method.process(pk.EapPacket(EapCode.RESPONSE, i, 13, bytes((FLAG_M,)) + b"x"), i + 1)
        if step.outcome is eap.Outcome.FAILURE:
            break
    assert "more than 64 EAP-TLS packets" in step.reason


def test_garbage_tls_records_fail_cleanly(pki):
    d, _ = pki["ecdsa-p256"]
    method = EapTlsServer(creds(d, "gw"), NOW)
    method.start(1)
    step = method.process(pk.EapPacket(EapCode.RESPONSE, 1, 13, b"\0" + b"\x16\x03\x01\x00\x05hello"), 2)
    assert step.outcome is eap.Outcome.FAILURE and "TLS handshake failed" in step.reason
    peer = EapTlsPeer(b"alice", creds(d, "alice"), NOW)
    step = peer.process(pk.EapPacket(EapCode.REQUEST, 1, 13, b"\0junk"))
    assert step.outcome is eap.Outcome.FAILURE and "before the server's Start" in step.reason
