"""Certificates a hostile peer sends before it is authenticated: malformed
extensions, keys we cannot use, too many CERT payloads. None of it may raise
out of the engine or cost unbounded work (certificates are read before the
AUTH signature is checked)."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtensionOID, NameOID

from engine.events import ChildSaInstalled, NegotiationFailed
from engine.pki import PkiError
from engine.pki.certs import cert_from_payload, cert_matches_identity, cert_payload_data
from engine.pki.validate import MAX_INTERMEDIATES, validate_chain
from engine.policy.model import Identity

from tests.engine.ike_pair import LEFT, RIGHT
from tests.engine.test_ike_certs import cert_pair, cert_policy, pki  # noqa: F401 (pki is a fixture)

NOW = datetime.now(timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hostile"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key, *, start=NOW - timedelta(days=1),
             end=NOW + timedelta(days=30)) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end))


@pytest.fixture(scope="module")
def root():
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(_name("Hostile Root"), _name("Hostile Root"), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(root, *extensions, public_key=None):
    key = ec.generate_private_key(ec.SECP256R1())
    b = _builder(_name("left.example"), root[0].subject, public_key or key.public_key())
    b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("left.example")]), critical=False) \
        if not any(oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME for oid, _ in extensions) else b
    for oid, value in extensions:
        b = b.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    return b.sign(root[1], hashes.SHA256()), key


MALFORMED = [  # a known extension whose value is not what its OID says (an INTEGER instead)
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.NAME_CONSTRAINTS,
]


@pytest.mark.parametrize("oid", MALFORMED, ids=lambda o: o._name)
def test_malformed_extension_in_the_end_certificate_is_a_failure_not_an_exception(root, oid):
    leaf, _ = _leaf(root, (oid, b"\x02\x01\x00"))
    res = validate_chain(leaf, [], [root[0]], [], NOW)
    assert not res.ok and "malformed" in res.reason
    with pytest.raises(PkiError, match="malformed"):
        cert_from_payload(4, cert_payload_data(leaf))


def test_malformed_extension_in_an_intermediate_is_a_failure_not_an_exception(root):
    inter, _ = _leaf(root, (ExtensionOID.BASIC_CONSTRAINTS, b"\x02\x01\x00"))
    leaf, _ = _leaf(root)
    res = validate_chain(leaf, [inter], [root[0]], [], NOW)
    assert not res.ok and "malformed" in res.reason


def _unknown_key_cert(root) -> x509.Certificate:
    """A certificate the trusted CA signed over a key algorithm cryptography does not know
    (as a post-quantum one is today): an Ed25519 SPKI with its OID changed to 1.3.101.127."""
    tbs = _builder(_name("left.example"), root[0].subject, ed25519.Ed25519PrivateKey.generate().public_key()) \
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("left.example")]), critical=False) \
        .sign(root[1], hashes.SHA256()).tbs_certificate_bytes
    assert tbs.count(b"\x06\x03\x2b\x65\x70") == 1
    tbs = tbs.replace(b"\x06\x03\x2b\x65\x70", b"\x06\x03\x2b\x65\x7f")
    sig = root[1].sign(tbs, ec.ECDSA(hashes.SHA256()))

    def tlv(tag: int, body: bytes) -> bytes:
        n = len(body)
        length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([tag]) + length + body

    der = tlv(0x30, tbs + bytes.fromhex("300a06082a8648ce3d040302") + tlv(0x03, b"\x00" + sig))
    return x509.load_der_x509_certificate(der)


def test_an_unknown_key_type_in_a_valid_certificate_does_not_raise(root):
    cert = _unknown_key_cert(root)
    assert validate_chain(cert, [], [root[0]], [], NOW).ok  # the CA did sign it
    # an ID the peer could not be read as another type becomes a key ID, matched against the key
    assert cert_matches_identity(cert, Identity("key_id", "#00112233")) is False


def test_too_many_intermediates_are_refused_before_any_signature_is_checked(root):
    """Every candidate issuer costs a signature check at each level of the path: a peer
    that sends thousands of certificates named like the issuer must not get that work."""
    key = ec.generate_private_key(ec.SECP256R1())
    decoy = (_builder(_name("Hostile Root"), _name("Hostile Root"), key.public_key())
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    leaf, _ = _leaf(root)
    assert validate_chain(leaf, [decoy] * MAX_INTERMEDIATES, [root[0]], [], NOW).ok
    res = validate_chain(leaf, [decoy] * (MAX_INTERMEDIATES + 1), [root[0]], [], NOW)
    assert not res.ok and "intermediate" in res.reason


# --- through IKE_AUTH: the responder answers AUTHENTICATION_FAILED, nothing raises ---------------------


def _pair_with_left_cert(pki, root, certs, key):  # noqa: F811
    d = pki["ecdsa-p256"]
    p = cert_pair(cert_policy(d, "left.example", "right.example", LEFT),
                  cert_policy(d, "right.example", "left.example", RIGHT))
    p.a.credentials.local["tun"].certs = list(certs)
    p.a.credentials.local["tun"].key = key
    p.b.credentials.cacerts["tun"] = [root[0]]
    p.b.credentials.crls = []
    return p


def _refused(p, needle: str) -> None:
    p.a.initiate("tun", p.now)
    p.advance(2)
    failed = p.of("b", NegotiationFailed)
    assert failed and failed[0].notify == "AUTHENTICATION_FAILED", failed
    assert needle in failed[0].reason
    assert not p.of("a", ChildSaInstalled)


def test_ike_peer_certificate_with_a_malformed_extension(pki, root):  # noqa: F811
    leaf, key = _leaf(root, (ExtensionOID.SUBJECT_KEY_IDENTIFIER, b"\x02\x01\x00"))
    _refused(_pair_with_left_cert(pki, root, [leaf], key), "malformed")


def test_ike_peer_certificate_with_an_unknown_key_type(pki, root):  # noqa: F811
    _refused(_pair_with_left_cert(pki, root, [_unknown_key_cert(root)], ec.generate_private_key(ec.SECP256R1())),
             "key")


def test_ike_too_many_cert_payloads_are_not_read(pki, root, monkeypatch):  # noqa: F811
    leaf, key = _leaf(root)
    p = _pair_with_left_cert(pki, root, [leaf] + [root[0]] * (MAX_INTERMEDIATES + 1), key)
    p.a.fragment_size = 1280  # 18 certificates do not fit one datagram
    parsed = []
    import engine.ike.certauth as certauth
    real = certauth.cert_from_payload
    monkeypatch.setattr(certauth, "cert_from_payload", lambda *a: parsed.append(1) or real(*a))
    _refused(p, "certificates")
    assert not parsed


def test_ike_the_pair_works_with_the_hostile_root(pki, root):  # noqa: F811
    """The bench itself: a good certificate from the same root authenticates."""
    leaf, key = _leaf(root)
    p = _pair_with_left_cert(pki, root, [leaf], key)
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert p.of("a", ChildSaInstalled), p.of("b", NegotiationFailed)


# --- name constraints (RFC 5280 §4.2.1.10, strongSwan's constraints plugin) ------------------------------


def _ca_with(root, permitted=None, excluded=None):
    """An intermediate CA under `root` limited by a (critical) nameConstraints extension."""
    key = ec.generate_private_key(ec.SECP256R1())
    b = (_builder(_name("Constrained CA"), root[0].subject, key.public_key())
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if permitted or excluded:
        b = b.add_extension(x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded), critical=True)
    return b.sign(root[1], hashes.SHA256()), key


def _leaf_named(issuer, *sans, subject=None):
    key = ec.generate_private_key(ec.SECP256R1())
    b = _builder(_name("gw") if subject is None else subject, issuer[0].subject, key.public_key())
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer[1], hashes.SHA256())


NET = ipaddress.ip_network


@pytest.mark.parametrize("permitted, excluded, sans, ok", [
    ([x509.DNSName("example.com")], None, [x509.DNSName("gw.example.com")], True),
    ([x509.DNSName("example.com")], None, [x509.DNSName("example.com")], True),
    ([x509.DNSName("example.com")], None, [x509.DNSName("bank.test")], False),
    ([x509.DNSName("example.com")], None, [x509.DNSName("badexample.com")], False),
    ([x509.DNSName(".example.com")], None, [x509.DNSName("example.com")], False),
    ([x509.DNSName("example.com")], None, [x509.DNSName("gw.example.com"), x509.DNSName("bank.test")], False),
    ([x509.DNSName("example.com")], None, [x509.RFC822Name("a@bank.test")], True),  # a type it does not limit
    (None, [x509.DNSName("bank.test")], [x509.DNSName("www.BANK.test")], False),
    (None, [x509.DNSName("bank.test")], [x509.DNSName("gw.example.com")], True),
    ([x509.RFC822Name("example.com")], None, [x509.RFC822Name("alice@example.com")], True),
    ([x509.RFC822Name("example.com")], None, [x509.RFC822Name("alice@mail.example.com")], False),
    ([x509.RFC822Name(".example.com")], None, [x509.RFC822Name("alice@mail.example.com")], True),
    ([x509.RFC822Name("bob@example.com")], None, [x509.RFC822Name("alice@example.com")], False),
    ([x509.IPAddress(NET("192.0.2.0/24"))], None, [x509.IPAddress(ipaddress.ip_address("192.0.2.7"))], True),
    ([x509.IPAddress(NET("192.0.2.0/24"))], None, [x509.IPAddress(ipaddress.ip_address("198.51.100.7"))], False),
    (None, [x509.IPAddress(NET("2001:db8::/32"))], [x509.IPAddress(ipaddress.ip_address("2001:db8::1"))], False),
    ([x509.UniformResourceIdentifier("https://example.com")], None, [x509.DNSName("gw.example.com")], False),
])
def test_name_constraints_of_an_intermediate(root, permitted, excluded, sans, ok):
    inter = _ca_with(root, permitted, excluded)
    res = validate_chain(_leaf_named(inter, *sans), [inter[0]], [root[0]], [], NOW)
    assert res.ok is ok, res.reason
    if not ok:
        assert "name constraints" in res.reason


def test_directory_name_constraints_are_an_rdn_prefix(root):
    org = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hostile")])
    inter = _ca_with(root, [x509.DirectoryName(org)])
    assert validate_chain(_leaf_named(inter), [inter[0]], [root[0]], [], NOW).ok  # O=Hostile, CN=gw
    other = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bank"), x509.NameAttribute(NameOID.COMMON_NAME, "gw")])
    res = validate_chain(_leaf_named(inter, subject=other), [inter[0]], [root[0]], [], NOW)
    assert not res.ok and "outside its permitted names" in res.reason
    # an empty subject is not a name (RFC 5280 §4.2.1.10); its SAN is what counts
    assert validate_chain(_leaf_named(inter, x509.DNSName("gw.example.com"), subject=x509.Name([])),
                          [inter[0]], [root[0]], [], NOW).ok


def test_name_constraints_of_the_trust_anchor_and_above_an_intermediate(root):
    key = ec.generate_private_key(ec.SECP256R1())
    anchor = (_builder(_name("Constrained Root"), _name("Constrained Root"), key.public_key())
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.NameConstraints([x509.DNSName("example.com")], None), critical=True)
              .sign(key, hashes.SHA256()))
    direct = _leaf_named((anchor, key), x509.DNSName("bank.test"))
    assert not validate_chain(direct, [], [anchor], [], NOW).ok
    inter = _ca_with((anchor, key), None, None)  # an unconstrained CA under it does not lift the limit
    below = _leaf_named(inter, x509.DNSName("bank.test"))
    res = validate_chain(below, [inter[0]], [anchor], [], NOW)
    assert not res.ok and "Constrained Root" in res.reason
    assert validate_chain(_leaf_named(inter, x509.DNSName("gw.example.com")), [inter[0]], [anchor], [], NOW).ok


# --- keyUsage of the end certificate (RFC 4945 §5.1.3.2, charon's X509_IKE_COMPLIANT) --------------------


def _leaf_key_usage(root, **bits):
    key = ec.generate_private_key(ec.SECP256R1())
    flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)
    return (_builder(_name("gw"), root[0].subject, key.public_key())
            .add_extension(x509.KeyUsage(**(flags | bits)), critical=True).sign(root[1], hashes.SHA256()))


def test_non_repudiation_alone_is_enough_for_ike(root):
    assert validate_chain(_leaf_key_usage(root, content_commitment=True), [], [root[0]], [], NOW).ok
    assert validate_chain(_leaf_key_usage(root, digital_signature=True), [], [root[0]], [], NOW).ok
    res = validate_chain(_leaf_key_usage(root, key_encipherment=True), [], [root[0]], [], NOW)
    assert not res.ok and "nonRepudiation" in res.reason


# --- certificate signature algorithms ---------------------------------------------------------------------


def test_a_sha1_signed_certificate_is_named_as_such(root):
    """cryptography verifies no SHA-1 or MD5 certificate signature: the reason says that, not that the
    signature is wrong (an admin would look for a wrong CA)."""
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    ca_key = rsa.generate_private_key(65537, 2048)
    ca = (_builder(_name("RSA Root"), _name("RSA Root"), ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    sha256_rsa, sha1_rsa = bytes.fromhex("06092a864886f70d01010b"), bytes.fromhex("06092a864886f70d010105")
    tbs = _builder(_name("old.example"), ca.subject, ec.generate_private_key(ec.SECP256R1()).public_key()) \
        .sign(ca_key, hashes.SHA256()).tbs_certificate_bytes.replace(sha256_rsa, sha1_rsa)
    sig = ca_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())

    def tlv(tag: int, body: bytes) -> bytes:
        n = len(body)
        size = (n.bit_length() + 7) // 8
        return bytes([tag]) + (bytes([n]) if n < 0x80 else bytes([0x80 | size]) + n.to_bytes(size, "big")) + body

    old = x509.load_der_x509_certificate(tlv(0x30, tbs + tlv(0x30, sha1_rsa + b"\x05\x00") + tlv(0x03, b"\x00" + sig)))
    res = validate_chain(old, [], [ca], [], NOW)
    assert not res.ok and "sha1WithRSAEncryption" in res.reason and "does not verify" not in res.reason


# --- CERTREQ --------------------------------------------------------------------------------------------


def test_certreq_names_each_ca_once(root):
    """A gateway with many connections trusting one CA (each loads its own copy of the file) sends one
    hash for it, not one per connection: the IKE_SA_INIT response cannot be fragmented (RFC 7383)."""
    from types import SimpleNamespace

    from engine.ike import certauth
    from engine.pki.certs import certreq_hash
    from engine.pki.credentials import Credentials

    other = _ca_with(root, [x509.DNSName("example.com")])[0]
    copy = x509.load_der_x509_certificate(cert_payload_data(root[0]))  # another object, same CA
    conns = [SimpleNamespace(name=f"c{i}", remote=SimpleNamespace(auth="pubkey")) for i in range(50)]
    creds = Credentials(cacerts={c.name: [root[0] if i % 2 else copy, other] for i, c in enumerate(conns)})
    (req,) = certauth.certreq_payloads(SimpleNamespace(credentials=creds), conns)
    assert req.data == certreq_hash(root[0]) + certreq_hash(other)


def test_cert_payloads_of_other_encodings_are_skipped(pki, root):  # noqa: F811
    """A peer may add a CRL (encoding 7) or another encoding next to its X.509 certificate; charon
    skips what it does not read (ike_cert_pre.c process_certs), so do we. Only X.509 ones count."""
    from engine.wire.payloads import CertPayload

    leaf, key = _leaf(root)
    p = _pair_with_left_cert(pki, root, [leaf], key)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(root[0].subject).last_update(NOW - timedelta(hours=1))
           .next_update(NOW + timedelta(days=1)).sign(root[1], hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding
    ours = p.a.auth.cert_payloads
    p.a.auth.cert_payloads = lambda conn: [CertPayload(7, crl.public_bytes(Encoding.DER)), *ours(conn), CertPayload(1, b"\x30\x00")]
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert p.of("a", ChildSaInstalled), p.of("b", NegotiationFailed)


def test_only_cert_payloads_of_other_encodings(pki, root):  # noqa: F811
    from engine.wire.payloads import CertPayload

    leaf, key = _leaf(root)
    p = _pair_with_left_cert(pki, root, [leaf], key)
    p.a.auth.cert_payloads = lambda conn: [CertPayload(12, b"\x00" * 20 + b"http://192.0.2.1/c")]
    _refused(p, "encoding")


def test_a_malformed_configured_ca_is_refused_when_loading(pki, root, tmp_path):  # noqa: F811
    """A trusted CA's extensions are read on every peer's IKE_AUTH: one cryptography cannot read would
    raise there each time; refuse it when the credentials are loaded, naming the file."""
    import dataclasses

    from cryptography.hazmat.primitives.serialization import Encoding

    from engine.pki.credentials import load_credentials

    bad_ca, _ = _leaf(root, (ExtensionOID.BASIC_CONSTRAINTS, b"\x02\x01\x00"))
    path = tmp_path / "bad-ca.pem"
    path.write_bytes(bad_ca.public_bytes(Encoding.PEM))
    pol = cert_policy(pki["ecdsa-p256"], "right.example", "left.example", RIGHT)
    conn = pol.connections[0]
    pol = dataclasses.replace(pol, connections=(dataclasses.replace(
        conn, remote=dataclasses.replace(conn.remote, cacerts=(str(path),))),))
    with pytest.raises(PkiError, match="bad-ca.pem.*malformed"):
        load_credentials(pol)


def test_a_crl_entry_with_a_malformed_reason_still_revokes(root):
    """The reason of a CRL entry is read only when a peer's certificate is listed: unreadable, it
    must not raise then (the certificate is revoked all the same)."""
    from cryptography.x509.oid import CRLEntryExtensionOID

    leaf, _ = _leaf(root)
    entry = (x509.RevokedCertificateBuilder().serial_number(leaf.serial_number).revocation_date(NOW - timedelta(hours=1))
             .add_extension(x509.UnrecognizedExtension(CRLEntryExtensionOID.CRL_REASON, b"\x02\x01\x00"), critical=False)
             .build())
    crl = (x509.CertificateRevocationListBuilder().issuer_name(root[0].subject).last_update(NOW - timedelta(hours=1))
           .next_update(NOW + timedelta(days=1)).add_revoked_certificate(entry).sign(root[1], hashes.SHA256()))
    res = validate_chain(leaf, [], [root[0]], [crl], NOW)
    assert not res.ok and "revoked" in res.reason


class _CountingCrl:
    """A CRL that counts its signature checks and serial lookups (cryptography's own cannot be patched)."""

    def __init__(self, crl):
        self._crl, self.checks, self.lookups = crl, 0, 0

    def __getattr__(self, name):
        return getattr(self._crl, name)

    def __iter__(self):
        return iter(self._crl)

    def is_signature_valid(self, key):
        self.checks += 1
        return self._crl.is_signature_valid(key)

    def get_revoked_certificate_by_serial_number(self, serial):
        self.lookups += 1
        return self._crl.get_revoked_certificate_by_serial_number(serial)


def test_a_crl_is_checked_once_not_on_every_ike_auth(root):
    """Revocation is checked before the AUTH signature: a peer holding any certificate of our CA but
    not its key must not make us hash a large CRL per message."""
    leaf, _ = _leaf(root)
    revoked, _ = _leaf(root)
    entry = x509.RevokedCertificateBuilder().serial_number(revoked.serial_number).revocation_date(NOW - timedelta(hours=1))
    crl = _CountingCrl(x509.CertificateRevocationListBuilder().issuer_name(root[0].subject)
                       .last_update(NOW - timedelta(hours=1)).next_update(NOW + timedelta(days=1))
                       .add_revoked_certificate(entry.build()).sign(root[1], hashes.SHA256()))
    for _ in range(3):
        assert validate_chain(leaf, [], [root[0]], [crl], NOW).ok
    res = validate_chain(revoked, [], [root[0]], [crl], NOW)
    assert not res.ok and "revoked" in res.reason
    assert crl.checks == 1 and crl.lookups == 1  # the good certificate's serial is not looked up in the CRL
    forged = _CountingCrl(x509.CertificateRevocationListBuilder().issuer_name(root[0].subject)
                          .last_update(NOW - timedelta(hours=1)).next_update(NOW + timedelta(days=1))
                          .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    for _ in range(3):
        res = validate_chain(leaf, [], [root[0]], [forged], NOW, revocation="strict")
        assert not res.ok and any("not signed by that CA" in w for w in res.warnings)
    assert forged.checks == 1


# --- the ID we send --------------------------------------------------------------------------------------


def test_our_dn_id_is_our_certificates_subject_byte_for_byte(root):
    """With no local.id we are our certificate's subject. charon compares RDN values byte for byte
    unless both are PrintableString (identification.c rdn_equals): a BMPString or T61String subject
    re-encoded as UTF8String is not found in our certificate."""
    from types import SimpleNamespace

    from cryptography.x509.name import _ASN1Type

    from engine.ike import certauth
    from engine.ike.identity import identity_from_wire
    from engine.pki.credentials import Credentials, LocalCredentials

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Zürich AG", _ASN1Type.BMPString),
                         x509.NameAttribute(NameOID.COMMON_NAME, "gw", _ASN1Type.PrintableString)])
    cert = _builder(subject, root[0].subject, key.public_key()).sign(root[1], hashes.SHA256())
    ep = SimpleNamespace(credentials=Credentials(local={"tun": LocalCredentials([cert], key)}))
    conn = SimpleNamespace(name="tun", local=SimpleNamespace(auth="pubkey", id=None))
    idp = certauth.local_id_payload(ep, conn, True, "192.0.2.1")
    assert idp.data == cert.subject.public_bytes()
    assert identity_from_wire(idp.id_type, idp.data).value == "C=CH, O=Zürich AG, CN=gw"


@pytest.mark.parametrize("other_key, needle", [
    (lambda: ec.generate_private_key(ec.SECP256R1()), "does not verify with the key"),
    (lambda: ed25519.Ed25519PrivateKey.generate(), "cannot be checked"),  # Ed25519 AUTH, ECDSA certificate
])
def test_ike_auth_signed_by_another_key_than_the_certificates(pki, root, other_key, needle):  # noqa: F811
    """A valid chain and identity are not enough: the AUTH signature must be made by the certificate's key."""
    leaf, _ = _leaf(root)
    _refused(_pair_with_left_cert(pki, root, [leaf], other_key()), needle)


# --- the cost of path building: the peer chooses the candidates and their keys ---------------------------


def _rsa_key_with_exponent(bits: int):
    """An RSA key whose public exponent has `bits` bits (cryptography only generates 3 and 65537)."""
    import math
    import secrets

    from cryptography.hazmat.primitives.asymmetric import rsa

    base = rsa.generate_private_key(65537, 2048).private_numbers()
    p, q = base.p, base.q
    phi = (p - 1) * (q - 1)
    while True:
        e = secrets.randbits(bits) | 1 | (1 << (bits - 1))
        if math.gcd(e, phi) == 1:
            break
    d = pow(e, -1, phi)
    return rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p),
                                 rsa.RSAPublicNumbers(e, p * q)).private_key()


def test_a_sent_ca_with_a_huge_rsa_exponent_is_not_tried(root):
    big = _rsa_key_with_exponent(2000)
    inter = (_builder(_name("Slow CA"), root[0].subject, big.public_key())
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(root[1], hashes.SHA256()))
    leaf = _leaf_named((inter, big), x509.DNSName("gw.example.com"))
    res = validate_chain(leaf, [inter], [root[0]], [], NOW)
    assert not res.ok and "exponent" in res.reason
    usual = _rsa_key_with_exponent(17)  # 65537-sized exponents are fine
    inter = (_builder(_name("Usual CA"), root[0].subject, usual.public_key())
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(root[1], hashes.SHA256()))
    assert validate_chain(_leaf_named((inter, usual)), [inter], [root[0]], [], NOW).ok


def test_path_building_stops_after_a_bounded_number_of_signature_checks(root):
    """Decoys named like every issuer on a path the peer made itself are each checked at every level."""
    from engine.pki.validate import MAX_LINK_CHECKS

    x = _name("X")
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(4)]

    def ca(key, signer):
        return (_builder(x, x, key.public_key()).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(signer, hashes.SHA256()))

    decoys = [ca(ec.generate_private_key(ec.SECP256R1()), root[1]) for _ in range(10)]
    real = [ca(keys[i], keys[i + 1]) for i in range(3)]  # real[i] is signed by real[i + 1]'s key
    leaf = _builder(_name("gw"), x, ec.generate_private_key(ec.SECP256R1()).public_key()).sign(keys[0], hashes.SHA256())
    res = validate_chain(leaf, decoys + real, [root[0]], [], NOW)
    assert not res.ok and f"within {MAX_LINK_CHECKS} signature checks" in res.reason


def test_a_renewed_ca_is_used_when_the_expired_one_comes_first(root):
    """A CA renewed with the same key and name: admins keep both in the CA file for a while. The
    expired one, first in the file, must not hide the current one (every peer would be refused)."""
    key = root[1]
    old = (_builder(root[0].subject, root[0].subject, key.public_key(), start=NOW - timedelta(days=400),
                    end=NOW - timedelta(days=1))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    leaf, _ = _leaf(root)
    res = validate_chain(leaf, [], [old, root[0]], [], NOW)
    assert res.ok, res.reason
    assert res.chain[-1] == root[0]
    inter_old = (_builder(_name("Inter"), root[0].subject, key.public_key(), start=NOW - timedelta(days=400),
                          end=NOW - timedelta(days=1))
                 .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    inter_new = (_builder(_name("Inter"), root[0].subject, key.public_key())
                 .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    below = _leaf_named((inter_new, key))
    assert validate_chain(below, [inter_old, inter_new], [root[0]], [], NOW).ok  # the same for sent intermediates
    assert not validate_chain(below, [inter_old], [root[0]], [], NOW).ok
