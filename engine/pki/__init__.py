"""Certificates for IKE: validation, identities, CERT/CERTREQ data, and a small CA.

Modules: certs (loading, identity matching, CERTREQ key hashes, expiry), sans (subjectAltNames),
keyfiles (key/certificate files as swanctl keeps them),
validate (chain, dates, constraints, CRLs), dn (strongSwan-style DNs, DER
ID payloads), keys (private key files, 0600 enforced), files (no-overwrite
writes with final modes), ca (init-ca, issue, revoke, crl, list), cli
(``ipsec-console pki``). Only this package and engine.crypto import
`cryptography`.
"""

from .certs import (
    CERT_ENCODING_X509_SIGNATURE,
    ExpiryWarning,
    cas_by_certreq,
    cert_from_payload,
    cert_identities,
    cert_matches_identity,
    cert_payload_data,
    certreq_data,
    certreq_hash,
    describe,
    expiring,
    identity_from_cert,
    load_certificate_file,
    load_certificates,
    parse_certreq_data,
)
from .dn import dn_from_der, dn_matches, dn_to_der, format_name, parse_dn
from .errors import PkiError
from .keys import check_key_file_mode, load_private_key_file, load_private_key_secret
from .validate import ValidationResult, load_crl_files, load_crls, validate_chain

__all__ = [
    "CERT_ENCODING_X509_SIGNATURE",
    "ExpiryWarning",
    "PkiError",
    "ValidationResult",
    "cas_by_certreq",
    "cert_from_payload",
    "cert_identities",
    "cert_matches_identity",
    "cert_payload_data",
    "certreq_data",
    "certreq_hash",
    "check_key_file_mode",
    "describe",
    "dn_from_der",
    "dn_matches",
    "dn_to_der",
    "expiring",
    "format_name",
    "identity_from_cert",
    "load_certificate_file",
    "load_certificates",
    "load_crl_files",
    "load_crls",
    "load_private_key_file",
    "load_private_key_secret",
    "parse_certreq_data",
    "parse_dn",
    "validate_chain",
]
