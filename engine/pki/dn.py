"""Distinguished names the way strongSwan writes and compares them.

Text form: ``C=CH, O=Acme, CN=gw.example`` in the order of the DER encoding
(most general first, the opposite of RFC 4514), attribute names as strongSwan
prints them. OpenSSL's ``/O=Acme/CN=gw.example`` is read too.

Comparison (strongSwan ``identification_t.matches`` for ID_DER_ASN1_DN): the
same attributes in the same order, values equal ignoring case and repeated
blanks; a value ``*`` in the pattern matches any value of that attribute.

ID_DER_ASN1_DN payloads carry the DER Name: `dn_to_der` / `dn_from_der`.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from .errors import PkiError

# Name -> OID as strongSwan spells them (note SN is serialNumber, S surname).
_NAME_OIDS: dict[str, ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "Email": NameOID.EMAIL_ADDRESS,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "SN": NameOID.SERIAL_NUMBER,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "S": NameOID.SURNAME,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "N": ObjectIdentifier("2.5.4.41"),  # name
    "G": NameOID.GIVEN_NAME,
    "I": NameOID.INITIALS,
    "T": NameOID.TITLE,
    "dnQualifier": NameOID.DN_QUALIFIER,
    "pseudonym": NameOID.PSEUDONYM,
    "street": NameOID.STREET_ADDRESS,
    "postalCode": NameOID.POSTAL_CODE,
}
_CASEFOLD_NAMES = {k.casefold(): v for k, v in _NAME_OIDS.items()}
# OID -> the name we print (the first spelling above).
_OID_NAMES: dict[str, str] = {}
for _n, _o in _NAME_OIDS.items():
    _OID_NAMES.setdefault(_o.dotted_string, _n)

Rdn = tuple[str, str]
"""One attribute of a DN: (dotted OID, value)."""


def _unescape_split(text: str, seps: str) -> list[str]:
    """Split on any of seps outside double quotes and not after a backslash;
    escapes and quotes are resolved in the pieces."""
    parts, cur, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch in seps and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    if quoted:
        raise PkiError(f"distinguished name {text!r}: unbalanced double quote")
    parts.append("".join(cur))
    return parts


def parse_dn(text: str) -> list[Rdn]:
    """``O=Acme, CN=gw`` (or ``/O=Acme/CN=gw``) -> [(oid, value), ...] in that order."""
    s = text.strip()
    if not s:
        raise PkiError("empty distinguished name")
    # '+' joins attributes of a multi-valued RDN; we keep them as a flat list.
    parts = _unescape_split(s[1:], "/+") if s.startswith("/") else _unescape_split(s, ",+")
    out: list[Rdn] = []
    for part in parts:
        if "=" not in part:
            raise PkiError(f"distinguished name {text!r}: {part.strip()!r} is not NAME=value")
        name, value = part.split("=", 1)
        name, value = name.strip(), value.strip()
        oid = _CASEFOLD_NAMES.get(name.casefold())
        if oid is None:
            if not all(c.isdigit() or c == "." for c in name) or name.count(".") < 2:
                raise PkiError(f"distinguished name {text!r}: unknown attribute {name!r}")
            oid = ObjectIdentifier(name)
        if not value:
            raise PkiError(f"distinguished name {text!r}: {name} has an empty value")
        out.append((oid.dotted_string, value))
    return out


def _escape(value: str) -> str:
    for ch in '\\,+"':
        value = value.replace(ch, "\\" + ch)
    return value


def format_dn(rdns: Sequence[Rdn]) -> str:
    """[(oid, value), ...] -> ``O=Acme, CN=gw``."""
    return ", ".join(f"{_OID_NAMES.get(oid, oid)}={_escape(value)}" for oid, value in rdns)


def name_rdns(name: x509.Name) -> list[Rdn]:
    """The attributes of a cryptography Name, in DER order."""
    out: list[Rdn] = []
    for rdn in name.rdns:
        for attr in rdn:
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            out.append((attr.oid.dotted_string, value))
    return out


def format_name(name: x509.Name) -> str:
    """A certificate's subject or issuer as strongSwan prints it."""
    return format_dn(name_rdns(name))


def _norm(value: str) -> str:
    return " ".join(value.split()).casefold()


def dn_matches(pattern: str | Sequence[Rdn], subject: x509.Name | Sequence[Rdn]) -> bool:
    """Does the configured DN (text or parsed) match the subject? See module doc."""
    want = parse_dn(pattern) if isinstance(pattern, str) else list(pattern)
    have = name_rdns(subject) if isinstance(subject, x509.Name) else list(subject)
    if len(want) != len(have):
        return False
    for (woid, wval), (hoid, hval) in zip(want, have):
        if woid != hoid:
            return False
        if wval != "*" and _norm(wval) != _norm(hval):
            return False
    return True


def dn_to_name(text: str) -> x509.Name:
    """Parse DN text into a cryptography Name (for certificates and ID payloads)."""
    attrs = []
    for oid, value in parse_dn(text):
        try:
            attrs.append(x509.RelativeDistinguishedName([x509.NameAttribute(ObjectIdentifier(oid), value)]))
        except ValueError as exc:  # e.g. C= must be two letters
            raise PkiError(f"distinguished name {text!r}: {exc}") from None
    return x509.Name(attrs)


def dn_to_der(text: str) -> bytes:
    """DER Name for an ID_DER_ASN1_DN identification payload."""
    return dn_to_name(text).public_bytes()


# --- reading a DER Name (cryptography has no public Name parser) ------------------

_STRING_DECODERS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x12: "ascii",  # NumericString
    0x1A: "ascii",  # VisibleString
    0x14: "latin-1",  # T61String: treated as Latin-1, like most implementations
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    if pos + 2 > end:
        raise PkiError("DN: truncated DER")
    der_type, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 3 or pos + n > end:
            raise PkiError("DN: bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > end:
        raise PkiError("DN: DER element runs past its container")
    return der_type, pos, pos + length


def _oid(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise PkiError("DN: malformed OBJECT IDENTIFIER")
    arcs, value = [], 0
    for b in body:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def der_rdns(der: bytes) -> list[Rdn]:
    """The attributes of a DER Name (an ID_DER_ASN1_DN payload's data)."""
    der_type, pos, end = _tlv(der, 0, len(der))
    if der_type != 0x30 or end != len(der):
        raise PkiError("DN: not a single DER SEQUENCE")
    out: list[Rdn] = []
    while pos < end:
        der_type, spos, send = _tlv(der, pos, end)
        if der_type != 0x31:
            raise PkiError("DN: RDN is not a SET")
        while spos < send:
            der_type, apos, aend = _tlv(der, spos, send)
            if der_type != 0x30:
                raise PkiError("DN: attribute is not a SEQUENCE")
            otag, ostart, oend = _tlv(der, apos, aend)
            if otag != 0x06:
                raise PkiError("DN: attribute type is not an OID")
            vtag, vstart, vend = _tlv(der, oend, aend)
            if vend != aend:
                raise PkiError("DN: trailing data in an attribute")
            raw = der[vstart:vend]
            codec = _STRING_DECODERS.get(vtag)
            try:
                value = raw.decode(codec) if codec else raw.hex()
            except UnicodeDecodeError:
                raise PkiError("DN: attribute value is not valid text") from None
            out.append((_oid(der[ostart:oend]), value))
            spos = aend
        pos = send
    return out


def dn_from_der(der: bytes) -> str:
    """DER Name (from an ID payload) -> strongSwan-style text."""
    return format_dn(der_rdns(der))
