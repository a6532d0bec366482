"""A CRL entry whose extensions hold an x400Address or ediPartyName (a certificateIssuer of an indirect
CRL): cryptography raises UnsupportedGeneralNameType, no ValueError, when the entry's extensions are
read (only for the certificate being checked, after the CRL's signature). pki17 contained
DuplicateExtension there; this one went out of validate_chain at each IKE_AUTH."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.pki.validate import validate_chain

from tests.engine.test_pki_link_algorithms import _read, _tlv

NOW = datetime.now(timezone.utc)


def test_an_entry_with_an_unsupported_general_name_still_revokes():
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CRL CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
          .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=9))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")]))
            .issuer_name(name).public_key(ec.generate_private_key(ec.SECP256R1()).public_key()).serial_number(0x77)
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=9)).sign(key, hashes.SHA256()))
    marker = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "marker")])
    entry = (x509.RevokedCertificateBuilder().serial_number(0x77).revocation_date(NOW - timedelta(hours=1))
             .add_extension(x509.CertificateIssuer([x509.DirectoryName(marker)]), critical=True).build())
    crl = (x509.CertificateRevocationListBuilder().issuer_name(name).last_update(NOW - timedelta(hours=1))
           .next_update(NOW + timedelta(days=1)).add_revoked_certificate(entry).sign(key, hashes.SHA256()))
    # the directoryName [4] becomes an x400Address [3] (same bytes after the tag), signed anew by the CA
    der = crl.public_bytes(serialization.Encoding.DER)
    start = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    _, tbs_end = _read(der, start)
    _, alg_end = _read(der, tbs_end)
    tbs = der[start:tbs_end].replace(_tlv(0xA4, marker.public_bytes()), _tlv(0xA3, marker.public_bytes()))
    odd = x509.load_der_x509_crl(_tlv(0x30, tbs + der[tbs_end:alg_end]
                                      + _tlv(0x03, b"\0" + key.sign(tbs, ec.ECDSA(hashes.SHA256())))))
    assert odd.is_signature_valid(key.public_key())
    res = validate_chain(leaf, [], [ca], [odd], NOW)
    assert not res.ok and "revoked" in res.reason and "no reason given" in res.reason, res.reason
