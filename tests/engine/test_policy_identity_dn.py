"""DN identities agree everywhere: policy text, IKE ID payloads, the Negotiations
screen, certificates (issue 9 item 7).

Each test goes through the public entry points a user's DN travels through:
``parse_identity``/``parse_policy`` (remote.id), ``identity_from_wire`` (what
the peer sent), ``payload_detail`` (what the Negotiations screen shows),
``cert_matches_identity`` (certificate binding).
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.ike.identity import identity_from_wire, identity_to_wire
from engine.pki import cert_matches_identity, format_name
from engine.policy import parse_identity, parse_policy
from engine.policy.identity import identity_matches, is_wildcard
from engine.wire.constants import IdType
from engine.wire.payloads import IdPayload
from engine.wire.summary import payload_detail


def name(*attrs: tuple[ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(o, v)]) for o, v in attrs])


def peer(n: x509.Name):
    """The identity the engine builds from a peer's ID_DER_ASN1_DN payload."""
    return identity_from_wire(IdType.DER_ASN1_DN, n.public_bytes())


def screen_text(der: bytes) -> str:
    """What the Negotiations screen shows for an IDi/IDr payload carrying this DER DN."""
    detail = payload_detail(IdPayload(True, IdType.DER_ASN1_DN, der))
    return dict(detail.fields)["id"]


def policy_remote_id(text: str):
    toml = ("[connections.c]\nremote_addrs = [\"192.0.2.2\"]\n"
            "local = { auth = \"pubkey\", certs = [\"gw.crt\"] }\n"
            f"remote = {{ auth = \"pubkey\", id = '''{text}''' }}\n"
            "[connections.c.children.x]\n")
    return parse_policy(toml).connection("c").remote.id


ACME = (NameOID.COUNTRY_NAME, "CH"), (NameOID.ORGANIZATION_NAME, "Acme")


# --- emailAddress ---------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["emailAddress", "E", "Email", "EMAIL", "1.2.840.113549.1.9.1"])
def test_email_address_dn_matches_what_the_peer_sends(spelling):
    pattern = parse_identity(f"C=CH, O=Acme, {spelling}=alice@example.org")
    assert identity_matches(pattern, peer(name(*ACME, (NameOID.EMAIL_ADDRESS, "alice@example.org"))))
    # e-mail addresses compare without case (RFC 5280 §7.1), a different one does not match
    assert identity_matches(pattern, peer(name(*ACME, (NameOID.EMAIL_ADDRESS, "Alice@Example.ORG"))))
    assert not identity_matches(pattern, peer(name(*ACME, (NameOID.EMAIL_ADDRESS, "bob@example.org"))))


def test_email_address_dn_we_send_is_the_email_attribute():
    _, der = identity_to_wire(parse_identity("emailAddress=alice@example.org, CN=alice"), "192.0.2.1")
    assert der == name((NameOID.EMAIL_ADDRESS, "alice@example.org"), (NameOID.COMMON_NAME, "alice")).public_bytes()


# --- quoting and escaping ------------------------------------------------------------


@pytest.mark.parametrize("text", ['C=CH, O="Acme, Inc", CN=gw', r"C=CH, O=Acme\, Inc, CN=gw", 'C=CH,O="Acme, Inc",CN=gw'])
def test_quoted_or_escaped_comma_in_a_value(text):
    ident = parse_identity(text)
    assert ident.kind == "dn"
    subject = name((NameOID.COUNTRY_NAME, "CH"), (NameOID.ORGANIZATION_NAME, "Acme, Inc"), (NameOID.COMMON_NAME, "gw"))
    assert identity_matches(ident, peer(subject))
    assert not identity_matches(ident, peer(name(*ACME, (NameOID.COMMON_NAME, "gw"))))
    assert policy_remote_id(text) == ident


def test_an_unquoted_comma_is_refused_with_a_hint():
    with pytest.raises(ValueError, match=r"Inc.*quote"):
        parse_identity("C=CH, O=Acme, Inc, CN=gw")


# --- SN is surname ---------------------------------------------------------------------


def test_sn_is_surname_and_serial_number_is_serial_number_everywhere():
    surname = name((NameOID.SURNAME, "Smith"), (NameOID.COMMON_NAME, "x"))
    serial = name((NameOID.SERIAL_NUMBER, "Smith"), (NameOID.COMMON_NAME, "x"))
    sn = parse_identity("SN=Smith, CN=x")
    assert identity_matches(sn, peer(surname)) and not identity_matches(sn, peer(serial))
    sr = parse_identity("serialNumber=Smith, CN=x")
    assert identity_matches(sr, peer(serial)) and not identity_matches(sr, peer(surname))
    assert identity_to_wire(sn, "192.0.2.1")[1] == surname.public_bytes()
    # the screen, the SA's identity and the certificate subject all print them the same way
    assert screen_text(surname.public_bytes()) == peer(surname).value == format_name(surname) == "SN=Smith, CN=x"
    assert screen_text(serial.public_bytes()) == peer(serial).value == format_name(serial) == "serialNumber=Smith, CN=x"


# --- what the Negotiations screen shows is what the policy matches -------------------


SCREEN_CASES = [
    name(*ACME, (NameOID.COMMON_NAME, "moon.strongswan.org")),
    name(*ACME, (NameOID.TITLE, "Gateway"), (NameOID.COMMON_NAME, "gw")),
    name((NameOID.ORGANIZATION_NAME, "Acme, Inc"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "R+D"), (NameOID.COMMON_NAME, 'say "hi"')),
    name((NameOID.COMMON_NAME, " leading and trailing "), (NameOID.STREET_ADDRESS, "#1 Main St; <b>")),
    name((ObjectIdentifier("1.3.6.1.4.1.99999.1"), "custom"), (NameOID.COMMON_NAME, "Zürich Ελλάδα")),
    name((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.DOMAIN_COMPONENT, "example"), (NameOID.USER_ID, "alice")),
    name((NameOID.COMMON_NAME, "back\\slash = sign")),
    name((NameOID.COMMON_NAME, "*")),
    x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "a"),
                                               x509.NameAttribute(NameOID.USER_ID, "b")]),
               x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "c")])]),
]


@pytest.mark.parametrize("subject", SCREEN_CASES, ids=lambda n: n.rfc4514_string())
def test_dn_copied_from_the_negotiations_screen_matches_that_peer(subject):
    der = subject.public_bytes()
    shown = screen_text(der)
    assert shown == peer(subject).value  # the SA tables show the same text
    remote_id = policy_remote_id(shown)
    assert remote_id.kind == "dn"
    assert identity_matches(remote_id, peer(subject))
    assert not is_wildcard(remote_id)


def test_a_peer_sending_a_star_is_not_a_wildcard():
    star = peer(name((NameOID.COMMON_NAME, "*")))
    assert not identity_matches(star, peer(name((NameOID.COMMON_NAME, "anyone"))))
    assert not identity_matches(parse_identity(screen_text(name((NameOID.COMMON_NAME, "*")).public_bytes())),
                                peer(name((NameOID.COMMON_NAME, "anyone"))))


_ATTR_OIDS = [NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.LOCALITY_NAME,
              NameOID.STATE_OR_PROVINCE_NAME, NameOID.SURNAME, NameOID.TITLE, NameOID.GIVEN_NAME,
              NameOID.PSEUDONYM, NameOID.STREET_ADDRESS, NameOID.USER_ID, ObjectIdentifier("1.2.3.4.5"),
              NameOID.ORGANIZATION_IDENTIFIER, NameOID.POSTAL_CODE]
_VALUE_CHARS = st.sampled_from(list("aZ09 ,+=\"\\;<>#*/-.@'()") + ["é", "ß", "東", "\t", "\x00", "\x1b", "\u00a0"])
_values = st.lists(_VALUE_CHARS, min_size=1, max_size=12).map("".join)
_attrs = st.one_of(
    st.tuples(st.sampled_from(_ATTR_OIDS), _values),
    st.tuples(st.just(NameOID.COUNTRY_NAME), st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)),
    # cryptography encodes these as PrintableString / IA5String whatever the value: stay inside those alphabets
    st.tuples(st.just(NameOID.SERIAL_NUMBER), st.text("AZaz09 '()+,-./:=?", min_size=1, max_size=12)),
    st.tuples(st.sampled_from([NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT]),
              st.text("abcxyz0123.-_@", min_size=1, max_size=12)),
)
_names = st.lists(st.lists(_attrs, min_size=1, max_size=2), min_size=1, max_size=5).map(
    lambda rdns: x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn])
                            for rdn in rdns if len({o for o, _ in rdn}) == len(rdn)] or name((NameOID.COMMON_NAME, "x"))))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_names)
def test_screen_text_pasted_into_remote_id_matches_that_peer(subject):
    shown = screen_text(subject.public_bytes())
    assert shown.isprintable()  # nothing a peer sends can put control characters on the screen
    remote_id = parse_identity(shown)
    assert identity_matches(remote_id, peer(subject)), shown
    # and the DN the policy sends for that text is the peer's DN
    assert identity_to_wire(remote_id, "192.0.2.1") == (IdType.DER_ASN1_DN, subject.public_bytes())


# --- wildcards (swanctl: an RDN value of *) ------------------------------------------------


def test_cn_wildcard_matches_any_cn_of_that_organisation_only():
    pattern = parse_identity("C=CH, O=Acme, CN=*")
    assert is_wildcard(pattern)
    assert identity_matches(pattern, peer(name(*ACME, (NameOID.COMMON_NAME, "alice"))))
    assert identity_matches(pattern, peer(name(*ACME, (NameOID.COMMON_NAME, "*"))))
    assert not identity_matches(pattern, peer(name((NameOID.COUNTRY_NAME, "CH"), (NameOID.ORGANIZATION_NAME, "Evil"),
                                                   (NameOID.COMMON_NAME, "alice"))))
    assert not identity_matches(pattern, peer(name(*ACME, (NameOID.ORGANIZATIONAL_UNIT_NAME, "x"),
                                                   (NameOID.COMMON_NAME, "alice"))))
    assert not identity_matches(pattern, peer(name(*ACME)))
    assert not is_wildcard(parse_identity(r"C=CH, O=Acme, CN=\2A"))
    assert not identity_matches(parse_identity(r"C=CH, O=Acme, CN=\2A"), peer(name(*ACME, (NameOID.COMMON_NAME, "alice"))))


# --- certificates ------------------------------------------------------------------------------


def _cert(subject: x509.Name) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))


def test_certificate_binding_uses_the_same_dn_rules():
    subject = name(*ACME, (NameOID.SURNAME, "Smith"), (NameOID.EMAIL_ADDRESS, "a@b.c"), (NameOID.COMMON_NAME, "Acme, Inc gw"))
    cert = _cert(subject)
    for text in ['C=CH, O=Acme, SN=Smith, emailAddress=a@b.c, CN="Acme, Inc gw"',
                 r"C=CH, O=Acme, SN=Smith, E=A@B.C, CN=Acme\, Inc gw", "C=CH, O=Acme, SN=Smith, E=a@b.c, CN=*"]:
        assert cert_matches_identity(cert, parse_identity(text)), text
    assert not cert_matches_identity(cert, parse_identity('C=CH, O=Acme, serialNumber=Smith, E=a@b.c, CN="Acme, Inc gw"'))
    # the identity the peer sends with that certificate, as shown, binds to it
    assert cert_matches_identity(cert, peer(subject))
    assert cert_matches_identity(cert, parse_identity(screen_text(subject.public_bytes())))
