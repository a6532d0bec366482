"""A CRL counts only if its issuer may sign CRLs: RFC 5280 §4.2.1.3 and §6.3.3 (f), charon's
x509_crl.c issued_by (X509_CRL_SIGN; a CA certificate without keyUsage may sign CRLs)."""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from engine.pki.validate import validate_chain

from tests.engine.test_pki_validate import NOW, _name, build, build_crl


def _ca(crl_sign: bool | None):
    """A root whose keyUsage has keyCertSign and (or not) cRLSign; None: no keyUsage at all."""
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder().subject_name(_name("Root")).issuer_name(_name("Root")).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=1))
         .not_valid_after(NOW + timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if crl_sign is not None:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, crl_sign, False, False), critical=True)
    return b.sign(key, hashes.SHA256()), key


def test_a_crl_whose_issuer_lacks_crlsign_does_not_count():
    root = _ca(crl_sign=False)
    leaf = build("leaf.example", root)[0]
    crl = build_crl(root, [leaf.serial_number])
    # relaxed: the CRL is ignored (charon: issued_by fails), and said so
    res = validate_chain(leaf, [], [root[0]], [crl], NOW)
    assert res.ok, res.reason
    assert any("cRLSign" in w for w in res.warnings), res.warnings
    # strict: no usable CRL, and the reason says why the loaded one was not used
    res = validate_chain(leaf, [], [root[0]], [build_crl(root, [])], NOW, revocation="strict")
    assert not res.ok and "revocation = strict" in res.reason and "cRLSign" in res.reason, res.reason


def test_a_crl_issuer_with_crlsign_or_without_keyusage_counts():
    for flag in (True, None):
        root = _ca(crl_sign=flag)
        leaf = build("leaf.example", root)[0]
        res = validate_chain(leaf, [], [root[0]], [build_crl(root, [leaf.serial_number])], NOW)
        assert not res.ok and "revoked" in res.reason, (flag, res.reason)
        assert validate_chain(leaf, [], [root[0]], [build_crl(root, [])], NOW, revocation="strict").ok


def _delta(root, revoked=(), reason=None):
    b = (x509.CertificateRevocationListBuilder().issuer_name(root[0].subject)
         .last_update(NOW - timedelta(hours=1)).next_update(NOW + timedelta(days=1))
         .add_extension(x509.DeltaCRLIndicator(1), critical=True))
    for serial in revoked:
        rb = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - timedelta(minutes=5))
        if reason is not None:
            rb = rb.add_extension(x509.CRLReason(reason), critical=False)
        b = b.add_revoked_certificate(rb.build())
    return b.sign(root[1], hashes.SHA256())


def test_a_delta_crl_alone_does_not_make_a_certificate_good():
    """charon's get_better_crl skips delta CRLs when it looks for the base one (RFC 5280 §5.2.4)."""
    root = _ca(crl_sign=True)
    leaf = build("leaf.example", root)[0]
    res = validate_chain(leaf, [], [root[0]], [_delta(root)], NOW, revocation="strict")
    assert not res.ok and "delta CRL" in res.reason, res.reason
    assert validate_chain(leaf, [], [root[0]], [_delta(root), build_crl(root, [])], NOW, revocation="strict").ok
    # what a delta revokes is revoked; an entry it removes from the CRL is not a revocation
    res = validate_chain(leaf, [], [root[0]], [_delta(root, [leaf.serial_number])], NOW)
    assert not res.ok and "delta CRL" in res.reason and "revoked" in res.reason
    removed = _delta(root, [leaf.serial_number], x509.ReasonFlags.remove_from_crl)
    assert validate_chain(leaf, [], [root[0]], [removed, build_crl(root, [])], NOW, revocation="strict").ok
