"""Certificates: identity matching, DNs, CERT/CERTREQ data, loading, expiry."""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.pki import (
    CERT_ENCODING_X509_SIGNATURE,
    PkiError,
    cas_by_certreq,
    cert_from_payload,
    cert_identities,
    cert_matches_identity,
    cert_payload_data,
    certreq_data,
    certreq_hash,
    dn_from_der,
    dn_matches,
    dn_to_der,
    expiring,
    format_name,
    identity_from_cert,
    load_certificate_file,
    load_certificates,
    parse_certreq_data,
    parse_dn,
)
from engine.pki.dn import dn_to_name
from engine.policy.model import Identity

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)


def make_cert(subject: x509.Name, sans: list[x509.GeneralName] | None = None, *, days: float = 365, key=None, ski=True):
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=days))
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    return b.sign(key, hashes.SHA256())


SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Interop Lab"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Gateways"),
        x509.NameAttribute(NameOID.COMMON_NAME, "gw.example.com"),
    ]
)


@pytest.fixture(scope="module")
def gw():
    return make_cert(
        SUBJECT,
        [
            x509.DNSName("gw.example.com"),
            x509.DNSName("vpn.example.com"),
            x509.RFC822Name("admin@example.com"),
            x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
            x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        ],
    )


@pytest.mark.parametrize(
    "kind,value,expected",
    [
        ("fqdn", "gw.example.com", True),
        ("fqdn", "GW.Example.COM", True),
        ("fqdn", "vpn.example.com.", True),
        ("fqdn", "*.example.com", True),
        ("fqdn", "example.com", False),
        ("fqdn", "other.example.com", False),
        ("fqdn", "*.example.org", False),
        ("rfc822", "admin@example.com", True),
        ("rfc822", "ADMIN@EXAMPLE.COM", True),
        ("rfc822", "*@example.com", True),
        ("rfc822", "root@example.com", False),
        ("rfc822", "gw.example.com", False),
        ("ipv4", "192.0.2.1", True),
        ("ipv4", "192.0.2.2", False),
        ("ipv4", "192.0.2.0/24", True),
        ("ipv4", "198.51.100.0/24", False),
        ("ipv4", "not-an-ip", False),
        ("ipv6", "2001:db8::1", True),
        ("ipv6", "2001:DB8:0::1", True),
        ("ipv6", "2001:db8::2", False),
        ("dn", "C=CH, O=Interop Lab, OU=Gateways, CN=gw.example.com", True),
        ("dn", "c=ch,o=interop lab,ou=gateways,cn=GW.EXAMPLE.COM", True),
        ("dn", "/C=CH/O=Interop Lab/OU=Gateways/CN=gw.example.com", True),
        ("dn", "C=CH, O=Interop  Lab, OU=Gateways, CN=gw.example.com", True),
        ("dn", "C=CH, O=Interop Lab, OU=*, CN=gw.example.com", True),
        ("dn", "C=CH, O=Interop Lab, CN=gw.example.com", False),  # missing OU
        ("dn", "CN=gw.example.com, OU=Gateways, O=Interop Lab, C=CH", False),  # RFC 4514 order is not ours
        ("dn", "C=DE, O=Interop Lab, OU=Gateways, CN=gw.example.com", False),
        ("dn", "garbage without equals", False),
        ("any", "%any", True),
        ("fqdn", "gw.example.com.evil", False),
    ],
)
def test_identity_matching_table(gw, kind, value, expected):
    assert cert_matches_identity(gw, Identity(kind, value)) is expected


def test_cn_alone_does_not_make_an_fqdn_match():
    cert = make_cert(SUBJECT)  # no SAN at all
    assert not cert_matches_identity(cert, Identity("fqdn", "gw.example.com"))
    assert cert_matches_identity(cert, Identity("dn", format_name(SUBJECT)))


def test_key_id_identity(gw):
    ski = gw.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert cert_matches_identity(gw, Identity("key_id", ski.hex()))
    assert cert_matches_identity(gw, Identity("key_id", "#" + ":".join(f"{b:02x}" for b in ski)))
    assert not cert_matches_identity(gw, Identity("key_id", "00" * 20))
    assert not cert_matches_identity(gw, Identity("key_id", "zz"))
    # without an SKI extension the key's SHA-1 (RFC 5280 method 1) still matches
    no_ski = make_cert(SUBJECT, ski=False)
    computed = x509.SubjectKeyIdentifier.from_public_key(no_ski.public_key()).digest
    assert cert_matches_identity(no_ski, Identity("key_id", computed.hex()))


def test_identity_from_cert_and_all_identities(gw):
    ident = identity_from_cert(gw)
    assert ident == Identity("dn", "C=CH, O=Interop Lab, OU=Gateways, CN=gw.example.com")
    assert cert_matches_identity(gw, ident)
    ids = cert_identities(gw)
    assert ids[0] == ident
    assert Identity("fqdn", "vpn.example.com") in ids
    assert Identity("rfc822", "admin@example.com") in ids
    assert Identity("ipv4", "192.0.2.1") in ids and Identity("ipv6", "2001:db8::1") in ids
    assert all(cert_matches_identity(gw, i) for i in ids)


# --- DNs ----------------------------------------------------------------------


def test_dn_text_and_der_round_trip_against_cryptography():
    text = "C=CH, O=Interop Lab, OU=Gateways, CN=gw.example.com"
    assert dn_to_der(text) == SUBJECT.public_bytes()
    assert dn_from_der(SUBJECT.public_bytes()) == text
    assert parse_dn(dn_from_der(dn_to_der(text))) == parse_dn(text)


def test_dn_special_characters_round_trip():
    text = r'O=Acme\, Inc., OU=R\+D, CN="quoted, name", E=a@b.example'
    rdns = parse_dn(text)
    assert [v for _, v in rdns] == ["Acme, Inc.", "R+D", "quoted, name", "a@b.example"]
    assert parse_dn(dn_from_der(dn_to_der(text))) == rdns
    assert dn_matches(text, x509.Name.from_rfc4514_string(r"1.2.840.113549.1.9.1=a@b.example,CN=quoted\, name,OU=R\+D,O=Acme\, Inc."))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI (apt-get install openssl)")
def test_dn_der_matches_openssl_subject(tmp_path):
    key = tmp_path / "k.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key)], check=True,
                   capture_output=True)
    crt = tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-new", "-key", str(key), "-subj", "/C=CH/O=Interop Lab/CN=left.example", "-days", "1",
                    "-out", str(crt)], check=True, capture_output=True)
    cert = load_certificate_file(crt)[0]
    assert format_name(cert.subject) == "C=CH, O=Interop Lab, CN=left.example"
    assert dn_to_der("C=CH, O=Interop Lab, CN=left.example") == cert.subject.public_bytes()


@pytest.mark.parametrize(
    "text,needle",
    [("", "empty"), ("CN", "not NAME=value"), ("XYZ=1", "unknown attribute"), ("CN=", "empty value"), ('CN="open', "quote")],
)
def test_bad_dn_text(text, needle):
    with pytest.raises(PkiError, match=needle):
        parse_dn(text)


def test_bad_country_is_a_pki_error_for_certificates_only():
    # A certificate we issue follows cryptography's rules; an ID payload carries what the
    # admin configured or the peer sent (strongSwan sends C=Switzerland as written).
    with pytest.raises(PkiError, match="C=Switzerland"):
        dn_to_name("C=Switzerland, CN=x")
    assert dn_from_der(dn_to_der("C=Switzerland, CN=x")) == "C=Switzerland, CN=x"


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x31\x00", b"\x30\x05\x31\x03\x30\x01\x06", b"\x30\x02\x30\x00"])
def test_malformed_der_dn(der):
    with pytest.raises(PkiError):
        dn_from_der(der)


# --- CERT / CERTREQ -------------------------------------------------------------


def test_certreq_hash_is_sha1_of_spki(gw):
    spki = gw.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert certreq_hash(gw) == hashlib.sha1(spki).digest()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI (apt-get install openssl)")
def test_certreq_hash_matches_openssl(tmp_path, gw):
    pem = tmp_path / "ca.pem"
    pem.write_bytes(gw.public_bytes(serialization.Encoding.PEM))
    pub = subprocess.run(["openssl", "x509", "-in", str(pem), "-noout", "-pubkey"], check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, check=True, capture_output=True).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha1", "-binary"], input=der, check=True, capture_output=True).stdout
    assert certreq_hash(gw) == digest


def test_certreq_data_and_cas_by_certreq(gw):
    cas = [make_cert(SUBJECT) for _ in range(3)]
    data = certreq_data([cas[2], cas[0]])
    assert len(data) == 40
    hashes_ = parse_certreq_data(data)
    assert cas_by_certreq(hashes_, cas) == [cas[2], cas[0]]
    assert cas_by_certreq([b"\x00" * 20], cas) == []
    assert cas_by_certreq(hashes_ + hashes_, cas) == [cas[2], cas[0]]  # duplicates once
    with pytest.raises(PkiError, match="21 bytes"):
        parse_certreq_data(b"\x00" * 21)


def test_cert_payload_round_trip(gw):
    data = cert_payload_data(gw)
    assert cert_from_payload(CERT_ENCODING_X509_SIGNATURE, data) == gw
    with pytest.raises(PkiError, match="encoding 12"):
        cert_from_payload(12, b"http://example.com/cert")
    with pytest.raises(PkiError, match="not a DER certificate"):
        cert_from_payload(4, data[:-5])


# --- loading --------------------------------------------------------------------


def test_load_pem_bundle_der_and_errors(gw, tmp_path):
    other = make_cert(SUBJECT)
    bundle = gw.public_bytes(serialization.Encoding.PEM) + other.public_bytes(serialization.Encoding.PEM)
    assert load_certificates(bundle) == [gw, other]
    assert load_certificates(gw.public_bytes(serialization.Encoding.DER)) == [gw]
    with pytest.raises(PkiError, match="no PEM CERTIFICATE"):
        load_certificates(b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n", "k.pem")
    with pytest.raises(PkiError, match="^x.der: neither"):
        load_certificates(b"\x30\x03\x02\x01\x01", "x.der")
    with pytest.raises(PkiError, match="cannot read certificate"):
        load_certificate_file(tmp_path / "nope.crt")


# --- expiry ---------------------------------------------------------------------


def test_expiring_lists_soon_and_expired_soonest_first():
    soon = make_cert(SUBJECT, days=10)
    later = make_cert(SUBJECT, days=100)
    gone = make_cert(SUBJECT, days=-0.5)
    warnings = expiring([later, soon, gone], NOW)
    assert [w.serial for w in warnings] == [gone.serial_number, soon.serial_number]
    assert warnings[0].expired and "expired on" in str(warnings[0])
    assert not warnings[1].expired and int(warnings[1].days_left) == 10 and "expires in 10 days" in str(warnings[1])
    assert [w.serial for w in expiring([later, soon], NOW, within=timedelta(days=200))] == [soon.serial_number, later.serial_number]
    assert expiring([later], NOW.replace(tzinfo=None)) == []  # naive now is UTC
