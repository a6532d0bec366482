r"""Distinguished names: the one place DNs are read, printed, encoded and compared.

Policy identities (engine.policy.identity), ID_DER_ASN1_DN payloads
(engine.ike.identity), the Negotiations screen (engine.wire.summary),
certificate identities (engine.pki.certs) and the CA (engine.pki.ca) all go
through :class:`Dn`, so a DN printed anywhere reads back to the same DN.

Text, as strongSwan writes it with RFC 4514's escapes:

* ``C=CH, O=strongSwan, CN=moon.strongswan.org``: RDNs in the order of the DER
  encoding (most general first, like strongSwan and OpenSSL's ``-subj``; RFC
  4514 strings run the other way), separated by ``,`` and optional blanks.
  OpenSSL's ``/C=CH/O=strongSwan/CN=moon`` is read too.
* Attribute names are strongSwan's (``x501rdns`` in utils/identification.c,
  any case), a few RFC 4519 long names, or a dotted OID. They print as
  strongSwan prints them (asn1/oid.txt): ``E`` for emailAddress, ``SN`` for
  surname and ``serialNumber`` for serialNumber (strongSwan >= 5.9; ``S`` is
  gone), ``T`` for title, other OIDs dotted.
* A value may be quoted (``O="Acme, Inc"``) or escaped (``O=Acme\, Inc``,
  ``CN=\C3\A9``: UTF-8 bytes in hex). Blanks around a value are dropped unless
  escaped or quoted; ``""`` is an empty value, a bare ``CN=`` an error.
* ``+`` joins the attributes of a multi-valued RDN (``CN=a+UID=b``) when a
  ``NAME=`` follows it; elsewhere it belongs to the value (``OU=R+D``), as in
  strongSwan.
* A bare ``*`` value is a wildcard (swanctl's ``CN=*``); a literal star is
  written ``\2A`` or ``"*"``.

Printing escapes RFC 4514's specials, blanks at either end of a value (as
``\20``), a value that is a lone ``*``, and whatever is not printable (as ``\XX``, so a peer cannot put control
characters on the screen). What is printed reads back to the same DN: a DN
copied from the Negotiations screen into ``remote.id`` matches that peer.

Matching follows strongSwan's default (``compare_dn``): the same RDNs in the
same order with the same attribute types; values equal ignoring case and runs
of blanks (RFC 5280 §7.1); a wildcard matches any value of its type. The
attributes of one multi-valued RDN match in any order (DER sorts them).

DER: we encode and decode Names ourselves because cryptography has no public
DER Name reader, and its ``NameAttribute`` refuses values real peers send
(``C=CHE``, a CN over 64 characters). The string types are the ones
``x509.Name`` picks (PrintableString for C, serialNumber and dnQualifier,
IA5String for E and DC, UTF8String otherwise; UTF8String where the value does
not fit the narrower type), so for every name cryptography accepts our bytes
are ``x509.Name.public_bytes()``. Certificates and the CA use ``x509.Name``
(:meth:`Dn.from_name`, :meth:`Dn.to_name`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.name import _ASN1Type  # the string types NameAttribute takes
from cryptography.x509.oid import ObjectIdentifier

from .errors import PkiError

_EMAIL = "1.2.840.113549.1.9.1"
_EMPLOYEE_NUMBER = "2.16.840.1.113730.3.1.3"
_UNSTRUCTURED_NAME = "1.2.840.113549.1.9.2"
_UNSTRUCTURED_ADDRESS = "1.2.840.113549.1.9.8"

# OID -> the name strongSwan prints (asn1/oid.txt); each is also read back.
_PRINTED: dict[str, str] = {
    "0.2.262.1.10.7.20": "ND",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.25": "DC",
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "STREET",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "T",
    "2.5.4.13": "D",
    "2.5.4.16": "postalAddress",
    "2.5.4.17": "postalCode",
    "2.5.4.41": "N",
    "2.5.4.42": "G",
    "2.5.4.43": "I",
    "2.5.4.45": "ID",
    "2.5.4.46": "dnQualifier",
    "2.5.4.54": "dmdName",
    "2.5.4.65": "pseudonym",
    "2.5.4.72": "role",
    "2.5.4.97": "organizationIdentifier",
    _EMAIL: "E",
    _UNSTRUCTURED_NAME: "unstructuredName",
    _UNSTRUCTURED_ADDRESS: "unstructuredAddress",
    "1.3.6.1.4.1.1201.1.1.2.2.75": "TCGID",
    _EMPLOYEE_NUMBER: "employeeNumber",
}
# Other spellings: strongSwan's x501rdns aliases, then RFC 4519 / OpenSSL long names.
_ALIASES: dict[str, str] = {
    "Email": _EMAIL, "emailAddress": _EMAIL, "EN": _EMPLOYEE_NUMBER, "UN": _UNSTRUCTURED_NAME,
    "UA": _UNSTRUCTURED_ADDRESS,
    "commonName": "2.5.4.3", "surname": "2.5.4.4", "countryName": "2.5.4.6", "localityName": "2.5.4.7",
    "stateOrProvinceName": "2.5.4.8", "street": "2.5.4.9", "streetAddress": "2.5.4.9", "organizationName": "2.5.4.10",
    "organizationalUnitName": "2.5.4.11", "title": "2.5.4.12", "description": "2.5.4.13", "name": "2.5.4.41",
    "givenName": "2.5.4.42", "GN": "2.5.4.42", "initials": "2.5.4.43", "uniqueIdentifier": "2.5.4.45",
    "domainComponent": "0.9.2342.19200300.100.1.25", "userId": "0.9.2342.19200300.100.1.1",
}
_BY_NAME = {n.casefold(): oid for oid, n in _PRINTED.items()} | {n.casefold(): oid for n, oid in _ALIASES.items()}

_JURISDICTION_COUNTRY = "1.3.6.1.4.1.311.60.2.1.3"
# String types x509.Name gives these attributes (cryptography's _NAMEOID_DEFAULT_TYPE).
_PRINTABLE_TYPED = frozenset({"2.5.4.6", _JURISDICTION_COUNTRY, "2.5.4.5", "2.5.4.46"})
_IA5_TYPED = frozenset({_EMAIL, "0.9.2342.19200300.100.1.25"})
_PRINTABLE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")
_UTF8, _PRINTABLE, _IA5 = 0x0C, 0x13, 0x16
_ASN1_TYPES = {_UTF8: _ASN1Type.UTF8String, _PRINTABLE: _ASN1Type.PrintableString, _IA5: _ASN1Type.IA5String}
_STRING_CODECS = {
    0x0C: ("utf-8",),  # UTF8String
    0x13: ("ascii", "utf-8"),  # PrintableString; sloppy encoders put UTF-8 in the narrow types
    0x16: ("ascii", "utf-8"),  # IA5String
    0x12: ("ascii",),  # NumericString
    0x1A: ("ascii", "utf-8"),  # VisibleString
    0x14: ("latin-1",),  # T61String, read as Latin-1 like most implementations
    0x1E: ("utf-16-be",),  # BMPString
    0x1C: ("utf-32-be",),  # UniversalString
}

_SPECIALS = frozenset('\\,+";<>')  # RFC 4514 §2.4, always escaped when printed
_NAME_AHEAD = re.compile(r"\s*(?:[A-Za-z][A-Za-z0-9-]*|(?:OID\.)?[0-9]+(?:\.[0-9]+)+)\s*=", re.IGNORECASE)
_DOTTED = re.compile(r"^(?:OID\.)?([0-2])\.([0-9]+)((?:\.[0-9]+)*)$", re.IGNORECASE)
_HEX = frozenset("0123456789abcdefABCDEF")
_CACHED_TEXT_LEN = 256  # longer texts (peer-made, unusual) are parsed every time, so the cache stays small

Attribute = tuple[str, "str | None"]
"""(dotted OID, value); a value of None is a wildcard (only in configured patterns)."""
Rdn = tuple[str, str]
"""One attribute as (dotted OID, value), for callers that ignore RDN grouping and wildcards."""


class DnError(PkiError, ValueError):
    """DN text or DER that cannot be read; the message names the DN and what is wrong."""


@dataclass(frozen=True)
class Dn:
    """A distinguished name: RDNs in DER order, each one or more attributes."""

    rdns: tuple[tuple[Attribute, ...], ...]
    """RDNs in DER order; an RDN holds several attributes only when multi-valued."""

    # -- reading -------------------------------------------------------------------
    @classmethod
    def from_text(cls, text: str) -> Dn:
        """Read DN text (see the module doc); raises :class:`DnError`."""
        if not isinstance(text, str):
            raise DnError(f"a distinguished name is text, not {type(text).__name__}")
        return _parse_cached(text) if len(text) <= _CACHED_TEXT_LEN else _parse(text)

    @classmethod
    def from_der(cls, der: bytes) -> Dn:
        """Read a DER Name (an ID_DER_ASN1_DN payload's data); raises :class:`DnError`."""
        return _decode(der)

    @classmethod
    def from_name(cls, name: x509.Name) -> Dn:
        """A certificate's subject or issuer."""
        return cls(tuple(tuple((a.oid.dotted_string, a.value if isinstance(a.value, str) else a.value.hex())
                               for a in rdn) for rdn in name.rdns))

    # -- writing -------------------------------------------------------------------
    def text(self) -> str:
        """``C=CH, O=Acme\\, Inc, CN=gw``: reads back to this DN with :meth:`from_text`."""
        return ", ".join("+".join(f"{_PRINTED.get(oid, oid)}={_escape(v)}" for oid, v in rdn) for rdn in self.rdns)

    def der(self) -> bytes:
        """The DER Name; a wildcard is sent as the literal ``*`` (as strongSwan does)."""
        rdns = b"".join(_tlv(0x31, b"".join(sorted(_encode_attribute(oid, v) for oid, v in rdn))) for rdn in self.rdns)
        return _tlv(0x30, rdns)

    def to_name(self) -> x509.Name:
        """A cryptography Name for a certificate we issue: cryptography's checks apply (C is two letters...)."""
        rdns = []
        for rdn in self.rdns:
            attrs = []
            for oid, value in rdn:
                if value is None:
                    raise DnError(f"distinguished name {self.text()!r}: a wildcard cannot be part of a certificate name")
                label = _PRINTED.get(oid, oid)
                if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                    # openssl shows \00, strongSwan '?': a name that reads differently in every tool
                    raise DnError(f"distinguished name {self.text()!r}: {label} holds a control character")
                tag = _string_tag(oid, value)
                if oid in _PRINTABLE_TYPED and tag != _PRINTABLE and oid not in ("2.5.4.5", "2.5.4.46"):
                    raise DnError(f"distinguished name {self.text()!r}: {label} must be a two-letter country code")
                try:
                    # the string type der() uses, so a narrow type never holds what it cannot (openssl,
                    # charon and cryptography's own reader would read or refuse it differently)
                    attrs.append(x509.NameAttribute(ObjectIdentifier(oid), value, _ASN1_TYPES[tag]))
                except ValueError as exc:
                    raise DnError(f"distinguished name {self.text()!r}: {_PRINTED.get(oid, oid)}={value}: {exc}") from None
            try:
                rdns.append(x509.RelativeDistinguishedName(attrs))
            except ValueError as exc:
                raise DnError(f"distinguished name {self.text()!r}: {exc}") from None
        return x509.Name(rdns)

    # -- comparing ------------------------------------------------------------------
    def attributes(self) -> tuple[Attribute, ...]:
        """Every attribute in order, RDN grouping dropped."""
        return tuple(a for rdn in self.rdns for a in rdn)

    @property
    def has_wildcards(self) -> bool:
        return any(v is None for _, v in self.attributes())

    def match(self, other: Dn) -> int | None:
        """Match ``other`` against this DN as a pattern: None if it does not
        match, else how many wildcards it took (0: a perfect match)."""
        if len(self.rdns) != len(other.rdns):
            return None
        wildcards = 0
        for want, have in zip(self.rdns, other.rdns):
            used = _match_rdn(want, have)
            if used is None:
                return None
            wildcards += used
        return wildcards

    def __str__(self) -> str:
        return self.text()


def _norm(value: str) -> str:
    return " ".join(value.split()).casefold()


def _match_rdn(want: tuple[Attribute, ...], have: tuple[Attribute, ...]) -> int | None:
    if len(want) != len(have):
        return None
    left = [(oid, _norm(v) if v is not None else None) for oid, v in have]
    wildcards = 0
    # Exact values first, then wildcards, so a wildcard never takes an attribute an exact value needs.
    for oid, value in sorted(want, key=lambda a: a[1] is None):
        if value is None:
            i = next((i for i, (o, _) in enumerate(left) if o == oid), None)
            wildcards += 1
        else:
            i = next((i for i, a in enumerate(left) if a == (oid, _norm(value))), None)
        if i is None:
            return None
        del left[i]
    return wildcards


# --- text ------------------------------------------------------------------------------


def _escape(value: str | None) -> str:
    if value is None:
        return "*"
    if value == "":
        return '""'
    if value == "*":
        return r"\2A"
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        if ch == " " and (i == 0 or i == last):
            out.append(r"\20")  # not "\ ": callers strip the text, and the escape must survive that
        elif ch in _SPECIALS or (i == 0 and ch == "#"):
            out.append("\\" + ch)
        elif not ch.isprintable():
            out.append("".join(f"\\{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str) -> Dn:
    # Policy patterns and peer DNs are compared again and again; a Dn is immutable, so sharing is safe.
    return _parse(text)


def _parse(text: str) -> Dn:
    s = text.strip()
    if not s:
        raise DnError("empty distinguished name")
    start = len(text) - len(text.lstrip())
    end = start + len(s)
    if end < len(text) and (len(s) - len(s.rstrip("\\"))) % 2:
        s += text[end]  # "CN=x\ ": RFC 4514's escaped trailing blank is part of the value
    reader = _Reader(text, s, "/" if s.startswith("/") else ",")
    return reader.read()


class _Reader:
    """One pass over DN text; errors name the whole text and the part at fault."""

    def __init__(self, original: str, s: str, sep: str) -> None:
        self.original, self.s, self.sep = original, s, sep
        self.pos = 1 if sep == "/" else 0

    def error(self, what: str) -> DnError:
        return DnError(f"distinguished name {self.original!r}: {what}")

    def read(self) -> Dn:
        rdns: list[tuple[Attribute, ...]] = []
        rdn: list[Attribute] = []
        while True:
            oid, label = self.attribute_type()
            rdn.append((oid, self.value(label)))
            if self.pos >= len(self.s):
                break
            if self.s[self.pos] == "+":
                self.pos += 1
                continue
            self.pos += 1  # the RDN separator
            rdns.append(tuple(rdn))
            rdn = []
        rdns.append(tuple(rdn))
        for r in rdns:
            if len({oid for oid, _ in r}) != len(r):
                raise self.error("an attribute appears twice in one multi-valued RDN")
        return Dn(tuple(rdns))

    def attribute_type(self) -> tuple[str, str]:
        s, start = self.s, self.pos
        end = start
        while end < len(s) and s[end] != "=" and s[end] != self.sep:
            end += 1
        label = s[start:end].strip()
        if not label and (end >= len(s) or s[end] != "="):
            raise self.error("an empty RDN (two separators in a row, or one at the end)")
        if end >= len(s) or s[end] != "=":
            hint = ""
            if self.sep == "," and start > 0:
                hint = ' (a comma inside a value must be quoted or escaped: O="Acme, Inc" or O=Acme\\, Inc)'
            raise self.error(f"{label!r} is not NAME=value{hint}")
        if not label:
            raise self.error(f"no attribute name before '=' at position {end + 1}")
        self.pos = end + 1
        return _attribute_oid(label, self.error), label

    def value(self, label: str) -> str | None:
        s = self.s
        while self.pos < len(s) and s[self.pos] == " ":
            self.pos += 1
        if self.pos < len(s) and s[self.pos] == '"':
            return self.quoted(label)
        chars: list[str] = []
        kept = 0  # length of chars up to the last escaped character: trailing blanks after it are kept
        while self.pos < len(s):
            ch = s[self.pos]
            if ch == "\\":
                chars.append(self.escape())
                kept = len(chars)
                continue
            if ch == self.sep or (ch == "+" and _NAME_AHEAD.match(s, self.pos + 1)):
                break
            chars.append(ch)
            self.pos += 1
        while len(chars) > kept and chars[-1] == " ":
            chars.pop()
        value = "".join(chars)
        if not value:
            raise self.error(f"{label} has an empty value (write {label}=\"\" if it really is empty)")
        if value == "*" and kept == 0:
            return None
        return value

    def quoted(self, label: str) -> str:
        s = self.s
        self.pos += 1
        chars: list[str] = []
        while True:
            if self.pos >= len(s):
                raise self.error(f"unbalanced double quote in the value of {label}")
            ch = s[self.pos]
            if ch == '"':
                self.pos += 1
                break
            if ch == "\\":
                chars.append(self.escape())
            else:
                chars.append(ch)
                self.pos += 1
        while self.pos < len(s) and s[self.pos] == " ":
            self.pos += 1
        if self.pos < len(s) and s[self.pos] != self.sep and s[self.pos] != "+":
            raise self.error(f"text after the closing quote of {label}'s value")
        return "".join(chars)

    def escape(self) -> str:
        """A backslash sequence at pos: ``\\,`` or a run of ``\\XX`` UTF-8 bytes."""
        s = self.s
        if self.pos + 1 >= len(s):
            raise self.error("ends with a lone backslash")
        if s[self.pos + 1] in _HEX and self.pos + 2 < len(s) and s[self.pos + 2] in _HEX:
            raw = bytearray()
            while (self.pos + 2 < len(s) and s[self.pos] == "\\" and s[self.pos + 1] in _HEX
                   and s[self.pos + 2] in _HEX):
                raw.append(int(s[self.pos + 1 : self.pos + 3], 16))
                self.pos += 3
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                shown = "".join(f"\\{b:02X}" for b in raw)
                raise self.error(f"{shown} is not UTF-8") from None
        self.pos += 2
        return s[self.pos - 1]


def _attribute_oid(label: str, error) -> str:
    oid = _BY_NAME.get(label.casefold())
    if oid is not None:
        return oid
    m = _DOTTED.match(label)
    if m and (m.group(1) == "2" or int(m.group(2)) < 40):
        return label[4:] if label[:4].casefold() == "oid." else label
    raise error(f"unknown attribute {label!r} (use C, ST, L, O, OU, CN, SN, serialNumber, E, DC, UID, ... "
                "or a dotted OID)")


# --- DER -------------------------------------------------------------------------------


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + body


def _oid_bytes(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def _string_tag(oid: str, text: str) -> int:
    """The attribute's usual string type when it can hold `text`, else UTF8String."""
    if oid in _PRINTABLE_TYPED and all(c in _PRINTABLE_CHARS for c in text):
        return _PRINTABLE
    if oid in _IA5_TYPED and text.isascii():
        return _IA5
    return _UTF8


def _encode_attribute(oid: str, value: str | None) -> bytes:
    text = "*" if value is None else value
    tag = _string_tag(oid, text)
    return _tlv(0x30, _tlv(0x06, _oid_bytes(oid)) + _tlv(tag, text.encode("utf-8")))


def _read_tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    if pos + 2 > end:
        raise DnError("DN: truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 3 or pos + n > end:
            raise DnError("DN: bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > end:
        raise DnError("DN: DER element runs past its container")
    return tag, pos, pos + length


def _oid_text(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise DnError("DN: malformed OBJECT IDENTIFIER")
    arcs, value = [], 0
    for b in body:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _string(tag: int, raw: bytes) -> str:
    codecs = _STRING_CODECS.get(tag)
    if codecs is None:
        raise DnError(f"DN: attribute value of ASN.1 type {tag:#04x} is not a string")
    for codec in codecs:
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            pass
    raise DnError("DN: attribute value is not valid text")


def _decode(der: bytes) -> Dn:
    tag, pos, end = _read_tlv(der, 0, len(der))
    if tag != 0x30 or end != len(der):
        raise DnError("DN: not a single DER SEQUENCE")
    rdns: list[tuple[Attribute, ...]] = []
    while pos < end:
        tag, spos, send = _read_tlv(der, pos, end)
        if tag != 0x31:
            raise DnError("DN: RDN is not a SET")
        if spos == send:
            raise DnError("DN: empty RDN")
        rdn: list[Attribute] = []
        while spos < send:
            tag, apos, aend = _read_tlv(der, spos, send)
            if tag != 0x30:
                raise DnError("DN: attribute is not a SEQUENCE")
            otag, ostart, oend = _read_tlv(der, apos, aend)
            if otag != 0x06:
                raise DnError("DN: attribute type is not an OID")
            vtag, vstart, vend = _read_tlv(der, oend, aend)
            if vend != aend:
                raise DnError("DN: trailing data in an attribute")
            rdn.append((_oid_text(der[ostart:oend]), _string(vtag, der[vstart:vend])))
            spos = aend
        rdns.append(tuple(rdn))
        pos = send
    return Dn(tuple(rdns))


# --- the functions the rest of the engine calls --------------------------------------------


def parse_dn(text: str) -> list[Rdn]:
    """``O=Acme, CN=gw`` -> [(oid, value), ...], RDN grouping dropped; a wildcard reads as ``*``."""
    return [(oid, "*" if v is None else v) for oid, v in Dn.from_text(text).attributes()]


def format_name(name: x509.Name) -> str:
    """A certificate's subject or issuer as strongSwan prints it (and :func:`parse_dn` reads it)."""
    return Dn.from_name(name).text()


def name_rdns(name: x509.Name) -> list[Rdn]:
    """The attributes of a cryptography Name, in DER order."""
    return [(oid, v) for oid, v in Dn.from_name(name).attributes() if v is not None]


def dn_matches(pattern: str | Dn, subject: x509.Name | str | Dn) -> bool:
    """Does the configured DN (text or parsed, may hold wildcards) match the subject?"""
    want = Dn.from_text(pattern) if isinstance(pattern, str) else pattern
    if isinstance(subject, x509.Name):
        have = Dn.from_name(subject)
    else:
        have = Dn.from_text(subject) if isinstance(subject, str) else subject
    return want.match(have) is not None


def dn_to_name(text: str) -> x509.Name:
    """DN text -> a cryptography Name for a certificate we issue (cryptography's checks apply)."""
    return Dn.from_text(text).to_name()


def dn_to_der(text: str) -> bytes:
    """DER Name for an ID_DER_ASN1_DN identification payload."""
    return Dn.from_text(text).der()


def dn_from_der(der: bytes) -> str:
    """DER Name (from an ID payload) -> the text every screen and log shows."""
    return Dn.from_der(der).text()

