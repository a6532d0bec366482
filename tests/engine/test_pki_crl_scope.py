"""A CRL's scope (RFC 5280 §5.2.5 issuingDistributionPoint, §6.3.3 (b), (d)) and its critical
extensions (§5.2): a CRL that does not cover a certificate, or that we cannot fully read, never
makes that certificate good; what it lists as revoked by the same issuer still counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ObjectIdentifier

from engine.pki.validate import validate_chain

from tests.engine.test_crl_fetch import _leaf, _root
from tests.engine.test_pki_validate import NOW

URI = "http://192.0.2.10/ca.crl"


def _idp(*, uris=None, user=False, ca=False, reasons=None, indirect=False):
    return x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(u) for u in uris] if uris else None, relative_name=None,
        only_contains_user_certs=user, only_contains_ca_certs=ca, only_some_reasons=reasons,
        indirect_crl=indirect, only_contains_attribute_certs=False)


def _crl(root, ext=None, critical=True, revoked=()):
    b = (x509.CertificateRevocationListBuilder().issuer_name(root[0].subject)
         .last_update(NOW - timedelta(hours=1)).next_update(NOW + timedelta(days=1)))
    if ext is not None:
        b = b.add_extension(ext, critical=critical)
    for serial in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(NOW - timedelta(minutes=5)).build())
    return b.sign(root[1], hashes.SHA256())


OTHER = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.7"), b"\x05\x00")


@pytest.mark.parametrize("ext, covers", [
    (None, True),
    (_idp(uris=[URI]), True),
    (_idp(uris=["http://192.0.2.10/other-partition.crl"]), False),
    (_idp(user=True), True),
    (_idp(ca=True), False),
    (_idp(reasons=frozenset({x509.ReasonFlags.key_compromise})), False),
    (OTHER, False),
], ids=["plain", "idp-same-uri", "idp-other-partition", "only-user", "only-ca", "only-some-reasons",
        "unknown-critical"])
def test_only_a_crl_covering_the_certificate_makes_it_good(ext, covers):
    root = _root()
    leaf = _leaf(root, URI)
    res = validate_chain(leaf, [], [root[0]], [_crl(root, ext)], NOW, revocation="strict")
    assert res.ok is covers, res.reason
    if not covers:
        assert res.needs_crl and res.crl_uris == (URI,)  # its own distribution point is fetched


def test_an_unknown_non_critical_extension_is_ignored():
    root = _root()
    res = validate_chain(_leaf(root, URI), [], [root[0]], [_crl(root, OTHER, critical=False)], NOW,
                         revocation="strict")
    assert res.ok, res.reason


@pytest.mark.parametrize("ext", [_idp(uris=["http://192.0.2.10/other-partition.crl"]), _idp(ca=True), OTHER])
def test_what_an_out_of_scope_crl_lists_still_revokes(ext):
    root = _root()
    leaf = _leaf(root, URI)
    res = validate_chain(leaf, [], [root[0]], [_crl(root, ext, revoked=[leaf.serial_number])], NOW)
    assert not res.ok and "revoked" in res.reason, res.reason


def test_the_crl_memo_keeps_no_crl_nobody_uses_any_more():
    """The verdicts kept per CRL object (_crl_facts) held every CRL object ever validated against until
    64 of them: each refresh of a fetched CRL makes new objects, so a 4 MB CRL (190,000 entries, ~20 MB
    with its serials) fetched hourly grew the process by ~1 GB in three days."""
    from cryptography.hazmat.primitives import serialization
    from engine.pki import validate

    root = _root()
    leaf = _leaf(root, URI)
    der = _crl(root).public_bytes(serialization.Encoding.DER)
    validate._crl_memo.clear()
    for _ in range(5):  # five refreshes: a new object each time, the old one dropped by the cache
        crl = x509.load_der_x509_crl(der)
        assert validate_chain(leaf, [], [root[0]], [crl], NOW, revocation="strict").ok
        del crl
    assert len(validate._crl_memo) <= 1
    kept = x509.load_der_x509_crl(der)  # still in use (a cache holds it): its facts stay
    validate_chain(leaf, [], [root[0]], [kept], NOW)
    validate_chain(leaf, [], [root[0]], [x509.load_der_x509_crl(der)], NOW)
    assert any(f.crl is kept for f in validate._crl_memo.values())


def test_a_crl_that_does_not_verify_costs_no_work_per_entry():
    """Reading a CRL's serials takes ~0.65 s for 190,000 entries (4 MB, the fetch limit), on the
    loop, before the AUTH signature: whoever answers a plain-HTTP fetch could serve such a CRL with
    a forged signature, fetched again every FAILURE_HOLD. The signature is checked first."""
    from engine.pki import validate

    root, forger = _root(), _root()
    forged = _crl((root[0], forger[1]), revoked=range(1, 50))
    validate._crl_memo.clear()
    res = validate_chain(_leaf(root, URI), [], [root[0]], [forged], NOW)
    assert res.ok and any("not signed by that CA" in w for w in res.warnings)
    assert "serials" not in validate._crl_facts(forged).__dict__



def _der_len(n: int) -> bytes:
    if n < 128:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _elements(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n, j = data[i + 1], i + 2
        if n & 0x80:
            k = n & 0x7F
            n, j = int.from_bytes(data[j:j + k], "big"), j + k
        out.append(data[i:j + n])
        i = j + n
    return out


def _without_next_update(root, crl) -> x509.CertificateRevocationList:
    """cryptography's builder insists on nextUpdate: drop it from the TBS and sign again."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    outer = _elements(crl.public_bytes(serialization.Encoding.DER))[0]
    tbs, alg, _ = _elements(outer[2 + (outer[1] & 0x7F if outer[1] & 0x80 else 0):])
    fields = _elements(tbs[2 + (tbs[1] & 0x7F if tbs[1] & 0x80 else 0):])
    times = [k for k, f in enumerate(fields) if f[0] in (0x17, 0x18)]
    del fields[times[1]]  # thisUpdate stays, nextUpdate goes
    new_tbs = _tlv(0x30, b"".join(fields))
    sig = root[1].sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return x509.load_der_x509_crl(_tlv(0x30, new_tbs + alg + _tlv(0x03, b"\x00" + sig)))


def test_a_crl_without_next_update_is_never_current():
    """RFC 5280 §5.1.2.5: conforming CRL issuers MUST include nextUpdate. charon's x509_crl
    get_validity then compares with 0: such a CRL is stale, always. Taken as current forever, an old
    one (from before a revocation) replayed to a fetch made a revoked certificate good under strict."""
    root = _root()
    leaf = _leaf(root, URI)
    crl = _without_next_update(root, _crl(root))
    assert crl.next_update_utc is None and crl.is_signature_valid(root[0].public_key())
    res = validate_chain(leaf, [], [root[0]], [crl], NOW, revocation="strict")
    assert not res.ok and res.needs_crl and res.crl_uris == (URI,), res.reason
    assert any("nextUpdate" in w for w in res.warnings), res.warnings
    listed = _without_next_update(root, _crl(root, revoked=[leaf.serial_number]))  # what it lists still revokes
    assert "revoked" in validate_chain(leaf, [], [root[0]], [listed], NOW).reason


def test_a_pinned_certificate_names_its_own_policies():
    """A peer certificate trusted as it is (in the connection's CAs): charon's constraints plugin
    takes its own policies as valid (the chain is the certificate itself), so remote.cert_policy can
    ask for them; here the result named none and every such peer was refused."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "pinned")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
            .add_extension(x509.CertificatePolicies([x509.PolicyInformation(
                x509.ObjectIdentifier("1.3.6.1.4.1.36906.1.1"), None)]), critical=False)
            .sign(key, hashes.SHA256()))
    res = validate_chain(cert, [], [cert], [], NOW)
    assert res.ok and res.policies == frozenset({"1.3.6.1.4.1.36906.1.1"}), res
