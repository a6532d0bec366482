"""Certificate policies on the path (engine.pki.policies), as strongSwan's constraints plugin:
policyConstraints and inhibitAnyPolicy enforced, the end certificate's valid policies for
remote.cert_policy (swanctl's cert_policy)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, ObjectIdentifier

from engine.pki.validate import validate_chain

from tests.engine.test_pki_validate import NOW, _name

P, Q, R = "1.3.6.1.4.1.55555.1.1", "1.3.6.1.4.1.55555.1.2", "1.3.6.1.4.1.55555.1.3"
ANY = "2.5.29.32.0"


def _oid_der(oid: str) -> bytes:
    arcs = [int(a) for a in oid.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for a in arcs[2:]:
        chunk = [a & 0x7F]
        a >>= 7
        while a:
            chunk.append(0x80 | (a & 0x7F))
            a >>= 7
        body += bytes(reversed(chunk))
    return bytes([6, len(body)]) + body


def _mappings(*pairs) -> bytes:
    inner = b"".join(bytes([0x30, len(_oid_der(i) + _oid_der(s))]) + _oid_der(i) + _oid_der(s) for i, s in pairs)
    return bytes([0x30, len(inner)]) + inner


def _cert(cn, issuer=None, *, ca=False, policies=(), explicit=None, inhibit_mapping=None, inhibit_any=None,
          mappings=None):
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer[0].subject if issuer else _name(cn))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if policies:
        b = b.add_extension(x509.CertificatePolicies([x509.PolicyInformation(ObjectIdentifier(o), None)
                                                      for o in policies]), critical=False)
    if explicit is not None or inhibit_mapping is not None:
        b = b.add_extension(x509.PolicyConstraints(explicit, inhibit_mapping), critical=True)
    if inhibit_any is not None:
        b = b.add_extension(x509.InhibitAnyPolicy(inhibit_any), critical=True)
    if mappings is not None:
        b = b.add_extension(x509.UnrecognizedExtension(ExtensionOID.POLICY_MAPPINGS, mappings), critical=True)
    return b.sign(issuer[1] if issuer else key, hashes.SHA256()), key




@pytest.mark.parametrize("root_kw, inter_kw, leaf, valid", [
    ({}, {"policies": (P,)}, (P, Q), {P}),                    # a self-signed root without policies is skipped
    ({}, {}, (P,), set()),                                    # the intermediate holds none
    ({}, {"policies": (ANY,)}, (P,), {P}),                    # anyPolicy holds every policy
    ({"policies": (Q,)}, {"policies": (P,)}, (P,), set()),    # a root with policies counts
    ({"policies": (ANY,)}, {"policies": (P,)}, (P,), {P}),
    ({}, {"policies": (Q,), "mappings": _mappings((Q, P))}, (P,), {P}),  # mapped (critical, now understood)
])
def test_the_end_certificates_valid_policies(root_kw, inter_kw, leaf, valid):
    res = validate_chain(*_args(root_kw, inter_kw, leaf))
    assert res.ok, res.reason
    assert res.policies == frozenset(valid)


def _args(root_kw, inter_kw, leaf_policies):
    root = _cert("Root", ca=True, **root_kw)
    inter = _cert("Inter", root, ca=True, **inter_kw)
    leaf = _cert("leaf", inter, policies=leaf_policies)
    return leaf[0], [inter[0]], [root[0]], [], NOW


@pytest.mark.parametrize("root_kw, inter_kw, leaf, needle", [
    ({"explicit": 0}, {"policies": (P,)}, (R,), "requires explicit policies"),
    ({"inhibit_mapping": 0}, {"policies": (Q,), "mappings": _mappings((Q, P))}, (P,), "inhibits policy mapping"),
    ({"inhibit_any": 0}, {"policies": (ANY,)}, (P,), "inhibits it (inhibitAnyPolicy 0)"),
    ({}, {"policies": (P,), "mappings": b"\x30\x05\x06\x03"}, (P,), "unreadable policyMappings"),
])
def test_policy_constraints_fail_the_path(root_kw, inter_kw, leaf, needle):
    res = validate_chain(*_args(root_kw, inter_kw, leaf))
    assert not res.ok and needle in res.reason, res.reason


def test_constraints_reach_only_as_far_as_they_say():
    # inhibitAnyPolicy 1 on the root: the intermediate (one below) may still hold anyPolicy
    res = validate_chain(*_args({"inhibit_any": 1}, {"policies": (ANY,)}, (P,)))
    assert res.ok and res.policies == {P}, res.reason
    # requireExplicitPolicy 1 at the root: only the leaf's link is checked, and it holds
    res = validate_chain(*_args({"explicit": 1}, {"policies": (P,)}, (P,)))
    assert res.ok, res.reason
