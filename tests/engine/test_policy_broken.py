"""tests/data/broken: every validation error, each named by file, key path (or line:col) and message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.policy import PolicyError, load_policy, run_check

BROKEN = Path(__file__).resolve().parents[1] / "data" / "broken"

# file -> (key path, message fragment) pairs that must all be reported as errors.
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "unknown-keys.toml": [
        ("conections", "unknown section 'conections' (did you mean 'connections'?)"),
        ("engine.datapth", "did you mean 'datapath'?"),
        ("connections.branch.remote_adrs", "did you mean 'remote_addrs'?"),
        ("connections.branch.local.identity", "unknown key 'identity'"),
        ("connections.branch.children.lan.esp_proposal", "did you mean 'esp_proposals'?"),
        ("rules.dns.remote", "did you mean 'remote_ts'?"),
    ],
    "wrong-types.toml": [
        ("engine.ike_port", "expected an integer, got a string ('500')"),
        ("engine.retransmit_tries", "expected an integer, got a number (2.5)"),
        ("engine.retransmit_base", "expected a number, got a string"),
        ("engine.crls", "expected an array of strings, but it holds an integer"),
        ("connections.branch.encap", "expected true or false, got a string ('yes')"),
        ("connections.branch.keyingtries", "expected an integer, got a boolean"),
        ("connections.branch.local", "expected a table, got a string"),
        ("connections.branch.children", "expected a table"),
        ("connections.other.remote_addrs", "expected an array of strings, got an integer (42)"),
        ("connections.other.children.lan.local_ts", "expected an array of strings"),
        ("rules.dns", "expected a table [rules.dns]"),
    ],
    "bad-durations.toml": [
        ("engine.retransmit_timeout", "must be longer than 0s"),
        ("engine.keepalive", 'expected a duration like "30s"'),
        ("connections.branch.dpd_delay", "got a string ('30 sec')"),
        ("connections.branch.rekey_time", "got an integer (-5)"),
        ("connections.branch.children.lan.rekey_time", "('1w')"),
        ("connections.branch.children.lan.rekey_bytes", 'expected a count like 1000, "64k", "500M" or "1G"'),
        ("connections.branch.children.lan.life_packets", "(-1)"),
    ],
    "bad-proposals.toml": [
        ("connections.branch.proposals", "unknown algorithm keyword 'aes265' (did you mean 'aes256'?)"),
        ("connections.branch.proposals", "'aes256-sha256': an IKE proposal needs a key exchange method"),
        ("connections.branch.proposals", "'aes256gcm16-x25519': an IKE proposal needs a PRF"),
        ("connections.branch.proposals", "IKE must be encrypted"),
        ("connections.branch.proposals", "'serpent' is a strongSwan keyword this engine does not implement"),
        ("connections.branch.proposals", "empty keyword"),
        ("connections.branch.proposals", "classic and combined-mode (AEAD) ciphers cannot be in the same IKE"),
        ("connections.branch.proposals", "'aes256-x25519': an IKE proposal with a classic cipher needs an integrity"),
        ("connections.branch.proposals", "'esn'/'noesn' apply to ESP and AH, not to IKE"),
        ("connections.branch.children.lan.esp_proposals", "unknown algorithm keyword 'foo'"),
        ("connections.branch.children.lan.esp_proposals", "an ESP proposal needs an encryption algorithm"),
        ("connections.branch.children.lan.esp_proposals", "'default' stands alone"),
        ("connections.branch.children.lan.proposals", "unknown key 'proposals'"),
        ("connections.branch.children.auth-only.ah_proposals", "an AH proposal needs an integrity algorithm"),
        ("connections.branch.children.empty.esp_proposals", "empty list"),
    ],
    "bad-ts.toml": [
        ("connections.branch.children.lan.local_ts", "'198.51.100.0/33': not an address, network or range"),
        ("connections.branch.children.lan.local_ts", "'198.51.100.0/25[tcp/99999]': port 99999 is outside 0-65535"),
        ("connections.branch.children.lan.local_ts", "address range runs backwards"),
        ("connections.branch.children.lan.remote_ts", "a port needs a protocol, e.g. [tcp/443]"),
        ("connections.branch.children.lan.remote_ts", "unknown protocol 'xyz'"),
        ("connections.branch.children.lan.remote_ts", "missing closing ']'"),
        ("connections.branch.children.lan.remote_ts", "ICMP type/code 300 is outside 0-255"),
        ("connections.branch.children.empty.local_ts", "empty list"),
        ("rules.dyn.remote_ts", "dynamic is only for children"),
    ],
    "bad-ids.toml": [
        ("connections.branch.local.id", "distinguished name 'CN=': CN has an empty value"),
        ("connections.branch.remote.id", "address ranges are not supported as identities"),
        ("connections.other.local.id", "%any is only for the remote side"),
        ("connections.other.remote.id", "not an IPv4 address"),
        ("connections.third.local.id", "not a DNS name"),
        ("connections.third.remote.id", "not an e-mail address"),
        ("connections.third.remote.auth", "no [eap.*] users in a secrets file"),
    ],
    "missing-secret.toml": [
        ("connections.other.local.auth", "no [ike.*] secret in missing-secret.secrets.toml matches this connection "
                                         "(local id hq.example.org, remote id other.example.org)"),
    ],
    "no-secrets-file.toml": [
        ("connections.branch.local.auth", "PSK authentication needs a secrets file"),
    ],
    "secrets-not-found.toml": [
        ("engine.secrets", "secrets file 'no-such.secrets.toml' not found"),
    ],
    "duplicate-names.toml": [
        ("connections.other.children.lan", "the name 'lan' is already used by child 'lan' of connection 'branch'"),
        ("connections.other.children.branch", "already used by connection 'branch'"),
        ("rules.other", "already used by connection 'other': rename the rule"),
        ('connections."has space"', "a connection name is 1 to 64 characters without spaces"),
    ],
    "esp-with-ah-proposals.toml": [
        ("connections.branch.children.lan.ah_proposals", 'ah_proposals in a child with protocol = "esp"'),
        ("connections.branch.children.auth.esp_proposals", 'esp_proposals in a child with protocol = "ah"'),
    ],
    "bad-values.toml": [
        ("engine.datapath", "must be one of 'kernel', 'userspace', 'lab', not 'xfrm'"),
        ("engine.natt_port", "must differ from ike_port (4500)"),
        ("engine.listen", "'gw.example.org' is not an IP address"),
        ("engine.secrets", "empty path"),
        ("connections.branch.remote_addrs", "'not an address!' is not an address"),
        ("connections.branch.remote_addrs", "'192.0.2.9-192.0.2.1' is not an address"),
        ("connections.branch.local_port", "the engine listens on ike_port (4500) and natt_port (4500) only"),
        ("connections.branch.remote_port", "must be 1 to 65535, not 70000"),
        ("connections.branch.rand_time", "must be shorter than rekey_time (3600s)"),
        ("connections.branch.children.lan.mode", '"pass" is a strongSwan shunt'),
        ("connections.branch.children.lan2.mode", "must be one of 'tunnel', 'transport', not 'beet'"),
        ("connections.branch.children.lan.start_action", "not 'route'"),
        ("connections.branch.children.lan.dpd_action", "not 'hold'"),
        ("connections.branch.children.lan.replay_window", "must be 0 to 4096, not 10000"),
        ("connections.branch.children.lan.priority", "must be 1 to 99999, not 0"),
        ("connections.branch.children.lan.life_time", "must be longer than rekey_time (3600s)"),
        ("connections.branch.children.lan.rand_time", "must be shorter than rekey_time"),
        ("connections.branch.children.lan.life_bytes", "must be more than rekey_bytes (1048576)"),
        ("rules.block.action", 'not \'drop\' (did you mean "discard"?)'),
        ("rules.noaction.action", 'missing: action = "bypass"'),
        ("rules.prio.priority", "must be 1 to 99999, not 100000"),
    ],
    "lab-not-loopback.toml": [
        ("engine.listen", "192.0.2.1 is not a loopback address"),
        ("connections.peer.local_addrs", "'192.0.2.1' is not a loopback address"),
        ("connections.peer.remote_addrs", "'peer.example.org' is not a loopback address"),
        ("lab.peers", "peer policy 'no-such-peer.toml' not found"),
        ("lab.peers", "'lab-not-loopback.toml' is this file"),
        ("lab.rate", "must be more than 0 packets per second"),
        ("lab.flows", "unknown flow 'sctp'"),
    ],
    "lab-without-listen.toml": [
        ("engine.listen", 'a lab listens on loopback only: set listen = ["127.0.0.1"]'),
    ],
    "bad-pki.toml": [
        ("engine.pki", "empty path: remove the key (the CA folder is then pki/ next to this file)"),
    ],
    "lab-section-not-lab.toml": [
        ("lab", 'a [lab] section needs datapath = "lab" in [engine] (it is "kernel")'),
    ],
}

# Errors reported in the secrets file rather than the policy.
EXPECTED_SECRETS: dict[str, list[tuple[str, str]]] = {
    "bad-secrets.toml": [
        ("ike.branch.secret", "expected a string, got an integer"),
        ("ike.hex.secret", "a value starting with 0x must be hex"),
        ("ike.twin.ids", "the same identities as [ike.branch]"),
        ("ike.noval.ids", "bad identity"),
        ("ike.noval.secret", "missing: every [ike.*] entry needs secret"),
        ("ike.empty.secret", "empty secret"),
        ("ike.extra.comment", "unknown key 'comment'"),
        ("private.gw.file", "missing: the private key file"),
        ("public", "unknown section 'public'"),
    ],
}

# TOML syntax errors: (file, line, column, fragment).
SYNTAX = [
    ("syntax.toml", "syntax.toml", 4, 16, "Unclosed array"),
    ("duplicate-key.toml", "duplicate-key.toml", 3, None, "Cannot overwrite a value"),
    ("secrets-syntax.toml", "secrets-syntax.secrets.toml", 3, None, "TOML syntax"),
]


@pytest.fixture
def broken(tmp_path: Path, monkeypatch) -> Path:
    """A copy of the broken set with secrets files at 0600 (git checkouts leave them 0644)."""
    dst = tmp_path / "broken"
    shutil.copytree(BROKEN, dst)
    for p in dst.glob("*.secrets.toml"):
        p.chmod(0o600)
    monkeypatch.chdir(dst)
    return dst


def _errors(name: str) -> list:
    return [f for f in run_check(name) if f.severity == "error"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_policy_reports_every_error(broken: Path, name: str):
    errors = _errors(name)
    assert errors, f"{name}: no errors reported"
    for f in errors:
        assert f.file == name
        assert f.format().startswith(f"{name}: {f.key_path}: error: ")
    for path, fragment in EXPECTED[name]:
        hits = [f for f in errors if f.key_path == path and fragment in f.message]
        assert hits, f"{name}: no error at {path} containing {fragment!r}; got:\n" + \
            "\n".join(f.format() for f in errors)
    # load_policy raises the same errors, all of them at once.
    with pytest.raises(PolicyError) as exc:
        load_policy(name)
    assert {(f.key_path, f.message) for f in exc.value.errors} >= {(f.key_path, f.message) for f in errors
                                                                   if f.file == name}


@pytest.mark.parametrize("name", sorted(EXPECTED_SECRETS))
def test_broken_secrets_file_reports_every_error(broken: Path, name: str):
    secrets_file = name.replace(".toml", ".secrets.toml")
    errors = _errors(name)
    assert errors and all(f.file == secrets_file for f in errors)
    for path, fragment in EXPECTED_SECRETS[name]:
        assert any(f.key_path == path and fragment in f.message for f in errors), (path, fragment)
    # The secret values in that file never appear in a message.
    text = (broken / secrets_file).read_text()
    for f in errors:
        assert "12345678901234567890" not in f.format()
        assert "Gx7#pLq2" not in f.format()
    assert "Gx7#pLq2" in text


@pytest.mark.parametrize("name,file,line,column,fragment", SYNTAX)
def test_syntax_errors_have_line_and_column(broken: Path, name, file, line, column, fragment):
    errors = _errors(name)
    assert len(errors) == 1
    f = errors[0]
    assert f.file == file and f.line == line and fragment in f.message
    if column is not None:
        assert f.column == column
    assert f.format().startswith(f"{file}:{line}:{f.column}: error: TOML syntax: ")


def test_every_broken_file_is_covered():
    names = {p.name for p in BROKEN.glob("*.toml") if not p.name.endswith(".secrets.toml")}
    covered = set(EXPECTED) | set(EXPECTED_SECRETS) | {s[0] for s in SYNTAX} | {"secrets-mode.toml"}
    assert names == covered


def test_secrets_mode_is_refused_by_the_engine_and_a_warning_for_check(broken: Path):
    (broken / "secrets-mode.secrets.toml").chmod(0o644)
    with pytest.raises(PolicyError) as exc:
        load_policy("secrets-mode.toml")
    [err] = exc.value.errors
    assert err.key_path == "engine.secrets"
    assert "refusing secrets file 'secrets-mode.secrets.toml': mode 0644" in err.message
    assert "chmod 600 secrets-mode.secrets.toml" in err.message
    findings = [f for f in run_check("secrets-mode.toml") if f.rule != "not-quantum-safe"]  # a classic proposal
    assert [(f.severity, f.key_path, f.rule) for f in findings] == [("warning", "engine.secrets", "secrets-readable")]
    (broken / "secrets-mode.secrets.toml").chmod(0o600)
    assert [f.severity for f in run_check("secrets-mode.toml")] == ["info"]  # the not-quantum-safe advice only
    assert load_policy("secrets-mode.toml").secrets.ike[0].name == "branch"
    (broken / "secrets-mode.secrets.toml").chmod(0o640)  # group-readable is refused too
    with pytest.raises(PolicyError):
        load_policy("secrets-mode.toml")


def test_lab_policies_are_exempt_from_the_secrets_mode(broken: Path):
    (broken / "secrets-mode.secrets.toml").chmod(0o644)
    text = (broken / "secrets-mode.toml").read_text().replace(
        'datapath = "kernel"', 'datapath = "lab"\nlisten = ["127.0.0.1"]').replace("192.0.2.2", "127.0.0.2")
    (broken / "lab-mode.toml").write_text(text)
    policy = load_policy("lab-mode.toml")
    assert policy.engine.datapath == "lab" and len(policy.secrets.ike) == 1
    assert [f.rule for f in run_check("lab-mode.toml")] == ["not-quantum-safe"]  # no secrets-readable


def test_unreadable_policy_is_an_error(broken: Path):
    (broken / "folder.toml").mkdir()
    [f] = run_check("folder.toml")
    assert f.severity == "error" and "cannot read the policy: Is a directory" in f.message


def test_missing_policy_file_is_an_error(broken: Path):
    [f] = run_check("no-such-policy.toml")
    assert f.severity == "error" and "cannot read the policy: No such file or directory" in f.message
