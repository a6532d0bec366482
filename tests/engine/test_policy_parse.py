"""Parsing: swanctl defaults (also the derived ones), value syntax, secrets, key paths."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from engine.crypto.transforms import EncrId
from engine.policy import (
    PolicyError,
    load_policy,
    lookup_psk,
    parse_identity,
    parse_policy,
)
from engine.policy._reader import format_duration, parse_duration, parse_size
from engine.policy.model import ChildConfig, ConnectionConfig, EngineConfig, Secrets
from engine.policy.proposals import default_proposals
from engine.policy.ts import TrafficSelector, parse_ts

PUBKEY = 'local = { auth = "pubkey", certs = ["gw.crt"] }\nremote = { auth = "pubkey" }\n'


def one(text: str, **kw):
    return parse_policy(text, **kw)


def test_model_defaults_are_swanctl_and_charon_defaults():
    c, ch, e = ConnectionConfig(name="c"), ChildConfig(name="x"), EngineConfig()
    assert (c.local_port, c.remote_port, c.encap, c.mobike, c.fragmentation, c.send_certreq) == (500, 500, False, True, True, True)
    assert (c.rekey_time, c.over_time, c.rand_time, c.dpd_delay, c.keyingtries) == (14400, 1440, 1440, 0, 1)
    assert (ch.rekey_time, ch.life_time, ch.rand_time) == (3600, 3960, 360)
    # RFC 4303 §3.4.3: 64 SHOULD be the default (charon's own default is 32)
    assert ch.replay_window == 64
    assert (ch.start_action, ch.dpd_action, ch.close_action, ch.mode) == ("none", "clear", "none", "tunnel")
    assert (e.retransmit_timeout, e.retransmit_base, e.retransmit_tries, e.keepalive, e.half_open_threshold) == \
        (4.0, 1.8, 5, 20.0, 10)


def test_minimal_connection_gets_the_model_defaults_and_default_proposals():
    p = one(f'[connections.c]\nremote_addrs = ["192.0.2.2"]\n{PUBKEY}[connections.c.children.x]\n')
    c = p.connection("c")
    assert c.proposals == default_proposals("ike")
    ch = c.child("x")
    assert ch.proposals == default_proposals("esp")
    assert ch.local_ts == ChildConfig(name="x").local_ts and ch.local_ts[0].dynamic
    assert (c.rekey_time, c.over_time, c.rand_time) == (14400, 1440, 1440)
    assert (ch.life_time, ch.rand_time, ch.replay_window) == (3960, 360, 64)
    assert c.mobike is True


def test_derived_defaults_follow_swanctl():
    p = one(f"""[engine]
ike_port = 15500
natt_port = 15501
[connections.c]
remote_addrs = ["192.0.2.2"]
rekey_time = "1h"
{PUBKEY}
[connections.c.children.x]
rekey_time = "30m"
rekey_bytes = "1M"
rekey_packets = 1000
[connections.c.children.y]
rekey_time = 600
life_time = "20m"
""")
    c = p.connection("c")
    assert (c.rekey_time, c.over_time, c.rand_time) == (3600, 360, 360)  # 10%, and rand = over
    assert c.local_port == 15500  # the engine's ike_port
    x, y = c.child("x"), c.child("y")
    assert (x.life_time, x.rand_time) == (1980, 180)  # 110%, and the difference
    assert (x.life_bytes, x.life_packets) == (1048576 + 104857, 1100)
    assert (y.life_time, y.rand_time) == (1200, 600)


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), (45, 45),
                                          (1.5, 1.5), ("90", 90), ("2.5m", 150), (" 10 s ", 10)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["30 sec", "-5s", -1, "1w", "", "h", True])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 90, 3600, 5400, 86400, 1.5])
def test_format_duration_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text,count", [("1G", 1 << 30), ("500M", 500 << 20), ("64k", 64 << 10), (1000, 1000), ("7", 7)])
def test_sizes(text, count):
    assert parse_size(text) == count


def test_lists_accept_a_comma_separated_string_like_swanctl():
    p = one(f'[connections.c]\nremote_addrs = "192.0.2.2, 192.0.2.3"\n{PUBKEY}[connections.c.children.x]\n'
            'local_ts = "198.51.100.0/25, 198.51.100.128/26[udp]"\n')
    c = p.connection("c")
    assert c.remote_addrs == ("192.0.2.2", "192.0.2.3")
    assert c.child("x").local_ts == (parse_ts("198.51.100.0/25"), parse_ts("198.51.100.128/26[udp]"))


def test_ah_proposals_alone_make_an_ah_child():
    p = one(f'[connections.c]\nremote_addrs = ["192.0.2.2"]\n{PUBKEY}[connections.c.children.x]\nah_proposals = ["sha256"]\n')
    ch = p.connection("c").child("x")
    assert ch.protocol == "ah" and ch.proposals[0].protocol == "ah"


def test_rule_defaults_cover_both_ip_versions_unless_one_side_says():
    p = one('[rules.all]\naction = "discard"\n[rules.dns]\naction = "bypass"\nremote_ts = ["0.0.0.0/0[udp/53]"]\n')
    everything, dns = p.rules
    assert everything.local_ts == everything.remote_ts == (TrafficSelector.any(4), TrafficSelector.any(6))
    assert dns.local_ts == (TrafficSelector.any(4),)


def test_every_error_is_reported_not_just_the_first():
    with pytest.raises(PolicyError) as exc:
        one('[engine]\nike_port = "x"\n[connections.c]\nencap = 1\n[rules.r]\naction = "nope"\n')
    paths = {f.key_path for f in exc.value.errors}
    assert {"engine.ike_port", "connections.c.encap", "rules.r.action"} <= paths
    assert str(exc.value).count("error:") == len(exc.value.errors)


def test_odd_names_are_quoted_in_key_paths():
    with pytest.raises(PolicyError) as exc:
        one('[connections."a.b"]\nencap = "no"\n')
    assert any(f.key_path == 'connections."a.b".encap' for f in exc.value.errors)


def _write_policy(tmp_path: Path, secrets: str, mode: int = 0o600, *, policy_extra: str = "") -> Path:
    (tmp_path / "gw.secrets.toml").write_text(secrets)
    (tmp_path / "gw.secrets.toml").chmod(mode)
    policy = tmp_path / "gw.toml"
    policy.write_text(f"""[engine]
secrets = "gw.secrets.toml"
{policy_extra}
[connections.branch]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
local = {{ auth = "psk", id = "hq.example.org" }}
remote = {{ auth = "psk", id = "branch.example.org" }}
[connections.branch.children.lan]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/25"]
""")
    return policy


def test_secrets_file_is_read_relative_to_the_policy_and_values_stay_hidden(tmp_path: Path, monkeypatch):
    hexkey = bytes(range(1, 33))
    policy = _write_policy(tmp_path, f"""[ike.branch]
ids = ["hq.example.org", "branch.example.org"]
secret = "0x{hexkey.hex()}"
[ike.b64]
ids = ["other.example.org"]
secret = "0s{base64.b64encode(b"q" * 24).decode()}"
[ike.text]
ids = ["third.example.org"]
secret = "Plain-Text:Key#1234567890"
[private.gw]
file = "private/gw.key"
passphrase = "pw-never-shown"
""")
    monkeypatch.chdir("/")
    p = load_policy(policy)
    assert p.secrets.path == str(tmp_path / "gw.secrets.toml")
    byname = {s.name: s for s in p.secrets.ike}
    assert byname["branch"].secret.reveal() == hexkey
    assert byname["b64"].secret.reveal() == b"q" * 24
    assert byname["text"].secret.reveal() == b"Plain-Text:Key#1234567890"
    assert p.secrets.private[0].file == "private/gw.key"
    assert "pw-never-shown" not in repr(p) and "Plain-Text" not in repr(p) and hexkey.hex() not in repr(p)


def test_lookup_psk_prefers_the_best_match(tmp_path: Path):
    policy = _write_policy(tmp_path, """[ike.default]
secret = "Default:Key#0123456789abc"
[ike.branch]
ids = ["hq.example.org", "branch.example.org"]
secret = "Branch:Key#0123456789abcd"
[ike.any-branch]
ids = ["*.example.org"]
secret = "Wild:Key#0123456789abcdef"
""")
    s = load_policy(policy).secrets
    hq, branch, other = (parse_identity(x) for x in ("hq.example.org", "branch.example.org", "c.example.com"))
    assert lookup_psk(s, hq, branch).name == "branch"
    assert lookup_psk(s, parse_identity("x.example.net"), parse_identity("y.example.org")).name == "any-branch"
    assert lookup_psk(s, other, other).name == "default"
    assert lookup_psk(Secrets(), hq, branch) is None


def test_missing_or_wrong_psk_is_an_error_only_when_secrets_are_loaded(tmp_path: Path):
    policy = _write_policy(tmp_path, '[ike.x]\nids = ["nobody.example.org"]\nsecret = "Some:Key#0123456789abcd"\n')
    with pytest.raises(PolicyError) as exc:
        load_policy(policy)
    assert [f.key_path for f in exc.value.errors] == ["connections.branch.local.auth"]
    p = load_policy(policy, load_secrets=False)
    assert p.secrets == Secrets()


def test_parse_policy_without_a_path_names_the_string():
    with pytest.raises(PolicyError) as exc:
        parse_policy("[engine]\nike_port = 0\n")
    assert exc.value.errors[0].format() == "<string>: engine.ike_port: error: must be 1 to 65535, not 0"


def test_aead_esp_from_the_issue_example():
    p = one(f"""[connections.branch]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
proposals = ["aes256gcm16-prfsha384-x25519", "aes256-sha384-ecp384"]
{PUBKEY}dpd_delay = "30s"
rekey_time = "4h"
[connections.branch.children.lan]
mode = "tunnel"
protocol = "esp"
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/25[tcp/443]"]
esp_proposals = ["aes256gcm16-x25519"]
rekey_time = "1h"
start_action = "start"
dpd_action = "restart"
[rules.dns]
action = "bypass"
remote_ts = ["0.0.0.0/0[udp/53]"]
""")
    c = p.connection("branch")
    assert [x.text for x in c.proposals] == ["aes256gcm16-prfsha384-x25519", "aes256-sha384-ecp384"]
    assert c.dpd_delay == 30 and c.rekey_time == 4 * 3600
    lan = c.child("lan")
    assert lan.proposals[0].encr[0].id == EncrId.AES_GCM_16 and lan.start_action == "start"
    assert lan.remote_ts == (parse_ts("198.51.100.128/25[tcp/443]"),)
    assert p.rules[0].action == "bypass"
