"""Review of the pki14 merge: what the new checks must still refuse (name constraints against the
names identity matching accepts, a CRL's cached verdict tied to that very CRL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from engine.pki.certs import cert_matches_identity
from engine.pki.validate import validate_chain
from engine.policy.model import Identity

from tests.engine.test_pki_hostile import NOW, _builder, _ca_with, _leaf_named, _name, root  # noqa: F401 (fixture)


def _raw_san_leaf(issuer, tag: int, value: bytes, subject=None):
    """A leaf whose SAN holds one name as raw bytes (cryptography's builder refuses what a peer can send)."""
    key = ec.generate_private_key(ec.SECP256R1())
    san = bytes([0x30, len(value) + 2, tag, len(value)]) + value
    return (_builder(_name("gw") if subject is None else subject, issuer[0].subject, key.public_key())
            .add_extension(x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, san), critical=False)
            .sign(issuer[1], hashes.SHA256()))


@pytest.mark.parametrize("kind, tag, constraint, name, claimed", [
    # a trailing dot: identity matching ignores it, so the constraint must too
    ("fqdn", 0x82, x509.DNSName("bank.test"), b"www.bank.test.", "www.bank.test"),
    ("rfc822", 0x81, x509.RFC822Name("bank.test"), b"ceo@bank.test.", "ceo@bank.test"),
    # U+017F (long s) casefolds to "s" but does not lower-case to it
    ("fqdn", 0x82, x509.DNSName("super.test"), "www.\u017fuper.test".encode(), "www.super.test"),
])
def test_an_excluded_name_is_excluded_in_every_spelling_identity_matching_accepts(root, kind, tag, constraint, name,
                                                                                  claimed):
    inter = _ca_with(root, None, [constraint])
    leaf = _raw_san_leaf(inter, tag, name)
    assert cert_matches_identity(leaf, Identity(kind, claimed))  # the peer could claim the excluded name
    res = validate_chain(leaf, [inter[0]], [root[0]], [], NOW)
    assert not res.ok and "excluded" in res.reason, res.reason


def test_a_permitted_name_with_a_trailing_dot_is_still_permitted(root):
    inter = _ca_with(root, [x509.DNSName("example.com")])
    assert validate_chain(_raw_san_leaf(inter, 0x82, b"gw.example.com."), [inter[0]], [root[0]], [], NOW).ok


def _subject_with_email(email: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hostile"),
                      x509.NameAttribute(NameOID.EMAIL_ADDRESS, email)])


def test_email_constraints_apply_to_the_subjects_email_address(root):
    """RFC 5280 §4.2.1.10: an rfc822Name constraint MUST be applied to the subject's emailAddress
    attribute (OpenSSL's v3_ncons.c checks it whether or not there is a SAN). Our DN identity holds it."""
    inter = _ca_with(root, [x509.RFC822Name(".example.com")])
    outside = _leaf_named(inter, subject=_subject_with_email("ceo@bank.test"))
    assert cert_matches_identity(outside, Identity("dn", "O=Hostile, E=ceo@bank.test"))
    res = validate_chain(outside, [inter[0]], [root[0]], [], NOW)
    assert not res.ok and "ceo@bank.test" in res.reason and "permitted" in res.reason, res.reason
    with_san = _leaf_named(inter, x509.DNSName("gw.example.com"), subject=_subject_with_email("ceo@bank.test"))
    assert not validate_chain(with_san, [inter[0]], [root[0]], [], NOW).ok  # a SAN of another type does not hide it
    inside = _leaf_named(inter, subject=_subject_with_email("it@mail.example.com"))
    assert validate_chain(inside, [inter[0]], [root[0]], [], NOW).ok
    excluding = _ca_with(root, None, [x509.RFC822Name("bank.test")])
    res = validate_chain(_leaf_named(excluding, subject=_subject_with_email("ceo@bank.test")), [excluding[0]],
                         [root[0]], [], NOW)
    assert not res.ok and "excluded" in res.reason


# --- the CRL verdict cache ------------------------------------------------------------------------------------


def _tlvs(der: bytes) -> list[bytes]:
    """The elements of a DER SEQUENCE, each with its tag and length."""
    assert der[0] == 0x30
    pos = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    out = []
    while pos < len(der):
        n = der[pos + 1]
        hdr = 2
        if n & 0x80:
            hdr += n & 0x7F
            n = int.from_bytes(der[pos + 2: pos + hdr], "big")
        out.append(der[pos: pos + hdr + n])
        pos += hdr + n
    return out


def _seq(body: bytes) -> bytes:
    n = len(body)
    size = (n.bit_length() + 7) // 8
    length = bytes([n]) if n < 0x80 else bytes([0x80 | size]) + n.to_bytes(size, "big")
    return b"\x30" + length + body


def _crl(root, *serials, key=None):
    b = (x509.CertificateRevocationListBuilder().issuer_name(root[0].subject)
         .last_update(NOW - timedelta(hours=1)).next_update(NOW + timedelta(days=1)))
    for s in serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                      .revocation_date(NOW - timedelta(hours=1)).build())
    return b.sign(key or root[1], hashes.SHA256())


def test_a_crl_carrying_another_crls_signature_gets_no_verdict_of_it(root):
    """The verdict cache was keyed by the CRL's signature bytes: a CRL made with the real CRL's
    signature pasted under another list (a CRL fetched over plain HTTP, then reloaded) was taken as
    signed, and the serials came from the real one's entry while the entry was looked up in the fake."""
    revoked = _leaf_named(root, x509.DNSName("gw.example.com"))
    genuine = _crl(root, revoked.serial_number)
    assert not validate_chain(revoked, [], [root[0]], [genuine], NOW).ok  # the genuine verdict is cached now
    tbs = _tlvs(_crl(root, key=ec.generate_private_key(ec.SECP256R1())).public_bytes(serialization.Encoding.DER))[0]
    _, alg, sig = _tlvs(genuine.public_bytes(serialization.Encoding.DER))
    forged = x509.load_der_x509_crl(_seq(tbs + alg + sig))
    assert forged.signature == genuine.signature and not forged.is_signature_valid(root[0].public_key())
    res = validate_chain(revoked, [], [root[0]], [forged], NOW, revocation="strict")
    assert not res.ok, res.reason
    assert any("not signed by that CA" in w for w in res.warnings)


# --- path building: a cross-signed CA ---------------------------------------------------------------------


def _ca(subject, issuer_name, key, signer, path_length=None):
    return (_builder(subject, issuer_name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(signer, hashes.SHA256()))


@pytest.mark.parametrize("order", ["self-signed first", "cross first", "cross only"])
def test_a_cross_signed_ca_with_its_self_signed_copy_in_the_chain(order):
    """Three levels under a new root cross-signed by the trusted old one (cross-certificate pathlen 1),
    the peer sending the new root's self-signed copy too. Taken first, that self-issued copy sat in
    the path and was counted against the pathLenConstraint (RFC 5280 §6.1.4 (l) does not count it)."""
    old, new, mid, gw = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    trusted = _ca(_name("Old Root"), _name("Old Root"), old, old)
    new_self = _ca(_name("New Root"), _name("New Root"), new, new)
    new_cross = _ca(_name("New Root"), _name("Old Root"), new, old, path_length=1)
    inter = _ca(_name("Issuing CA"), _name("New Root"), mid, new, path_length=0)
    leaf = _builder(_name("gw"), _name("Issuing CA"), gw.public_key()).sign(mid, hashes.SHA256())
    sent = {"self-signed first": [inter, new_self, new_cross], "cross first": [inter, new_cross, new_self],
            "cross only": [inter, new_cross]}[order]
    res = validate_chain(leaf, sent, [trusted], [], NOW)
    assert res.ok, res.reason
    assert res.chain[-1] == trusted
    # the constraint still holds for CAs that are not self-issued
    extra_key = ec.generate_private_key(ec.SECP256R1())
    extra = _ca(_name("Extra CA"), _name("Issuing CA"), extra_key, mid)
    deep = _builder(_name("gw"), _name("Extra CA"), gw.public_key()).sign(extra_key, hashes.SHA256())
    assert not validate_chain(deep, [extra, *sent], [trusted], [], NOW).ok
