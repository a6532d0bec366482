"""Second review of pki17's link check (a chain link verified by the issuer's key, names compared by
value): the signature algorithm inside the TBSCertificate must be the outer one (RFC 5280 §4.1.1.2,
charon's x509_cert.c "signature algorithms do not agree"; cryptography's verify_directly_issued_by
refused it too), the issuer named by value, and a signature that does not fit the key refused."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from engine.pki.validate import validate_chain

NOW = datetime.now(timezone.utc)


def _name(cn: str, *, printable: bool = False) -> x509.Name:
    kind = x509.name._ASN1Type.PrintableString if printable else x509.name._ASN1Type.UTF8String
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Link Review", kind),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn, kind)])


def _builder(subject, issuer, public_key):
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=30)))


def _ca(key, name):
    return (_builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256() if not isinstance(key, ed25519.Ed25519PrivateKey) else None))


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + body


def _read(der: bytes, i: int) -> tuple[int, int]:
    """(start, end) of the DER element at i, header included."""
    n, j = der[i + 1], i + 2
    if n & 0x80:
        k = n & 0x7F
        n, j = int.from_bytes(der[j:j + k], "big"), j + k
    return i, j + n


def _resigned(cert: x509.Certificate, outer_alg: bytes, sign) -> x509.Certificate:
    """`cert`'s TBS (its inner algorithm kept) under another outer AlgorithmIdentifier, signed anew."""
    der = cert.public_bytes(serialization.Encoding.DER)
    _, body = _read(der, 0)
    start = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    _, tbs_end = _read(der, start)
    tbs = der[start:tbs_end]
    return x509.load_der_x509_certificate(_tlv(0x30, tbs + outer_alg + _tlv(0x03, b"\0" + sign(tbs))))


ECDSA_SHA256 = _tlv(0x30, _tlv(0x06, bytes.fromhex("2a8648ce3d040302")))
SHA256_RSA = _tlv(0x30, _tlv(0x06, bytes.fromhex("2a864886f70d01010b")) + b"\x05\x00")


def test_an_inner_algorithm_other_than_the_outer_one_fails_the_link():
    """The TBS says ecdsa-with-SHA384, the outer one (and the signature) ecdsa-with-SHA256: the CA signed
    a certificate whose signed content names another algorithm. pki17's link check took it."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(ca_key, _name("Link CA"))
    leaf = _builder(_name("gw"), ca.subject, ec.generate_private_key(ec.SECP256R1()).public_key()).sign(ca_key, hashes.SHA384())
    assert validate_chain(leaf, [], [ca], [], NOW).ok
    odd = _resigned(leaf, ECDSA_SHA256, lambda tbs: ca_key.sign(tbs, ec.ECDSA(hashes.SHA256())))
    res = validate_chain(odd, [], [ca], [], NOW)
    assert not res.ok and "do not agree" in res.reason, res.reason


def test_an_inner_algorithm_other_than_the_outer_one_fails_an_intermediate():
    ca_key = rsa.generate_private_key(65537, 2048)
    ca = _ca(ca_key, _name("Link RSA CA"))
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub = (_builder(_name("Link Sub"), ca.subject, sub_key.public_key())
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(ca_key, hashes.SHA256(), rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), 32)))
    leaf = _builder(_name("gw"), sub.subject, ec.generate_private_key(ec.SECP256R1()).public_key()).sign(sub_key, hashes.SHA256())
    assert validate_chain(leaf, [sub], [ca], [], NOW).ok  # PSS inside and out
    odd = _resigned(sub, SHA256_RSA, lambda tbs: ca_key.sign(tbs, padding.PKCS1v15(), hashes.SHA256()))
    res = validate_chain(leaf, [odd], [ca], [], NOW)
    assert not res.ok and "do not agree" in res.reason, res.reason


def test_an_issuer_named_in_another_string_type_and_case_is_found_and_its_key_checked():
    """pki17's reason for the change: names compared by value (RFC 5280 §7.1), the key still decides."""
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = _ca(ca_key, _name("Link CA", printable=True))
    lower = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "link  review"),
                       x509.NameAttribute(NameOID.COMMON_NAME, "LINK CA")])
    leaf = _builder(_name("gw"), lower, ec.generate_private_key(ec.SECP256R1()).public_key()).sign(ca_key, hashes.SHA384())
    assert validate_chain(leaf, [], [ca], [], NOW).ok
    other = _ca(ec.generate_private_key(ec.SECP384R1()), _name("Link CA", printable=True))
    res = validate_chain(leaf, [], [other], [], NOW)
    assert not res.ok and "does not verify" in res.reason, res.reason
    named_else = _builder(_name("gw"), _name("Link CB"), ec.generate_private_key(ec.SECP256R1()).public_key()).sign(
        ca_key, hashes.SHA384())
    assert not validate_chain(named_else, [], [ca], [], NOW).ok  # the right key, another issuer name


def test_a_signature_that_does_not_fit_the_key_type_is_refused():
    """An Ed25519 CA key under a certificate claiming ecdsa-with-SHA256, and the other way round."""
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_ca = _ca(ed_key, _name("Link Ed CA"))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _builder(_name("gw"), ed_ca.subject, ec_key.public_key()).sign(ed_key, None)
    assert validate_chain(leaf, [], [ed_ca], [], NOW).ok
    claimed = _resigned(leaf, ECDSA_SHA256, lambda tbs: ed_key.sign(tbs))
    assert not validate_chain(claimed, [], [ed_ca], [], NOW).ok


def _dsa_key_of_bits(bits: int):
    """A DSA public key with a `bits`-bit p, written as DER (cryptography's own constructor takes 1024
    to 4096 bits; OpenSSL verifies with up to 10000): a peer need not hold its private key."""
    import secrets

    from cryptography.hazmat.primitives.serialization import load_der_public_key

    def integer(v: int) -> bytes:
        return _tlv(0x02, v.to_bytes((v.bit_length() + 8) // 8, "big"))

    p = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    q = secrets.randbits(256) | (1 << 255) | 1
    params = _tlv(0x30, integer(p) + integer(q) + integer(secrets.randbits(bits - 2)))
    spki = _tlv(0x30, _tlv(0x30, _tlv(0x06, bytes.fromhex("2a8648ce380401")) + params)
                + _tlv(0x03, b"\0" + integer(secrets.randbits(bits - 2))))
    return load_der_public_key(spki)


def test_a_peer_sent_dsa_ca_key_is_bounded():
    """Each candidate issuer the peer sends is a signature check before it is authenticated; pki17 bounded
    RSA moduli and exponents, and a DSA key of 10,000 bits (OpenSSL's largest) costs ~37 ms per check, 70
    times a 2048-bit one: 16 such intermediates of the end certificate's issuer name, ~0.6 s of CPU per
    IKE_AUTH. FIPS 186-4's largest DSA p is 3072 bits (charon has no DSA at all)."""
    from cryptography.hazmat.primitives.asymmetric import dsa

    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca(root_key, _name("Link Root"))
    sub_name = _name("Link DSA Sub")
    big = (_builder(sub_name, root.subject, _dsa_key_of_bits(10000))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(root_key, hashes.SHA256()))
    leaf = _builder(_name("gw"), sub_name, ec.generate_private_key(ec.SECP256R1()).public_key()).sign(
        dsa.generate_private_key(2048), hashes.SHA256())  # dsa-with-SHA256: checked with the DSA key
    res = validate_chain(leaf, [big], [root], [], NOW)
    assert not res.ok and "DSA" in res.reason and "10000 bits" in res.reason, res.reason
    small_key = dsa.generate_private_key(2048)
    small = (_builder(sub_name, root.subject, small_key.public_key())
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(root_key, hashes.SHA256()))
    leaf = _builder(_name("gw"), sub_name, ec.generate_private_key(ec.SECP256R1()).public_key()).sign(
        small_key, hashes.SHA256())
    assert validate_chain(leaf, [small], [root], [], NOW).ok
