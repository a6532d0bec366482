"""RFC 7427 signature authentication and the RFC 7296 classic signature methods.

OpenSSL (the command-line tool, a separate implementation path from our use of
`cryptography`) signs and verifies the other side of several round trips.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.crypto.signature import (
    ALGORITHM_IDENTIFIERS,
    IkeAuthMethod,
    SignatureError,
    SignatureScheme,
    UnsupportedSignatureAlgorithm,
    build_auth_data,
    choose_scheme,
    hash_algorithms_notify_data,
    parse_algorithm_identifier,
    parse_auth_data,
    parse_hash_algorithms,
    sign_auth,
    sign_with_scheme,
    verify_auth,
)

OCTETS = b"RealMessage1 | Nr | prf(SK_pi, IDi')" * 3
ALL_HASHES = {2, 3, 4, 5}

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI (apt-get install openssl)")


@pytest.fixture(scope="module")
def keys():
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ed448": ed448.Ed448PrivateKey.generate(),
    }


KEY_FOR_SCHEME = {
    SignatureScheme.RSA_PSS_SHA256: "rsa",
    SignatureScheme.RSA_PSS_SHA384: "rsa",
    SignatureScheme.RSA_PSS_SHA512: "rsa",
    SignatureScheme.RSA_PKCS1_SHA256: "rsa",
    SignatureScheme.RSA_PKCS1_SHA384: "rsa",
    SignatureScheme.RSA_PKCS1_SHA512: "rsa",
    SignatureScheme.ECDSA_SHA256: "p256",
    SignatureScheme.ECDSA_SHA384: "p384",
    SignatureScheme.ECDSA_SHA512: "p521",
    SignatureScheme.ED25519: "ed25519",
    SignatureScheme.ED448: "ed448",
}


# --- AlgorithmIdentifiers --------------------------------------------------------

# RFC 7427 appendix A (A.1 PKCS#1 v1.5, A.3 ECDSA) and RFC 8420 §2 (Ed25519),
# typed from the RFC text.
RFC_BLOBS = {
    SignatureScheme.RSA_PKCS1_SHA256: "300d06092a864886f70d01010b0500",
    SignatureScheme.RSA_PKCS1_SHA384: "300d06092a864886f70d01010c0500",
    SignatureScheme.RSA_PKCS1_SHA512: "300d06092a864886f70d01010d0500",
    SignatureScheme.ECDSA_SHA256: "300a06082a8648ce3d040302",
    SignatureScheme.ECDSA_SHA384: "300a06082a8648ce3d040303",
    SignatureScheme.ECDSA_SHA512: "300a06082a8648ce3d040304",
    SignatureScheme.ED25519: "300506032b6570",
}
# RFC 7427 A.4.3: RSASSA-PSS with SHA-256, MGF1-SHA-256, salt 32, trailerField 1.
RFC7427_PSS_SHA256 = (
    "304606092a864886f70d01010a3039a00f300d06096086480165030402010500a11c301a06092a864886f70d"
    "010108300d06096086480165030402010500a203020120a303020101"
)
# RFC 7427 A.4.1: RSASSA-PSS with all defaults (SHA-1).
RFC7427_PSS_DEFAULT = "300d06092a864886f70d01010a3000"


@pytest.mark.parametrize("scheme", sorted(RFC_BLOBS, key=lambda s: s.value))
def test_algorithm_identifiers_are_rfc_7427_byte_exact(scheme):
    assert scheme.algorithm_identifier == bytes.fromhex(RFC_BLOBS[scheme])
    assert parse_algorithm_identifier(bytes.fromhex(RFC_BLOBS[scheme])).scheme is scheme


def test_every_scheme_has_a_blob_that_parses_back():
    for scheme in SignatureScheme:
        parsed = parse_algorithm_identifier(ALGORITHM_IDENTIFIERS[scheme])
        assert parsed.scheme is scheme


@pytest.mark.parametrize(
    "scheme,salt", [(SignatureScheme.RSA_PSS_SHA256, 32), (SignatureScheme.RSA_PSS_SHA384, 48), (SignatureScheme.RSA_PSS_SHA512, 64)]
)
def test_pss_blobs_declare_salt_equal_to_hash_length(scheme, salt):
    assert parse_algorithm_identifier(scheme.algorithm_identifier).salt_length == salt


def test_rfc_7427_pss_example_with_trailer_field_parses():
    parsed = parse_algorithm_identifier(bytes.fromhex(RFC7427_PSS_SHA256))
    assert parsed.scheme is SignatureScheme.RSA_PSS_SHA256
    assert parsed.salt_length == 32


def test_pss_with_default_sha1_parameters_is_refused_with_a_reason():
    with pytest.raises(UnsupportedSignatureAlgorithm, match="SHA-1"):
        parse_algorithm_identifier(bytes.fromhex(RFC7427_PSS_DEFAULT))


def test_pss_without_null_hash_parameters_parses():
    # RFC 4055 says a sender SHOULD omit the NULL; some do.
    der = bytes.fromhex(
        "303d06092a864886f70d01010a3030a00d300b0609608648016503040201"
        "a11a301806092a864886f70d010108300b0609608648016503040201a203020120"
    )
    assert parse_algorithm_identifier(der) == parse_algorithm_identifier(SignatureScheme.RSA_PSS_SHA256.algorithm_identifier)


@pytest.mark.parametrize(
    "hexblob,needle",
    [
        ("300d06092a864886f70d0101050500", "sha1WithRSAEncryption"),
        ("300906072a8648ce3d0401", "ecdsa-with-SHA1"),
        ("300d06092a864886f70d01010e0500", "sha224WithRSAEncryption"),
        ("300b06092b0601040182370a03", "1.3.6.1.4.1.311.10.3"),  # some unrelated OID
    ],
)
def test_unknown_or_refused_algorithms_name_what_they_are(hexblob, needle):
    with pytest.raises(UnsupportedSignatureAlgorithm, match=needle.replace(".", r"\.")):
        parse_algorithm_identifier(bytes.fromhex(hexblob))


@needs_openssl
def test_our_pss_blob_matches_what_openssl_writes(tmp_path):
    """OpenSSL's own RSASSA-PSS AlgorithmIdentifier (in a PSS-signed certificate)."""
    key = tmp_path / "k.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
                   check=True, capture_output=True)
    for digest, scheme in (("sha256", SignatureScheme.RSA_PSS_SHA256), ("sha384", SignatureScheme.RSA_PSS_SHA384),
                           ("sha512", SignatureScheme.RSA_PSS_SHA512)):
        crt = tmp_path / f"{digest}.der"
        subprocess.run(["openssl", "req", "-x509", "-new", "-key", str(key), f"-{digest}", "-subj", "/CN=pss", "-days", "1",
                        "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest", "-outform", "DER",
                        "-out", str(crt)], check=True, capture_output=True)
        assert _certificate_signature_algorithm(crt.read_bytes()) == scheme.algorithm_identifier


def _der_element(data: bytes, pos: int) -> tuple[int, int]:
    """(start of value, end) of the DER element at pos (test-local, independent reader)."""
    n = data[pos + 1]
    if n < 0x80:
        return pos + 2, pos + 2 + n
    k = n & 0x7F
    length = int.from_bytes(data[pos + 2 : pos + 2 + k], "big")
    return pos + 2 + k, pos + 2 + k + length


def _certificate_signature_algorithm(der: bytes) -> bytes:
    start, _ = _der_element(der, 0)  # Certificate SEQUENCE
    _, tbs_end = _der_element(der, start)  # tbsCertificate
    _, alg_end = _der_element(der, tbs_end)  # signatureAlgorithm
    return der[tbs_end:alg_end]


# --- SIGNATURE_HASH_ALGORITHMS ---------------------------------------------------


def test_hash_algorithms_notify_data_default_announces_sha2_and_identity():
    assert hash_algorithms_notify_data() == bytes.fromhex("0002000300040005")


def test_hash_algorithms_notify_data_from_schemes_dedups_in_order():
    data = hash_algorithms_notify_data(
        [SignatureScheme.ECDSA_SHA384, SignatureScheme.RSA_PSS_SHA384, SignatureScheme.ED25519, SignatureScheme.RSA_PKCS1_SHA256]
    )
    assert data == bytes.fromhex("000300050002")


def test_parse_hash_algorithms_keeps_unknown_ids_and_rejects_odd_length():
    assert parse_hash_algorithms(bytes.fromhex("00020004ff01")) == {2, 4, 0xFF01}
    assert parse_hash_algorithms(b"") == frozenset()
    with pytest.raises(SignatureError, match="odd length"):
        parse_hash_algorithms(b"\x00\x02\x00")


# --- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("scheme", list(SignatureScheme), ids=lambda s: s.value)
def test_round_trip_every_scheme(keys, scheme):
    key = keys[KEY_FOR_SCHEME[scheme]]
    auth = build_auth_data(scheme, sign_with_scheme(key, scheme, OCTETS))
    assert auth[0] == len(scheme.algorithm_identifier)
    alg, sig = parse_auth_data(auth)
    assert alg.scheme is scheme and sig
    assert verify_auth(key.public_key(), IkeAuthMethod.DIGITAL_SIGNATURE, auth, OCTETS) is True
    assert verify_auth(key.public_key(), IkeAuthMethod.DIGITAL_SIGNATURE, auth, OCTETS + b"x") is False
    flipped = auth[:-1] + bytes((auth[-1] ^ 1,))
    assert verify_auth(key.public_key(), IkeAuthMethod.DIGITAL_SIGNATURE, flipped, OCTETS) is False


@pytest.mark.parametrize(
    "keyname,peer,method,scheme",
    [
        ("rsa", ALL_HASHES, IkeAuthMethod.DIGITAL_SIGNATURE, SignatureScheme.RSA_PSS_SHA256),
        ("rsa", {4}, IkeAuthMethod.DIGITAL_SIGNATURE, SignatureScheme.RSA_PSS_SHA512),
        ("rsa", {5}, IkeAuthMethod.RSA_SIG, None),  # announced, but nothing an RSA key uses
        ("rsa", None, IkeAuthMethod.RSA_SIG, None),
        ("p256", ALL_HASHES, IkeAuthMethod.DIGITAL_SIGNATURE, SignatureScheme.ECDSA_SHA256),
        ("p256", {3}, IkeAuthMethod.ECDSA_256, None),
        ("p256", None, IkeAuthMethod.ECDSA_256, None),
        ("p384", ALL_HASHES, IkeAuthMethod.DIGITAL_SIGNATURE, SignatureScheme.ECDSA_SHA384),
        ("p384", set(), IkeAuthMethod.ECDSA_384, None),
        ("p521", {4}, IkeAuthMethod.DIGITAL_SIGNATURE, SignatureScheme.ECDSA_SHA512),
        ("p521", None, IkeAuthMethod.ECDSA_521, None),
        ("ed25519", {2, 5}, IkeAuthMethod.DIGITAL_SIGNATURE, SignatureScheme.ED25519),
        ("ed448", {5}, IkeAuthMethod.DIGITAL_SIGNATURE, SignatureScheme.ED448),
    ],
)
def test_sign_auth_picks_a_method_the_peer_supports(keys, keyname, peer, method, scheme):
    key = keys[keyname]
    got_method, auth = sign_auth(key, OCTETS, peer)
    assert got_method == method
    if scheme is not None:
        assert parse_auth_data(auth)[0].scheme is scheme
    assert verify_auth(key.public_key(), got_method, auth, OCTETS) is True
    assert verify_auth(key.public_key(), got_method, auth, OCTETS[:-1]) is False


def test_sign_auth_rsa_pkcs1_when_asked(keys):
    method, auth = sign_auth(keys["rsa"], OCTETS, {3, 4}, rsa_padding="pkcs1")
    assert method == 14 and parse_auth_data(auth)[0].scheme is SignatureScheme.RSA_PKCS1_SHA384
    assert choose_scheme(keys["rsa"], {2}, "pkcs1") is SignatureScheme.RSA_PKCS1_SHA256


def test_classic_ecdsa_signatures_are_fixed_width_r_and_s(keys):
    for name, width in (("p256", 32), ("p384", 48), ("p521", 66)):
        method, auth = sign_auth(keys[name], OCTETS, None)
        assert len(auth) == 2 * width, name


@pytest.mark.parametrize("keyname", ["ed25519", "ed448"])
@pytest.mark.parametrize("peer", [None, {2, 3, 4}])
def test_eddsa_without_identity_hash_is_a_clear_error(keys, keyname, peer):
    with pytest.raises(SignatureError, match="RFC 7427"):
        sign_auth(keys[keyname], OCTETS, peer)


# --- verification errors ---------------------------------------------------------


def test_verify_refuses_a_scheme_that_does_not_fit_the_key(keys):
    auth = build_auth_data(SignatureScheme.ECDSA_SHA256, sign_with_scheme(keys["p256"], SignatureScheme.ECDSA_SHA256, OCTETS))
    with pytest.raises(SignatureError, match="RSA 2048"):
        verify_auth(keys["rsa"].public_key(), 14, auth, OCTETS)
    with pytest.raises(SignatureError, match="ECDSA_384"):
        verify_auth(keys["p256"].public_key(), IkeAuthMethod.ECDSA_384, b"\x00" * 96, OCTETS)
    with pytest.raises(SignatureError, match="expected 64"):
        verify_auth(keys["p256"].public_key(), IkeAuthMethod.ECDSA_256, b"\x00" * 63, OCTETS)


def test_verify_enforces_the_hashes_we_announced(keys):
    scheme = SignatureScheme.RSA_PKCS1_SHA512
    auth = build_auth_data(scheme, sign_with_scheme(keys["rsa"], scheme, OCTETS))
    assert verify_auth(keys["rsa"].public_key(), 14, auth, OCTETS, allowed_hashes={4}) is True
    with pytest.raises(SignatureError, match="did not announce"):
        verify_auth(keys["rsa"].public_key(), 14, auth, OCTETS, allowed_hashes={2, 3})


def test_verify_unknown_methods_and_malformed_auth_data(keys):
    pub = keys["rsa"].public_key()
    with pytest.raises(UnsupportedSignatureAlgorithm, match="SHARED_KEY_MIC"):
        verify_auth(pub, 2, b"x" * 32, OCTETS)
    with pytest.raises(UnsupportedSignatureAlgorithm, match="#201"):
        verify_auth(pub, 201, b"x" * 32, OCTETS)
    with pytest.raises(SignatureError, match="empty"):
        verify_auth(pub, 14, b"", OCTETS)
    with pytest.raises(SignatureError, match="does not fit"):
        verify_auth(pub, 14, b"\x40" + b"\x30" * 10, OCTETS)
    blob = SignatureScheme.RSA_PKCS1_SHA256.algorithm_identifier
    with pytest.raises(SignatureError):
        verify_auth(pub, 14, bytes((len(blob),)) + blob[:-1] + b"\x01" + b"sig", OCTETS)


def test_verify_uses_the_salt_length_the_signer_declared(keys):
    """A PSS signature with a 20-byte salt, declared in the AlgorithmIdentifier, verifies."""
    key = keys["rsa"]
    sig = key.sign(OCTETS, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=20), hashes.SHA256())
    alg = bytes.fromhex(
        "304106092a864886f70d01010a3034a00f300d06096086480165030402010500"
        "a11c301a06092a864886f70d010108300d06096086480165030402010500a203020114"
    )
    auth = bytes((len(alg),)) + alg + sig
    assert verify_auth(key.public_key(), 14, auth, OCTETS) is True
    assert verify_auth(key.public_key(), 14, build_auth_data(SignatureScheme.RSA_PSS_SHA256, sig), OCTETS) is False


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_parse_auth_data_never_raises_anything_but_signature_error(data):
    try:
        parse_auth_data(data)
    except SignatureError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(ALGORITHM_IDENTIFIERS.values())), st.integers(0, 40), st.integers(0, 255))
def test_mutated_algorithm_identifiers_fail_cleanly(blob, pos, value):
    mutated = bytearray(blob)
    mutated[pos % len(mutated)] = value
    try:
        parse_algorithm_identifier(bytes(mutated))
    except SignatureError:
        pass


# --- against the openssl CLI -----------------------------------------------------

OPENSSL_KEYS = {
    "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    "p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    "p521": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
    "ed25519": ["-algorithm", "ED25519"],
    "ed448": ["-algorithm", "ED448"],
}


def _openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], input=input, capture_output=True, check=False)


@pytest.fixture(scope="module")
def openssl_keys(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI (apt-get install openssl)")
    d = tmp_path_factory.mktemp("osslkeys")
    out = {}
    for name, args in OPENSSL_KEYS.items():
        path = d / f"{name}.pem"
        r = _openssl("genpkey", *args, "-out", str(path))
        assert r.returncode == 0, r.stderr
        pub = d / f"{name}.pub"
        assert _openssl("pkey", "-in", str(path), "-pubout", "-out", str(pub)).returncode == 0
        out[name] = (path, pub)
    return out


def _openssl_sign(scheme: SignatureScheme, keyfile, datafile, tmp_path) -> bytes:
    sig = tmp_path / "sig.bin"
    if scheme.key_kind in ("ed25519", "ed448"):
        args = ["pkeyutl", "-sign", "-rawin", "-inkey", str(keyfile), "-in", str(datafile), "-out", str(sig)]
    else:
        digest = {2: "-sha256", 3: "-sha384", 4: "-sha512"}[int(scheme.hash_algorithm)]
        args = ["dgst", digest, "-sign", str(keyfile), "-out", str(sig)]
        if scheme.value.startswith("rsa-pss"):
            args += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest", "-sigopt", "rsa_mgf1_md:" + digest[1:]]
        args.append(str(datafile))
    r = _openssl(*args)
    assert r.returncode == 0, r.stderr
    return sig.read_bytes()


def _openssl_verify(scheme: SignatureScheme, pubfile, datafile, signature: bytes, tmp_path) -> bool:
    sig = tmp_path / "oursig.bin"
    sig.write_bytes(signature)
    if scheme.key_kind in ("ed25519", "ed448"):
        args = ["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", str(pubfile), "-in", str(datafile), "-sigfile", str(sig)]
    else:
        digest = {2: "-sha256", 3: "-sha384", 4: "-sha512"}[int(scheme.hash_algorithm)]
        args = ["dgst", digest, "-verify", str(pubfile), "-signature", str(sig)]
        if scheme.value.startswith("rsa-pss"):
            args += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
        args.append(str(datafile))
    r = _openssl(*args)
    return r.returncode == 0


@pytest.mark.parametrize("scheme", list(SignatureScheme), ids=lambda s: s.value)
def test_signatures_made_by_openssl_verify(openssl_keys, tmp_path, scheme):
    keyfile, _ = openssl_keys[KEY_FOR_SCHEME[scheme]]
    data = tmp_path / "octets.bin"
    data.write_bytes(OCTETS)
    sig = _openssl_sign(scheme, keyfile, data, tmp_path)
    pub = serialization.load_pem_private_key(keyfile.read_bytes(), None).public_key()
    auth = build_auth_data(scheme, sig)
    assert verify_auth(pub, IkeAuthMethod.DIGITAL_SIGNATURE, auth, OCTETS) is True
    assert verify_auth(pub, IkeAuthMethod.DIGITAL_SIGNATURE, auth, OCTETS[1:]) is False


@pytest.mark.parametrize("scheme", list(SignatureScheme), ids=lambda s: s.value)
def test_openssl_verifies_our_signatures(openssl_keys, tmp_path, scheme):
    keyfile, pubfile = openssl_keys[KEY_FOR_SCHEME[scheme]]
    data = tmp_path / "octets.bin"
    data.write_bytes(OCTETS)
    key = serialization.load_pem_private_key(keyfile.read_bytes(), None)
    _, sig = parse_auth_data(build_auth_data(scheme, sign_with_scheme(key, scheme, OCTETS)))
    assert _openssl_verify(scheme, pubfile, data, sig, tmp_path) is True
    assert _openssl_verify(scheme, pubfile, data, sig[:-2] + bytes((sig[-2] ^ 0x10, sig[-1])), tmp_path) is False


def test_openssl_verifies_classic_rsa_sig_with_sha1(openssl_keys, tmp_path):
    keyfile, pubfile = openssl_keys["rsa"]
    key = serialization.load_pem_private_key(keyfile.read_bytes(), None)
    method, auth = sign_auth(key, OCTETS, None)
    assert method == IkeAuthMethod.RSA_SIG
    data, sig = tmp_path / "d", tmp_path / "s"
    data.write_bytes(OCTETS)
    sig.write_bytes(auth)
    r = _openssl("dgst", "-sha1", "-verify", str(pubfile), "-signature", str(sig), str(data))
    assert r.returncode == 0, r.stdout + r.stderr


def test_classic_ecdsa_from_openssl_verifies(openssl_keys, tmp_path):
    """openssl signs DER; RFC 4754 wants r|s: convert and check method 9."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    keyfile, _ = openssl_keys["p256"]
    data = tmp_path / "octets.bin"
    data.write_bytes(OCTETS)
    der = _openssl_sign(SignatureScheme.ECDSA_SHA256, keyfile, data, tmp_path)
    r, s = decode_dss_signature(der)
    pub = serialization.load_pem_private_key(keyfile.read_bytes(), None).public_key()
    assert verify_auth(pub, IkeAuthMethod.ECDSA_256, r.to_bytes(32, "big") + s.to_bytes(32, "big"), OCTETS) is True
