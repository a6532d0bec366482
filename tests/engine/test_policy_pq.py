"""Policy side of issue 11: hybrid proposal keywords, PPKs in the secrets file,
ppk_id/ppk_required, the refusal of what the engine cannot do yet, lint advice."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine.crypto import kem
from engine.crypto.transforms import AdditionalKeType, KeId, TransformType
from engine.policy import lint, parse_policy, pq
from engine.policy.findings import PolicyError
from engine.policy.proposals import ProposalError, format_proposal, parse_proposal
from engine.policy.secrets import lookup_ppk, parse_secrets
from engine.policy.serialize import policy_to_toml
from tests.engine.ike_pair import connection

ALL = frozenset({"kem", "additional_ke", "followup_ke", "ppk"})
HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
PPK = "0x" + "5a" * 32


@pytest.fixture
def negotiated(monkeypatch):
    """What engine.ike will negotiate after the issue 11 integration."""
    monkeypatch.setattr(pq, "NEGOTIATED", ALL)
    monkeypatch.setattr(pq, "ADVISED", ALL)


def need_mlkem():
    for g in (KeId.ML_KEM_768, KeId.ML_KEM_1024):
        if kem.mlkem_unavailable_reason(g):
            pytest.skip(kem.mlkem_unavailable_reason(g))


def policy(tmp_path: Path, proposals=(HYBRID,), conn_extra="", secrets="", psk=True) -> Path:
    quoted = ", ".join(f'"{p}"' for p in proposals)
    auth = '{ auth = "psk", id = "hq.example.org" }', '{ auth = "psk", id = "branch.example.org" }'
    (tmp_path / "s.toml").write_text('[ike.b]\nids = ["hq.example.org", "branch.example.org"]\n'
                                     'secret = "Xq7!mR2#vL9$wK4%tN8&pJ3*"\n' + secrets)
    (tmp_path / "s.toml").chmod(0o600)
    text = f"""[engine]
secrets = "s.toml"

[connections.branch]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
proposals = [{quoted}]
local = {auth[0]}
remote = {auth[1]}
{conn_extra}

[connections.branch.children.lan]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/25"]
esp_proposals = ["aes256gcm16-x25519-ke1_mlkem768"]
"""
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        parse_policy(path.read_text(), path)
    return [f"{f.key_path}: {f.message}" for f in exc.value.findings if f.severity == "error"]


# ---- keywords


@pytest.mark.parametrize("text, protocol, primary, additional", [
    (HYBRID, "ike", [KeId.CURVE25519], [(6, KeId.ML_KEM_768)]),
    ("aes256gcm16-prfsha384-ecp384-ke1_mlkem1024", "ike", [KeId.ECP_384], [(6, KeId.ML_KEM_1024)]),
    ("aes256gcm16-prfsha384-x25519-ke2_mlkem1024-ke1_mlkem768-ke1_none", "ike", [KeId.CURVE25519],
     [(6, KeId.ML_KEM_768), (6, KeId.NONE), (7, KeId.ML_KEM_1024)]),
    ("aes256gcm16-prfsha256-mlkem768", "ike", [KeId.ML_KEM_768], []),
    ("aes256gcm16-x25519-ke1_mlkem768", "esp", [KeId.CURVE25519], [(6, KeId.ML_KEM_768)]),
    ("AES256GCM16-PRFSHA384-X25519-KE7_X448", "ike", [KeId.CURVE25519], [(12, KeId.CURVE448)]),
])
def test_strongswan_keywords(text, protocol, primary, additional):
    p = parse_proposal(text, protocol)
    assert [t.id for t in p.ke] == primary
    assert [(int(t.type), t.id) for t in p.additional_ke] == additional
    assert all(isinstance(t.type, AdditionalKeType) for t in p.additional_ke)
    assert parse_proposal(format_proposal(p), protocol).transforms() == p.transforms()
    assert set(p.transforms()) >= set(p.additional_ke)
    assert not any(t.type == TransformType.KE for t in p.additional_ke)


@pytest.mark.parametrize("text, message", [
    ("aes256gcm16-prfsha384-x25519-ke8_mlkem768", "ke1_ to ke7_"),
    ("aes256gcm16-prfsha384-x25519-ke0_mlkem768", "ke1_ to ke7_"),
    ("aes256gcm16-prfsha384-x25519-ke1_mlkem76", "did you mean 'ke1_mlkem768'"),
    ("aes256gcm16-prfsha384-x25519-ke1_sha256", "key exchange method"),
    ("aes256gcm16-prfsha384-mlkem512", "ML-KEM-768 and ML-KEM-1024 only"),
])
def test_bad_keywords_are_named(text, message):
    with pytest.raises(ProposalError, match=message):
        parse_proposal(text, "ike")


def test_additional_ke_needs_a_primary_one():
    with pytest.raises(ProposalError, match="name one too, e.g. 'x25519-ke1_mlkem768'"):
        parse_proposal("aes256gcm16-ke1_mlkem768", "esp")
    with pytest.raises(ProposalError, match="needs a key exchange method"):
        parse_proposal("aes256gcm16-prfsha384-ke1_mlkem768", "ike")


def test_quantum_safe_classification():
    safe = pq.proposal_is_quantum_safe
    assert safe(parse_proposal(HYBRID, "ike"))
    assert safe(parse_proposal("aes256gcm16-prfsha256-mlkem1024", "ike"))
    assert not safe(parse_proposal("aes256gcm16-prfsha256-x25519", "ike"))
    assert not safe(parse_proposal("aes256gcm16-prfsha256-x25519-mlkem768", "ike"))  # peer may pick x25519
    assert not safe(parse_proposal("aes256gcm16-prfsha256-x25519-ke1_mlkem768-ke1_none", "ike"))
    assert safe(parse_proposal("aes256gcm16-prfsha256-x25519-ke1_x448-ke2_mlkem768", "ike"))


# ---- what the engine cannot do yet is refused, never weakened


def test_every_post_quantum_feature_is_negotiated_now(tmp_path):
    need_mlkem()
    assert pq.NEGOTIATED == frozenset({"kem", "additional_ke", "followup_ke", "ppk"})
    path = policy(tmp_path, proposals=(HYBRID, "aes256gcm16-prfsha256-mlkem768"),
                  conn_extra='ppk_id = "hq-ppk"\nppk_required = true',
                  secrets=f'[ppk.hq]\nid = "hq-ppk"\nsecret = "{PPK}"\n')
    c = parse_policy(path.read_text(), path).connections[0]
    assert c.ppk_required and c.children[0].proposals[0].additional_ke
    # Before the integration each one was refused, never weakened in silence:
    nothing = ()
    assert "IKE_INTERMEDIATE" in pq.proposal_problems(parse_proposal(HYBRID, "ike"), negotiated=nothing)[0]
    assert "primary key exchange" in pq.proposal_problems(
        parse_proposal("aes256gcm16-prfsha256-mlkem768", "ike"), negotiated=nothing)[0]
    assert "IKE_FOLLOWUP_KE" in pq.proposal_problems(parse_proposal("aes256gcm16-x25519-ke1_mlkem768", "esp"),
                                                     negotiated={"additional_ke"})[0]
    assert "PPKs (RFC 8784) are not negotiated" in pq.ppk_problem(
        dataclasses.replace(connection(), ppk_id="hq-ppk", ppk_required=True), negotiated=nothing)
    # ke1_none alone adds nothing to refuse
    p = parse_proposal("aes256gcm16-prfsha256-x25519-ke1_none", "ike")
    assert pq.proposal_problems(p) == []


def test_missing_mlkem_in_cryptography_is_a_policy_error(tmp_path, negotiated, monkeypatch):
    monkeypatch.setattr(kem, "_mlkem", None)
    found = errors(policy(tmp_path, proposals=("aes256gcm16-prfsha384-x25519-ke1_mlkem1024",)))
    assert any("connections.branch.proposals" in f and "ML_KEM_1024 needs cryptography >= 48.0" in f for f in found)
    assert any("esp_proposals" in f and "ML_KEM_768 needs cryptography >= 47.0" in f for f in found)


def test_hybrid_policy_loads_once_negotiated(tmp_path, negotiated):
    need_mlkem()
    p = parse_policy(policy(tmp_path).read_text(), tmp_path / "p.toml")
    c = p.connections[0]
    assert c.proposals[0].additional_ke and c.children[0].proposals[0].additional_ke
    assert pq.connection_is_quantum_safe(c)
    assert "not-quantum-safe" not in {f.rule for f in lint(p)}


# ---- PPKs


def test_ppk_secrets_section():
    s, findings = parse_secrets(f'[ppk.hq]\nid = "hq-ppk"\nsecret = "{PPK}"\n'
                                '[ppk.dup]\nid = "hq-ppk"\nsecret = "0x00"\n'
                                '[ppk.noid]\nsecret = "0x00"\n'
                                '[ppk.nosecret]\nid = "z"\n'
                                '[ppk.badhex]\nid = "y"\nsecret = "0xzz"\n'
                                '[ppk.extra]\nid = "w"\nsecret = "0x01"\nids = ["a"]\n', "s.toml", Path("."))
    assert [(e.name, e.id, e.secret.reveal()) for e in s.ppk] == [("hq", "hq-ppk", b"\x5a" * 32),
                                                                   ("extra", "w", b"\x01")]
    got = {(f.key_path, f.message.split(":")[0]) for f in findings}
    assert ("ppk.dup.id", "[ppk.hq] has the same id") in got
    assert {"ppk.noid.id", "ppk.nosecret.secret", "ppk.badhex.secret"} <= {k for k, _ in got}
    assert any(k.startswith("ppk.extra") for k, _ in got)  # unknown key 'ids'
    assert lookup_ppk(s, "hq-ppk").name == "hq" and lookup_ppk(s, "nope") is None
    assert "5a5a" not in repr(s) and "5a5a" not in " ".join(f.message for f in findings)


def test_ppk_id_must_name_a_ppk(tmp_path, negotiated):
    need_mlkem()
    found = errors(policy(tmp_path, conn_extra='ppk_id = "hq-ppk"\nppk_required = true'))
    assert any(f.startswith("connections.branch.ppk_id: no [ppk.*] entry with id = \"hq-ppk\"") for f in found)
    path = policy(tmp_path, conn_extra='ppk_id = "hq-ppk"\nppk_required = true',
                  secrets=f'[ppk.hq]\nid = "hq-ppk"\nsecret = "{PPK}"\n')
    c = parse_policy(path.read_text(), path).connections[0]
    assert (c.ppk_id, c.ppk_required) == ("hq-ppk", True)
    # a saved policy keeps them (a lost ppk_required would silently drop quantum safety)
    again = tmp_path / "again.toml"
    again.write_text(policy_to_toml(parse_policy(path.read_text(), path)))
    c2 = parse_policy(again.read_text(), again).connections[0]
    assert (c2.ppk_id, c2.ppk_required, c2.proposals[0].text) == ("hq-ppk", True, HYBRID)
    assert errors(policy(tmp_path, conn_extra='ppk_id = ""'))[0].startswith("connections.branch.ppk_id: a PPK_ID")


# ---- lint


def test_not_quantum_safe_advice(tmp_path, negotiated):
    need_mlkem()
    classic = policy(tmp_path, proposals=("aes256gcm16-prfsha384-x25519",))
    [f] = [f for f in lint(parse_policy(classic.read_text(), classic)) if f.rule == "not-quantum-safe"]
    assert f.key_path == "connections.branch.proposals" and HYBRID in f.message and "ppk_required" in f.message
    mixed = policy(tmp_path, proposals=(HYBRID, "aes256gcm16-prfsha384-x25519"))
    [f] = [f for f in lint(parse_policy(mixed.read_text(), mixed)) if f.rule == "not-quantum-safe"]
    assert "may pick one of its IKE proposals without ML-KEM" in f.message
    with_ppk = policy(tmp_path, proposals=("aes256gcm16-prfsha384-x25519",),
                      conn_extra='ppk_id = "hq-ppk"\nppk_required = true',
                      secrets=f'[ppk.hq]\nid = "hq-ppk"\nsecret = "{PPK}"\n')
    assert "not-quantum-safe" not in {f.rule for f in lint(parse_policy(with_ppk.read_text(), with_ppk))}


def test_no_quantum_advice_the_engine_cannot_follow(tmp_path, monkeypatch):
    classic = policy(tmp_path, proposals=("aes256gcm16-prfsha384-x25519",)).read_text()
    classic = classic.replace("aes256gcm16-x25519-ke1_mlkem768", "aes256gcm16")
    monkeypatch.setattr(pq, "NEGOTIATED", frozenset())
    assert "not-quantum-safe" not in {f.rule for f in lint(parse_policy(classic, tmp_path / "p.toml"))}


def test_the_advice_is_on_and_never_fails_check(tmp_path, capsys):
    """What this engine negotiates is advised (no monkeypatch): as info, so `check` and even
    `check --strict` pass a classic connection that must talk to an old peer."""
    from console.cli import main

    need_mlkem()
    classic = policy(tmp_path, proposals=("aes256gcm16-prfsha384-x25519",))
    classic.write_text(classic.read_text().replace("aes256gcm16-x25519-ke1_mlkem768", "aes256gcm16"))
    [f] = [f for f in lint(parse_policy(classic.read_text(), classic)) if f.rule == "not-quantum-safe"]
    assert f.severity == "info" and f.format().endswith("[not-quantum-safe]") and ": info: " in f.format()
    assert main(["check", "--strict", str(classic)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("valid, 1 note")
    assert main(["check", "--strict", "--format", "github", str(classic)]) == 0
    assert capsys.readouterr().out.startswith("::notice file=")


def test_short_ppk(tmp_path):
    path = policy(tmp_path, proposals=("aes256gcm16-prfsha384-x25519",),
                  secrets='[ppk.weak]\nid = "w"\nsecret = "0x0011223344"\n')
    text = path.read_text().replace("aes256gcm16-x25519-ke1_mlkem768", "aes256gcm16")
    [f] = [f for f in lint(parse_policy(text, path)) if f.rule == "short-ppk"]
    assert f.key_path == "ppk.weak.secret" and "5 bytes" in f.message and "0011223344" not in f.message
