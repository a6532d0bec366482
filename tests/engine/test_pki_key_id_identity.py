"""An ID_KEY_ID the peer sends is one of the key identifiers charon's has_subject takes
(x509_cert.c): the subjectKeyIdentifier, the SHA-1 of the public key, and also the SHA-1 of the whole
subjectPublicKeyInfo (`pki --keyid` prints it as "subjectPublicKeyInfo hash", a strongSwan user may
configure keyid:#<it>) and the SHA-1 of the certificate's encoding. We took the first two only."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.ike.identity import identity_from_wire
from engine.pki.certs import cert_matches_identity

NOW = datetime.now(timezone.utc)
KEY_ID = 11


@pytest.fixture(scope="module")
def cert():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyid")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x1234).not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=9))
            .sign(key, hashes.SHA256()))


def _spki(cert) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("which", ["spki-sha1", "certificate-sha1", "key-sha1"])
def test_charons_key_identifiers_name_the_certificate(cert, which):
    digest = {
        "spki-sha1": lambda: hashlib.sha1(_spki(cert)).digest(),
        "certificate-sha1": lambda: hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest(),
        "key-sha1": lambda: x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest,
    }[which]()
    assert cert_matches_identity(cert, identity_from_wire(KEY_ID, digest), wildcards=False)


def test_another_key_identifier_does_not(cert):
    assert not cert_matches_identity(cert, identity_from_wire(KEY_ID, hashlib.sha1(b"other").digest()), wildcards=False)
    assert not cert_matches_identity(cert, identity_from_wire(KEY_ID, hashlib.sha256(_spki(cert)).digest()), wildcards=False)
