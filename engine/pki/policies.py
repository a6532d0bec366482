"""Certificate policies on a validated path (RFC 5280 §4.2.1.4, §4.2.1.5, §4.2.1.11, §4.2.1.14),
as strongSwan's constraints plugin processes them (constraints_validator.c, check_policy_constraints):

- requireExplicitPolicy, inhibitPolicyMapping (policyConstraints) and inhibitAnyPolicy of every CA
  on the path are enforced, each from where it stands: a violation fails the path;
- the end certificate's policies valid under the path are those every CA above it holds, as the
  same OID, as anyPolicy or through its policyMappings (a self-signed anchor without policies is
  skipped): remote.cert_policy asks for some of them (swanctl's cert_policy).

strongSwan's reading is followed where it is laxer than RFC 5280 §6.1 (requireExplicitPolicy is
met by a path whose certificates name no policy at all): a peer charon accepts is accepted.
policyMappings is read here (cryptography does not parse it), so a critical one no longer makes
the path fail as an unknown critical extension; an unreadable one fails it.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from .certs import describe

ANY_POLICY = "2.5.29.32.0"
MAX_MAPPINGS = 8
"""Mappings followed for one policy at one CA (charon's maxmap)."""


class PolicyError(ValueError):
    """A certificate's policy extension cannot be read."""


def _ext(cert: x509.Certificate, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def cert_policies(cert: x509.Certificate) -> list[str]:
    try:
        value = _ext(cert, x509.CertificatePolicies)
    except ValueError as exc:
        raise PolicyError(f"certificate {describe(cert)} has an unreadable certificatePolicies extension ({exc})") \
            from None
    return [p.policy_identifier.dotted_string for p in value or ()]


# --- policyMappings: SEQUENCE OF SEQUENCE { issuerDomainPolicy OID, subjectDomainPolicy OID } ---------


def _tlv(data: bytes, i: int) -> tuple[int, int, int]:
    """(tag, start of the content, end of the content) of the DER element at i."""
    if i + 2 > len(data):
        raise ValueError("truncated")
    tag, n = data[i], data[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 3 or i + k > len(data):
            raise ValueError("bad length")
        n = int.from_bytes(data[i:i + k], "big")
        i += k
    if i + n > len(data):
        raise ValueError("truncated")
    return tag, i, i + n


def _oid(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise ValueError("bad OID")
    arcs, v = [], 0
    for b in body:
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(v)
            v = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))


def policy_mappings(cert: x509.Certificate) -> list[tuple[str, str]]:
    """(issuerDomainPolicy, subjectDomainPolicy) pairs of a CA certificate."""
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.POLICY_MAPPINGS)
    except x509.ExtensionNotFound:
        return []
    data = getattr(ext.value, "value", None)
    if not isinstance(data, bytes):
        return []
    try:
        tag, i, end = _tlv(data, 0)
        if tag != 0x30 or end != len(data):
            raise ValueError("not a SEQUENCE")
        out = []
        while i < end:
            tag, j, k = _tlv(data, i)
            if tag != 0x30:
                raise ValueError("not a SEQUENCE")
            t1, a1, b1 = _tlv(data, j)
            t2, a2, b2 = _tlv(data, b1)
            if t1 != 0x06 or t2 != 0x06 or b2 != k:
                raise ValueError("not two OIDs")
            out.append((_oid(data[a1:b1]), _oid(data[a2:b2])))
            i = k
        return out
    except ValueError as exc:
        raise PolicyError(f"CA certificate {describe(cert)} has an unreadable policyMappings extension ({exc})") \
            from None


# --- the checks (charon's, in its order) ------------------------------------------------------------


def _has_policy(issuer: x509.Certificate, oid: str) -> bool:
    pols = cert_policies(issuer)
    return oid in pols or ANY_POLICY in pols or any(subject == oid for _, subject in policy_mappings(issuer))


def _link_problem(subject: x509.Certificate, issuer: x509.Certificate) -> str | None:
    for issuer_oid, _ in policy_mappings(subject):
        if not _has_policy(issuer, issuer_oid):
            return f"CA {describe(subject)} maps policy {issuer_oid}, which its issuer {describe(issuer)} does not hold"
    for oid in cert_policies(subject):
        if not _has_policy(issuer, oid):
            return f"policy {oid} of {describe(subject)} is not held by its issuer {describe(issuer)}"
    return None


def _constraint(cert: x509.Certificate, which: str) -> int | None:
    if which == "inhibit_any":
        v = _ext(cert, x509.InhibitAnyPolicy)
        return None if v is None else v.skip_certs
    v = _ext(cert, x509.PolicyConstraints)
    return None if v is None else getattr(v, which)


def _valid_under(cas: Sequence[x509.Certificate], oid: str) -> bool:
    for ca in cas:
        for _ in range(MAX_MAPPINGS):
            pols = cert_policies(ca)
            if oid in pols or ANY_POLICY in pols:
                break
            mapped = next((i for i, s in policy_mappings(ca) if s == oid), None)
            if mapped is None:
                return False
            oid = mapped
        else:
            return False
    return True


def policies_of_path(chain: Sequence[x509.Certificate]) -> tuple[str | None, frozenset[str]]:
    """(why the path fails its policy constraints, or None; the end certificate's policies valid
    under it). `chain` is the validated path: end certificate first, trust anchor last."""
    try:
        return _policies_of_path(chain)
    except PolicyError as exc:
        return str(exc), frozenset()
    except ValueError as exc:  # a malformed policyConstraints / inhibitAnyPolicy
        return f"a certificate on the path has an unreadable policy extension ({exc})", frozenset()


def _policies_of_path(chain: Sequence[x509.Certificate]) -> tuple[str | None, frozenset[str]]:
    for cert in chain:  # an unreadable extension fails the path wherever it is, used or not
        cert_policies(cert)
        policy_mappings(cert)
    subject, cas = chain[0], list(chain[1:])
    if not cas:
        return None, frozenset(cert_policies(subject))  # a pinned certificate: nothing above it
    # requireExplicitPolicy: the links below, from the end certificate up, must be consistent
    for pos, ca in enumerate(cas):
        expl = _constraint(ca, "require_explicit_policy")
        if expl is not None:
            links = list(zip([subject, *cas], cas))[:max(pos - expl, 0)]
            for sub, iss in links:
                problem = _link_problem(sub, iss)
                if problem:
                    return (f"{problem}, and {describe(ca)} requires explicit policies (requireExplicitPolicy "
                            f"{expl})"), frozenset()
    whole = [subject, *cas]
    for pos, cert in enumerate(whole):
        inh = _constraint(cert, "inhibit_policy_mapping")
        if inh is not None:
            for below in whole[:max(pos - inh, 0)]:
                if policy_mappings(below):
                    return (f"CA {describe(below)} maps policies, but {describe(cert)} inhibits policy mapping "
                            f"(inhibitPolicyMapping {inh})"), frozenset()
        inh = _constraint(cert, "inhibit_any")
        if inh is not None:
            for below in whole[:max(pos - inh, 0)]:
                if ANY_POLICY in cert_policies(below):
                    return (f"{describe(below)} holds anyPolicy, but {describe(cert)} inhibits it "
                            f"(inhibitAnyPolicy {inh})"), frozenset()
    anchor = cas[-1]
    if anchor.subject == anchor.issuer and not cert_policies(anchor):  # RFC 5280 §6.1: not part of the path
        cas = cas[:-1]
    return None, frozenset(oid for oid in cert_policies(subject) if _valid_under(cas, oid))
