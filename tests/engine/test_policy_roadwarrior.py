"""Road-warrior policy: pools, vips, EAP auth and users, the 'not negotiated yet' gate, lint rules,
serialization, and the shipped samples with their '#rw:' lines turned on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.policy import lint, load_policy, parse_policy, run_check
from engine.policy import roadwarrior
from engine.policy.findings import PolicyError
from engine.policy.samples import sample_dir
from engine.policy.secrets import lookup_eap
from engine.policy.serialize import policy_to_toml

GW = 'local = { auth = "pubkey", id = "gw.example.org", certs = ["gw.crt"] }\n'


@pytest.fixture
def live(monkeypatch):
    """As after the integration: engine.ike negotiates CP, EAP and redirects."""
    monkeypatch.setattr(roadwarrior, "NEGOTIATED", roadwarrior.FEATURES)


def errors(text: str, path=None) -> list[tuple[str, str]]:
    try:
        parse_policy(text, path)
    except PolicyError as exc:
        return [(f.key_path, f.message) for f in exc.errors]
    return []


def write(tmp_path: Path, policy: str, secrets: str = "") -> Path:
    (tmp_path / "p.secrets.toml").write_text(secrets)
    os.chmod(tmp_path / "p.secrets.toml", 0o600)
    (tmp_path / "p.toml").write_text('[engine]\nsecrets = "p.secrets.toml"\n' + policy)
    return tmp_path / "p.toml"


GATEWAY = f"""
[pools.rw]
addrs = "198.51.100.128/25"
dns = ["198.51.100.53"]
split_include = ["198.51.100.0/25"]

[connections.rw]
remote_addrs = ["%any"]
{GW}remote = {{ auth = "eap-mschapv2", eap_id = "%any" }}
pools = ["rw"]
expected_clients = 50
[connections.rw.children.office]
local_ts = ["198.51.100.0/25"]
"""
USERS = '[eap.alice]\nid = "alice@example.org"\nsecret = "a long passphrase"\n' \
        '[eap.bob]\nid = ["EXAMPLE\\\\bob", "bob@example.org"]\nsecret = "another one"\n'


def test_gateway_parses_with_pools_eap_and_users(tmp_path, live):
    p = load_policy(write(tmp_path, GATEWAY, USERS))
    c = p.connection("rw")
    assert c.pools == ("rw",) and c.remote.auth == "eap-mschapv2" and c.remote.eap_id == "%any"
    assert c.remote.is_eap and not c.local.is_eap and c.expected_clients == 50
    pool = p.pool("rw")
    assert (pool.addrs, pool.dns, pool.split_include) == ("198.51.100.128/25", ("198.51.100.53",), ("198.51.100.0/25",))
    assert lookup_eap(p.secrets, b"example\\BOB").name == "bob"
    assert lookup_eap(p.secrets, "alice@example.org").secret.reveal() == b"a long passphrase"
    assert lookup_eap(p.secrets, "mallory") is None
    assert "a long passphrase" not in repr(p.secrets)


def test_until_the_integration_the_gate_refuses_with_reasons(tmp_path, monkeypatch):
    path = write(tmp_path, GATEWAY + '[connections.c]\nremote_addrs = ["192.0.2.1"]\nvips = ["0.0.0.0"]\n'
                 'redirect_to = "gw2.example.org"\n' + GW + 'remote = { auth = "pubkey" }\n', USERS)
    monkeypatch.setattr(roadwarrior, "NEGOTIATED", frozenset())
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    got = {f.key_path: f.message for f in exc.value.errors}
    assert "does not negotiate yet" in got["connections.rw.pools"]
    assert "EAP inside IKE_AUTH (RFC 7296 §2.16) is not negotiated" in got["connections.rw.remote.auth"]
    assert "remove vips for now" in got["connections.c.vips"]
    assert "RFC 5685" in got["connections.c.redirect_to"]


def test_the_gate_lets_through_what_the_engine_negotiates(tmp_path):
    """Configuration payloads are negotiated (engine.ike.config_payload): pools and vips load."""
    assert "cp" in roadwarrior.NEGOTIATED
    path = write(tmp_path, GATEWAY.replace('remote = {{ auth = "eap-mschapv2", eap_id = "%any" }}', '')
                 .replace('remote = { auth = "eap-mschapv2", eap_id = "%any" }\n', 'remote = { auth = "pubkey" }\n')
                 + '[connections.c]\nremote_addrs = ["192.0.2.1"]\nvips = ["0.0.0.0"]\n' + GW
                 + 'remote = { auth = "pubkey" }\n', USERS)
    p = load_policy(path)
    assert p.connection("rw").pools == ("rw",) and p.connection("c").vips == ("0.0.0.0",)


@pytest.mark.parametrize("snippet, key, words", [
    ('[pools.x]\ndns = ["198.51.100.53"]\n', "pools.x.addrs", "missing"),
    ('[pools.x]\naddrs = "198.51.100.9-198.51.100.1"\n', "pools.x.addrs", "ends before it starts"),
    ('[pools.x]\naddrs = "198.51.100.0/24"\ndns = ["dns.example.org"]\n', "pools.x.dns", "not an IP address"),
    ('[pools.x]\naddrs = "198.51.100.0/24"\nsplit_include = ["office"]\n', "pools.x.split_include", "not a network"),
    ('[pools.x]\naddrs = "198.51.100.0/24"\nsize = 3\n', "pools.x.size", ""),
    ('[connections.c]\npools = ["nope"]\n' + GW + 'remote = { auth = "pubkey" }\n', "connections.c.pools",
     "no [pools.nope] section"),
    ('[connections.c]\nvips = ["any"]\n', "connections.c.vips", '"0.0.0.0" asks for any IPv4 address'),
    ('[connections.c]\nremote = { auth = "eap-identity" }\n', "connections.c.remote.auth", "authenticates nobody"),
    ('[connections.c]\nremote = { auth = "eap-md5" }\n', "connections.c.remote.auth", '"eap-mschapv2", "eap-tls"'),
    ('[connections.c]\nremote = { auth = "pubkey", eap_id = "x" }\n', "connections.c.remote.eap_id", "needs an EAP auth"),
    ('[connections.c]\nlocal = { auth = "eap-mschapv2", eap_id = "%any" }\n', "connections.c.local.eap_id",
     "only for the remote side"),
    ('[connections.c]\nlocal = { auth = "eap-tls" }\n', "connections.c.local.certs", "needs our client certificate"),
    ('[connections.c]\nredirect_to = "not a host"\n', "connections.c.redirect_to", "not a gateway address"),
])
def test_bad_values_are_named(live, snippet, key, words):
    got = dict(errors(snippet))
    assert key in got and words in got[key], got


def test_eap_users_and_their_secrets_are_checked(tmp_path, live):
    client = ('[connections.c]\nremote_addrs = ["192.0.2.1"]\nlocal = { auth = "eap-mschapv2", id = "me.example.org", '
              'eap_id = "carol" }\nremote = { auth = "pubkey", id = "gw.example.org" }\nvips = ["0.0.0.0"]\n')
    with pytest.raises(PolicyError) as exc:
        load_policy(write(tmp_path, client, USERS))
    assert 'no [eap.*] entry with id = "carol"' in exc.value.errors[0].message
    assert load_policy(write(tmp_path, client, USERS.replace("alice@example.org", "carol"))).connections
    with pytest.raises(PolicyError) as exc:
        load_policy(write(tmp_path, GATEWAY, ""))
    assert "no [eap.*] users" in exc.value.errors[0].message
    for bad, words in (('[eap.a]\nsecret = "x"\n', "missing: the EAP identity"),
                       ('[eap.a]\nid = "x"\n', "needs secret"),
                       ('[eap.a]\nid = "x"\nsecret = "1"\n[eap.b]\nid = "X"\nsecret = "2"\n', "same identity")):
        with pytest.raises(PolicyError) as exc:
            load_policy(write(tmp_path, GATEWAY, bad))
        assert any(words in f.message and "secret" not in f.message.split(":")[-1] or words in f.message
                   for f in exc.value.findings), [f.message for f in exc.value.findings]
        assert all('"1"' not in f.message and '"2"' not in f.message for f in exc.value.findings)


def test_eap_id_patterns():
    m = roadwarrior.eap_id_matches
    assert m(None, b"anyone") and m("%any", "x")
    assert m("*@example.org", "alice@Example.org") and not m("*@example.org", "alice@example.com")
    assert m("EXAMPLE\\*", b"example\\bob") and m("a*c*e", "abcde") and not m("a*c*e", "ace-x")
    assert m("alice", "ALICE") and not m("alice", "alice2")


def test_serialize_round_trips_the_new_keys(tmp_path, live):
    p = load_policy(write(tmp_path, GATEWAY + '[connections.c]\nremote_addrs = ["192.0.2.1"]\nvips = ["0.0.0.0", "::"]\n'
                          'redirect_to = "198.51.100.9"\nlocal = { auth = "eap-tls", certs = ["me.crt"], '
                          'eap_id = "EXAMPLE\\\\me" }\nremote = { auth = "pubkey", id = "gw.example.org" }\n', USERS))
    text = policy_to_toml(p)
    assert "[pools.rw]" in text and 'eap_id = "%any"' in text and 'vips = [' in text
    back = parse_policy(text, tmp_path / "p.toml", load_secrets=False)
    assert back.pools == p.pools
    assert back.connection("rw") == p.connection("rw") and back.connection("c") == p.connection("c")


# -- lint ------------------------------------------------------------------------------------------

def lint_rules(tmp_path, policy: str) -> list[tuple[str, str]]:
    return [(f.rule, f.key_path) for f in lint(load_policy(write(tmp_path, policy, USERS)))]


def test_pool_overlap(tmp_path, live):
    assert not [r for r in lint_rules(tmp_path, GATEWAY) if r[0] == "pool-overlap"]
    overlapping = GATEWAY.replace('local_ts = ["198.51.100.0/25"]', 'local_ts = ["198.51.100.0/24"]')
    assert ("pool-overlap", "pools.rw.addrs") in lint_rules(tmp_path, overlapping)
    two = GATEWAY + '[pools.other]\naddrs = "198.51.100.200-198.51.100.210"\n'
    found = [f for f in lint(load_policy(write(tmp_path, two, USERS))) if f.rule == "pool-overlap"]
    assert found and "overlaps pool 'rw'" in found[0].message


def test_pool_too_small(tmp_path, live):
    assert ("pool-too-small", "connections.rw.pools") in lint_rules(
        tmp_path, GATEWAY.replace("expected_clients = 50", "expected_clients = 500"))
    assert "pool-too-small" not in {r for r, _ in lint_rules(tmp_path, GATEWAY)}


def test_eap_without_certificate(tmp_path, live):
    psk_gw = GATEWAY.replace(GW, 'local = { auth = "psk", id = "gw.example.org" }\n')
    secrets = USERS + '[ike.gw]\nids = ["gw.example.org"]\nsecret = "Vq3#Lk8!pZ2@xR7$wN4&"\n'
    found = [(f.rule, f.key_path) for f in lint(load_policy(write(tmp_path, psk_gw, secrets)))]
    assert ("eap-without-certificate", "connections.rw.local.auth") in found
    assert "eap-without-certificate" not in {r for r, _ in lint_rules(tmp_path, GATEWAY)}


def test_windows_weak_proposals_names_the_powershell_fix(tmp_path, live):
    weak = GATEWAY.replace("pools = [\"rw\"]", 'pools = ["rw"]\nproposals = ["aes256-sha256-x25519", "3des-sha1-modp1024"]')
    found = [f for f in lint(load_policy(write(tmp_path, weak, USERS))) if f.rule == "windows-weak-proposals"]
    assert found and found[0].key_path == "connections.rw.proposals"
    assert "Set-VpnConnectionIPsecConfiguration" in found[0].message and "-DHGroup ECP384" in found[0].message
    assert "3DES/SHA-1/MODP-1024" in found[0].message
    assert "windows-weak-proposals" not in {r for r, _ in lint_rules(tmp_path, GATEWAY)}


CLIENT = """
[connections.office]
remote_addrs = ["192.0.2.1"]
local = { auth = "eap-mschapv2", id = "alice@example.org", eap_id = "alice@example.org" }
remote = { auth = "pubkey", id = "gw.example.org", cacerts = ["ca.crt"] }
vips = ["0.0.0.0"]
[connections.office.children.lan]
remote_ts = ["198.51.100.0/25"]
"""


def test_mobike_needs_no_warning_on_clients_or_gateways(tmp_path, live):
    """A gateway answers MOBIKE and a client now moves its own SAs (engine.ike.exchanges.mobike):
    mobike = true (the default) is honoured on both, so check has nothing to say about it."""
    assert "mobike" not in " ".join(r for r, _ in lint_rules(tmp_path, GATEWAY))
    assert not [f for f in lint(load_policy(write(tmp_path, CLIENT, USERS))) if "mobike" in f.key_path]


# -- samples -----------------------------------------------------------------------------------------

def _live_copy(tmp_path: Path) -> Path:
    """The road-warrior samples as they become with the integration: '#rw: ' lines on, '# until rw' lines gone."""
    for f in sample_dir().glob("road-warrior-*"):
        lines = [line[len("#rw: "):] if line.startswith("#rw: ") else line
                 for line in f.read_text().splitlines() if not line.rstrip().endswith("# until rw")]
        (tmp_path / f.name).write_text("\n".join(lines) + "\n")
        os.chmod(tmp_path / f.name, 0o600)
    return tmp_path


@pytest.mark.parametrize("name", ["road-warrior-server.toml", "road-warrior-client.toml"])
def test_samples_are_valid_now_and_once_live(tmp_path, monkeypatch, name):
    assert not [f for f in run_check(sample_dir() / name) if f.severity == "error"]
    monkeypatch.setattr(roadwarrior, "NEGOTIATED", roadwarrior.FEATURES)
    live = _live_copy(tmp_path)
    # Only the advice on the classic fallback proposals the built-in clients need (severity info).
    assert [(f.severity, f.rule) for f in run_check(live / name)] == [("info", "not-quantum-safe")]
    p = load_policy(live / name)
    c = p.connections[0]
    if name == "road-warrior-server.toml":
        assert c.remote.auth == "eap-mschapv2" and c.pools == ("rw",) and p.pool("rw").dns
        assert lookup_eap(p.secrets, "alice@example.org") is not None
    else:
        assert c.local.auth == "eap-mschapv2" and c.vips == ("0.0.0.0",)
