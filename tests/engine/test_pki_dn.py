"""engine.pki.dn: DN text (strongSwan's form with RFC 4514 escapes), DER, matching.

Round-trip properties with hypothesis, cryptography's x509.Name as the oracle
for DER, strongSwan's own pki tool as the oracle for names and printing.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.pki import PkiError, load_certificate_file
from engine.pki.dn import Dn, DnError, dn_from_der, dn_matches, dn_to_der, format_name, parse_dn

SURNAME, SERIAL, EMAIL = "2.5.4.4", "2.5.4.5", "1.2.840.113549.1.9.1"


def dn(*rdns: tuple[str, str | None]) -> Dn:
    return Dn(tuple((a,) for a in rdns))


# --- strongSwan's conventions ------------------------------------------------------------


# Every name in strongSwan's x501rdns table (src/libstrongswan/utils/identification.c)
@pytest.mark.parametrize("label,oid", [
    ("ND", "0.2.262.1.10.7.20"), ("UID", "0.9.2342.19200300.100.1.1"), ("DC", "0.9.2342.19200300.100.1.25"),
    ("CN", "2.5.4.3"), ("SN", SURNAME), ("serialNumber", SERIAL), ("C", "2.5.4.6"), ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"), ("STREET", "2.5.4.9"), ("O", "2.5.4.10"), ("OU", "2.5.4.11"),
    ("organizationIdentifier", "2.5.4.97"), ("T", "2.5.4.12"), ("D", "2.5.4.13"), ("postalAddress", "2.5.4.16"),
    ("postalCode", "2.5.4.17"), ("N", "2.5.4.41"), ("G", "2.5.4.42"), ("I", "2.5.4.43"), ("dnQualifier", "2.5.4.46"),
    ("dmdName", "2.5.4.54"), ("pseudonym", "2.5.4.65"), ("ID", "2.5.4.45"), ("EN", "2.16.840.1.113730.3.1.3"),
    ("employeeNumber", "2.16.840.1.113730.3.1.3"), ("E", EMAIL), ("Email", EMAIL), ("emailAddress", EMAIL),
    ("UN", "1.2.840.113549.1.9.2"), ("unstructuredName", "1.2.840.113549.1.9.2"),
    ("UA", "1.2.840.113549.1.9.8"), ("unstructuredAddress", "1.2.840.113549.1.9.8"),
    ("TCGID", "1.3.6.1.4.1.1201.1.1.2.2.75"),
])
def test_strongswan_attribute_names(label, oid):
    for spelling in (label, label.lower(), label.upper()):
        assert Dn.from_text(f"{spelling}=x") == dn((oid, "x"))
    # printed with strongSwan's name (asn1/oid.txt), which reads back
    printed = Dn.from_text(f"{label}=x").text()
    assert Dn.from_text(printed) == dn((oid, "x"))


@pytest.mark.parametrize("oid,printed", [
    (SURNAME, "SN"), (SERIAL, "serialNumber"), (EMAIL, "E"), ("2.5.4.12", "T"), ("2.5.4.9", "STREET"),
    ("1.2.840.113549.1.9.2", "unstructuredName"), ("2.16.840.1.113730.3.1.3", "employeeNumber"), ("1.2.3.4", "1.2.3.4"),
])
def test_printed_names_are_strongswans(oid, printed):
    assert dn((oid, "v")).text() == f"{printed}=v"


@pytest.mark.parametrize("text", [
    "C=CH, O=strongSwan, CN=moon.strongswan.org",
    "C=CH,O=strongSwan,CN=moon.strongswan.org",
    "  C = CH ,  O = strongSwan , CN = moon.strongswan.org  ",
    "/C=CH/O=strongSwan/CN=moon.strongswan.org",
    'C="CH", O="strongSwan", CN="moon.strongswan.org"',
    "c=CH, o=strongSwan, cn=moon.strongswan.org",
    "countryName=CH, organizationName=strongSwan, commonName=moon.strongswan.org",
    "2.5.4.6=CH, 2.5.4.10=strongSwan, OID.2.5.4.3=moon.strongswan.org",
])
def test_spellings_of_one_dn(text):
    assert Dn.from_text(text).text() == "C=CH, O=strongSwan, CN=moon.strongswan.org"


@pytest.mark.parametrize("text,values", [
    ('O="Acme, Inc"', ["Acme, Inc"]),
    (r"O=Acme\, Inc", ["Acme, Inc"]),
    ('CN="say \\"hi\\""', ['say "hi"']),
    (r"CN=\C3\A9t\C3\A9", ["été"]),
    ("OU=R+D", ["R+D"]),  # strongSwan: '+' not followed by NAME= belongs to the value
    ("CN=a+b=c", None),  # ... and followed by NAME= starts another attribute of the RDN
    ("CN=a=b", ["a=b"]),
    (r"CN=\20x\20", [" x "]),
    (r"CN=\ x\ ", [" x "]),
    ('CN=""', [""]),
    ('CN="*"', ["*"]),
    (r"CN=\2A", ["*"]),
    ("CN=*", ["*"]),
])
def test_values(text, values):
    if values is None:
        with pytest.raises(DnError, match="unknown attribute 'b'"):
            Dn.from_text(text)
        return
    assert [v for _, v in parse_dn(text)] == values


def test_wildcards_and_literal_stars():
    assert Dn.from_text("CN=*").has_wildcards and Dn.from_text("CN=*").rdns == ((("2.5.4.3", None),),)
    for literal in (r"CN=\2A", 'CN="*"'):
        d = Dn.from_text(literal)
        assert not d.has_wildcards and d.text() == r"CN=\2A"
    assert Dn.from_text("CN=*").text() == "CN=*"


def test_multi_valued_rdns():
    d = Dn.from_text("O=Acme, CN=alice+UID=a1")
    assert d.rdns == ((("2.5.4.10", "Acme"),), (("2.5.4.3", "alice"), ("0.9.2342.19200300.100.1.1", "a1")))
    assert d.text() == "O=Acme, CN=alice+UID=a1"
    assert Dn.from_text("O=Acme, UID=a1+CN=alice").match(d) == 0  # any order inside one RDN
    assert Dn.from_text("O=Acme, CN=alice, UID=a1").match(d) is None  # but not split into two RDNs
    assert Dn.from_text("/O=Acme/CN=alice+UID=a1") == d


@pytest.mark.parametrize("text,needle", [
    ("", "empty distinguished name"),
    ("CN", "'CN' is not NAME=value"),
    ("C=CH, O=Acme, Inc", 'quoted or escaped: O="Acme, Inc"'),
    ("XYZ=1", "unknown attribute 'XYZ'"),
    ("S=Smith", "unknown attribute 'S'"),  # strongSwan < 5.9's surname: gone there too
    ("CN=", 'CN has an empty value'),
    ("CN=a,", "empty RDN"),
    ("CN=a,,O=b", "empty RDN"),
    ('CN="open', "unbalanced double quote"),
    ('CN="a" b', "after the closing quote"),
    ("CN=a\\", "lone backslash"),
    (r"CN=\FF", r"\FF is not UTF-8"),
    ("CN=a+CN=b", "appears twice"),
    ("=x", "no attribute name"),
])
def test_bad_text_names_the_problem(text, needle):
    with pytest.raises(DnError, match=re.escape(needle)) as exc:
        Dn.from_text(text)
    assert isinstance(exc.value, PkiError) and isinstance(exc.value, ValueError)
    if text:
        assert repr(text) in str(exc.value)


# --- matching -----------------------------------------------------------------------------------


def test_matching_rules():
    subject = Dn.from_text("C=CH, O=Acme  Corp, E=Alice@Example.org, CN=alice")
    assert Dn.from_text("c=ch, o=acme corp, emailAddress=alice@example.ORG, CN=ALICE").match(subject) == 0
    assert Dn.from_text("C=CH, O=Acme Corp, E=*, CN=*").match(subject) == 2
    assert Dn.from_text("C=CH, O=Acme Corp, CN=alice, E=alice@example.org").match(subject) is None  # order counts
    assert Dn.from_text("C=CH, O=Acme Corp, CN=alice").match(subject) is None  # every RDN counts
    assert Dn.from_text("C=CH, O=*, E=alice@example.org, CN=alice").match(Dn.from_text("C=CH, E=x, E=y, CN=alice")) is None
    assert dn_matches("C=CH, O=Acme Corp, E=*, CN=alice", subject)
    assert not dn_matches(r"C=CH, O=Acme Corp, E=*, CN=\2A", subject)


# --- DER ------------------------------------------------------------------------------------------------


def test_der_is_what_cryptography_and_openssl_encode():
    name = x509.Name.from_rfc4514_string("CN=gw.example.com,OU=Gateways,O=Interop Lab,C=CH")
    assert dn_to_der("C=CH, O=Interop Lab, OU=Gateways, CN=gw.example.com") == name.public_bytes()
    assert dn_from_der(name.public_bytes()) == "C=CH, O=Interop Lab, OU=Gateways, CN=gw.example.com"


def test_der_of_values_cryptography_refuses():
    # peers send these; we read, print, match and (for our own ID) encode them
    for text in ("C=CHE, CN=x", "CN=" + "x" * 200, 'C=CH, serialNumber="a_b@c", E=é@example.org'):
        d = Dn.from_text(text)
        assert Dn.from_der(d.der()) == d
    # a narrow string type that cannot hold the value falls back to UTF8String
    assert Dn.from_text("serialNumber=a_b").der()[-5] == 0x0C
    assert Dn.from_text("serialNumber=ab").der()[-4] == 0x13


def test_der_string_types_read():
    def der(tag: int, raw: bytes) -> bytes:
        atv = b"\x06\x03\x55\x04\x03" + bytes([tag, len(raw)]) + raw
        rdn = b"\x31" + bytes([len(atv) + 2]) + b"\x30" + bytes([len(atv)]) + atv
        return b"\x30" + bytes([len(rdn)]) + rdn

    assert dn_from_der(der(0x13, b"moon")) == "CN=moon"
    assert dn_from_der(der(0x16, "é".encode())) == "CN=é"  # UTF-8 in an IA5String, as sloppy encoders write it
    assert dn_from_der(der(0x14, b"\xe9t\xe9")) == "CN=été"  # T61String as Latin-1
    assert dn_from_der(der(0x1E, "東京".encode("utf-16-be"))) == "CN=東京"
    assert dn_from_der(der(0x0C, b"a\x1b[31mb\x00")) == r"CN=a\1B[31mb\00"  # no terminal escapes on screen
    with pytest.raises(DnError, match="not a string"):
        dn_from_der(der(0x02, b"\x01"))


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x31\x00", b"\x30\x05\x31\x03\x30\x01\x06", b"\x30\x02\x30\x00",
                                 b"\x30\x02\x31\x00", b"\x30\x80\x00\x00", b"\x30\x84\x00\x00\x00\x00"])
def test_malformed_der_is_a_value_error(der):
    with pytest.raises(ValueError):
        Dn.from_der(der)


# --- properties ----------------------------------------------------------------------------------------

_OIDS = ["2.5.4.3", "2.5.4.10", "2.5.4.11", "2.5.4.6", SURNAME, SERIAL, EMAIL, "2.5.4.12", "0.9.2342.19200300.100.1.25",
         "0.9.2342.19200300.100.1.1", "1.2.3.4.5", "2.999.1", "1.3.6.1.4.1.1201.1.1.2.2.75"]
_CHARS = list("aZ09 ,+=\"\\;<>#*/-.@'()") + ["é", "東", "\t", "\x00", "\x1b", "\u00a0", "\u2028", "😀"]
_value = st.lists(st.sampled_from(_CHARS), min_size=0, max_size=10).map("".join)
_attr = st.tuples(st.sampled_from(_OIDS), st.one_of(_value, st.none()))


def _rdn(attrs: list) -> tuple:
    seen, out = set(), []
    for oid, v in attrs:
        if oid not in seen:
            seen.add(oid)
            out.append((oid, v))
    return tuple(out)


_dns = st.lists(st.lists(_attr, min_size=1, max_size=3).map(_rdn), min_size=1, max_size=6).map(lambda r: Dn(tuple(r)))


def _literal(d: Dn) -> Dn:
    return Dn(tuple(tuple((o, "*" if v is None else v) for o, v in rdn) for rdn in d.rdns))


def _sorted_rdns(d: Dn) -> Dn:
    return Dn(tuple(tuple(sorted(rdn, key=lambda a: (a[0], a[1] or ""))) for rdn in d.rdns))


@settings(max_examples=500, deadline=None)
@given(_dns)
def test_text_reads_back_to_the_same_dn(d):
    text = d.text()
    assert text.isprintable()
    assert Dn.from_text(text) == d
    assert Dn.from_text(" " + text + " ") == d  # callers strip; the escapes survive that
    assert d.match(Dn.from_text(text)) is not None


@settings(max_examples=500, deadline=None)
@given(_dns)
def test_text_to_der_to_text_is_stable(d):
    text = _literal(d).text()
    once = dn_from_der(dn_to_der(text))
    assert dn_from_der(dn_to_der(once)) == once
    assert _sorted_rdns(Dn.from_text(once)) == _sorted_rdns(_literal(d))  # DER only sorts inside an RDN
    if all(len(rdn) == 1 for rdn in d.rdns):
        assert once == text


_X509_ATTRS = st.one_of(
    st.tuples(st.sampled_from([NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.SURNAME, NameOID.TITLE,
                               ObjectIdentifier("1.2.3.4")]), _value.filter(bool)),
    st.tuples(st.just(NameOID.COUNTRY_NAME), st.text("ABCXYZ", min_size=2, max_size=2)),
    st.tuples(st.sampled_from([NameOID.SERIAL_NUMBER, NameOID.DN_QUALIFIER]), st.text("Aa0 '()+,-./:=?", min_size=1, max_size=8)),
    st.tuples(st.sampled_from([NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT]), st.text("ax0.@-_", min_size=1, max_size=8)),
)
_x509_names = st.lists(st.lists(_X509_ATTRS, min_size=1, max_size=2).map(_rdn), min_size=1, max_size=5).map(
    lambda rdns: x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn]) for rdn in rdns]))


@settings(max_examples=300, deadline=None)
@given(_x509_names)
def test_der_agrees_with_cryptography(name):
    d = Dn.from_name(name)
    assert d.der() == name.public_bytes()
    assert _sorted_rdns(Dn.from_der(name.public_bytes())) == _sorted_rdns(d)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for _, v in d.attributes() for c in v):
        with pytest.raises(DnError, match="control character"):  # read from a peer, never issued
            d.to_name()
    else:
        assert d.to_name() == name
    assert format_name(name) == d.text()


# --- strongSwan's pki as the oracle --------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("pki") is None, reason="needs strongSwan's pki tool (apt-get install strongswan-pki)")
def test_strongswan_pki_writes_and_prints_dns_as_we_do(tmp_path):
    key, crt = tmp_path / "k.pem", tmp_path / "c.der"
    text = ("C=CH, O=strongSwan, OU=R+D, SN=Smith, serialNumber=123, E=a@b.c, T=Boss, UID=u1, DC=org, "
            "unstructuredName=un, CN=moon.strongswan.org")
    run = lambda *a: subprocess.run(["pki", *a], check=True, capture_output=True).stdout  # noqa: E731
    key.write_bytes(run("--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem"))
    crt.write_bytes(run("--self", "--in", str(key), "--type", "ecdsa", "--dn", text, "--outform", "der"))
    printed = re.search(rb'subject:\s+"(.*)"', run("--print", "--type", "x509", "--in", str(crt))).group(1).decode()
    subject = load_certificate_file(crt)[0].subject
    # strongSwan's atodn and our reader give the same DN; strongSwan's dntoa and our printer the same text
    # (we escape '+', which strongSwan prints bare and both read back as part of the value)
    assert Dn.from_text(text) == Dn.from_name(subject) == Dn.from_text(printed)
    assert format_name(subject).replace("\\+", "+") == printed
    assert dn_matches(printed, subject) and dn_matches(format_name(subject), subject)
