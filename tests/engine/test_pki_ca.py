"""The CA (engine.pki.ca): what it writes, with which modes and extensions, and
whether openssl and strongSwan's pki accept it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from engine.crypto.signature import sign_auth, verify_auth
from engine.pki import (
    PkiError,
    cert_matches_identity,
    load_certificate_file,
    load_crl_files,
    load_private_key_file,
    validate_chain,
)
from engine.pki import ca
from engine.pki.dn import Dn, format_name
from engine.pki.keys import check_key_file_mode, load_private_key_secret
from engine.policy.model import Identity, PrivateKeySecret
from engine.secret import Secret

T0 = datetime(2031, 3, 1, 9, 30, tzinfo=timezone.utc)
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI (apt-get install openssl)")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def cadir(tmp_path, clock):
    d = tmp_path / "pki"
    ca.init_ca(d, "O=Interop Lab, CN=Unit Test CA", "ecdsa-p256", 3650, clock=clock)
    return d


def test_init_ca_layout_modes_and_extensions(cadir):
    assert mode(cadir / "private") == 0o700
    assert mode(cadir / "private" / "ca.key") == 0o600
    cert = load_certificate_file(cadir / "ca.crt")[0]
    assert cert.subject == cert.issuer
    assert cert.not_valid_before_utc == T0 - ca.CLOCK_SKEW
    assert cert.not_valid_after_utc == T0 + timedelta(days=3650)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    index = tomllib.loads((cadir / "index.toml").read_text())
    assert index["ca"]["subject"] == "O=Interop Lab, CN=Unit Test CA" and index["certs"] == []
    assert isinstance(load_private_key_file(cadir / "private" / "ca.key"), ec.EllipticCurvePrivateKey)


def test_keys_are_0600_even_with_a_permissive_umask(tmp_path, clock):
    old = os.umask(0)
    try:
        d = tmp_path / "pki"
        ca.init_ca(d, "Umask CA", clock=clock)
        ca.issue(d, "gw.example", clock=clock)
    finally:
        os.umask(old)
    assert mode(d / "private" / "ca.key") == 0o600
    assert mode(d / "private" / "gw.example.key") == 0o600
    assert mode(d / "private") == 0o700
    assert mode(d / "certs" / "gw.example.crt") == 0o644


def test_init_ca_refuses_to_overwrite(cadir, clock):
    before = (cadir / "ca.crt").read_bytes()
    with pytest.raises(PkiError, match="ca.crt already exists.*--force"):
        ca.init_ca(cadir, "Another CA", clock=clock)
    assert (cadir / "ca.crt").read_bytes() == before
    ca.init_ca(cadir, "Another CA", force=True, clock=clock)
    assert (cadir / "ca.crt").read_bytes() != before
    assert ca.ca_info(cadir).subject == "CN=Another CA"


@pytest.mark.parametrize("key_type,cls", [("ecdsa-p256", ec.EllipticCurvePrivateKey), ("ecdsa-p384", ec.EllipticCurvePrivateKey),
                                          ("rsa-2048", rsa.RSAPrivateKey), ("ed25519", ed25519.Ed25519PrivateKey)])
def test_issue_server_certificate(cadir, clock, key_type, cls):
    e = ca.issue(cadir, "gw.example.com", ["IP:192.0.2.1", "vpn.example.com"], "server", key_type, 365, clock=clock)
    assert e.sans == ("DNS:gw.example.com", "DNS:vpn.example.com", "IP:192.0.2.1")
    cert = load_certificate_file(cadir / "certs" / "gw.example.com.crt")[0]
    assert cert.serial_number == e.serial
    assert e.subject == "O=Interop Lab, CN=gw.example.com"
    key = load_private_key_file(cadir / "private" / "gw.example.com.key")
    assert isinstance(key, cls)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ca.IKE_INTERMEDIATE]
    assert ca.IKE_INTERMEDIATE.dotted_string == "1.3.6.1.5.5.7.3.17"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_cert = load_certificate_file(cadir / "ca.crt")[0]
    assert aki.key_identifier == ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert cert.not_valid_after_utc == T0 + timedelta(days=365)
    # it validates with our own chain code, matches its identities, and its key signs IKE AUTH
    res = validate_chain(cert, [], [ca_cert], [], T0)
    assert res.ok, res.reason
    for ident in (Identity("fqdn", "gw.example.com"), Identity("fqdn", "vpn.example.com"), Identity("ipv4", "192.0.2.1"),
                  Identity("dn", "O=Interop Lab, CN=gw.example.com")):
        assert cert_matches_identity(cert, ident), ident
    method, auth = sign_auth(key, b"octets", {2, 3, 4, 5})
    assert verify_auth(cert.public_key(), method, auth, b"octets")


def test_issue_client_certificate_with_email(cadir, clock):
    e = ca.issue(cadir, "alice@example.com", kind="client", clock=clock)
    cert = load_certificate_file(cadir / "certs" / "alice@example.com.crt")[0]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH, ca.IKE_INTERMEDIATE]
    assert e.sans == ("email:alice@example.com",)
    assert cert_matches_identity(cert, Identity("rfc822", "alice@example.com"))


def test_issue_needs_a_san_for_a_bare_name(cadir, clock):
    with pytest.raises(PkiError, match="--san"):
        ca.issue(cadir, "alice", kind="client", clock=clock)
    e = ca.issue(cadir, "alice", ["alice@example.com"], kind="client", clock=clock)
    assert e.sans == ("email:alice@example.com",)


@pytest.mark.parametrize("san,needle", [("IP:999.1.1.1", "not an IP"), ("email:nobody", "not an e-mail"),
                                        ("DNS:bad name", "not a DNS name"), ("DNS:", "no value"),
                                        # these were a ValueError traceback from cryptography, or silently changed
                                        ("email:jürg@example.com", "not an e-mail"), ("jürg@example.com", "not an e-mail"),
                                        ("email:a@b@c", "not an e-mail"), ("email:@example.com", "not an e-mail"),
                                        ("email:alice@", "not an e-mail"), ("IP:fe80::1%eth0", "not an IP"),
                                        ("192.0.2.300", "not a DNS name"), ("DNS:" + "a" * 64 + ".example", "not a DNS name"),
                                        ("DNS:" + "a." * 130 + "example", "not a DNS name"),
                                        ("DNS:gw.example.", "without the trailing dot"),
                                        ("email:alice@example.com.", "not an e-mail")])
def test_issue_rejects_bad_sans(cadir, clock, san, needle):
    with pytest.raises(PkiError, match=needle):
        ca.issue(cadir, "gw.example", [san], clock=clock)
    assert not (cadir / "certs" / "gw.example.crt").exists()


def test_issue_refuses_to_overwrite_and_force_replaces(cadir, clock):
    first = ca.issue(cadir, "gw.example", clock=clock)
    key_before = (cadir / "private" / "gw.example.key").read_bytes()
    with pytest.raises(PkiError, match="already exists"):
        ca.issue(cadir, "gw.example", clock=clock)
    assert (cadir / "private" / "gw.example.key").read_bytes() == key_before
    assert len(ca.list_certs(cadir)) == 1
    second = ca.issue(cadir, "gw.example", force=True, clock=clock)
    assert second.serial != first.serial
    assert (cadir / "private" / "gw.example.key").read_bytes() != key_before
    assert mode(cadir / "private" / "gw.example.key") == 0o600
    assert [e.serial for e in ca.list_certs(cadir)] == [first.serial, second.serial]


def test_issue_with_explicit_name_and_subject(cadir, clock):
    e = ca.issue(cadir, "gw.example", name="gw1", subject="C=CH, O=Other, CN=gw.example", clock=clock)
    assert e.name == "gw1" and e.subject == "C=CH, O=Other, CN=gw.example"
    assert (cadir / "certs" / "gw1.crt").exists()
    for bad in ("../evil", "ca", "a b"):
        with pytest.raises(PkiError, match="file name"):
            ca.issue(cadir, "x.example", name=bad, clock=clock)


def test_validity_is_clamped_to_the_ca(tmp_path, clock):
    d = tmp_path / "short"
    ca.init_ca(d, "Short CA", days=10, clock=clock)
    e = ca.issue(d, "gw.example", days=365, clock=clock)
    assert e.not_after == T0 + timedelta(days=10)
    clock.t = T0 + timedelta(days=11)
    with pytest.raises(PkiError, match="CA certificate expired"):
        ca.issue(d, "gw2.example", clock=clock)


def test_encrypted_ca_key(tmp_path, clock):
    d = tmp_path / "enc"
    pw = Secret("ca passphrase")
    ca.init_ca(d, "Encrypted CA", passphrase=pw, clock=clock)
    assert b"ENCRYPTED" in (d / "private" / "ca.key").read_bytes()
    with pytest.raises(PkiError, match="no passphrase"):
        ca.issue(d, "gw.example", clock=clock)
    with pytest.raises(PkiError, match="wrong passphrase"):
        ca.issue(d, "gw.example", ca_passphrase=Secret("nope"), clock=clock)
    ca.issue(d, "gw.example", ca_passphrase=pw, key_passphrase=Secret("key pw"), clock=clock)
    with pytest.raises(PkiError, match="no passphrase"):
        load_private_key_file(d / "private" / "gw.example.key")
    assert load_private_key_file(d / "private" / "gw.example.key", Secret("key pw"))


def test_key_file_mode_is_enforced(cadir, clock, tmp_path):
    ca.issue(cadir, "gw.example", clock=clock)
    key = cadir / "private" / "gw.example.key"
    os.chmod(key, 0o640)
    with pytest.raises(PkiError, match=r"mode 0640.*chmod 600"):
        load_private_key_file(key)
    with pytest.raises(PkiError, match="mode 0640"):
        check_key_file_mode(key)
    os.chmod(key, 0o400)
    assert load_private_key_file(key)
    with pytest.raises(PkiError, match="cannot read private key"):
        load_private_key_file(tmp_path / "missing.key")
    entry = PrivateKeySecret(name="gw", file="private/gw.example.key")
    assert load_private_key_secret(entry, cadir)


def test_ca_key_must_match_ca_cert(cadir, clock, tmp_path):
    other = tmp_path / "other"
    ca.init_ca(other, "Other CA", clock=clock)
    os.replace(other / "private" / "ca.key", cadir / "private" / "ca.key")
    with pytest.raises(PkiError, match="is not the key of"):
        ca.issue(cadir, "gw.example", clock=clock)


def test_no_ca_and_broken_index(tmp_path, cadir, clock):
    with pytest.raises(PkiError, match="no CA here"):
        ca.list_certs(tmp_path / "empty")
    (cadir / "index.toml").write_text("this is = = not toml")
    with pytest.raises(PkiError, match="index.toml: not valid TOML"):
        ca.list_certs(cadir)


# --- revocation and CRLs --------------------------------------------------------


def test_revoke_publishes_a_crl_that_fails_validation(cadir, clock):
    gw = ca.issue(cadir, "gw.example", clock=clock)
    alice = ca.issue(cadir, "alice@example.com", kind="client", clock=clock)
    clock.t = T0 + timedelta(days=3)
    revoked = ca.revoke(cadir, "alice@example.com", "key-compromise", clock=clock)
    assert revoked.revoked == clock.t and revoked.reason == "key-compromise"
    crls = load_crl_files([cadir / "crl.pem"])
    ca_cert = load_certificate_file(cadir / "ca.crt")[0]
    alice_cert = load_certificate_file(cadir / "certs" / "alice@example.com.crt")[0]
    res = validate_chain(alice_cert, [], [ca_cert], crls, clock.t + timedelta(hours=1))
    assert not res.ok
    assert f"{alice.serial:#x}" in res.reason and "2031-03-04 09:30:00 UTC" in res.reason and "key compromise" in res.reason
    gw_cert = load_certificate_file(cadir / "certs" / "gw.example.crt")[0]
    assert validate_chain(gw_cert, [], [ca_cert], crls, clock.t).ok
    assert [e.revoked is not None for e in ca.list_certs(cadir)] == [False, True]
    assert gw.revoked is None


def test_revoke_by_serial_and_errors(cadir, clock):
    e = ca.issue(cadir, "gw.example", clock=clock)
    with pytest.raises(PkiError, match="unknown revocation reason"):
        ca.revoke(cadir, "gw.example", "bored", clock=clock)
    with pytest.raises(PkiError, match="no certificate named or with serial"):
        ca.revoke(cadir, "abcdef", clock=clock)
    with pytest.raises(PkiError, match="neither a certificate name nor a hex serial"):
        ca.revoke(cadir, "nonexistent.example", clock=clock)
    colon = ":".join(f"{b:02x}" for b in e.serial.to_bytes(20, "big")).lstrip("0:")
    ca.revoke(cadir, colon, clock=clock)
    with pytest.raises(PkiError, match="already revoked"):
        ca.revoke(cadir, "0x" + e.serial_hex, clock=clock)


def test_issue_force_revokes_the_certificate_it_replaces(cadir, clock):
    """Re-issuing a name with --force (a new key, often because of the old one) used to leave the old
    certificate valid, unrevoked in the index, until it expired: it is now revoked as superseded and
    the CRL re-signed, so the name means the one live certificate."""
    from cryptography import x509 as cx509

    a = ca.issue(cadir, "gw.example", clock=clock)
    clock.t = T0 + timedelta(days=1)
    b = ca.issue(cadir, "gw.example", force=True, clock=clock)
    assert [(e.serial, e.revoked, e.reason) for e in ca.list_certs(cadir)] == [
        (a.serial, clock.t, "superseded"), (b.serial, None, None)]
    crl = cx509.load_pem_x509_crl((cadir / "crl.pem").read_bytes())
    gone = crl.get_revoked_certificate_by_serial_number(a.serial)
    assert gone is not None and crl.get_revoked_certificate_by_serial_number(b.serial) is None
    assert gone.extensions.get_extension_for_class(cx509.CRLReason).value.reason == cx509.ReasonFlags.superseded
    ca_cert = load_certificate_file(cadir / "ca.crt")[0]
    b_cert = load_certificate_file(cadir / "certs" / "gw.example.crt")[0]
    assert validate_chain(b_cert, [], [ca_cert], load_crl_files([cadir / "crl.pem"]), clock.t).ok
    assert ca.revoke(cadir, "gw.example", clock=clock).serial == b.serial


def test_revoke_by_ambiguous_name(cadir, clock):
    """Two live entries of one name (an index edited by hand): the serial must be given."""
    a = ca.issue(cadir, "gw.example", clock=clock)
    b = ca.issue(cadir, "gw2.example", clock=clock)
    index = cadir / "index.toml"
    index.write_text(index.read_text().replace('name = "gw2.example"', 'name = "gw.example"'))
    with pytest.raises(PkiError, match="several valid certificates"):
        ca.revoke(cadir, "gw.example", clock=clock)
    ca.revoke(cadir, a.serial_hex, "superseded", clock=clock)
    assert ca.revoke(cadir, "gw.example", clock=clock).serial == b.serial


def test_crl_numbers_dates_and_reason_codes(cadir, clock):
    a = ca.issue(cadir, "a.example", clock=clock)
    b = ca.issue(cadir, "b.example", clock=clock)
    ca.revoke(cadir, "a.example", clock=clock)  # unspecified: no reason code (RFC 5280 §5.3.1)
    ca.revoke(cadir, "b.example", "cessation-of-operation", clock=clock)
    clock.t = T0 + timedelta(days=1)
    path = ca.crl(cadir, 7, clock=clock)
    crl = load_crl_files([path])[0]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    assert crl.last_update_utc == clock.t and crl.next_update_utc == clock.t + timedelta(days=7)
    ea = crl.get_revoked_certificate_by_serial_number(a.serial)
    eb = crl.get_revoked_certificate_by_serial_number(b.serial)
    assert len(ea.extensions) == 0
    assert eb.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.cessation_of_operation
    ca_cert = load_certificate_file(cadir / "ca.crt")[0]
    assert crl.is_signature_valid(ca_cert.public_key())
    assert mode(path) == 0o644
    # an expired CRL still revokes, and says so
    b_cert = load_certificate_file(cadir / "certs" / "b.example.crt")[0]
    res = validate_chain(b_cert, [], [ca_cert], [crl], clock.t + timedelta(days=8))
    assert not res.ok and any("expired on" in w for w in res.warnings)


def test_crl_uri_goes_into_issued_certificates(tmp_path, clock):
    d = tmp_path / "uri"
    ca.init_ca(d, "URI CA", crl_uri="http://198.51.100.7/ca.crl", clock=clock)
    ca.issue(d, "gw.example", clock=clock)
    cert = load_certificate_file(d / "certs" / "gw.example.crt")[0]
    dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dp[0].full_name[0].value == "http://198.51.100.7/ca.crl"


# --- other implementations accept ours --------------------------------------------


def _real_time_ca(tmp_path: Path, key_type: str) -> Path:
    d = tmp_path / key_type
    ca.init_ca(d, "O=Interop Lab, CN=Our CA", key_type)
    ca.issue(d, "left.example", ["IP:192.0.2.1"])
    ca.issue(d, "alice@example.com", kind="client")
    ca.revoke(d, "alice@example.com", "key-compromise")
    return d


@needs_openssl
@pytest.mark.parametrize("key_type", ca.KEY_TYPES)
def test_openssl_verifies_our_certificates_and_crl(tmp_path, key_type):
    d = _real_time_ca(tmp_path, key_type)
    left, alice = d / "certs" / "left.example.crt", d / "certs" / "alice@example.com.crt"
    r = subprocess.run(["openssl", "verify", "-CAfile", d / "ca.crt", left, alice], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["openssl", "verify", "-purpose", "sslserver", "-CAfile", d / "ca.crt", left], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["openssl", "verify", "-crl_check", "-CRLfile", d / "crl.pem", "-CAfile", d / "ca.crt", left],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["openssl", "verify", "-crl_check", "-CRLfile", d / "crl.pem", "-CAfile", d / "ca.crt", alice],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "revoked" in r.stdout + r.stderr
    # openssl reads our keys and they belong to the certificates
    for name in ("left.example", "alice@example.com"):
        pub_key = subprocess.run(["openssl", "pkey", "-in", d / "private" / f"{name}.key", "-pubout"], capture_output=True, check=True).stdout
        pub_crt = subprocess.run(["openssl", "x509", "-in", d / "certs" / f"{name}.crt", "-noout", "-pubkey"], capture_output=True,
                                 check=True).stdout
        assert pub_key == pub_crt


@pytest.mark.skipif(shutil.which("pki") is None, reason="needs strongSwan's pki (apt-get install strongswan-pki libstrongswan-standard-plugins)")
@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384", "rsa-3072", "ed25519"])
def test_strongswan_pki_verifies_our_certificates_and_crl(tmp_path, key_type):
    d = _real_time_ca(tmp_path, key_type)
    r = subprocess.run(["pki", "--verify", "--in", d / "certs" / "left.example.crt", "--cacert", d / "ca.crt", "--crl", d / "crl.pem"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "certificate trusted" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(["pki", "--verify", "--in", d / "certs" / "alice@example.com.crt", "--cacert", d / "ca.crt", "--crl",
                        d / "crl.pem"], capture_output=True, text=True)
    assert r.returncode != 0 and "revoked" in r.stdout + r.stderr, r.stdout + r.stderr


def test_init_ca_force_replaces_the_old_cas_crl(cadir, clock):
    ca.crl(cadir, clock=clock)  # the old CA published a CRL (nothing issued yet)
    ca.init_ca(cadir, "Test CA", force=True, clock=clock)
    new_ca = load_certificate_file(cadir / "ca.crt")[0]
    crl = x509.load_pem_x509_crl((cadir / "crl.pem").read_bytes())
    assert crl.is_signature_valid(new_ca.public_key())  # not the old CA's CRL any more
    assert len(crl) == 0
    new = ca.issue(cadir, "new.example", clock=clock)
    cert = load_certificate_file(cadir / "certs" / "new.example.crt")[0]
    assert validate_chain(cert, [], [new_ca], load_crl_files([cadir / "crl.pem"]), clock.t).ok
    assert new.revoked is None


def test_init_ca_force_refuses_to_forget_what_the_old_ca_issued(cadir, clock):
    """The new index forgot them while their files stayed: `list` said none were issued, `issue` of the
    same name that it existed, and nothing could revoke them any more."""
    ca.issue(cadir, "gw.example", clock=clock)
    before = (cadir / "ca.crt").read_bytes(), (cadir / "index.toml").read_bytes()
    with pytest.raises(PkiError, match="the CA being replaced issued 1 certificate .*move the folder aside"):
        ca.init_ca(cadir, "Test CA", force=True, clock=clock)
    assert ((cadir / "ca.crt").read_bytes(), (cadir / "index.toml").read_bytes()) == before
    assert [e.name for e in ca.list_certs(cadir)] == ["gw.example"]


@pytest.mark.parametrize("subject", ["C=CH, serialNumber=a_b*c, CN=gw.example", "C=CH, E=jürg@example.com, CN=gw.example",
                                     "DC=ü, CN=gw.example"])
def test_issued_names_use_string_types_that_hold_their_values(cadir, clock, subject):
    # PrintableString with '_' was a ValueError traceback; IA5String with UTF-8 read as 'jÃ¼rg' by openssl
    ca.issue(cadir, "gw.example", subject=subject, clock=clock)
    cert = load_certificate_file(cadir / "certs" / "gw.example.crt")[0]
    assert cert.subject.public_bytes() == Dn.from_text(subject).der()
    assert format_name(cert.subject) == subject


def test_issued_names_keep_the_cas_string_types(tmp_path, clock):
    d = tmp_path / "odd"
    ca.init_ca(d, "C=CH, serialNumber=a_b, CN=Odd CA", clock=clock)
    e = ca.issue(d, "gw.example", clock=clock)
    assert e.subject == "C=CH, serialNumber=a_b, CN=gw.example"


@pytest.mark.parametrize("subject,needle", [("C=CH, CN=gw\\00.example", "control character"),
                                            ("C=CH, CN=gw\\1B[2J", "control character"),
                                            ("C=1!, CN=gw.example", "two-letter country code")])
def test_issued_names_refuse_what_tools_read_differently(cadir, clock, subject, needle):
    with pytest.raises(PkiError, match=needle):
        ca.issue(cadir, "gw.example", subject=subject, clock=clock)
    with pytest.raises(PkiError, match=needle):
        ca.init_ca(cadir / "sub", subject, clock=clock)
    assert not (cadir / "certs" / "gw.example.crt").exists()


def test_a_full_disk_during_issue_force_keeps_the_old_key_and_certificate(cadir, clock, monkeypatch):
    """The key was renamed in before the certificate was written: a write error on the certificate
    (a full disk) left the new key beside the old certificate, the working key lost."""
    import errno as errno_module
    import os as os_module

    from engine.pki import files as files_module

    ca.issue(cadir, "gw.example", clock=clock)
    key, crt = cadir / "private" / "gw.example.key", cadir / "certs" / "gw.example.crt"
    before = key.read_bytes(), crt.read_bytes()
    real_write = os_module.write

    def write(fd, data):
        if bytes(data[:27]) == b"-----BEGIN CERTIFICATE-----":  # the certificate, not the key
            raise OSError(errno_module.ENOSPC, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr(files_module.os, "write", write)
    with pytest.raises(PkiError, match="gw.example.crt: cannot write"):
        ca.issue(cadir, "gw.example", force=True, clock=clock)
    assert (key.read_bytes(), crt.read_bytes()) == before
    assert not [p for p in cadir.rglob(".*.tmp")]


def test_a_passphrase_too_long_to_encrypt_with_is_a_pki_error(tmp_path):
    """cryptography refuses passphrases over 1023 bytes with a ValueError: the PKI screen passes its
    passphrase straight to issue()."""
    import pytest

    from engine.pki import PkiError
    from engine.pki.ca import init_ca, issue
    from engine.secret import Secret

    init_ca(tmp_path / "pki", "Test CA")
    with pytest.raises(PkiError, match="longer than 1023 bytes"):
        issue(tmp_path / "pki", "gw.example", key_passphrase=Secret(b"x" * 1024))
    assert not (tmp_path / "pki" / "certs" / "gw.example.crt").exists()
