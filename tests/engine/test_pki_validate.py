"""validate_chain: certificates made by openssl (as ../shared/interop/make-certs
does) and by cryptography builders, with dates, constraints and CRLs."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from engine.pki import PkiError, load_certificate_file, load_crl_files, load_crls, validate_chain
from engine.pki.validate import MAX_CHAIN_DEPTH

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI (apt-get install openssl)")


# --- make-certs, reproduced -----------------------------------------------------


def make_certs(d: Path, kind: str = "ecdsa") -> Path:
    """The openssl commands of ../shared/interop/make-certs (CA, left, right)."""
    alg = {"ecdsa": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
           "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]}[kind]
    d.mkdir(parents=True, exist_ok=True)

    def run(*args):
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    run("genpkey", *alg, "-out", "ca.key")
    run("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650", "-subj", "/O=Interop Lab/CN=Interop Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "ca.crt")
    for name, ip in (("left", "192.0.2.1"), ("right", "192.0.2.2")):
        run("genpkey", *alg, "-out", f"{name}.key")
        run("req", "-new", "-key", f"{name}.key", "-subj", f"/O=Interop Lab/CN={name}.example", "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text(
            f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nsubjectAltName=DNS:{name}.example,IP:{ip}\n"
        )
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-sha256",
            "-days", "3650", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    return d


def one(path: Path) -> x509.Certificate:
    return load_certificate_file(path)[0]


NOW = datetime.now(timezone.utc)
"""Fixed instant for the builder-made certificates (valid from NOW - 1 day)."""


def _now() -> datetime:
    """Openssl-made certificates start when they are made: check them at the current time."""
    return datetime.now(timezone.utc) + timedelta(seconds=1)


@needs_openssl
@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_make_certs_certificates_validate(tmp_path, kind):
    d = make_certs(tmp_path / kind, kind)
    ca = one(d / "ca.crt")
    for side in ("left", "right"):
        res = validate_chain(one(d / f"{side}.crt"), [], [ca], [], _now())
        assert res.ok, res.reason
        assert res.chain == (one(d / f"{side}.crt"), ca)
        assert "Interop Test CA" in res.reason


@needs_openssl
def test_make_certs_with_another_ca_fails(tmp_path):
    a = make_certs(tmp_path / "a")
    b = make_certs(tmp_path / "b")  # same CA name, different key
    res = validate_chain(one(a / "left.crt"), [], [one(b / "ca.crt")], [], _now())
    assert not res.ok
    assert "does not verify" in res.reason and "left.example" in res.reason


@needs_openssl
def test_make_certs_expired_and_not_yet_valid(tmp_path):
    d = make_certs(tmp_path / "d")
    left, ca = one(d / "left.crt"), one(d / "ca.crt")
    later = left.not_valid_after_utc + timedelta(seconds=1)
    res = validate_chain(left, [], [ca], [], later)
    assert not res.ok and "expired on" in res.reason and "left.example" in res.reason
    res = validate_chain(left, [], [ca], [], left.not_valid_before_utc - timedelta(days=1))
    assert not res.ok and "not valid before" in res.reason


@needs_openssl
def test_openssl_made_crl_revokes(tmp_path):
    """A CRL written by `openssl ca -gencrl` (an independent CRL encoder)."""
    d = make_certs(tmp_path / "d")
    (d / "index.txt").write_text("")
    (d / "crlnumber").write_text("01\n")
    (d / "ca.cnf").write_text(
        "[ca]\ndefault_ca=c\n[c]\ndatabase=index.txt\ncrlnumber=crlnumber\ndefault_md=sha256\ndefault_crl_days=7\n"
        "certificate=ca.crt\nprivate_key=ca.key\n"
    )

    def run(*args):
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    run("ca", "-config", "ca.cnf", "-revoke", "left.crt", "-crl_reason", "keyCompromise")
    run("ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem")
    crls = load_crl_files([d / "crl.pem"])
    ca, left, right = one(d / "ca.crt"), one(d / "left.crt"), one(d / "right.crt")
    res = validate_chain(left, [], [ca], crls, _now())
    assert not res.ok
    assert f"{left.serial_number:#x}" in res.reason and "revoked on" in res.reason and "key compromise" in res.reason
    assert validate_chain(right, [], [ca], crls, _now()).ok


# --- builders for the remaining cases --------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Unit"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def build(
    cn: str,
    issuer: tuple[x509.Certificate, object] | None = None,
    *,
    ca: bool = False,
    path_length: int | None = None,
    key_usage: str | None = "auto",
    basic: bool = True,
    start: datetime = NOW - timedelta(days=1),
    end: datetime = NOW + timedelta(days=30),
    critical_unknown: bool = False,
):
    key = ec.generate_private_key(ec.SECP256R1())
    signer_cert, signer_key = issuer if issuer else (None, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(signer_cert.subject if signer_cert else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if basic:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    if key_usage == "auto":
        key_usage = "cert" if ca else "sign"
    if key_usage:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=key_usage == "sign", content_commitment=key_usage == "nonrep", key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=key_usage == "cert", crl_sign=key_usage == "cert",
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    if critical_unknown:
        b = b.add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"), critical=True)
    return b.sign(signer_key, hashes.SHA256()), key


def build_crl(issuer, revoked=(), *, last=NOW - timedelta(hours=1), nxt=NOW + timedelta(days=7), reason=None, signer_key=None):
    cert, key = issuer
    b = x509.CertificateRevocationListBuilder().issuer_name(cert.subject).last_update(last).next_update(nxt)
    for serial in revoked:
        rb = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - timedelta(minutes=30))
        if reason is not None:
            rb = rb.add_extension(x509.CRLReason(reason), critical=False)
        b = b.add_revoked_certificate(rb.build())
    return b.sign(signer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    root = build("Root", ca=True)
    inter = build("Intermediate", root, ca=True)
    leaf = build("leaf.example", inter)
    direct = build("direct.example", root)
    return {"root": root, "inter": inter, "leaf": leaf, "direct": direct}


def test_chain_through_an_intermediate(pki):
    root, inter, leaf = pki["root"][0], pki["inter"][0], pki["leaf"][0]
    res = validate_chain(leaf, [inter], [root], [], NOW)
    assert res.ok, res.reason
    assert res.chain == (leaf, inter, root)
    # without the intermediate there is no path
    res = validate_chain(leaf, [], [root], [], NOW)
    assert not res.ok and "Intermediate" in res.reason and "not a trusted CA" in res.reason
    # the intermediate itself may be the trust anchor
    assert validate_chain(leaf, [], [inter], [], NOW).chain == (leaf, inter)


def test_irrelevant_intermediates_and_extra_cas_are_ignored(pki):
    other_root = build("Other Root", ca=True)
    res = validate_chain(pki["leaf"][0], [pki["direct"][0], pki["inter"][0]], [other_root[0], pki["root"][0]], [], NOW)
    assert res.ok and res.chain[-1] == pki["root"][0]


def test_no_ca_configured(pki):
    res = validate_chain(pki["leaf"][0], [], [], [], NOW)
    assert not res.ok and "no CA certificate is configured" in res.reason


def test_intermediate_that_is_not_a_ca_is_refused(pki):
    fake = build("Fake CA", pki["root"], ca=False, key_usage="cert")
    leaf = build("x.example", fake)
    res = validate_chain(leaf[0], [fake[0]], [pki["root"][0]], [], NOW)
    assert not res.ok and "not a CA certificate" in res.reason and "Fake CA" in res.reason
    nobc = build("NoBC CA", pki["root"], basic=False, key_usage="cert")
    res = validate_chain(build("y.example", nobc)[0], [nobc[0]], [pki["root"][0]], [], NOW)
    assert not res.ok and "basicConstraints" in res.reason


def test_ca_without_keycertsign_is_refused(pki):
    inter = build("Sign-only CA", pki["root"], ca=True, key_usage="sign")
    res = validate_chain(build("z.example", inter)[0], [inter[0]], [pki["root"][0]], [], NOW)
    assert not res.ok and "keyCertSign" in res.reason


def test_path_length_constraint(pki):
    root0 = build("Root pathlen 0", ca=True, path_length=0)
    inter = build("Sub", root0, ca=True)
    leaf = build("p.example", inter)
    res = validate_chain(leaf[0], [inter[0]], [root0[0]], [], NOW)
    assert not res.ok and "allows 0 CA(s) below it" in res.reason
    assert validate_chain(build("q.example", root0)[0], [], [root0[0]], [], NOW).ok


def test_end_entity_key_usage(pki):
    neither = build("nr.example", pki["root"], key_usage="neither")  # nonRepudiation alone is enough (RFC 4945)
    res = validate_chain(neither[0], [], [pki["root"][0]], [], NOW)
    assert not res.ok and "digitalSignature" in res.reason
    absent = build("nku.example", pki["root"], key_usage=None)  # no keyUsage: any use (RFC 5280)
    assert validate_chain(absent[0], [], [pki["root"][0]], [], NOW).ok


def test_expired_ca_fails(pki):
    old_root = build("Old Root", ca=True, end=NOW - timedelta(days=1), start=NOW - timedelta(days=400))
    leaf = build("o.example", old_root)
    res = validate_chain(leaf[0], [], [old_root[0]], [], NOW)
    assert not res.ok and "CA" in res.reason and "expired on" in res.reason


def test_unknown_critical_extension(pki):
    leaf = build("crit.example", pki["root"], critical_unknown=True)
    res = validate_chain(leaf[0], [], [pki["root"][0]], [], NOW)
    assert not res.ok and "1.3.6.1.4.1.55555.1" in res.reason


def test_pinned_self_signed_peer():
    selfsigned = build("self.example", None, ca=False)
    assert validate_chain(selfsigned[0], [], [selfsigned[0]], [], NOW).ok


def test_too_long_chain_is_refused():
    chain = [build("R", ca=True)]
    for i in range(MAX_CHAIN_DEPTH + 1):
        chain.append(build(f"I{i}", chain[-1], ca=True))
    leaf = build("deep.example", chain[-1])
    res = validate_chain(leaf[0], [c for c, _ in chain[1:]], [chain[0][0]], [], NOW)
    assert not res.ok and "no path" in res.reason


# --- revocation ---------------------------------------------------------------


def test_revoked_leaf_fails_with_serial_date_and_reason(pki):
    leaf, inter, root = pki["leaf"][0], pki["inter"][0], pki["root"][0]
    crl = build_crl(pki["inter"], [leaf.serial_number], reason=x509.ReasonFlags.superseded)
    res = validate_chain(leaf, [inter], [root], [crl], NOW)
    assert not res.ok and not res.chain
    assert f"serial {leaf.serial_number:#x}" in res.reason
    assert (NOW - timedelta(minutes=30)).strftime("%Y-%m-%d") in res.reason
    assert "superseded" in res.reason and "Intermediate" in res.reason


def test_revoked_intermediate_fails(pki):
    leaf, inter, root = pki["leaf"][0], pki["inter"][0], pki["root"][0]
    crl = build_crl(pki["root"], [inter.serial_number])
    res = validate_chain(leaf, [inter], [root], [crl], NOW)
    assert not res.ok and "Intermediate" in res.reason and "no reason given" in res.reason


def test_crl_of_another_issuer_does_not_apply(pki):
    leaf, inter, root = pki["leaf"][0], pki["inter"][0], pki["root"][0]
    crl = build_crl(pki["root"], [leaf.serial_number])  # serial listed, but by the wrong CA
    assert validate_chain(leaf, [inter], [root], [crl], NOW).ok


def test_wrongly_signed_crl_is_ignored_and_reported(pki):
    direct, root = pki["direct"][0], pki["root"][0]
    forger = ec.generate_private_key(ec.SECP256R1())
    crl = build_crl(pki["root"], [direct.serial_number], signer_key=forger)
    res = validate_chain(direct, [], [root], [crl], NOW)
    assert res.ok
    assert any("not signed by that CA" in w for w in res.warnings)
    strict = validate_chain(direct, [], [root], [crl], NOW, revocation="strict")
    assert not strict.ok and "revocation = strict" in strict.reason


def test_expired_crl_still_revokes_and_is_reported(pki):
    direct, root = pki["direct"][0], pki["root"][0]
    stale = build_crl(pki["root"], [direct.serial_number], last=NOW - timedelta(days=20), nxt=NOW - timedelta(days=10))
    res = validate_chain(direct, [], [root], [stale], NOW)
    assert not res.ok and "revoked" in res.reason
    assert any("expired on" in w for w in res.warnings)
    empty_stale = build_crl(pki["root"], [], last=NOW - timedelta(days=20), nxt=NOW - timedelta(days=10))
    res = validate_chain(direct, [], [root], [empty_stale], NOW)
    assert res.ok and any("CRL" in w and "expired on" in w for w in res.warnings)
    assert not validate_chain(direct, [], [root], [empty_stale], NOW, revocation="strict").ok


def test_strict_revocation_needs_a_current_crl_per_issuer(pki):
    leaf, inter, root = pki["leaf"][0], pki["inter"][0], pki["root"][0]
    only_inter = build_crl(pki["inter"], [])
    res = validate_chain(leaf, [inter], [root], [only_inter], NOW, revocation="strict")
    assert not res.ok and '"O=Unit, CN=Root"' in res.reason
    res = validate_chain(leaf, [inter], [root], [only_inter, build_crl(pki["root"], [])], NOW, revocation="strict")
    assert res.ok, res.reason


# --- loading --------------------------------------------------------------------


def test_load_crls_pem_several_and_der(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization

    a, b = build_crl(pki["root"], [1]), build_crl(pki["inter"], [2])
    pem = a.public_bytes(serialization.Encoding.PEM) + b.public_bytes(serialization.Encoding.PEM)
    assert [c.issuer for c in load_crls(pem)] == [a.issuer, b.issuer]
    assert load_crls(a.public_bytes(serialization.Encoding.DER))[0] == a
    with pytest.raises(PkiError, match="no PEM X509 CRL"):
        load_crls(b"-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(PkiError, match="neither a PEM nor a DER CRL"):
        load_crls(b"junk")
    with pytest.raises(PkiError, match="cannot read CRL"):
        load_crl_files([tmp_path / "missing.crl"])
