"""Every lint rule: one policy where it fires, one where it does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.policy import lint, load_policy, parse_policy
from engine.policy.lint import RULES

PUBKEY = 'local = { auth = "pubkey", certs = ["gw.crt"] }\nremote = { auth = "pubkey" }\n'


def conn(proposals: str = '"aes256gcm16-prfsha384-x25519"', esp: str = '"aes256gcm16"',
         local_ts: str = '"198.51.100.0/25"', remote_ts: str = '"198.51.100.128/25"', extra: str = "") -> str:
    return f"""[connections.c]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
proposals = [{proposals}]
{PUBKEY}
[connections.c.children.x]
local_ts = [{local_ts}]
remote_ts = [{remote_ts}]
esp_proposals = [{esp}]
{extra}"""


def warnings_of(policy) -> list:
    """Lint's warnings. The classic proposals here also get the not-quantum-safe advice
    (severity info), which test_policy_pq.py tests; each test here is about its own rule."""
    return [f for f in lint(policy) if f.severity != "info"]


def rules_of(text: str) -> list[tuple[str, str]]:
    return [(f.rule, f.key_path) for f in warnings_of(parse_policy(text))]


CASES = {
    # rule: (policy that fires, expected key path, policy that does not)
    "weak-encryption": (conn(proposals='"3des-sha256-x25519"'), "connections.c.proposals", conn()),
    "null-encryption": (conn(esp='"null-sha256"'), "connections.c.children.x.esp_proposals", conn(esp='"aes256-sha256"')),
    "weak-integrity": (conn(esp='"aes256-md5"'), "connections.c.children.x.esp_proposals", conn(esp='"aes256-sha512"')),
    "no-integrity": (conn(esp='"aes256"'), "connections.c.children.x.esp_proposals", conn(esp='"chacha20poly1305"')),
    "weak-prf": (conn(proposals='"aes256gcm16-prfsha1-x25519"'), "connections.c.proposals",
                 conn(proposals='"aes256gcm16-prfsha512-x25519"')),
    "weak-dh": (conn(esp='"aes256gcm16-modp1536"'), "connections.c.children.x.esp_proposals",
                conn(esp='"aes256gcm16-modp2048"')),
    "short-icv": (conn(esp='"aes256gcm8"'), "connections.c.children.x.esp_proposals", conn(esp='"aes256gcm12"')),
    "catch-all-protect": (conn(local_ts='"0.0.0.0/0"', remote_ts='"0.0.0.0/0"'), "connections.c.children.x",
                          conn(local_ts='"0.0.0.0/0"', remote_ts='"198.51.100.0/24"')),
    "address-family": (conn().replace('remote_addrs = ["192.0.2.2"]', 'remote_addrs = ["2001:db8::2"]'),
                       "connections.c.local_addrs", conn()),
    "no-children": ('[connections.c]\nremote_addrs = ["192.0.2.2"]\n' + PUBKEY, "connections.c", conn()),
    "deprecated-key": ('[engine]\ntun_offload = "jumbo"\n' + conn(), "engine.tun_offload",
                       '[engine]\ntun_offload = "off"\n' + conn()),
    "shadowed": (conn() + '[rules.all]\naction = "discard"\nlocal_ts = ["198.51.100.0/24"]\nremote_ts = ["198.51.100.0/24"]\npriority = 5\n',
                 "connections.c.children.x",
                 conn() + '[rules.all]\naction = "discard"\nlocal_ts = ["198.51.100.0/24"]\nremote_ts = ["198.51.100.0/24"]\n'),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_and_does_not(rule):
    bad, path, good = CASES[rule]
    found = rules_of(bad)
    assert (rule, path) in found, found
    assert rule not in {r for r, _ in rules_of(good)}


def test_messages_carry_the_rule_id_and_say_what_to_do():
    [f] = [f for f in lint(parse_policy(conn(proposals='"3des-sha256-x25519"'))) if f.rule == "weak-encryption"]
    assert f.severity == "warning" and f.message.endswith("[weak-encryption]")
    assert "3DES" in f.message and "use aes256gcm16" in f.message
    assert f.format() == f"<string>: connections.c.proposals: warning: {f.message}"


def test_default_proposals_are_not_linted():
    text = conn().replace('proposals = ["aes256gcm16-prfsha384-x25519"]\n', "").replace('esp_proposals = ["aes256gcm16"]\n', "")
    assert rules_of(text) == []


def test_weak_dh_covers_groups_1_2_5_22():
    for group in ("modp768", "modp1024", "modp1536", "modp1024s160"):
        assert ("weak-dh", "connections.c.proposals") in rules_of(conn(proposals=f'"aes256-sha256-{group}"'))
    for group in ("modp2048", "modp3072", "ecp256", "x25519", "x448"):
        assert rules_of(conn(proposals=f'"aes256-sha256-{group}"')) == []


def test_shadowed_rule_by_more_specific_or_earlier_entries():
    text = ('[rules.dns]\naction = "bypass"\nremote_ts = ["0.0.0.0/0[udp/53]"]\n'
            '[rules.dns-google]\naction = "discard"\nremote_ts = ["0.0.0.0/0[udp/53]"]\n')
    # Same selectors: discard is decided first (safer action), so the bypass rule never matches.
    assert rules_of(text) == [("shadowed", "rules.dns")]
    # An explicit priority makes the bypass win instead.
    assert rules_of(text.replace('action = "bypass"\n', 'action = "bypass"\npriority = 10\n')) == \
        [("shadowed", "rules.dns-google")]
    # Partly overlapping rules are fine.
    assert rules_of(text.replace('["0.0.0.0/0[udp/53]"]\n[rules.dns-google]', '["192.0.2.0/24[udp/53]"]\n[rules.dns-google]')) == []


def test_rule_shadowed_by_the_implicit_ike_bypass():
    found = lint(parse_policy('[rules.ike]\naction = "bypass"\nlocal_ts = ["0.0.0.0/0[udp/500]"]\n'))
    assert [(f.rule, f.key_path) for f in found] == [("shadowed", "rules.ike")]
    assert "the engine's IKE traffic" in found[0].message


def _psk_policy(tmp_path: Path, secrets: str, conns: str, mode: int = 0o600, datapath: str = "kernel") -> Path:
    s = tmp_path / "p.secrets.toml"
    s.write_text(secrets)
    s.chmod(mode)
    listen = 'listen = ["127.0.0.1"]\n' if datapath == "lab" else ""
    p = tmp_path / "p.toml"
    p.write_text(f'[engine]\ndatapath = "{datapath}"\n{listen}secrets = "p.secrets.toml"\n{conns}')
    return p


def _psk_conn(name: str, remote_id: str, remote_addr: str = "192.0.2.2", local_addr: str = "192.0.2.1",
              remote_ts: str = "198.51.100.128/26") -> str:
    return f"""[connections.{name}]
local_addrs = ["{local_addr}"]
remote_addrs = ["{remote_addr}"]
local = {{ auth = "psk", id = "hq.example.org" }}
remote = {{ auth = "psk", id = "{remote_id}" }}
[connections.{name}.children.{name}-lan]
local_ts = ["198.51.100.0/25"]
remote_ts = ["{remote_ts}"]
"""


GOOD_PSK = "Vq3#Lk8!pZ2@xR7$wN4&"


def lint_file(path: Path) -> list[tuple[str, str, str]]:
    return [(f.rule, f.key_path, Path(f.file).name) for f in warnings_of(load_policy(path, strict_secrets_mode=False))]


@pytest.mark.parametrize("secret,rule", [
    ("Ab1#Ab1#Ab1#", "short-psk"),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "weak-psk"),   # one distinct character
    ("correcthorsebatterystaplexyz", "weak-psk"),       # lower case letters only
    ("12345678901234567890123", "weak-psk"),            # digits only
])
def test_psk_quality(tmp_path: Path, secret, rule):
    p = _psk_policy(tmp_path, f'[ike.b]\nids = ["branch.example.org"]\nsecret = "{secret}"\n', _psk_conn("b", "branch.example.org"))
    found = lint_file(p)
    assert (rule, "ike.b.secret", "p.secrets.toml") in found
    assert all(secret not in f.format() for f in warnings_of(load_policy(p, strict_secrets_mode=False)))


def test_good_psk_gives_no_warning(tmp_path: Path):
    p = _psk_policy(tmp_path, f'[ike.b]\nids = ["branch.example.org"]\nsecret = "{GOOD_PSK}"\n', _psk_conn("b", "branch.example.org"))
    assert lint_file(p) == []


def test_one_psk_for_several_peers(tmp_path: Path):
    secrets = (f'[ike.b]\nids = ["branch.example.org"]\nsecret = "{GOOD_PSK}"\n'
               f'[ike.c]\nids = ["cafe.example.org"]\nsecret = "{GOOD_PSK}"\n')
    conns = _psk_conn("b", "branch.example.org") + _psk_conn("c", "cafe.example.org", "192.0.2.3", remote_ts="198.51.100.192/26")
    assert ("shared-psk", "ike.c.secret", "p.secrets.toml") in lint_file(_psk_policy(tmp_path, secrets, conns))
    # One entry whose ids name both peers serves two connections: shared as well.
    secrets = f'[ike.both]\nids = ["branch.example.org", "cafe.example.org"]\nsecret = "{GOOD_PSK}"\n'
    assert ("shared-psk", "ike.both.ids", "p.secrets.toml") in lint_file(_psk_policy(tmp_path, secrets, conns))
    # Separate PSKs: fine.
    secrets = (f'[ike.b]\nids = ["branch.example.org"]\nsecret = "{GOOD_PSK}"\n'
               f'[ike.c]\nids = ["cafe.example.org"]\nsecret = "{GOOD_PSK[::-1]}"\n')
    assert lint_file(_psk_policy(tmp_path, secrets, conns)) == []


def test_psk_road_warrior_suggests_certificates(tmp_path: Path):
    secrets = f'[ike.rw]\nids = ["*@example.org"]\nsecret = "{GOOD_PSK}"\n'
    p = _psk_policy(tmp_path, secrets, _psk_conn("rw", "*@example.org", "%any"))
    found = warnings_of(load_policy(p, strict_secrets_mode=False))
    assert [(f.rule, f.key_path) for f in found] == [("psk-roadwarrior", "connections.rw.remote.auth")]
    assert 'auth = "pubkey"' in found[0].message
    # A mobile peer with its own identity is one peer: no warning.
    p = _psk_policy(tmp_path, f'[ike.rw]\nids = ["alice@example.org"]\nsecret = "{GOOD_PSK}"\n',
                    _psk_conn("rw", "alice@example.org", "%any"))
    assert lint_file(p) == []


def test_secrets_file_readable_by_others(tmp_path: Path):
    secrets = f'[ike.b]\nids = ["branch.example.org"]\nsecret = "{GOOD_PSK}"\n'
    p = _psk_policy(tmp_path, secrets, _psk_conn("b", "branch.example.org"), mode=0o644)
    assert lint_file(p) == [("secrets-readable", "engine.secrets", "p.toml")]
    p = _psk_policy(tmp_path, secrets, _psk_conn("b", "branch.example.org"), mode=0o600)
    assert lint_file(p) == []
    # A lab's PSKs are published examples: no warning at 0644.
    p = _psk_policy(tmp_path, secrets, _psk_conn("b", "branch.example.org", "127.0.0.2", "127.0.0.1"),
                    mode=0o644, datapath="lab")
    assert lint_file(p) == []


def test_secrets_file_that_is_a_link_or_owned_by_another_user(tmp_path: Path):
    secrets = f'[ike.b]\nids = ["branch.example.org"]\nsecret = "{GOOD_PSK}"\n'
    p = _psk_policy(tmp_path, secrets, _psk_conn("b", "branch.example.org"))
    real = tmp_path / "real.secrets.toml"
    (tmp_path / "p.secrets.toml").rename(real)
    (tmp_path / "p.secrets.toml").symlink_to(real)
    assert lint_file(p) == [("secrets-owner", "engine.secrets", "p.toml")]
    (tmp_path / "p.secrets.toml").unlink()
    real.rename(tmp_path / "p.secrets.toml")
    assert lint_file(p) == []
    if os.geteuid() != 0:
        return  # only root can give a file away; CI runs as root
    os.chown(tmp_path / "p.secrets.toml", 4242, 4242)
    [finding] = warnings_of(load_policy(p, strict_secrets_mode=False))
    assert finding.rule == "secrets-owner" and "uid 4242" in finding.message


def _psk_multi(name: str, addrs: list[str], remote_id: str | None) -> str:
    rid = f', id = "{remote_id}"' if remote_id else ""
    return f"""[connections.{name}]
local_addrs = ["192.0.2.1"]
remote_addrs = {addrs!r}
local = {{ auth = "psk", id = "hq.example.org" }}
remote = {{ auth = "psk"{rid} }}
[connections.{name}.children.{name}-lan]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/26"]
""".replace("'", '"')


def test_psk_with_more_than_a_few_peers_suggests_certificates(tmp_path: Path):
    secrets = f'[ike.shops]\nids = ["*.shops.example.org"]\nsecret = "{GOOD_PSK}"\n'
    five = [f"192.0.2.{i}" for i in range(10, 15)]
    p = _psk_policy(tmp_path, secrets, _psk_multi("shops", five, "*.shops.example.org"))
    found = warnings_of(load_policy(p, strict_secrets_mode=False))
    assert [(f.rule, f.key_path) for f in found] == [("psk-many-peers", "connections.shops.remote.auth")]
    assert "5 peers" in found[0].message and 'auth = "pubkey"' in found[0].message
    assert "ipsec-console pki issue" in found[0].message
    # A few peers (three) are fine; so are many addresses of one pinned identity (one peer, failover).
    assert lint_file(_psk_policy(tmp_path, secrets, _psk_multi("shops", five[:3], "*.shops.example.org"))) == []
    secrets = f'[ike.hq2]\nids = ["hq2.example.org"]\nsecret = "{GOOD_PSK}"\n'
    assert lint_file(_psk_policy(tmp_path, secrets, _psk_multi("hq2", five, "hq2.example.org"))) == []


# -- ca-without-crl: real CA and CRL files made with engine.pki.ca ---------------------------------
def _pubkey_policy(tmp_path: Path, crls: list[str], cacerts: str = "pki/ca.crt") -> Path:
    p = tmp_path / "p.toml"
    p.write_text(f"""[engine]
datapath = "kernel"
crls = {crls!r}
[connections.rw]
local_addrs = ["192.0.2.1"]
remote_addrs = ["%any"]
local = {{ auth = "pubkey", certs = ["pki/certs/gw.example.org.crt"] }}
remote = {{ auth = "pubkey", id = "*@example.org", cacerts = ["{cacerts}"] }}
[connections.rw.children.office]
local_ts = ["198.51.100.0/24"]
remote_ts = ["dynamic"]
""".replace("'", '"'))
    return p


@pytest.fixture
def two_cas(tmp_path: Path) -> Path:
    from engine.pki import ca

    ca.init_ca(tmp_path / "pki", "O=Lint, CN=Lint CA")
    ca.crl(tmp_path / "pki")
    ca.init_ca(tmp_path / "other", "O=Lint, CN=Other CA")
    ca.crl(tmp_path / "other")
    return tmp_path


def test_ca_without_crl_is_flagged(two_cas: Path):
    found = warnings_of(load_policy(_pubkey_policy(two_cas, []), load_secrets=False))
    assert [(f.rule, f.key_path) for f in found] == [("ca-without-crl", "connections.rw.remote.cacerts")]
    assert 'ipsec-console pki crl --dir pki) and add "pki/crl.pem" to [engine] crls' in found[0].message
    # A CRL, but of another CA: still flagged, and the message says which CRLs were looked at.
    [f] = warnings_of(load_policy(_pubkey_policy(two_cas, ["other/crl.pem"]), load_secrets=False))
    assert f.rule == "ca-without-crl" and "other/crl.pem" in f.message


def test_strict_revocation_without_the_cas_crl_says_every_peer_is_refused(two_cas: Path):
    p = _pubkey_policy(two_cas, [])
    p.write_text(p.read_text().replace('cacerts = ["pki/ca.crt"] }', 'cacerts = ["pki/ca.crt"], revocation = "strict" }'))
    [f] = warnings_of(load_policy(p, load_secrets=False))
    assert f.rule == "ca-without-crl" and "every peer certificate it issued is refused" in f.message
    assert "would still be accepted" not in f.message


def test_a_ca_whose_certificates_name_an_http_crl_uri_is_not_flagged(two_cas: Path):
    from engine.pki import ca

    ca.init_ca(two_cas / "pki", "O=Lint, CN=Lint CA", crl_uri="http://crl.example/lint.crl", force=True)
    assert warnings_of(load_policy(_pubkey_policy(two_cas, []), load_secrets=False)) == []


def test_ca_with_its_crl_is_not_flagged(two_cas: Path):
    assert warnings_of(load_policy(_pubkey_policy(two_cas, ["other/crl.pem", "pki/crl.pem"]), load_secrets=False)) == []


def test_ca_without_crl_is_robust_to_missing_and_broken_files(two_cas: Path):
    # A CA file that is not there is a loading error elsewhere: no warning, no exception here.
    assert warnings_of(load_policy(_pubkey_policy(two_cas, [], cacerts="pki/nope.crt"), load_secrets=False)) == []
    # A CRL file that cannot be read does not count, and is named.
    (two_cas / "garbage.pem").write_text("not a CRL")
    [f] = warnings_of(load_policy(_pubkey_policy(two_cas, ["garbage.pem", "gone.pem"]), load_secrets=False))
    assert f.rule == "ca-without-crl" and "unreadable: garbage.pem, gone.pem" in f.message


def test_every_rule_has_a_test():
    tested = set(CASES) | {"short-psk", "weak-psk", "shared-psk", "psk-roadwarrior", "secrets-readable",
                           "psk-many-peers", "ca-without-crl", "secrets-owner",
                           "not-quantum-safe", "short-ppk",  # tested in test_policy_pq.py
                           "save-keys",  # tested in tests/ops/test_keylog.py
                           "pool-overlap", "pool-too-small", "eap-without-certificate",
                           "windows-weak-proposals"}  # tested in test_policy_roadwarrior.py
    assert tested == set(RULES)
