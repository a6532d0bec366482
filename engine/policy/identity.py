"""IKE identities written as in swanctl.conf, and how they match.

``parse_identity`` follows strongSwan's ``identification_create_from_string``:

* an explicit prefix wins: ``fqdn:``, ``email:``/``userfqdn:``/``rfc822:``,
  ``ipv4:``, ``ipv6:``, ``dn:``/``asn1dn:``, ``keyid:``;
* ``%any`` matches every identity (it is never sent);
* text with ``key=value`` parts is a distinguished name (``C=CH, O=Org, CN=gw``);
* an IPv4 or IPv6 literal is an address identity;
* ``@#hex`` is a key ID, ``@name`` an FQDN (without the ``@``), any other
  text with ``@`` an RFC 822 address, everything else an FQDN.

Matching (``identity_matches``) allows the wildcards strongSwan allows in
configured remote identities: ``%any``, a leading ``*`` in FQDNs and e-mail
addresses (``*.example.org``, ``*@example.org``) and ``*`` as an RDN value in
DNs (``C=CH, O=Org, CN=*``).

DNs are read, printed and compared by engine.pki.dn, the same code that reads
the peer's ID payload and prints it on the Negotiations screen; the value keeps
the text as written and is compared as a DN (``emailAddress=`` is ``E=``).
"""

from __future__ import annotations

import ipaddress
import re

from engine.pki.dn import Dn, DnError
from engine.policy.model import Identity

# Match levels, as strongSwan's id_match_t: a perfect match beats a wildcard beats %any.
MATCH_NONE, MATCH_ANY, MATCH_WILDCARD, MATCH_PERFECT = 0, 1, 2, 3

_PREFIXES = {
    "fqdn:": "fqdn", "email:": "rfc822", "userfqdn:": "rfc822", "rfc822:": "rfc822",
    "ipv4:": "ipv4", "ipv6:": "ipv6", "dn:": "dn", "asn1dn:": "dn", "keyid:": "key_id",
}
_HOSTNAME = re.compile(r"^(\*|\*?[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})?)?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})?)*\.?$")
_HEX = re.compile(r"^(0x)?[0-9A-Fa-f]+$")

ANY = Identity("any", "%any")


class IdentityError(ValueError):
    """An identity string that cannot be read; the message says why."""


def _typed(kind: str, value: str, raw: str) -> Identity:
    if not value:
        raise IdentityError(f"{raw!r}: empty identity after the type prefix")
    if kind == "ipv4" or kind == "ipv6":
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise IdentityError(f"{raw!r}: not an IPv{kind[-1]} address") from None
        if f"ipv{addr.version}" != kind:
            raise IdentityError(f"{raw!r}: not an IPv{kind[-1]} address")
        return Identity(kind, str(addr))
    if kind == "dn":
        try:
            Dn.from_text(value)
        except DnError as exc:
            raise IdentityError(str(exc)) from None
        return Identity("dn", value)
    if kind == "key_id":
        if not _HEX.match(value):
            raise IdentityError(f"{raw!r}: a key ID is written in hex")
        return Identity("key_id", value.lower().removeprefix("0x"))
    if kind == "rfc822":
        local, at, domain = value.partition("@")
        if not at or not local or not domain:
            raise IdentityError(f"{raw!r}: not an e-mail address like 'alice@example.org'")
        return Identity("rfc822", value)
    if not _HOSTNAME.match(value) or " " in value:
        raise IdentityError(f"{raw!r}: not a DNS name like 'gw.example.org'")
    return Identity("fqdn", value)


def parse_identity(text: str) -> Identity:
    """Parse swanctl identity text; raises :class:`IdentityError`."""
    if not isinstance(text, str):
        raise IdentityError(f"an identity is a string, not {type(text).__name__}")
    raw = text
    text = text.strip()
    if not text:
        raise IdentityError("empty identity")
    if text == "%any" or text == "%any6":
        return ANY
    low = text.lower()
    for prefix, kind in _PREFIXES.items():
        if low.startswith(prefix):
            return _typed(kind, text[len(prefix):].strip(), raw)
    if "=" in text:
        return _typed("dn", text, raw)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return Identity(f"ipv{addr.version}", str(addr))
    if "/" in text:
        raise IdentityError(f"{raw!r}: address ranges are not supported as identities; "
                            "use one address, a name, or %any")
    if text.startswith("@#"):
        return _typed("key_id", text[2:], raw)
    if text.startswith("@"):
        return _typed("fqdn", text[1:], raw)
    if "@" in text:
        return _typed("rfc822", text, raw)
    return _typed("fqdn", text, raw)


def identity_for_address(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> Identity:
    """The identity strongSwan uses when none is configured: the IKE address."""
    a = ipaddress.ip_address(addr)
    return Identity(f"ipv{a.version}", str(a))


def _match_text(pattern: str, value: str) -> int:
    p, v = pattern.lower(), value.lower()
    if p == v:
        return MATCH_PERFECT
    if p.startswith("*") and v.endswith(p[1:]) and len(v) > len(p) - 1:
        return MATCH_WILDCARD
    return MATCH_NONE


def match_level(pattern: Identity, other: Identity) -> int:
    """How well ``other`` matches ``pattern``: MATCH_PERFECT, MATCH_WILDCARD, MATCH_ANY or MATCH_NONE."""
    if pattern.kind == "any":
        return MATCH_PERFECT if other.kind == "any" else MATCH_ANY
    if other.kind != pattern.kind:
        return MATCH_NONE
    if pattern.kind in ("fqdn", "rfc822"):
        return _match_text(pattern.value, other.value)
    if pattern.kind in ("ipv4", "ipv6"):
        return MATCH_PERFECT if ipaddress.ip_address(pattern.value) == ipaddress.ip_address(other.value) else MATCH_NONE
    if pattern.kind == "key_id":
        return MATCH_PERFECT if pattern.value.lower() == other.value.lower() else MATCH_NONE
    try:
        wildcards = Dn.from_text(pattern.value).match(Dn.from_text(other.value))
    except DnError:
        return MATCH_NONE
    if wildcards is None:
        return MATCH_NONE
    return MATCH_PERFECT if wildcards == 0 else MATCH_WILDCARD


def identity_matches(pattern: Identity, other: Identity) -> bool:
    """Whether ``other`` (a received identity) is acceptable for ``pattern`` (a configured one)."""
    return match_level(pattern, other) > MATCH_NONE


def is_wildcard(identity: Identity) -> bool:
    """True for %any and identities containing wildcards (they match several peers)."""
    if identity.kind == "any":
        return True
    if identity.kind in ("fqdn", "rfc822"):
        return identity.value.startswith("*")
    if identity.kind == "dn":
        try:
            return Dn.from_text(identity.value).has_wildcards
        except DnError:
            return False
    return False


_KIND_PREFIX = {"fqdn": "fqdn:", "rfc822": "email:", "ipv4": "ipv4:", "ipv6": "ipv6:", "dn": "dn:", "key_id": "keyid:"}


def format_identity(identity: Identity) -> str:
    """Text that :func:`parse_identity` reads back to ``identity`` (a type prefix only when needed)."""
    if identity.kind == "any":
        return "%any"
    if identity.kind == "key_id":
        return "@#" + identity.value
    text = identity.value
    try:
        if parse_identity(text) == identity:
            return text
    except IdentityError:
        pass
    return _KIND_PREFIX[identity.kind] + text
