"""Serialize, save atomically, load back; diff for Apply."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.policy import (
    PolicyError,
    diff_policies,
    load_policy,
    parse_identity,
    parse_policy,
    parse_proposals,
    parse_ts,
    policy_to_toml,
    sample_path,
    save_policy,
    save_text,
)
from engine.policy.model import (
    AuthConfig,
    ChildConfig,
    ConnectionConfig,
    EngineConfig,
    Policy,
    RuleConfig,
    Secrets,
)
from engine.policy.parse import child_life_time, ike_over_time
from engine.policy.samples import sample_names

SECRETS = '[ike.any]\nsecret = "Roundtrip:Key#0123456789xyz"\n'

ROUNDTRIP = settings(max_examples=int(os.environ.get("IPSEC_CONSOLE_POLICY_EXAMPLES", "60")), deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

IKE_PROPOSALS = ["aes256gcm16-prfsha384-x25519", "aes256-sha384-ecp384", "aes128-sha256-modp3072",
                 "chacha20poly1305-prfsha256-x448", "aes256gcm16-sha256-ecp521"]
ESP_PROPOSALS = ["aes256gcm16", "aes128gcm16-x25519", "aes256-sha256-modp2048-esn", "chacha20poly1305-noesn",
                 "aes192ctr-sha512-ecp256-none"]
AH_PROPOSALS = ["sha256", "sha384-esn", "aes128gmac-x25519"]
CHILD_TS = ["198.51.100.0/25", "198.51.100.128/25[tcp/443]", "dynamic", "dynamic[udp/53]", "0.0.0.0/0[icmp/8]",
            "192.0.2.1-192.0.2.9", "198.51.100.7/32[udp/5000-5010]", "::/0", "2001:db8::/64[tcp]"]
RULE_TS = [t for t in CHILD_TS if "dynamic" not in t]
ADDRS = ["192.0.2.1", "192.0.2.2", "192.0.2.0/24", "%any", "gw.example.org", "192.0.2.10-192.0.2.20", "2001:db8::1"]
IDS = ["hq.example.org", "*@example.org", "alice@example.org", "192.0.2.1", "C=CH, O=Example, CN=gw", "@#0a1b"]
DURATIONS = [30.0, 60.0, 90.0, 600.0, 1800.0, 3600.0, 5400.0, 14400.0, 86400.0, 1.5]


def _texts(options, protocol):
    texts = st.lists(st.sampled_from(options + ["default"]), min_size=1, max_size=3, unique=True)
    return texts.map(lambda ts: parse_proposals(ts, protocol))


def _ts(options):
    return st.lists(st.sampled_from(options), min_size=1, max_size=3, unique=True).map(
        lambda xs: tuple(parse_ts(x) for x in xs))


@st.composite
def auth(draw, local: bool):
    method = draw(st.sampled_from(["psk", "pubkey"]))
    ident = draw(st.one_of(st.none(), st.sampled_from(IDS if not local else [i for i in IDS if "*" not in i])))
    certs = ("gw.crt",) if method == "pubkey" and local else draw(st.sampled_from([(), ("a.crt", "b.crt")]))
    return AuthConfig(auth=method, id=parse_identity(ident) if ident else None, certs=certs,
                      cacerts=draw(st.sampled_from([(), ("ca.crt",)])))


@st.composite
def child(draw, name: str):
    protocol = draw(st.sampled_from(["esp", "esp", "ah"]))
    rekey = draw(st.sampled_from(DURATIONS[:-1]))
    life = draw(st.one_of(st.just(child_life_time(rekey)), st.sampled_from([rekey * 2, rekey + 1.5])))
    rand = draw(st.one_of(st.just(max(life - rekey, 0.0)), st.sampled_from([0.0, rekey / 4])))
    rekey_bytes = draw(st.sampled_from([0, 1 << 20, 5000]))
    life_bytes = draw(st.sampled_from([rekey_bytes + rekey_bytes // 10, 0 if not rekey_bytes else rekey_bytes * 3]))
    rekey_packets = draw(st.sampled_from([0, 1000]))
    return ChildConfig(
        name=name, mode=draw(st.sampled_from(["tunnel", "transport"])), protocol=protocol,
        local_ts=draw(st.one_of(st.just(ChildConfig(name=name).local_ts), _ts(CHILD_TS))),
        remote_ts=draw(_ts(CHILD_TS)),
        proposals=draw(_texts(ESP_PROPOSALS if protocol == "esp" else AH_PROPOSALS, protocol)),
        rekey_time=rekey, life_time=life, rand_time=rand, rekey_bytes=rekey_bytes, life_bytes=life_bytes,
        rekey_packets=rekey_packets, life_packets=rekey_packets + rekey_packets // 10,
        start_action=draw(st.sampled_from(["none", "trap", "start"])),
        dpd_action=draw(st.sampled_from(["clear", "trap", "restart"])),
        close_action=draw(st.sampled_from(["none", "trap", "start"])),
        replay_window=draw(st.sampled_from([0, 32, 64, 4096])),
        priority=draw(st.one_of(st.none(), st.integers(1, 99999))),
    )


@st.composite
def connection(draw, index: int, engine: EngineConfig):
    rekey = draw(st.sampled_from(DURATIONS))
    over = draw(st.one_of(st.just(ike_over_time(rekey)), st.sampled_from([60.0, 0.0])))
    rand = draw(st.one_of(st.just(over), st.sampled_from([0.0, rekey / 8])))
    nchildren = draw(st.integers(0, 2))
    return ConnectionConfig(
        name=f"conn{index}",
        local_addrs=tuple(draw(st.lists(st.sampled_from(ADDRS), max_size=2, unique=True))),
        remote_addrs=tuple(draw(st.lists(st.sampled_from(ADDRS), max_size=2, unique=True))),
        local_port=draw(st.sampled_from([engine.ike_port, engine.natt_port])),
        remote_port=draw(st.sampled_from([500, 4500, 15500])),
        remote_natt_port=draw(st.sampled_from([4500, 15501])),
        proposals=draw(_texts(IKE_PROPOSALS, "ike")),
        local=draw(auth(True)), remote=draw(auth(False)),
        encap=draw(st.booleans()), dpd_delay=draw(st.sampled_from([0.0, 30.0, 1.5])),
        rekey_time=rekey, over_time=over, rand_time=rand,
        fragmentation=draw(st.booleans()), mobike=draw(st.booleans()), send_certreq=draw(st.booleans()),
        keyingtries=draw(st.integers(0, 5)),
        children=tuple(draw(child(f"c{index}-{k}")) for k in range(nchildren)),
    )


@st.composite
def rule(draw, index: int):
    return RuleConfig(name=f"rule{index}", action=draw(st.sampled_from(["bypass", "discard"])),
                      local_ts=draw(_ts(RULE_TS)), remote_ts=draw(_ts(RULE_TS)),
                      priority=draw(st.one_of(st.none(), st.integers(1, 99999))))


@st.composite
def policies(draw):
    ike_port = draw(st.sampled_from([500, 15500]))
    engine = EngineConfig(
        datapath=draw(st.sampled_from(["kernel", "userspace"])),
        listen=tuple(draw(st.lists(st.sampled_from(["192.0.2.1", "192.0.2.5", "2001:db8::1"]), max_size=2, unique=True))),
        ike_port=ike_port, natt_port=ike_port + 1 if ike_port != 500 else 4500,
        secrets="p.secrets.toml", control=draw(st.sampled_from([None, "/run/x.sock"])),
        retransmit_timeout=draw(st.sampled_from([4.0, 2.0, 0.5])), retransmit_base=draw(st.sampled_from([1.8, 2.0])),
        retransmit_tries=draw(st.integers(0, 7)), half_open_threshold=draw(st.integers(0, 50)),
        keepalive=draw(st.sampled_from([20.0, 0.0, 45.0])), crls=draw(st.sampled_from([(), ("a.crl",)])),
    )
    conns = tuple(draw(connection(i, engine)) for i in range(draw(st.integers(0, 3))))
    rules = tuple(draw(rule(i)) for i in range(draw(st.integers(0, 3))))
    return Policy(engine=engine, connections=conns, rules=rules)


def strip(p: Policy) -> Policy:
    return dataclasses.replace(p, secrets=Secrets(), path=None)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    s = tmp_path / "p.secrets.toml"
    s.write_text(SECRETS)
    s.chmod(0o600)
    return tmp_path


@ROUNDTRIP
@given(policy=policies())
def test_model_to_toml_save_load_is_equal(folder: Path, policy: Policy):
    path = folder / "p.toml"
    text = policy_to_toml(policy)
    assert strip(parse_policy(text, path)) == policy
    save_policy(policy, path)
    loaded = load_policy(path)
    assert strip(loaded) == policy
    assert loaded.secrets.ike[0].name == "any" and "Roundtrip" not in path.read_text()


@pytest.mark.parametrize("name", sample_names())
def test_samples_survive_a_form_save(tmp_path: Path, name: str):
    src = sample_path(name)
    policy = load_policy(src, load_secrets=False)
    shutil.copytree(src.parent, tmp_path, dirs_exist_ok=True)  # lab peers live next to lab.toml
    dst = tmp_path / name
    save_policy(policy, dst, load_secrets=False)
    assert strip(load_policy(dst, load_secrets=False)) == strip(policy)


def test_secrets_are_never_written(folder: Path):
    policy = load_policy(_write(folder, VALID))
    assert policy.secrets.ike
    text = policy_to_toml(policy)
    assert "Roundtrip" not in text and 'secrets = "p.secrets.toml"' in text


VALID = """[engine]
secrets = "p.secrets.toml"
[connections.c]
remote_addrs = ["192.0.2.2"]
[connections.c.children.x]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/25"]
"""


def _write(folder: Path, text: str) -> Path:
    p = folder / "p.toml"
    p.write_text(text)
    return p


def test_save_keeps_a_backup_and_the_file_mode(folder: Path):
    path = _write(folder, "# hand-written\n" + VALID)
    path.chmod(0o640)
    new_text = VALID.replace("198.51.100.128/25", "198.51.100.192/26")
    save_text(new_text, path)
    assert path.read_text() == new_text  # text saved as typed
    assert (folder / "p.toml.bak").read_text() == "# hand-written\n" + VALID
    assert (path.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in folder.iterdir()) == ["p.secrets.toml", "p.toml", "p.toml.bak"]
    fresh = folder / "new.toml"
    save_text(VALID, fresh)
    assert (fresh.stat().st_mode & 0o777) == 0o644 and not (folder / "new.toml.bak").exists()


def test_invalid_policy_is_never_written(folder: Path):
    path = _write(folder, VALID)
    with pytest.raises(PolicyError) as exc:
        save_text(VALID.replace('remote_addrs = ["192.0.2.2"]', "remote_addrs = 5"), path)
    assert exc.value.errors[0].key_path == "connections.c.remote_addrs"
    assert path.read_text() == VALID
    broken = dataclasses.replace(load_policy(path), rules=(RuleConfig(name="c", action="discard"),))
    with pytest.raises(PolicyError, match="already used by connection 'c'"):
        save_policy(broken, path)
    assert path.read_text() == VALID
    assert sorted(p.name for p in folder.iterdir()) == ["p.secrets.toml", "p.toml"]


def test_interrupted_save_leaves_the_old_file_and_no_temp_file(folder: Path, monkeypatch):
    path = _write(folder, VALID)

    def crash(src, dst):
        raise OSError("power cut before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        save_text(VALID.replace("198.51.100.128/25", "198.51.100.192/26"), path)
    monkeypatch.undo()
    assert path.read_text() == VALID
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_save_writes_through_a_temp_file_in_the_same_folder(folder: Path, monkeypatch):
    path = _write(folder, VALID)
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((Path(src).parent, Path(src).name, Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    save_text(VALID, path)
    [(parent, name, dst)] = seen
    assert parent == folder and name.startswith(".p.toml.") and name.endswith(".tmp") and dst == path


# -- diff ---------------------------------------------------------------------------------
def test_diff_names_only_what_changed(folder: Path):
    base = VALID + """[connections.d]
remote_addrs = ["192.0.2.3"]
[connections.d.children.y]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.192/26"]
[rules.dns]
action = "bypass"
remote_ts = ["0.0.0.0/0[udp/53]"]
"""
    old = parse_policy(base, folder / "p.toml")
    assert diff_policies(old, old).empty
    new = parse_policy(base.replace('remote_ts = ["198.51.100.192/26"]', 'remote_ts = ["198.51.100.224/27"]')
                       .replace("connections.c", "connections.e").replace("children.x]", "children.z]"),
                       folder / "p.toml")
    d = diff_policies(old, new)
    assert (d.added, d.removed, d.changed) == (("e",), ("c",), ("d",))
    assert not d.rules_changed and not d.engine_changed
    new2 = parse_policy(base.replace("udp/53", "udp/5353").replace("[engine]", "[engine]\nkeepalive = 30"),
                        folder / "p.toml")
    d2 = diff_policies(old, new2)
    assert d2.rules_changed and d2.engine_changed and not (d2.added or d2.removed or d2.changed)


def test_a_changed_psk_changes_its_connection(folder: Path):
    old = parse_policy(VALID, folder / "p.toml")
    (folder / "p.secrets.toml").write_text(SECRETS.replace("xyz", "XYZ"))
    new = parse_policy(VALID, folder / "p.toml")
    d = diff_policies(old, new)
    assert d.changed == ("c",) and not d.engine_changed


def test_a_file_written_with_a_mode_has_it_before_it_holds_the_new_text(tmp_path: Path, monkeypatch):
    """A secrets file replacing a 0644 one: 0600 from the rename on, never 0644 with the secret."""
    from engine.policy import save as save_module

    target = tmp_path / "x.secrets.toml"
    target.write_text("old = 1\n")
    target.chmod(0o644)
    seen: list[int] = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(os.stat(src).st_mode & 0o777)
        real_replace(src, dst)
    monkeypatch.setattr(save_module.os, "replace", replace)
    save_module.atomic_write(target, b"secret = 1\n", mode=0o600)
    assert seen == [0o600] and (target.stat().st_mode & 0o777) == 0o600
    assert target.read_bytes() == b"secret = 1\n"


def test_a_backup_copy_keeps_the_old_files_mode(tmp_path: Path, monkeypatch):
    """Where a hard link is refused (some file systems) the backup is a copy: no more readable than
    the file it copies, a 0600 secrets file's included."""
    from engine.policy import save as save_module

    target = tmp_path / "x.secrets.toml"
    target.write_text("secret = 0\n")
    target.chmod(0o600)

    def no_link(src, dst):
        raise OSError(1, "Operation not permitted")
    monkeypatch.setattr(save_module.os, "link", no_link)
    save_module.atomic_write(target, b"secret = 1\n")
    bak = tmp_path / "x.secrets.toml.bak"
    assert bak.read_text() == "secret = 0\n" and (bak.stat().st_mode & 0o777) == 0o600


def test_a_write_into_a_missing_folder_names_the_file_not_a_temporary_one(tmp_path: Path):
    from engine.policy.save import atomic_write

    target = tmp_path / "nowhere" / "p.toml"
    with pytest.raises(FileNotFoundError) as exc:
        atomic_write(target, b"x")
    assert exc.value.filename == str(target) and ".tmp" not in str(exc.value)


def test_a_sites_new_psk_changes_that_site_only(tmp_path: Path):
    """The lab gateway: branch's and roadwarrior's entries both name hq's own ID. A new PSK for branch
    changes branch; roadwarrior's peer still gets its own entry (lookup_psk picks the one naming it),
    so Apply must not renegotiate roadwarrior. A connection whose peer is a pattern still counts
    every entry that could serve it."""
    shutil.copytree(sample_path("lab.toml").parent, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "lab.toml"
    secrets = tmp_path / "lab.secrets.toml"
    secrets.chmod(0o600)
    old = load_policy(path)
    text = secrets.read_text()
    branch = next(e for e in old.secrets.ike if "branch.lab.example" in str(e.ids))
    secrets.write_text(text.replace(branch.secret.reveal().decode(), "A:new-key-for-the-branch-0123456789"))
    new = load_policy(path)
    assert diff_policies(old, new).changed == ("branch",)

    wild = path.read_text().replace('id = "roadwarrior.lab.example"', 'id = "*.lab.example"')
    path.write_text(wild)
    secrets.write_text(text)
    old = load_policy(path)
    secrets.write_text(text.replace(branch.secret.reveal().decode(), "A:new-key-for-the-branch-0123456789"))
    assert set(diff_policies(old, load_policy(path)).changed) == {"branch", "roadwarrior"}
