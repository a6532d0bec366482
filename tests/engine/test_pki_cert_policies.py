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


# --- remote.cert_policy: the policy key ---------------------------------------------------------------

BASE = """\
[engine]
datapath = "kernel"
[connections.gw]
remote_addrs = ["192.0.2.2"]
local = { auth = "pubkey", id = "gw.example", certs = ["gw.crt"] }
"""


def _parse(remote: str):
    from engine.policy import parse_policy
    from engine.policy.findings import PolicyError

    try:
        return parse_policy(BASE + f"remote = {{ {remote} }}\n", load_secrets=False), []
    except PolicyError as exc:
        return None, [(f.key_path, f.message) for f in exc.errors]


def test_the_policy_key_and_its_round_trip():
    from engine.policy import parse_policy
    from engine.policy.serialize import policy_to_toml

    pol, errors = _parse(f'auth = "pubkey", cacerts = ["ca.crt"], cert_policy = ["{P}", "{Q}"]')
    assert not errors and pol.connections[0].remote.cert_policy == (P, Q)
    again = parse_policy(policy_to_toml(pol), load_secrets=False)
    assert again.connections[0].remote.cert_policy == (P, Q)
    pol, errors = _parse(f'auth = "pubkey", cacerts = ["ca.crt"], cert_policy = "{P}, {Q}"')  # swanctl's form
    assert pol.connections[0].remote.cert_policy == (P, Q)


@pytest.mark.parametrize("remote, needle", [
    ('auth = "pubkey", cacerts = ["ca.crt"], cert_policy = ["gold"]', "not a dotted OID"),
    ('auth = "pubkey", cacerts = ["ca.crt"], cert_policy = ["1.3.6.01"]', "not a dotted OID"),
    ('auth = "psk", cert_policy = ["1.3.6.1"]', 'needs auth = "pubkey"'),
])
def test_bad_cert_policy_settings(remote, needle):
    _, errors = _parse(remote)
    assert any(k.endswith("cert_policy") and needle in m for k, m in errors), errors


# --- remote.cert_policy in IKE_AUTH -------------------------------------------------------------------


def _write_pki(d, leaf_policies):
    """A CA, an intermediate holding P and Q, and left/right certificates, as files cert_policy reads."""
    from cryptography.hazmat.primitives import serialization

    (d / "certs").mkdir(parents=True)
    (d / "private").mkdir()
    root = _cert("Root", ca=True)
    inter = _cert("Inter", root, ca=True, policies=(P, Q))

    def leaf(name, policies):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(_name(f"{name}.example")).issuer_name(inter[0].subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
             .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{name}.example")]), critical=False))
        if policies:
            b = b.add_extension(x509.CertificatePolicies([x509.PolicyInformation(ObjectIdentifier(o), None)
                                                          for o in policies]), critical=False)
        cert = b.sign(inter[1], hashes.SHA256())
        pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
        (d / "certs" / f"{name}.crt").write_bytes(pem(cert) + pem(inter[0]))
        (d / "private" / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (d / "private" / f"{name}.key").chmod(0o600)

    (d / "ca.crt").write_bytes(root[0].public_bytes(serialization.Encoding.PEM))
    leaf("left", leaf_policies)
    leaf("right", ())


@pytest.mark.parametrize("leaf_policies, wanted, ok", [
    ((P,), (P,), True),
    ((P, Q), (Q, P), True),
    ((P,), (Q,), False),
    ((R,), (R,), False),        # the leaf names R, but its path does not hold it
    ((), (P,), False),
    ((), (), True),
])
def test_ike_auth_asks_for_the_policies(tmp_path, leaf_policies, wanted, ok):
    import dataclasses

    from engine.events import ChildSaInstalled, NegotiationFailed
    from tests.engine.ike_pair import LEFT, RIGHT
    from tests.engine.test_ike_certs import cert_pair, cert_policy

    _write_pki(tmp_path, leaf_policies)
    pa = cert_policy(tmp_path, "left.example", "right.example", LEFT, crl=False)
    pb = cert_policy(tmp_path, "right.example", "left.example", RIGHT, crl=False)
    conn = pb.connections[0]
    pb = dataclasses.replace(pb, connections=(dataclasses.replace(
        conn, remote=dataclasses.replace(conn.remote, cert_policy=wanted)),))
    p = cert_pair(pa, pb)
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert bool(p.of("b", ChildSaInstalled)) is ok, p.of("b", NegotiationFailed)
    if not ok:
        reason = p.of("b", NegotiationFailed)[-1].reason
        assert "remote.cert_policy" in reason and "does not hold" in reason, reason
