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
per path, no peer-sent CA with an outsized RSA exponent or modulus, CRL verdicts kept
per CRL; a certificate cryptography cannot read fails instead of raising.

Extended key usage is not required (strongSwan does not by default either).
Certificate policies are processed as strongSwan does (engine.pki.policies): the
path's policy constraints hold, and the result names the end certificate's valid
policies (remote.cert_policy).
Sans-IO apart from the file loaders: `now` is an argument.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from .certs import describe, read_credential_file, shown_name, unreadable
from .dn import format_name, name_rdns
from .errors import PkiError
from .nameconstraints import name_constraints_problem
from .policies import policies_of_path

Revocation = Literal["relaxed", "ifuri", "strict"]
MAX_CHAIN_DEPTH = 8
MAX_INTERMEDIATES = 16
"""Certificates a peer may send besides its own: each one is a candidate issuer, a signature
check, at every level of the path, and they arrive before the peer is authenticated (charon
bounds them with its 10000-byte IKE message)."""

_REASON_WORDS = {
    x509.ReasonFlags.unspecified: "unspecified",
    x509.ReasonFlags.key_compromise: "key compromise",
    x509.ReasonFlags.ca_compromise: "CA compromise",
    x509.ReasonFlags.affiliation_changed: "affiliation changed",
    x509.ReasonFlags.superseded: "superseded",
    x509.ReasonFlags.cessation_of_operation: "cessation of operation",
    x509.ReasonFlags.certificate_hold: "certificate on hold",
    x509.ReasonFlags.privilege_withdrawn: "privilege withdrawn",
    x509.ReasonFlags.aa_compromise: "AA compromise",
    x509.ReasonFlags.remove_from_crl: "removed from CRL",
}


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


def _when(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)


def _ext(cert: x509.Certificate, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _norm_name(name: x509.Name) -> tuple:
    return tuple((oid, " ".join(v.split()).casefold()) for oid, v in name_rdns(name))


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


class _LinkChecks:
    """Signature checks of one path, bounded (MAX_LINK_CHECKS, MAX_RSA_EXPONENT_BITS, MAX_RSA_MODULUS_BITS)."""

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


def _revocation_problem(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    crls: Sequence[x509.CertificateRevocationList],
    now: datetime,
    revocation: Revocation,
    warnings: list[str],
    wanted: list[str],
) -> tuple[str | None, bool]:
    """(why the certificate fails, whether it was revoked) or (None, False)."""
    issuer_name = _norm_name(issuer.subject)
    issuer_text = shown_name(issuer.subject)
    good_and_current = found = False
    refused = ""  # why a CRL of this issuer was not used, for a strict / ifuri failure
    ku = _ext(issuer, x509.KeyUsage)
    for crl in crls:
        try:
            crl_issuer = _norm_name(crl.issuer)  # read when asked: load_crls refuses an unreadable one
        except ValueError:
            warnings.append("a CRL whose issuer name cannot be read is ignored")
            continue
        if crl_issuer != issuer_name:
            continue
        if ku is not None and not ku.crl_sign:  # RFC 5280 §6.3.3 (f), charon's x509_crl.c issued_by
            refused = f'; its CRL was ignored: the keyUsage of "{issuer_text}" lacks cRLSign'
            warnings.append(f'a CRL of "{issuer_text}" is ignored: that CA\'s keyUsage lacks cRLSign, '
                            "so it may not sign CRLs")
            continue
        facts = _crl_facts(crl)
        signed = facts.signed_by(crl, issuer)
        if not signed:
            warnings.append(f'a CRL naming "{issuer_text}" as issuer is not signed by that CA; ignored')
            continue
        try:
            delta = crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator) is not None
        except x509.ExtensionNotFound:
            delta = False
        except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):  # unreadable: not a CRL to lean on
            warnings.append(f'a CRL of "{issuer_text}" has unreadable extensions; ignored')
            continue
        if delta:
            # A delta CRL lists changes since a base CRL: what it revokes counts, but alone it does not
            # say a certificate is good (charon's get_better_crl skips it when looking for the base).
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number) \
                if cert.serial_number in _crl_facts(crl).serials else None
            reason = _ext_value(entry, x509.CRLReason) if entry is not None else None
            if entry is not None and (reason is None or reason.reason != x509.ReasonFlags.remove_from_crl):
                words = _REASON_WORDS.get(reason.reason, reason.reason.value) if reason is not None \
                    else "no reason given"
                return (f"certificate {describe(cert)} was revoked on {_when(entry.revocation_date_utc)} "
                        f'({words}), according to a delta CRL of "{issuer_text}"'), True
            refused = refused or f'; a delta CRL of "{issuer_text}" does not count without a current base CRL'
            continue
        scope = _scope_problem(crl, cert)
        if scope is not None:
            # what it lists is still revoked (below), but it does not say the certificate is good
            refused = refused or f'; a CRL of "{issuer_text}" {scope}'
        else:
            found = True
            current = True
            if crl.next_update_utc is None:  # RFC 5280 §5.1.2.5 MUST; charon: stale, always
                warnings.append(f'the CRL of "{issuer_text}" has no nextUpdate, so it is never current')
                current = False
            elif now > crl.next_update_utc:
                warnings.append(f'the CRL of "{issuer_text}" expired on {_when(crl.next_update_utc)} '
                                "(a newer one is due)")
                current = False
            elif now < crl.last_update_utc:
                warnings.append(f'the CRL of "{issuer_text}" is not valid before {_when(crl.last_update_utc)}')
                current = False
            good_and_current = good_and_current or current
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number) \
            if cert.serial_number in facts.serials else None
        if entry is not None:
            reason = _ext_value(entry, x509.CRLReason)
            words = _REASON_WORDS.get(reason.reason, reason.reason.value) if reason is not None else "no reason given"
            return (
                f"certificate {describe(cert)} was revoked on {_when(entry.revocation_date_utc)} "
                f'({words}), according to the CRL of "{issuer_text}"'
            ), True
    if not good_and_current:
        wanted += [u for u in crl_uris(cert) if u not in wanted]
    if good_and_current or revocation == "relaxed":
        return None, False
    if revocation == "strict":
        return f'no valid, current CRL of "{issuer_text}" to check {describe(cert)} (revocation = strict){refused}', False
    # ifuri, as strongSwan's revocation plugin: a distribution point without a CRL is FAILED, an
    # expired CRL STALE, and ifuri takes only GOOD or SKIPPED (nothing to look up)
    if found:
        return f'the CRL of "{issuer_text}" is out of date: {describe(cert)} cannot be checked (revocation = ifuri)', False
    if _has_crl_uri(cert):
        return (f'certificate {describe(cert)} names a CRL distribution point but no valid CRL of "{issuer_text}" '
                f"is loaded (revocation = ifuri){refused}"), False
    return None, False


def _scope_problem(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> str | None:
    """Why this CRL (extensions readable) cannot say `cert` is good: RFC 5280 §5.2 (a critical
    extension we cannot process), §6.3.3 (b) and (d) (issuingDistributionPoint: a partition for
    other distribution points, CA or end-entity certificates only, some reasons only). charon
    refuses such an unknown critical extension too; it does not read issuingDistributionPoint."""
    idp = None
    for ext in crl.extensions:
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            return f"has a critical extension we cannot process ({ext.oid.dotted_string}): not used to find it good"
        if isinstance(ext.value, x509.IssuingDistributionPoint):
            idp = ext.value
    if idp is None:
        return None
    try:
        bc = _ext(cert, x509.BasicConstraints)
        cdp = _ext(cert, x509.CRLDistributionPoints)
    except ValueError:
        return "has an issuingDistributionPoint and the certificate's extensions are unreadable"
    is_ca = bc is not None and bc.ca
    if idp.only_contains_user_certs and is_ca:
        return "covers end-entity certificates only (issuingDistributionPoint)"
    if idp.only_contains_ca_certs and not is_ca:
        return "covers CA certificates only (issuingDistributionPoint)"
    if idp.only_contains_attribute_certs:
        return "covers attribute certificates only (issuingDistributionPoint)"
    if idp.only_some_reasons:
        return "covers some revocation reasons only (issuingDistributionPoint)"
    names = {n for dp in cdp or () for n in dp.full_name or ()}
    if idp.full_name and names and not names & set(idp.full_name):
        return ("is the partition of " + ", ".join(str(getattr(n, "value", n)) for n in idp.full_name)
                + ", not of the certificate's distribution point (issuingDistributionPoint)")
    return None


def _has_crl_uri(cert: x509.Certificate) -> bool:
    cdp = _ext(cert, x509.CRLDistributionPoints)
    return any(isinstance(n, x509.UniformResourceIdentifier) for dp in cdp or () for n in dp.full_name or ())


MAX_CRL_URIS = 4
"""http:// distribution points taken from one certificate (charon tries each in turn)."""
MAX_URI_LENGTH = 1024


def crl_uris(cert: x509.Certificate) -> tuple[str, ...]:
    """The http:// URIs of a certificate's CRL distribution points, the ones we can fetch
    (LDAP and the CRL issuer field are not followed), at most MAX_CRL_URIS."""
    try:
        cdp = _ext(cert, x509.CRLDistributionPoints)
    except ValueError:  # a malformed extension: nothing to fetch
        return ()
    out: list[str] = []
    for dp in cdp or ():
        for n in dp.full_name or ():
            uri = n.value if isinstance(n, x509.UniformResourceIdentifier) else ""
            if (uri.lower().startswith("http://") and len(uri) <= MAX_URI_LENGTH and uri.isascii()
                    and uri.isprintable() and " " not in uri and uri not in out):
                out.append(uri)
    return tuple(out[:MAX_CRL_URIS])


class _CrlFacts:
    """What one CRL says that costs to learn: its signature check hashes the whole CRL (~0.1 s for
    100,000 entries) and a serial lookup scans it (~15 ms). Both ran on every IKE_AUTH, before
    the peer's AUTH signature is checked: any certificate our CA issued (the gateway's own, sent
    to all) made a peer without its key cost that much per message. strongSwan caches the same
    verdicts (cert_cache)."""

    def __init__(self, crl: x509.CertificateRevocationList) -> None:
        self.crl = crl
        self._signed: dict[bytes, bool] = {}

    @functools.cached_property
    def serials(self) -> frozenset[int]:
        # read only once its signature verified: a forged CRL of 4 MB costs no work per entry
        return frozenset(entry.serial_number for entry in self.crl)

    def signed_by(self, crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
        try:
            public_key = issuer.public_key()
            # the verdict depends on the key alone (two certificates of one CA key share it)
            key = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        except (TypeError, ValueError, UnsupportedAlgorithm):
            return False
        verdict = self._signed.get(key)
        if verdict is None:
            try:
                verdict = crl.is_signature_valid(public_key)
            except (TypeError, ValueError, UnsupportedAlgorithm):
                verdict = False
            if len(self._signed) >= _CRL_MEMO_MAX:  # issuers can be a peer's intermediates: bounded
                self._signed.clear()
            self._signed[key] = verdict
        return verdict


_CRL_MEMO_MAX = 64
_crl_memo: dict[int, _CrlFacts] = {}


def _crl_facts(crl: x509.CertificateRevocationList) -> _CrlFacts:
    # Keyed by the CRL object, kept alive in the entry so its id is not reused: the facts are of these
    # very bytes. (Keyed by the signature bytes, a CRL with a genuine one's signature pasted under
    # another list, loaded later, got the genuine verdict and serials.) A reload reads new objects.
    facts = _crl_memo.get(id(crl))
    if facts is None or facts.crl is not crl:
        # Drop the facts of CRLs only this memo still holds (a fetched CRL refreshed, a reload):
        # cryptography's CRLs take no weak reference, and each can be megabytes with its serials.
        for key in [k for k, f in _crl_memo.items() if sys.getrefcount(f.crl) <= _MEMO_ONLY_REFS]:
            del _crl_memo[key]
        if len(_crl_memo) >= _CRL_MEMO_MAX:
            _crl_memo.clear()
        facts = _crl_memo[id(crl)] = _CrlFacts(crl)
    return facts


class _Probe:
    def __init__(self) -> None:
        self.crl = object()


_probe = _Probe()
_MEMO_ONLY_REFS = sys.getrefcount(_probe.crl)
"""sys.getrefcount of an object held by one attribute only, read as _crl_facts reads it (2 on 3.11:
the attribute and the argument; measured, as interpreters borrow references differently)."""
del _probe


def _ext_value(entry: x509.RevokedCertificate, cls):
    try:
        return entry.extensions.get_extension_for_class(cls).value
    # ValueError, DuplicateExtension: unreadable entry extensions (read only on a hit): revoked all the same
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        return None


# --- loading CRLs ----------------------------------------------------------------

_PEM_BEGIN, _PEM_END = b"-----BEGIN X509 CRL-----", b"-----END X509 CRL-----"


def _pem_blocks(data: bytes) -> list[bytes]:
    """The BEGIN..END X509 CRL blocks, in one pass: a regex scanned to the end from every BEGIN
    without an END (over an hour for a fetched 4 MB of them)."""
    out: list[bytes] = []
    i = 0
    while (begin := data.find(_PEM_BEGIN, i)) >= 0:
        end = data.find(_PEM_END, begin + len(_PEM_BEGIN))
        if end < 0:
            break
        i = end + len(_PEM_END)
        out.append(data[begin:i])
    return out


def load_crls(data: bytes, source: str = "CRL") -> list[x509.CertificateRevocationList]:
    """All CRLs in PEM data, or one DER CRL; one whose issuer name cannot be read is a PkiError."""
    if b"-----BEGIN" in data:
        blocks = _pem_blocks(data)
        if not blocks:
            raise PkiError(f"{source}: no PEM X509 CRL block in it")
        try:
            crls = [x509.load_pem_x509_crl(b) for b in blocks]
        except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
            raise PkiError(f"{source}: unreadable PEM CRL ({exc})") from None
    else:
        try:
            crls = [x509.load_der_x509_crl(data)]
        except (ValueError, x509.InvalidVersion):
            raise PkiError(f"{source}: neither a PEM nor a DER CRL") from None
    for crl in crls:
        try:
            # cryptography reads the issuer only when asked, and each IKE_AUTH asks (a fetched CRL comes
            # over plain http: an on-path attacker's bytes); its extensions are read after its signature
            format_name(crl.issuer)
        except ValueError as exc:
            raise PkiError(f"{source}: unreadable CRL issuer name ({exc})") from None
    return crls


def load_crl_files(paths: Sequence[str | os.PathLike]) -> list[x509.CertificateRevocationList]:
    """CRLs from files (EngineConfig.crls); a missing or unreadable file is a PkiError."""
    out: list[x509.CertificateRevocationList] = []
    for p in paths:
        out += load_crls(read_credential_file(p, "CRL"), os.fspath(p))
    return out
