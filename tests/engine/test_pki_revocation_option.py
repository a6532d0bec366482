"""remote.revocation = relaxed | ifuri | strict (swanctl's option, strongSwan's revocation plugin):
the policy key, its round trips, and what each value refuses."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from engine.events import ChildSaInstalled, NegotiationFailed
from engine.ops.swanctl_export import export_policy
from engine.ops.swanctl_import import import_text
from engine.policy import parse_policy
from engine.policy.findings import PolicyError
from engine.policy.serialize import policy_to_toml
from engine.pki.validate import validate_chain

from tests.engine.ike_pair import LEFT, RIGHT
from tests.engine.test_ike_certs import cert_pair, cert_policy, pki  # noqa: F401 (pki is a fixture)
from tests.engine.test_pki_hostile import NOW, _builder, _name, root  # noqa: F401 (root is a fixture)
from tests.ops.test_swanctl_fixes import CERT_GW, _swanctl_dir

# --- validate_chain ---------------------------------------------------------------------------------------


def _leaf(root, cdp: bool):
    key = ec.generate_private_key(ec.SECP256R1())
    b = _builder(_name("gw"), root[0].subject, key.public_key())
    if cdp:
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier("http://ca.example/ca.crl")], None, None, None)]), critical=False)
    return b.sign(root[1], hashes.SHA256())


def _crl(root, *, expired=False):
    last = NOW - timedelta(days=10 if expired else 1)
    return (x509.CertificateRevocationListBuilder().issuer_name(root[0].subject).last_update(last)
            .next_update(last + timedelta(days=2)).sign(root[1], hashes.SHA256()))


@pytest.mark.parametrize("revocation, cdp, crl, ok", [
    ("relaxed", True, None, True),
    ("relaxed", False, "expired", True),
    ("strict", False, None, False),
    ("strict", True, "current", True),
    ("strict", False, "expired", False),
    ("ifuri", False, None, True),          # nothing to look up: SKIPPED
    ("ifuri", True, None, False),          # a distribution point and no CRL: FAILED
    ("ifuri", True, "current", True),
    ("ifuri", False, "expired", False),    # STALE fails ifuri too
])
def test_each_revocation_value(root, revocation, cdp, crl, ok):
    crls = [] if crl is None else [_crl(root, expired=crl == "expired")]
    res = validate_chain(_leaf(root, cdp), [], [root[0]], crls, NOW, revocation=revocation)
    assert res.ok is ok, res.reason
    if not ok:
        assert f"revocation = {revocation}" in res.reason


# --- the policy key ---------------------------------------------------------------------------------------

BASE = """\
[engine]
datapath = "kernel"
[connections.gw]
remote_addrs = ["192.0.2.2"]
local = { auth = "pubkey", id = "gw.example", certs = ["gw.crt"] }
"""


def _errors(text: str) -> list[tuple[str, str]]:
    try:
        parse_policy(text, load_secrets=False)
    except PolicyError as exc:
        return [(f.key_path, f.message) for f in exc.errors]
    return []


def test_the_policy_key_and_its_round_trip():
    text = BASE + 'remote = { auth = "pubkey", cacerts = ["ca.crt"], revocation = "strict" }\n'
    p = parse_policy(text, load_secrets=False)
    assert p.connection("gw").remote.revocation == "strict"
    out = policy_to_toml(p)
    assert 'revocation = "strict"' in out
    assert parse_policy(out, load_secrets=False).connection("gw") == p.connection("gw")
    relaxed = parse_policy(BASE + 'remote = { auth = "pubkey", cacerts = ["ca.crt"] }\n', load_secrets=False)
    assert relaxed.connection("gw").remote.revocation == "relaxed" and "revocation" not in policy_to_toml(relaxed)


@pytest.mark.parametrize("remote, needle", [
    ('{ auth = "pubkey", revocation = "hard" }', "must be one of"),
    ('{ auth = "psk", revocation = "strict" }', "needs certificates"),
])
def test_bad_revocation_settings(remote, needle):
    errs = _errors(BASE + f"remote = {remote}\n")
    assert any(k.endswith("remote.revocation") and needle in m for k, m in errs), errs


def test_revocation_is_a_remote_setting():
    text = BASE.replace('certs = ["gw.crt"] }', 'certs = ["gw.crt"], revocation = "strict" }')
    errs = _errors(text + 'remote = { auth = "pubkey" }\n')
    assert any(k.endswith("local.revocation") for k, _ in errs), errs


def test_swanctl_import_and_export(tmp_path):
    sw = _swanctl_dir(tmp_path)
    out = tmp_path / "policy"
    out.mkdir()
    conf = CERT_GW.replace("      cacerts = ca.crt\n", "      cacerts = ca.crt\n      revocation = ifuri\n")
    r = import_text(conf, conf_dir=sw, out_dir=out)
    assert r.errors == [], r.errors
    assert 'revocation = "ifuri"' in r.policy_toml, r.policy_toml
    assert not any("revocation" in w for w in r.warnings), r.warnings
    (out / "p.toml").write_text(r.policy_toml)
    policy = parse_policy(r.policy_toml, out / "p.toml", load_secrets=False)
    assert policy.connections[0].remote.revocation == "ifuri"
    assert "revocation = ifuri" in export_policy(policy).conf
    local = CERT_GW.replace("      id = gw.example\n", "      id = gw.example\n      revocation = strict\n")
    r = import_text(local, conf_dir=sw, out_dir=out)
    assert "revocation" not in r.policy_toml and any("local.revocation" in w for w in r.warnings), r.warnings


# --- in IKE_AUTH ------------------------------------------------------------------------------------------


def _with_revocation(policy, value):
    conn = policy.connections[0]
    return dataclasses.replace(policy, connections=(dataclasses.replace(
        conn, remote=dataclasses.replace(conn.remote, revocation=value)),))


@pytest.mark.parametrize("value, ok", [("relaxed", True), ("strict", False)])
def test_ike_auth_with_no_crl_loaded(pki, value, ok):  # noqa: F811
    d = pki["ecdsa-p256"]
    pa = cert_policy(d, "left.example", "right.example", LEFT)
    pb = _with_revocation(cert_policy(d, "right.example", "left.example", RIGHT, crl=False), value)
    p = cert_pair(pa, pb)
    p.a.initiate("tun", p.now)
    p.advance(2)
    assert bool(p.of("b", ChildSaInstalled)) is ok
    if not ok:
        failed = p.of("b", NegotiationFailed)
        assert any("revocation = strict" in f.reason for f in failed), failed


def test_eap_tls_checks_the_peer_as_remote_revocation_says(root):
    """The EAP-TLS round validates the other side's chain with the same setting."""
    from types import SimpleNamespace

    from engine.ike.exchanges.eap_auth import tls_credentials

    conn = SimpleNamespace(name="rw", remote=SimpleNamespace(revocation="strict"))
    creds = SimpleNamespace(local={"rw": SimpleNamespace(certs=[root[0]], key=root[1])}, cacerts={"rw": [root[0]]},
                            crls=[])
    assert tls_credentials(SimpleNamespace(credentials=creds), conn).revocation == "strict"
