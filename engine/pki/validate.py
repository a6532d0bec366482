"""Peer certificate validation: chain to a configured CA, dates, constraints, CRLs.

What is checked (in this order, the first failure is the reason):

1. every certificate on the path is within its validity at `now`;
2. the end certificate may sign (keyUsage, if present, has digitalSignature
   or nonRepudiation: RFC 4945 §5.1.3.2, strongSwan's X509_IKE_COMPLIANT);
3. a path to one of the trusted CAs, through the intermediates the peer sent,
   each link's signature checked (names compared as RFC 5280 §7.1 does); every issuer
   is a CA (basicConstraints CA:TRUE, keyUsage keyCertSign if present,
   pathLenConstraint honoured); a critical extension we do not process is refused;
   the CAs' name constraints hold for the certificates below them
   (engine.pki.nameconstraints), and their policy constraints
   (engine.pki.policies);
4. revocation: each certificate below the trust anchor is looked up in the
   CRLs its issuer signed. A revoked certificate fails, naming serial, date
   and reason. A CRL with a bad signature, or whose issuer's keyUsage lacks
   cRLSign (RFC 5280 §6.3.3 (f)), is ignored (and reported); a delta CRL
   revokes what it lists but never makes a certificate good by itself; an
   expired CRL is still used for what it lists (revocation is permanent) and
   reported (one without nextUpdate is never current, as charon); a CRL whose
   issuingDistributionPoint does not cover the certificate, or with a critical
   extension we cannot process, revokes what it lists but never makes a
   certificate good. ``revocation="strict"`` also fails when no good, current CRL
   covers a certificate (strongSwan's ``revocation = strict``); ``"ifuri"``
   fails so only for a certificate naming a CRL distribution point, or whose
   issuer's CRL is loaded but expired (strongSwan's ``ifuri``: the status must
   be good or not looked up at all).

The peer's certificates arrive before it is authenticated, so the work is
bounded: at most MAX_INTERMEDIATES of them, MAX_LINK_CHECKS signature checks
per path, no peer-sent CA with an outsized RSA exponent or modulus or DSA key, CRL verdicts kept
per CRL; a certificate cryptography cannot read fails instead of raising.

Extended key usage is not required (strongSwan does not by default either).
Certificate policies are processed as strongSwan does (engine.pki.policies): the
path's policy constraints hold, and the result names the end certificate's valid
policies (remote.cert_policy).
Sans-IO apart from the file loaders: `now` is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from .certs import describe, shown_name, unreadable
from .crls import (  # noqa: F401 (load_crls, load_crl_files, crl_uris, _crl_memo, _crl_facts: used from here)
    MAX_CRL_URIS,
    Revocation,
    _crl_facts,
    _crl_memo,
    _ext,
    _norm_name,
    _revocation_problem,
    _utc,
    _when,
    crl_uris,
    load_crl_files,
    load_crls,
)
from .dn import format_name
from .nameconstraints import name_constraints_problem
from .policies import _tlv, policies_of_path

MAX_CHAIN_DEPTH = 8
MAX_INTERMEDIATES = 16
"""Certificates a peer may send besides its own: each one is a candidate issuer, a signature
check, at every level of the path, and they arrive before the peer is authenticated (charon
bounds them with its 10000-byte IKE message)."""

_REFUSED_SIGNATURES = {
    "1.2.840.113549.1.1.2": "md2WithRSAEncryption",
    "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.3.14.3.2.29": "sha1WithRSAEncryption",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1",
    "1.2.840.10040.4.3": "dsa-with-SHA1",
}
"""Certificate signature algorithms refused, named in the reason (cryptography's own check verifies none
of them either; strongSwan still takes SHA-1)."""


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of validate_chain. `reason` is a plain-words sentence for the console."""

    ok: bool
    reason: str
    chain: tuple[x509.Certificate, ...] = ()
    """End certificate first, then intermediates, then the trust anchor (empty on failure)."""
    warnings: tuple[str, ...] = field(default=())
    """Problems that did not fail validation (stale or badly signed CRLs)."""
    crl_uris: tuple[str, ...] = ()
    """http:// CRL distribution points of certificates on the validated path that no good, current
    CRL covered: the runtime fetches them (engine.runtime.crlfetch). Only a path that reached a
    trusted CA names any, so an unauthenticated peer cannot make us fetch what it likes."""
    policies: frozenset[str] = frozenset()
    """The end certificate's policy OIDs valid under the path (engine.pki.policies), for
    remote.cert_policy."""
    needs_crl: bool = False
    """The failure is a missing or out-of-date CRL (revocation strict or ifuri), not a revocation:
    a CRL fetched from crl_uris may turn it into a success."""

    def __bool__(self) -> bool:
        return self.ok


def _dates_problem(cert: x509.Certificate, now: datetime, what: str) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"{what} {describe(cert)} is not valid before {_when(cert.not_valid_before_utc)}"
    if now > cert.not_valid_after_utc:
        return f"{what} {describe(cert)} expired on {_when(cert.not_valid_after_utc)}"
    return None


_PROCESSED_CRITICAL = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.CRL_DISTRIBUTION_POINTS, ExtensionOID.NAME_CONSTRAINTS, ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.POLICY_MAPPINGS, ExtensionOID.POLICY_CONSTRAINTS, ExtensionOID.INHIBIT_ANY_POLICY,
})
"""Extensions a certificate may mark critical: charon's x509_cert.c parses these (its Netscape ones
aside); any other critical one, even one cryptography reads (a CT precertificate's poison, TLS
feature, issuerAltName...), is information we do not process: RFC 5280 §4.2 refuses it."""


def _critical_problem(cert: x509.Certificate, what: str) -> str | None:
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _PROCESSED_CRITICAL:
            known = "" if isinstance(ext.value, x509.UnrecognizedExtension) else f" ({type(ext.value).__name__})"
            return (f"{what} {describe(cert)} has a critical extension we do not process: "
                    f"{ext.oid.dotted_string}{known}")
    return None


def _algorithms_disagree(cert: x509.Certificate) -> bool:
    """Is the signature AlgorithmIdentifier inside the TBSCertificate other than the outer one (RFC 5280
    §4.1.1.2 MUST be equal; charon: "signature algorithms do not agree")? The link check verifies with
    the outer one, which the signature does not cover; cryptography's verify_directly_issued_by refused
    this, and pki17's own link check took it."""
    try:
        tbs = cert.tbs_certificate_bytes
        _, i, _ = _tlv(tbs, 0)  # TBSCertificate SEQUENCE
        tag, _, end = _tlv(tbs, i)
        if tag == 0xA0:  # [0] EXPLICIT version, then serialNumber
            _, _, end = _tlv(tbs, end)
        _, _, inner_end = _tlv(tbs, end)  # the inner AlgorithmIdentifier
        inner = tbs[end:inner_end]
        der = cert.public_bytes(Encoding.DER)
        _, i, _ = _tlv(der, 0)
        _, _, tbs_end = _tlv(der, i)
        _, _, outer_end = _tlv(der, tbs_end)
        return der[tbs_end:outer_end] != inner
    except ValueError:  # cryptography parsed it: not expected
        return True


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Does `issuer`'s key verify `cert`'s signature? The names are the caller's (normalised, RFC 5280
    §7.1): cryptography's verify_directly_issued_by wants them equal as encoded, and refused a CA whose
    subject is a PrintableString over certificates naming it as a UTF8String, or in other case (charon
    compares the values). The algorithms are the ones it verifies, SHA-1 and MD5 still refused."""
    if cert.signature_algorithm_oid.dotted_string in _REFUSED_SIGNATURES:
        return False
    try:
        if isinstance(cert.signature_hash_algorithm, (hashes.SHA1, hashes.MD5)):  # RSASSA-PSS over SHA-1 too
            return False
        key = issuer.public_key()
        params = cert.signature_algorithm_parameters
        oid = cert.signature_algorithm_oid
        signature, tbs = cert.signature, cert.tbs_certificate_bytes
        if isinstance(key, rsa.RSAPublicKey) and isinstance(params, (padding.PKCS1v15, padding.PSS)):
            key.verify(signature, tbs, params, cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(signature, tbs, params)
        elif isinstance(key, ed25519.Ed25519PublicKey) and oid == SignatureAlgorithmOID.ED25519:
            key.verify(signature, tbs)
        elif isinstance(key, ed448.Ed448PublicKey) and oid == SignatureAlgorithmOID.ED448:
            key.verify(signature, tbs)
        elif isinstance(key, dsa.DSAPublicKey) and oid in _DSA_SIGNATURES:
            key.verify(signature, tbs, cert.signature_hash_algorithm)
        else:  # the algorithm does not fit the key
            return False
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


_DSA_SIGNATURES = frozenset({SignatureAlgorithmOID.DSA_WITH_SHA224, SignatureAlgorithmOID.DSA_WITH_SHA256})


MAX_LINK_CHECKS = 24
"""Signature checks one validation may make: each candidate issuer of the right name costs one, at
every level of the path, and the peer chooses the candidates and their keys before it is authenticated."""
MAX_RSA_EXPONENT_BITS = 32
"""A peer-sent CA's RSA public exponent, at most (Windows' own limit; everyone uses 65537): one
check with a 3072-bit exponent costs what 35 with 65537 do."""
MAX_RSA_MODULUS_BITS = 8192
"""A peer-sent CA's RSA modulus, at most (the largest CA keys in use): one check with 16384 bits
and a 32-bit exponent costs ~5 ms, 70 times one with 2048 bits; 8192 bits ~1.4 ms."""
MAX_DSA_BITS = 3072
"""A peer-sent CA's DSA p, at most (FIPS 186-4's largest; charon has no DSA): OpenSSL checks with up
to 10,000 bits, ~37 ms each (24 checks: ~0.9 s per IKE_AUTH)."""


class _LinkChecks:
    """Signature checks of one path, bounded (MAX_LINK_CHECKS, MAX_RSA_EXPONENT_BITS, MAX_RSA_MODULUS_BITS,
    MAX_DSA_BITS)."""

    def __init__(self, trusted: Sequence[x509.Certificate]) -> None:
        self.trusted, self.count, self.problem = trusted, 0, None

    def signed(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        if self.problem:
            return False
        if issuer not in self.trusted:
            try:
                key = issuer.public_key()
            except (ValueError, UnsupportedAlgorithm):
                return False
            if isinstance(key, rsa.RSAPublicKey) and key.public_numbers().e.bit_length() > MAX_RSA_EXPONENT_BITS:
                self.problem = (f"intermediate CA {describe(issuer)} has an RSA public exponent of "
                                f"{key.public_numbers().e.bit_length()} bits; at most {MAX_RSA_EXPONENT_BITS} are accepted")
                return False
            if isinstance(key, rsa.RSAPublicKey) and key.key_size > MAX_RSA_MODULUS_BITS:
                self.problem = (f"intermediate CA {describe(issuer)} has an RSA modulus of {key.key_size} bits; "
                                f"at most {MAX_RSA_MODULUS_BITS} are accepted from a peer")
                return False
            if isinstance(key, dsa.DSAPublicKey) and key.key_size > MAX_DSA_BITS:
                self.problem = (f"intermediate CA {describe(issuer)} has a DSA key of {key.key_size} bits; "
                                f"at most {MAX_DSA_BITS} are accepted from a peer")
                return False
        if self.count >= MAX_LINK_CHECKS:
            self.problem = (f"no path found for {describe(cert)} within {MAX_LINK_CHECKS} signature checks "
                            "(too many candidate issuers of the same name)")
            return False
        self.count += 1
        return _signed_by(cert, issuer)


def _ca_problem(ca: x509.Certificate, below: int, what: str) -> str | None:
    """Is `ca` allowed to issue, with `below` intermediate CAs between it and the end entity?"""
    bc = _ext(ca, x509.BasicConstraints)
    if bc is None or not bc.ca:
        return f"{what} {describe(ca)} is not a CA certificate (basicConstraints CA:TRUE missing)"
    ku = _ext(ca, x509.KeyUsage)
    if ku is not None and not ku.key_cert_sign:
        return f"{what} {describe(ca)} may not sign certificates (keyUsage lacks keyCertSign)"
    if bc.path_length is not None and below > bc.path_length:
        return f"{what} {describe(ca)} allows {bc.path_length} CA(s) below it, the path has {below}"
    return None


def validate_chain(
    end_cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trusted_cas: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    now: datetime,
    *,
    revocation: Revocation = "relaxed",
) -> ValidationResult:
    """Validate a peer's end certificate (see the module doc). A naive `now` is UTC."""
    now = _utc(now)
    if not trusted_cas:
        return ValidationResult(False, f"no CA certificate is configured to check {describe(end_cert)}")

    if len(intermediates) > MAX_INTERMEDIATES:
        return ValidationResult(False, f"{len(intermediates)} intermediate certificates came with the end certificate, "
                                f"more than the {MAX_INTERMEDIATES} we look at")
    for cert in (end_cert, *intermediates):
        problem = unreadable(cert)
        if problem:
            return ValidationResult(False, problem)
        if _algorithms_disagree(cert):
            return ValidationResult(False, f"certificate {describe(cert)} is malformed: its signature algorithms "
                                    "do not agree (the one inside the signed part is another)")
    problem = _dates_problem(end_cert, now, "certificate") or _critical_problem(end_cert, "certificate")
    if problem:
        return ValidationResult(False, problem)
    ku = _ext(end_cert, x509.KeyUsage)
    if ku is not None and not (ku.digital_signature or ku.content_commitment):  # RFC 4945 §5.1.3.2, as charon
        return ValidationResult(False, f"certificate {describe(end_cert)} may not sign (its keyUsage has neither "
                                "digitalSignature nor nonRepudiation)")

    chain = [end_cert]
    if any(end_cert == t for t in trusted_cas):  # the peer's own certificate is pinned as trusted
        # its own policies are valid (charon: the chain is the certificate itself), for remote.cert_policy
        problem, policies = policies_of_path(chain)
        if problem:
            return ValidationResult(False, problem)
        return ValidationResult(True, f"certificate {describe(end_cert)} is itself trusted", tuple(chain),
                                policies=policies)

    current, anchored, budget = end_cert, False, _LinkChecks(trusted_cas)
    normed: dict[int, tuple[tuple, tuple]] = {}

    def names(c: x509.Certificate) -> tuple[tuple, tuple]:
        # (subject, issuer) normalised once per validation, not per candidate per level: the peer's
        # names can fill its message, and are read before it is authenticated
        got = normed.get(id(c))
        if got is None:
            got = normed[id(c)] = (_norm_name(c.subject), _norm_name(c.issuer))
        return got

    while len(chain) <= MAX_CHAIN_DEPTH:
        # CA certificates already between this issuer and the end entity; a self-issued one (a CA's
        # self-signed copy sent beside its cross-certificate) is not counted (RFC 5280 §6.1.4 (l))
        below = sum(1 for c in chain[1:] if names(c)[0] != names(c)[1])
        issuer_name = names(current)[1]
        named = [c for c in (*trusted_cas, *intermediates) if names(c)[0] == issuer_name and c not in chain]
        # a CA renewed with the same name and key: the current one first, whatever the file's order
        named.sort(key=lambda c: not c.not_valid_before_utc <= now <= c.not_valid_after_utc)
        issuer = next((c for c in named if c in trusted_cas and budget.signed(current, c)), None)
        if issuer is None:
            issuer = next((c for c in named if c not in trusted_cas and budget.signed(current, c)), None)
        if issuer is None:
            what = "certificate" if current is end_cert else "intermediate CA"
            if budget.problem:
                return ValidationResult(False, budget.problem)
            weak = _REFUSED_SIGNATURES.get(current.signature_algorithm_oid.dotted_string)
            if named and weak:  # cryptography cannot verify these: say so rather than "does not verify"
                return ValidationResult(False, f"{what} {describe(current)} is signed with {weak}, which we do not accept")
            if named:
                return ValidationResult(
                    False,
                    f"the signature of {what} {describe(current)} does not verify with the key of "
                    f'"{shown_name(current.issuer)}"',
                )
            return ValidationResult(
                False,
                f'{what} {describe(current)} was issued by "{shown_name(current.issuer)}", '
                "which is not a trusted CA" + ("" if current is end_cert else " or a sent intermediate"),
            )
        role = "CA" if issuer in trusted_cas else "intermediate CA"
        problem = (
            _dates_problem(issuer, now, role) or _ca_problem(issuer, below, role) or _critical_problem(issuer, role)
        )
        if problem:
            return ValidationResult(False, problem)
        chain.append(issuer)
        if issuer in trusted_cas:
            anchored = True
            break
        current = issuer
    if not anchored:
        return ValidationResult(False, f"no path from {describe(end_cert)} to a trusted CA within {MAX_CHAIN_DEPTH} certificates")

    problem = name_constraints_problem(chain)
    if problem:
        return ValidationResult(False, problem)
    problem, policies = policies_of_path(chain)
    if problem:
        return ValidationResult(False, problem)

    warnings: list[str] = []
    wanted: list[str] = []
    for cert, issuer in zip(chain, chain[1:]):
        problem, revoked = _revocation_problem(cert, issuer, crls, now, revocation, warnings, wanted)
        if problem:
            return ValidationResult(False, problem, (), tuple(warnings), tuple(wanted), policies=policies,
                                    needs_crl=not revoked)
    anchor = format_name(chain[-1].subject)
    return ValidationResult(True, f'certificate {describe(end_cert)} is valid, issued under "{anchor}"', tuple(chain),
                            tuple(warnings), tuple(wanted), policies=policies)


