"""``ipsec-console doc``: the policy documented for auditors; the key reference and
the JSON Schema generated from the model, and the checked-in docs/ copies."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest

from engine.ops import examples
from engine.ops.doc import document_file
from engine.ops.reference import json_schema, keys, secrets_schema
from engine.pki import ca
from engine.policy import parse as P
from engine.policy.samples import sample_dir, sample_names

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_docs_are_what_the_model_generates():
    generated = examples.generate()
    stale = [rel for rel, text in generated.items()
             if not (examples.DOCS / rel).is_file() or (examples.DOCS / rel).read_text(encoding="utf-8") != text]
    assert not stale, f"docs/ is out of date for {stale}: run python3 -m engine.ops.examples"
    documented = {p.relative_to(examples.DOCS).as_posix() for p in (examples.DOCS / "examples").iterdir()}
    assert documented == {rel for rel in generated if rel.startswith("examples/")}
    assert {f"examples/{Path(n).stem}.md" for n in sample_names()} <= documented


def test_every_key_the_parser_reads_has_a_type_a_default_and_a_meaning():
    ks = keys()
    by_section: dict[str, set[str]] = {}
    for k in ks:
        assert k.meaning.strip(), f"{k.section} {k.name} has no meaning: add a docstring to the model field"
        assert k.kind and k.default
        by_section.setdefault(k.section, set()).add(k.name)
    expected = {"[engine]": P.ENGINE_KEYS, "[lab]": P.LAB_KEYS, "[connections.NAME]": P.CONNECTION_KEYS,
                "[connections.NAME.children.CHILD]": P.CHILD_KEYS, "[rules.NAME]": P.RULE_KEYS,
                "[pools.NAME]": P.POOL_KEYS}
    for section, names in expected.items():
        assert by_section[section] == set(names), section


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_and_its_secrets_validate_against_the_schemas(name):
    doc = tomllib.loads((sample_dir() / name).read_text())
    jsonschema.validate(doc, json_schema())
    secrets = doc.get("engine", {}).get("secrets")
    if secrets:
        jsonschema.validate(tomllib.loads((sample_dir() / secrets).read_text()), secrets_schema())


def test_the_schema_rejects_what_the_parser_rejects():
    schema = json_schema()
    bad = [{"engine": {"datapath": "warp"}}, {"engine": {"ike_port": "500"}}, {"engine": {"nonsense": 1}},
           {"connections": {"c": {"dpd_delay": "soon"}}}, {"connections": {"c": {"local": {"auth": "xauth"}}}},
           {"connections": {"c": {"children": {"k": {"mode": "beet"}}}}}, {"rules": {"r": {"local_ts": "x"}}},
           {"connections": {"c": {"children": {"k": {"replay_window": 5000}}}}}]
    for doc in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, schema)
    jsonschema.validate({"connections": {"c": {"dpd_delay": 30, "rekey_time": "4h",
                                               "children": {"k": {"rekey_bytes": "500M"}}}}}, schema)


def _psk_policy(tmp_path: Path) -> Path:
    (tmp_path / "gw.secrets.toml").write_text('[ike.branch]\nids = ["hq.example.org"]\n'
                                              'secret = "Sup3r-Secret-PSK-value-xyz"\n')
    (tmp_path / "gw.secrets.toml").chmod(0o600)
    path = tmp_path / "gw.toml"
    path.write_text((sample_dir() / "site-to-site.toml").read_text().replace("site-to-site.secrets.toml",
                                                                              "gw.secrets.toml"))
    return path


def test_doc_names_who_what_how_strong_and_never_the_psk(tmp_path):
    text = document_file(_psk_policy(tmp_path))
    for needed in ("`hq.example.org` at 192.0.2.1 ⇄ `branch.example.org` at 192.0.2.2",
                   "198.51.100.0/25", "198.51.100.128/25", "AES-256-GCM", "X25519 (group 31) [128]",
                   "PSK from `[ike.branch]` in `gw.secrets.toml` (the value is not shown)",
                   "| 5 | 311712 | bypass (in clear) |", "rule 'local-lan'", "```mermaid", "quantum-safe"):
        assert needed in text, needed
    assert "Sup3r-Secret" not in text and "Sup3r-Secret".encode().hex() not in text


def test_a_classic_pfs_group_does_not_make_a_child_sa_of_a_hybrid_ike_sa_unsafe():
    """CHILD keys come from SK_d; PFS only adds a secret: x25519 PFS under a hybrid IKE SA is
    quantum-safe in the child rows and the summary (lab.toml's branch, AES-128 aside)."""
    from engine.ops.doc import proposal_row
    from engine.policy.proposals import parse_proposal

    assert proposal_row(parse_proposal("aes256gcm16-x25519", "esp"), ike=False)[-1] == "yes"
    assert proposal_row(parse_proposal("aes128gcm16-x25519", "esp"), ike=False)[-1] == "weakened"
    assert proposal_row(parse_proposal("aes256gcm16-prfsha384-x25519", "ike"), ike=True)[-1] == "no"
    text = document_file(sample_dir() / "host-to-host-transport.toml")
    assert "at 192.0.2.20 | `hosts` | 128 bits | yes |" in text


def test_doc_shows_certificates_with_their_expiry_and_key(tmp_path):
    pki = tmp_path / "pki"
    ca.init_ca(pki, "O=Example, CN=Example CA", key_type="ecdsa-p256", days=3650)
    ca.issue(pki, "gw.example.org", days=20)
    policy = tmp_path / "gw.toml"
    policy.write_text('[engine]\ndatapath = "kernel"\nsecrets = "s.toml"\n\n[connections.rw]\n'
                      'local = { auth = "pubkey", id = "gw.example.org", certs = ["pki/certs/gw.example.org.crt"] }\n'
                      'remote = { auth = "pubkey", cacerts = ["pki/ca.crt"] }\n\n[connections.rw.children.lan]\n'
                      'local_ts = ["198.51.100.0/24"]\n')
    (tmp_path / "s.toml").write_text('[private.gw]\nfile = "pki/private/gw.example.org.key"\n')
    (tmp_path / "s.toml").chmod(0o600)
    now = datetime.now(timezone.utc)
    text = document_file(policy, now=now)
    expiry = (now + timedelta(days=20)).strftime("%Y-%m-%d")
    row = next(ln for ln in text.splitlines() if ln.startswith("| `pki/certs/gw.example.org.crt`"))
    assert "our certificate (rw)" in row and "CN=gw.example.org" in row and "ECDSA secp256r1" in row
    assert expiry in row and ("19 days left" in row or "20 days left" in row)
    assert any(ln.startswith("| `pki/private/gw.example.org.key` | private key [private.gw]") and "0600" in ln
               for ln in text.splitlines())


class _Strict(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.void = {"meta", "br", "rect", "line", "path"}

    def handle_starttag(self, tag, attrs):
        if tag not in self.void:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.void:
            return
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def test_html_output_is_balanced_and_has_the_diagram(tmp_path):
    out = tmp_path / "doc.html"
    run = subprocess.run([sys.executable, "-m", "console", "doc", str(_psk_policy(tmp_path)), "--format", "html",
                          "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    p = _Strict()
    p.feed(text)
    assert p.stack == [] and "<svg" in text and "<table>" in text and "Sup3r" not in text


def test_cli_prints_the_reference_and_the_schema():
    run = subprocess.run([sys.executable, "-m", "console", "doc", "--schema"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and json.loads(run.stdout)["title"] == "ipsec-console policy"
    run = subprocess.run([sys.executable, "-m", "console", "doc", "--keys"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and "| `dpd_delay` |" in run.stdout
