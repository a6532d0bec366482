"""Adversarial review of certificate authentication (fifteenth session, pki17): critical
extensions we do not process, identities a certificate does not carry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.pki import PkiError
from engine.pki.certs import cert_from_payload, cert_matches_identity, cert_payload_data
from engine.pki.validate import validate_chain
from engine.policy.model import Identity

from tests.engine.test_ike_certs import pki  # noqa: F401 (a fixture)

NOW = datetime.now(timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Review"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=30)))


@pytest.fixture(scope="module")
def root():
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(_name("Review Root"), _name("Review Root"), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(issuer, *extra, sans=(x509.DNSName("gw.example.com"),)):
    key = ec.generate_private_key(ec.SECP256R1())
    b = _builder(_name("gw"), issuer[0].subject, key.public_key())
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    return b.sign(issuer[1], hashes.SHA256())


def _intermediate(root, *extra):
    key = ec.generate_private_key(ec.SECP256R1())
    b = (_builder(_name("Review Sub CA"), root[0].subject, key.public_key())
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    return b.sign(root[1], hashes.SHA256()), key


# --- critical extensions cryptography reads but nothing here processes --------------------------------

NOT_PROCESSED = [  # RFC 5280 §4.2: a critical extension that cannot be processed fails the certificate
    pytest.param(x509.TLSFeature([x509.TLSFeatureType.status_request]), "1.3.6.1.5.5.7.1.24", id="tls-feature"),
    pytest.param(x509.PrecertPoison(), "1.3.6.1.4.1.11129.2.4.3", id="ct-poison"),  # RFC 6962 §3.1
    pytest.param(x509.IssuerAlternativeName([x509.DNSName("ca.example.com")]), "2.5.29.18", id="issuer-alt-name"),
    pytest.param(x509.FreshestCRL([x509.DistributionPoint([x509.UniformResourceIdentifier("http://crl.example/d")],
                                                          None, None, None)]), "2.5.29.46", id="freshest-crl"),
    pytest.param(x509.SubjectInformationAccess([x509.AccessDescription(
        x509.oid.SubjectInformationAccessOID.CA_REPOSITORY, x509.UniformResourceIdentifier("http://repo.example/"))]),
        "1.3.6.1.5.5.7.1.11", id="subject-info-access"),
]


@pytest.mark.parametrize("ext, oid", NOT_PROCESSED)
def test_a_critical_extension_we_do_not_process_fails_the_end_certificate(root, ext, oid):
    res = validate_chain(_leaf(root, (ext, True)), [], [root[0]], [], NOW)
    assert not res.ok and oid in res.reason and "critical" in res.reason, res.reason
    assert validate_chain(_leaf(root, (ext, False)), [], [root[0]], [], NOW).ok  # not critical: ignored


@pytest.mark.parametrize("ext, oid", NOT_PROCESSED)
def test_a_critical_extension_we_do_not_process_fails_an_intermediate(root, ext, oid):
    inter = _intermediate(root, (ext, True))
    res = validate_chain(_leaf(inter), [inter[0]], [root[0]], [], NOW)
    assert not res.ok and oid in res.reason and "intermediate CA" in res.reason, res.reason


def test_critical_extensions_charon_processes_are_accepted(root):
    """x509_cert.c takes these critical: a peer charon accepts is accepted."""
    leaf = _leaf(root,
                 (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
                 (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), True),
                 (x509.BasicConstraints(ca=False, path_length=None), True),
                 (x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier("1.3.6.1.4.1.55555.9"),
                                                                   None)]), True),
                 (x509.CRLDistributionPoints([x509.DistributionPoint(
                     [x509.UniformResourceIdentifier("http://crl.example/ca.crl")], None, None, None)]), True),
                 (x509.AuthorityInformationAccess([x509.AccessDescription(
                     x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier("http://ocsp.example/"))]),
                  True),
                 (x509.SubjectKeyIdentifier(b"\x01" * 20), True),
                 sans=())
    key = ec.generate_private_key(ec.SECP256R1())
    with_san = (_builder(x509.Name([]), root[0].subject, key.public_key())
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("gw.example.com")]), critical=True)
                .sign(root[1], hashes.SHA256()))
    for cert in (leaf, with_san):
        res = validate_chain(cert, [], [root[0]], [], NOW)
        assert res.ok, res.reason


# --- the peer's ID is a claim, not a pattern --------------------------------------------------------------


@pytest.mark.parametrize("claimed", [
    Identity("fqdn", "*.example.com"), Identity("fqdn", "*com"), Identity("rfc822", "*@example.com"),
    Identity("rfc822", "*e@example.com"),
])
def test_a_received_wildcard_is_not_an_identity_the_certificate_carries(root, claimed):
    """RFC 4945 §3.1: the ID must be the same as a subjectAltName. A peer holding gw.example.com's
    certificate that sends ID_FQDN *.example.com would be recorded (remote_id, leases, uniqueness) as an
    identity its certificate does not carry."""
    leaf = _leaf(root, sans=(x509.DNSName("gw.example.com"), x509.RFC822Name("alice@example.com")))
    assert not cert_matches_identity(leaf, claimed, wildcards=False)
    assert cert_matches_identity(leaf, claimed)  # a configured pattern (EAP-TLS's server identity) still matches


@pytest.mark.parametrize("claimed, ok", [
    (Identity("fqdn", "gw.example.com"), True), (Identity("fqdn", "GW.Example.COM"), True),
    (Identity("rfc822", "alice@example.com"), True), (Identity("fqdn", "*.example.com"), False),
    (Identity("fqdn", "x.gw.example.com"), False),
])
def test_received_identities_compare_as_written(root, claimed, ok):
    leaf = _leaf(root, sans=(x509.DNSName("gw.example.com"), x509.RFC822Name("alice@example.com")))
    assert cert_matches_identity(leaf, claimed, wildcards=False) is ok


def test_a_certificate_with_a_wildcard_san_proves_that_very_name_only(root):
    leaf = _leaf(root, sans=(x509.DNSName("*.example.com"),))
    assert cert_matches_identity(leaf, Identity("fqdn", "*.example.com"), wildcards=False)
    assert not cert_matches_identity(leaf, Identity("fqdn", "gw.example.com"), wildcards=False)


# --- the names of unauthenticated certificates in reasons -----------------------------------------------


def _huge_name(tag: str, n: int = 1500) -> x509.Name:
    return x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{tag}{i}")])
                      for i in range(n)])


def test_a_peers_huge_names_are_capped_in_the_reason(root):
    """A certificate the peer sends is read before it is authenticated, and its subject and issuer can
    fill the whole IKE message (max_packet up to 65535 bytes): the reason, kept in events and shown on
    the console, names them capped, as engine.ike.text does peer text."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _builder(_huge_name("s"), _huge_name("i"), key.public_key()).sign(key, hashes.SHA256())
    res = validate_chain(cert, [], [root[0]], [], NOW)
    assert not res.ok and "which is not a trusted CA" in res.reason
    assert len(res.reason) < 1000, len(res.reason)
    assert "OU=s0, OU=s1" in res.reason and "OU=i0, OU=i1" in res.reason and "more characters" in res.reason


def test_each_name_is_read_once_per_validation(root, monkeypatch):
    """Path building looked every candidate's subject up again at every level: with a peer-made chain of
    16 intermediates (all signed by keys the peer holds, none trusted) and names filling the message,
    ~30 ms of CPU per unauthenticated IKE_AUTH at max_packet 65535. Each certificate's names are now
    normalised once per validation."""
    import engine.pki.validate as validate

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(17)]
    names = [_name(f"hop {k}") for k in range(17)]
    certs = []
    for k in range(17):
        issuer, signer = (names[k + 1], keys[k + 1]) if k < 16 else (_name("nowhere"), keys[k])
        certs.append(_builder(names[k], issuer, keys[k].public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(signer, hashes.SHA256()))
    calls = []
    real = validate._norm_name
    monkeypatch.setattr(validate, "_norm_name", lambda n: calls.append(1) or real(n))
    res = validate_chain(certs[0], certs[1:], [root[0]], [], NOW)
    assert not res.ok and "no path" in res.reason
    assert len(calls) <= 2 * (len(certs) + 1), len(calls)


# --- a duplicate extension (RFC 5280 §4.2: at most one instance of an extension) ------------------------


def _with_duplicate_extension(issuer, *, ca=False) -> x509.Certificate:
    """Two extensions of one OID: cryptography's builder refuses it, so two OIDs of one length are
    written and the second renamed in the DER (the signature no longer matters: reading it fails first)."""
    key = ec.generate_private_key(ec.SECP256R1())
    b = (_builder(_name("dup"), issuer[0].subject, key.public_key())
         .add_extension(x509.SubjectAlternativeName([x509.DNSName("gw.example.com")]), critical=False)
         .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"), False)
         .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.2"), b"\x05\x00"), False))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    der = b.sign(issuer[1], hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    second = bytes.fromhex("06092b0601040183b20302")  # OID 1.3.6.1.4.1.55555.2
    assert der.count(second) == 1
    return x509.load_der_x509_certificate(der.replace(second, bytes.fromhex("06092b0601040183b20301")))


def test_a_duplicate_extension_is_a_pki_error_not_an_exception(root):
    """cryptography raises DuplicateExtension (an Exception, not a ValueError) when the extensions of
    such a certificate are read: it went out of cert_from_payload and validate_chain."""
    dup = _with_duplicate_extension(root)
    with pytest.raises(PkiError, match="malformed"):
        cert_from_payload(4, cert_payload_data(dup))
    res = validate_chain(dup, [], [root[0]], [], NOW)
    assert not res.ok and "malformed" in res.reason
    inter = _with_duplicate_extension(root, ca=True)
    res = validate_chain(_leaf(root), [inter], [root[0]], [], NOW)
    assert not res.ok and "malformed" in res.reason


def test_ike_peer_certificate_with_a_duplicate_extension(pki, root):  # noqa: F811
    from tests.engine.test_pki_hostile import _pair_with_left_cert, _refused

    _refused(_pair_with_left_cert(pki, root, [_with_duplicate_extension(root)], ec.generate_private_key(ec.SECP256R1())),
             "malformed")


def _with_version(cert: x509.Certificate, version: int) -> bytes:
    """The certificate's DER with its [0] EXPLICIT version INTEGER changed (the signature then fails)."""
    der = cert.public_bytes(serialization.Encoding.DER)
    v3 = bytes.fromhex("a003020102")
    assert der.count(v3) == 1
    return der.replace(v3, bytes.fromhex("a0030201") + bytes([version]))


def test_a_certificate_of_an_unknown_version_is_a_pki_error_not_an_exception(root, tmp_path):
    """cryptography raises InvalidVersion (an Exception, not a ValueError) for a version other than
    v1..v3 (RFC 5280 §4.1.2.1): it went out of cert_from_payload, on a peer's CERT payload."""
    der = _with_version(_leaf(root), 6)
    with pytest.raises(PkiError, match="not a DER certificate"):
        cert_from_payload(4, der)
    from engine.pki.certs import load_certificate_file

    (tmp_path / "v7.der").write_bytes(der)
    with pytest.raises(PkiError, match="v7.der"):
        load_certificate_file(tmp_path / "v7.der")
    pem = b"-----BEGIN CERTIFICATE-----\n" + __import__("base64").encodebytes(der) + b"-----END CERTIFICATE-----\n"
    (tmp_path / "v7.pem").write_bytes(pem)
    with pytest.raises(PkiError, match="v7.pem"):
        load_certificate_file(tmp_path / "v7.pem")


def test_ike_peer_certificate_of_an_unknown_version(pki, root):  # noqa: F811
    from tests.engine.test_pki_hostile import _pair_with_left_cert, _refused

    p = _pair_with_left_cert(pki, root, [_leaf(root)], ec.generate_private_key(ec.SECP256R1()))
    bad = _with_version(_leaf(root), 6)
    import engine.ike.certauth as certauth

    real = certauth.cert_payloads  # the initiator sends the bytes as they are (it cannot load them either)
    certauth_payloads = lambda ep, conn: [type(x)(x.encoding, bad) for x in real(ep, conn)][:1]  # noqa: E731
    p.a.auth.cert_payloads = lambda conn: certauth_payloads(p.a.auth, conn)
    _refused(p, "not a DER certificate")


@pytest.mark.parametrize("value", [bytes.fromhex("3004a3023000"), bytes.fromhex("3006a5043002a000")],
                         ids=["x400Address", "ediPartyName"])
def test_a_san_of_a_general_name_type_cryptography_cannot_hold(root, pki, value):  # noqa: F811
    """UnsupportedGeneralNameType (an Exception, not a ValueError) went out of cert_from_payload."""
    from tests.engine.test_pki_hostile import _pair_with_left_cert, _refused

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(_name("x400"), root[0].subject, key.public_key())
            .add_extension(x509.UnrecognizedExtension(x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME, value), False)
            .sign(root[1], hashes.SHA256()))
    with pytest.raises(PkiError, match="malformed"):
        cert_from_payload(4, cert_payload_data(cert))
    assert not validate_chain(cert, [], [root[0]], [], NOW).ok
    _refused(_pair_with_left_cert(pki, root, [cert], key), "malformed")


# --- CRLs that cannot be read (a fetched one comes over plain http) --------------------------------------


def _crl(root, *, serials=()):
    b = (x509.CertificateRevocationListBuilder().issuer_name(root[0].subject)
         .last_update(NOW - timedelta(hours=1)).next_update(NOW + timedelta(days=1)))
    for s in serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                      .revocation_date(NOW - timedelta(hours=1)).build())
    return b.sign(root[1], hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_a_crl_whose_issuer_cannot_be_read_is_refused_when_loaded(root):
    """cryptography reads a CRL's issuer only when asked: one whose issuer is not UTF-8 loaded, and then
    raised ValueError out of validate_chain at every IKE_AUTH of that CA's peers. A CRL fetched over
    http can be anything an on-path attacker writes."""
    from engine.pki.validate import load_crls

    good = _crl(root)
    name = "Review Root".encode()
    assert good.count(b"\x0c\x0b" + name) == 1
    bad = good.replace(b"\x0c\x0b" + name, b"\x0c\x0b\xb4" + name[1:])
    with pytest.raises(PkiError, match="unreadable"):
        load_crls(bad, "http://crl.example/root.crl")
    # one made some other way reaches validate_chain: it is skipped with a warning, nothing raises
    crl = x509.load_der_x509_crl(bad)
    leaf = _leaf(root)
    res = validate_chain(leaf, [], [root[0]], [crl], NOW)
    assert res.ok and any("cannot be read" in w for w in res.warnings), res.warnings
    res = validate_chain(leaf, [], [root[0]], [crl], NOW, revocation="strict")
    assert not res.ok and "revocation = strict" in res.reason


def test_a_crl_of_an_unknown_version_is_a_pki_error(root):
    """InvalidVersion (no ValueError) went out of load_crls; the runtime's fetcher logged a traceback."""
    from engine.pki.validate import load_crls

    good = _crl(root)
    assert good.count(b"\x02\x01\x01", 0, 12) == 1  # version v2
    bad = good.replace(b"\x02\x01\x01", b"\x02\x01\x7e", 1)
    with pytest.raises(PkiError, match="neither a PEM nor a DER CRL"):
        load_crls(bad)
    pem = b"-----BEGIN X509 CRL-----\n" + __import__("base64").encodebytes(bad) + b"-----END X509 CRL-----\n"
    with pytest.raises(PkiError, match="unreadable PEM CRL"):
        load_crls(pem)


def test_a_sent_ca_with_an_outsized_rsa_modulus_is_not_tried(root):
    """Each candidate issuer costs a signature check before the peer is authenticated: with a 16384-bit
    modulus and a 32-bit exponent one costs ~5 ms (0.07 ms at 2048 bits), 24 of them ~120 ms per
    IKE_AUTH. A peer-sent CA's RSA modulus is bounded as its exponent is (a configured CA is not)."""
    import secrets

    from cryptography.hazmat.primitives.asymmetric import rsa

    import engine.pki.validate as validate

    bits = 16384  # OpenSSL's own limit: the most a peer can make us verify with
    n = secrets.randbits(bits) | (1 << (bits - 1)) | 1  # never used to sign: only its size matters
    huge = rsa.RSAPublicNumbers(65537, n).public_key()
    inter = (_builder(_name("Huge CA"), root[0].subject, huge)
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(root[1], hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _builder(_name("gw"), inter.subject, key.public_key()).sign(key, hashes.SHA256())
    checked = []
    real = validate._signed_by
    validate_signed_by = lambda c, i: checked.append(i) or real(c, i)  # noqa: E731
    try:
        validate._signed_by = validate_signed_by
        res = validate_chain(leaf, [inter], [root[0]], [], NOW)
    finally:
        validate._signed_by = real
    assert not res.ok and "modulus" in res.reason, res.reason
    assert inter not in checked


# --- issuer names compared as RFC 5280 §7.1 compares them ------------------------------------------------


def _issued_naming(root_name: x509.Name, issuer_name: x509.Name, key_kind: str = "ec"):
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = {"ec": lambda: ec.generate_private_key(ec.SECP256R1()), "rsa": lambda: rsa.generate_private_key(65537, 2048),
           "ed25519": ed25519.Ed25519PrivateKey.generate}[key_kind]()
    digest = None if key_kind == "ed25519" else hashes.SHA256()
    ca = (_builder(root_name, root_name, key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, digest))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _builder(_name("gw"), issuer_name, leaf_key.public_key()).sign(key, digest)
    return ca, leaf, key


def test_an_issuer_name_in_another_string_type_or_case_is_the_cas_name(root):
    """The CA's subject a PrintableString, the certificate's issuer the same name as a UTF8String (RFC 5280
    §4.1.2.4 expects both during the move to UTF8String), or in other case and blanks (§7.1): the same
    name. cryptography's verify_directly_issued_by wants equal names and refused these chains as "does
    not verify with the key" (charon compares the values)."""
    from cryptography.x509.name import _ASN1Type

    printable = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "Legacy Root", _ASN1Type.PrintableString)])
    utf8 = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Legacy Root", _ASN1Type.UTF8String)])
    for ca_name, issuer_name in ((printable, utf8), (utf8, printable),
                                 (utf8, x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                                                   x509.NameAttribute(NameOID.COMMON_NAME, "LEGACY  root")]))):
        ca, leaf, _ = _issued_naming(ca_name, issuer_name)
        res = validate_chain(leaf, [], [ca], [], NOW)
        assert res.ok, res.reason


@pytest.mark.parametrize("kind", ["ec", "rsa", "ed25519"])
def test_signatures_are_still_checked(kind):
    """The signature check without cryptography's name check: each key type verifies, and a certificate
    signed by another key of the same name does not."""
    from cryptography.x509.name import _ASN1Type

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Key Root", _ASN1Type.PrintableString)])
    ca, leaf, _ = _issued_naming(name, name, kind)
    assert validate_chain(leaf, [], [ca], [], NOW).ok
    other_ca, other_leaf, _ = _issued_naming(name, name, kind)
    res = validate_chain(other_leaf, [], [ca], [], NOW)
    assert not res.ok and "does not verify" in res.reason


def test_an_rsa_pss_signed_chain_verifies():
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(65537, 2048)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    name = _name("PSS Root")
    ca = (_builder(name, name, key.public_key()).add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
          .sign(key, hashes.SHA256(), rsa_padding=pss))
    leaf = _builder(_name("gw"), name, ec.generate_private_key(ec.SECP256R1()).public_key()) \
        .sign(key, hashes.SHA256(), rsa_padding=pss)
    assert validate_chain(leaf, [], [ca], [], NOW).ok
    wrong = rsa.generate_private_key(65537, 2048)
    forged = _builder(_name("gw"), name, ec.generate_private_key(ec.SECP256R1()).public_key()) \
        .sign(wrong, hashes.SHA256(), rsa_padding=pss)
    assert not validate_chain(forged, [], [ca], [], NOW).ok


def test_a_signature_algorithm_that_does_not_fit_the_issuers_key_is_refused(root):
    """An ECDSA-signed certificate under an RSA CA of that name: refused, nothing raises."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = rsa.generate_private_key(65537, 2048)
    name = _name("Mixed Root")
    ca = (_builder(name, name, rsa_key.public_key()).add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
          .sign(rsa_key, hashes.SHA256()))
    leaf = _builder(_name("gw"), name, ec.generate_private_key(ec.SECP256R1()).public_key()) \
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    res = validate_chain(leaf, [], [ca], [], NOW)
    assert not res.ok and "does not verify" in res.reason



# --- configured CAs whose key we cannot read ----------------------------------------------------------


def test_a_configured_ca_with_a_key_we_cannot_read_is_refused_when_loading(pki, root, tmp_path):  # noqa: F811
    """A CA whose key cryptography cannot read (a post-quantum one today) loaded, and then every CERTREQ
    we build hashes its key: UnsupportedAlgorithm out of the engine at each IKE_SA_INIT (and out of
    load_credentials' own key comparison). It is refused when the credentials are loaded, naming the file."""
    import dataclasses

    from engine.pki.credentials import load_credentials
    from tests.engine.test_ike_certs import cert_policy
    from tests.engine.test_pki_hostile import _unknown_key_cert

    ca_file = tmp_path / "pq-ca.crt"
    ca_file.write_bytes(_unknown_key_cert(root).public_bytes(serialization.Encoding.PEM))
    d = pki["ecdsa-p256"]
    pol = cert_policy(d, "right.example", "left.example", "192.0.2.2")
    conn = pol.connections[0]
    pol = dataclasses.replace(pol, connections=(dataclasses.replace(
        conn, remote=dataclasses.replace(conn.remote, cacerts=(str(ca_file),))),))
    with pytest.raises(PkiError, match="pq-ca.crt"):
        load_credentials(pol)


def test_our_certificate_with_a_key_we_cannot_read_is_refused_when_loading(pki, root, tmp_path):  # noqa: F811
    import dataclasses

    from engine.pki.credentials import load_credentials
    from tests.engine.test_ike_certs import cert_policy
    from tests.engine.test_pki_hostile import _unknown_key_cert

    cert_file = tmp_path / "pq.crt"
    cert_file.write_bytes(_unknown_key_cert(root).public_bytes(serialization.Encoding.PEM))
    pol = cert_policy(pki["ecdsa-p256"], "right.example", "left.example", "192.0.2.2")
    conn = pol.connections[0]
    pol = dataclasses.replace(pol, connections=(dataclasses.replace(
        conn, local=dataclasses.replace(conn.local, certs=(str(cert_file),))),))
    with pytest.raises(PkiError, match="local.certs .*pq.crt"):
        load_credentials(pol)
