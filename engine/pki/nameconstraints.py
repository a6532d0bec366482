"""Name constraints (RFC 5280 §4.2.1.10) on a validated path, as strongSwan's
constraints plugin checks them (plugins/constraints/constraints_validator.c).

A CA's permitted and excluded subtrees apply to every certificate below it on
the path, the trust anchor's included (strongSwan starts there too). Names
checked: the subject DN when not empty, and the subjectAltName dNSName,
rfc822Name, iPAddress and directoryName entries; a type a CA does not
constrain is free. Each CA's constraints are checked on their own, which is
RFC 5280's intersection of permitted and union of excluded subtrees. A
constraint of another type (URI, otherName...) fails the path: we cannot
honour it, and the extension is critical by RFC 5280 (strongSwan refuses it
too).

Matching is strongSwan's: ``example.com`` permits the host and its
subdomains (not ``badexample.com``), ``.example.com`` only subdomains; an
e-mail constraint is a mailbox, a host (``example.com``: ``u@example.com``) or
a domain (``.example.com``); a DN constraint is a prefix of RDNs. Names are
compared as identity matching compares them (case folded, a trailing dot
dropped), and e-mail constraints also hold for the subject's emailAddress
attributes (RFC 5280 §4.2.1.10; strongSwan skips those).
"""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID

from .certs import describe
from .dn import Dn

_CHECKED = (x509.DNSName, x509.RFC822Name, x509.IPAddress, x509.DirectoryName)


def _fold(text: str) -> str:
    # as identity matching reads a SAN (certs._name_matches): a name the peer can claim through a
    # trailing dot or a non-ASCII letter that casefolds to ASCII must meet the constraint it is
    return text.rstrip(".").casefold()


def _dns_matches(constraint: str, name: str) -> bool:
    c, n = _fold(constraint), _fold(name)
    if not c or not n.endswith(c):
        return False
    rest = n[: len(n) - len(c)]
    return not rest or c.startswith(".") or rest.endswith(".")


def _email_matches(constraint: str, name: str) -> bool:
    c, n = _fold(constraint), _fold(name)
    if "@" in c:
        return c == n
    if not c or not n.endswith(c):
        return False
    rest = n[: len(n) - len(c)]
    return not rest or c.startswith(".") or rest.endswith("@")


def _rdns(name: x509.Name) -> list[frozenset]:
    return [frozenset((oid, " ".join(v.split()).casefold() if v is not None else None) for oid, v in rdn)
            for rdn in Dn.from_name(name).rdns]


def _dn_matches(constraint: x509.Name, name: x509.Name) -> bool:
    c, n = _rdns(constraint), _rdns(name)
    return len(c) <= len(n) and n[: len(c)] == c


def _matches(constraint: x509.GeneralName, name: x509.GeneralName) -> bool:
    if isinstance(constraint, x509.DNSName):
        return _dns_matches(constraint.value, name.value)
    if isinstance(constraint, x509.RFC822Name):
        return _email_matches(constraint.value, name.value)
    if isinstance(constraint, x509.IPAddress):
        net, addr = constraint.value, name.value
        if isinstance(net, (ipaddress.IPv4Network, ipaddress.IPv6Network)) \
                and isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return addr.version == net.version and addr in net
        return False
    return _dn_matches(constraint.value, name.value)


def _names(cert: x509.Certificate) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    if len(cert.subject) > 0:
        out.append(x509.DirectoryName(cert.subject))
    # RFC 5280 §4.2.1.10: e-mail constraints apply to the subject's emailAddress too; with a SAN or
    # not, as OpenSSL (v3_ncons.c): a DN identity holds it whatever the SAN has
    out += [x509.RFC822Name(v) for v in (a.value for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS))
            if isinstance(v, str)]
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return out
    return out + [n for n in sans if isinstance(n, _CHECKED)]


def _name_text(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DirectoryName):
        return f'"{Dn.from_name(name.value).text()}"'
    return str(name.value)


def _problem(nc: x509.NameConstraints, cert: x509.Certificate) -> str | None:
    permitted = list(nc.permitted_subtrees or ())
    excluded = list(nc.excluded_subtrees or ())
    for c in permitted + excluded:
        if not isinstance(c, _CHECKED):
            return f"it has a name constraint of a type we cannot check ({type(c).__name__})"
    for name in _names(cert):
        of_type = [c for c in permitted if type(c) is type(name)]
        if of_type and not any(_matches(c, name) for c in of_type):
            return f"{_name_text(name)} is outside its permitted names"
        if any(_matches(c, name) for c in excluded if type(c) is type(name)):
            return f"{_name_text(name)} is among its excluded names"
    return None


def name_constraints_problem(chain: tuple[x509.Certificate, ...] | list[x509.Certificate]) -> str | None:
    """Why the path (end certificate first, trust anchor last) breaks a CA's name constraints, or None."""
    for k in range(1, len(chain)):
        ca = chain[k]
        try:
            nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        for cert in chain[:k]:
            why = _problem(nc, cert)
            if why:
                return f"certificate {describe(cert)} breaks the name constraints of CA {describe(ca)}: {why}"
    return None
