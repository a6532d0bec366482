"""load_private_key: PEM (PKCS#8 and traditional), encrypted or not, DER; clear errors."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from engine.crypto.signature import PrivateKeyError, key_description, load_private_key, sign_auth, verify_auth
from engine.secret import Secret

PASS = Secret("correct horse battery staple")


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP384R1())


def _pem(key, fmt, passphrase: bytes | None = None) -> bytes:
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc)


def _same_key(a, b) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_key().public_bytes(serialization.Encoding.DER, fmt) == b.public_key().public_bytes(serialization.Encoding.DER, fmt)


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL])
@pytest.mark.parametrize("which", ["rsa_key", "ec_key"])
@pytest.mark.parametrize("encrypted", [False, True])
def test_loads_pkcs8_and_traditional_pem(request, fmt, which, encrypted):
    key = request.getfixturevalue(which)
    pem = _pem(key, fmt, PASS.reveal() if encrypted else None)
    loaded = load_private_key(pem, PASS if encrypted else None)
    assert _same_key(loaded, key)
    method, auth = sign_auth(loaded, b"octets", {2, 3, 4})
    assert verify_auth(key.public_key(), method, auth, b"octets")


def test_loads_der_pkcs8_plain_and_encrypted(ec_key):
    plain = ec_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert _same_key(load_private_key(plain), ec_key)
    enc = ec_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(PASS.reveal())
    )
    assert _same_key(load_private_key(enc, PASS), ec_key)
    with pytest.raises(PrivateKeyError, match="encrypted and no passphrase"):
        load_private_key(enc)


def test_ed25519_pkcs8():
    key = ed25519.Ed25519PrivateKey.generate()
    assert key_description(load_private_key(_pem(key, serialization.PrivateFormat.PKCS8))) == "Ed25519"


def test_wrong_passphrase_is_named_and_does_not_leak(rsa_key):
    pem = _pem(rsa_key, serialization.PrivateFormat.PKCS8, PASS.reveal())
    with pytest.raises(PrivateKeyError, match=r"^/etc/k\.pem: wrong passphrase") as err:
        load_private_key(pem, Secret("nope"), source="/etc/k.pem")
    assert "nope" not in str(err.value) and "correct horse" not in repr(err.value)


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL])
def test_missing_passphrase(rsa_key, fmt):
    pem = _pem(rsa_key, fmt, PASS.reveal())
    with pytest.raises(PrivateKeyError, match="encrypted and no passphrase"):
        load_private_key(pem, None)


def test_passphrase_for_an_unencrypted_key_is_ignored(ec_key):
    pem = _pem(ec_key, serialization.PrivateFormat.PKCS8)
    assert _same_key(load_private_key(pem, PASS), ec_key)


def test_wrong_formats_say_what_they_are(ec_key):
    pub = ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(PrivateKeyError, match="public key, not a private key"):
        load_private_key(pub)
    ssh = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    with pytest.raises(PrivateKeyError, match="OpenSSH"):
        load_private_key(ssh)
    with pytest.raises(PrivateKeyError, match="certificate, not a private key"):
        load_private_key(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    with pytest.raises(PrivateKeyError, match="not a readable private key"):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(PrivateKeyError, match="not a readable private key"):
        load_private_key(b"\x00garbage that is neither PEM nor DER")


def test_unusable_key_types_are_refused():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(PrivateKeyError, match="too short"):
        load_private_key(_pem(small, serialization.PrivateFormat.PKCS8))
    k = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(PrivateKeyError, match="secp256k1"):
        load_private_key(_pem(k, serialization.PrivateFormat.PKCS8))
    d = dsa.generate_private_key(2048)
    with pytest.raises(PrivateKeyError, match="DSA"):
        load_private_key(_pem(d, serialization.PrivateFormat.PKCS8))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI (apt-get install openssl)")
def test_openssl_encrypted_traditional_and_pkcs8(tmp_path):
    """Keys encrypted by openssl itself (legacy Proc-Type header and PKCS#8 PBES2)."""
    plain = tmp_path / "k.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(plain)],
                   check=True, capture_output=True)
    trad = tmp_path / "trad.pem"
    subprocess.run(["openssl", "ec", "-in", str(plain), "-aes256", "-passout", "pass:s3cret", "-out", str(trad)],
                   check=True, capture_output=True)
    assert b"Proc-Type: 4,ENCRYPTED" in trad.read_bytes()
    p8 = tmp_path / "p8.pem"
    subprocess.run(["openssl", "pkcs8", "-topk8", "-in", str(plain), "-v2", "aes-256-cbc", "-passout", "pass:s3cret",
                    "-out", str(p8)], check=True, capture_output=True)
    ref = load_private_key(plain.read_bytes())
    for f in (trad, p8):
        assert _same_key(load_private_key(f.read_bytes(), Secret("s3cret")), ref)
        with pytest.raises(PrivateKeyError, match="wrong passphrase"):
            load_private_key(f.read_bytes(), Secret("S3cret"))


def test_key_block_after_other_text_and_blocks(ec_key):
    """openssl pkcs12 output ("Bag Attributes") and a certificate+key bundle."""
    key_pem = _pem(ec_key, serialization.PrivateFormat.PKCS8)
    cert_block = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    bundle = b"Bag Attributes\n    localKeyID: 01 02\n" + cert_block + key_pem
    assert _same_key(load_private_key(bundle), ec_key)
    enc = _pem(ec_key, serialization.PrivateFormat.TraditionalOpenSSL, PASS.reveal())
    assert _same_key(load_private_key(cert_block + enc, PASS), ec_key)
    with pytest.raises(PrivateKeyError, match="encrypted and no passphrase"):
        load_private_key(cert_block + enc)
