"""The shipped samples and `ipsec-console check`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from console.cli import main
from engine.policy import Spd, load_policy, lookup_psk, run_check, sample_path
from engine.policy.samples import resolve_policy_path, sample_dir, sample_names

REQUIRED = {"lab.toml", "lab-branch.toml", "lab-roadwarrior.toml", "site-to-site.toml", "road-warrior-server.toml",
            "host-to-host-transport.toml", "server-least-privilege.toml", "road-warrior-client.toml"}
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+)(: (?P<key>[^ ]+))?: (?P<sev>error|warning|info): "
                  r"(?P<msg>.+)$")


CLASSIC_FALLBACK = {"site-to-site.toml", "road-warrior-server.toml", "road-warrior-client.toml",
                    "server-least-privilege.toml"}
"""Samples whose peers may be older (strongSwan 5.x, the OS clients): a classic proposal follows
the hybrid one, and lint advises (info, rule not-quantum-safe). The others are quantum-safe only."""


def test_the_required_samples_exist():
    assert REQUIRED <= set(sample_names())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_sample_checks_without_errors(name: str):
    findings = run_check(sample_path(name))
    assert not [f for f in findings if f.severity == "error"], [f.format() for f in findings]


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_sample_loads_strictly_once_its_secrets_are_0600(tmp_path: Path, name: str):
    shutil.copytree(sample_dir(), tmp_path, dirs_exist_ok=True)
    for s in tmp_path.glob("*.secrets.toml"):
        s.chmod(0o600)
    policy = load_policy(tmp_path / name)
    assert policy.connections
    if name in ("lab.toml", "lab-roadwarrior.toml"):
        return  # the deliberately misconfigured road warrior draws warnings
    findings = run_check(tmp_path / name)
    assert [(f.severity, f.rule) for f in findings] == ([("info", "not-quantum-safe")] if name in CLASSIC_FALLBACK
                                                        else []), [f.format() for f in findings]


@pytest.mark.parametrize("name", sorted(REQUIRED - {"lab-roadwarrior.toml"}))
def test_every_sample_prefers_a_quantum_safe_proposal(name: str):
    """Each connection's first IKE proposal adds ML-KEM (the deliberately broken lab peer aside)."""
    from engine.policy import pq

    for c in load_policy(sample_path(name), strict_secrets_mode=False).connections:
        assert pq.proposal_is_quantum_safe(c.proposals[0]), (name, c.name, c.proposals[0].text)
        assert pq.connection_is_quantum_safe(c) == (name not in CLASSIC_FALLBACK), (name, c.name)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_sample_is_commented_for_admins(name: str):
    lines = sample_path(name).read_text().splitlines()
    assert lines[0].startswith("# ")
    assert sum(1 for line in lines if "#" in line) >= 5


def test_the_lab():
    hq = load_policy(sample_path("lab.toml"))
    assert hq.engine.datapath == "lab" and hq.engine.listen == ("127.0.0.1",)
    assert (hq.engine.ike_port, hq.engine.natt_port) == (15500, 15501)
    assert hq.lab is not None and hq.lab.peers == ("lab-branch.toml", "lab-roadwarrior.toml")
    assert hq.lab.rate > 0 and set(hq.lab.flows) == {"icmp", "udp", "tcp"}
    peers = {name: load_policy(sample_path(name)) for name in hq.lab.peers}
    ports = {(p.engine.listen, p.engine.ike_port, p.engine.natt_port) for p in [hq, *peers.values()]}
    assert len(ports) == 3 and all(port >= 1024 for _, ike, natt in ports for port in (ike, natt))
    for policy in [hq, *peers.values()]:
        for c in policy.connections:
            for ch in c.children:
                for ts in ch.local_ts + ch.remote_ts:
                    assert str(ts).startswith("198.51.100.")

    def transforms(conn):
        return {(t.type, t.id, t.key_length) for p in conn.proposals for t in p.transforms()}

    branch = peers["lab-branch.toml"].connection("hq")
    rw = peers["lab-roadwarrior.toml"].connection("hq")
    # hq and branch point at each other's ports and share an IKE algorithm set and a PSK.
    assert hq.connection("branch").remote_port == peers["lab-branch.toml"].engine.ike_port
    assert branch.remote_port == hq.engine.ike_port == rw.remote_port
    assert branch.remote_natt_port == hq.engine.natt_port == rw.remote_natt_port
    assert hq.connection("branch").remote_natt_port == peers["lab-branch.toml"].engine.natt_port
    assert hq.connection("roadwarrior").remote_natt_port == peers["lab-roadwarrior.toml"].engine.natt_port
    assert transforms(branch) <= transforms(hq.connection("branch"))
    assert lookup_psk(hq.secrets, hq.connection("branch").local.id, hq.connection("branch").remote.id).secret == \
        lookup_psk(peers["lab-branch.toml"].secrets, branch.local.id, branch.remote.id).secret
    # The road warrior offers no encryption algorithm hq accepts: NO_PROPOSAL_CHOSEN.
    encr = lambda conn: {t for t in transforms(conn) if t[0] == 1}
    assert encr(rw) and not encr(rw) & encr(hq.connection("roadwarrior"))
    assert "NO_PROPOSAL_CHOSEN" in sample_path("lab-roadwarrior.toml").read_text()
    # The checker names the deliberate weakness.
    rules = {f.rule for f in run_check(sample_path("lab.toml")) if Path(f.file).name == "lab-roadwarrior.toml"}
    assert {"weak-dh", "weak-integrity"} <= rules


def test_server_least_privilege_allows_only_https_and_ssh_over_ipsec():
    spd = Spd(load_policy(sample_path("server-least-privilege.toml")))

    def decide(proto, dport, client="192.0.2.77"):
        return spd.lookup(client, "192.0.2.1", proto, 40000, dport, direction="in")

    assert decide("tcp", 443).action == "protect" and decide("tcp", 22).action == "protect"
    assert decide("tcp", 80).action == "discard" and decide("udp", 443).action == "discard"
    assert decide("tcp", 443, client="203.0.113.9").action == "discard"  # not one of its clients
    assert spd.lookup("192.0.2.1", "203.0.113.53", "udp", 40000, 53).action == "bypass"
    assert spd.lookup("127.0.0.1", "127.0.0.1", "tcp", 1, 2).action == "bypass"
    assert spd.lookup("::1", "::1", "tcp", 1, 2).action == "bypass"
    assert spd.lookup("2001:db8::5", "2001:db8::1", "tcp", 1, 443, direction="in").action == "discard"


# -- the command ------------------------------------------------------------------------------
def test_check_command_exit_0_for_samples(capsys):
    path = str(sample_path("lab-branch.toml"))
    assert main(["check", path]) == 0
    assert capsys.readouterr().out == f"{path}: valid\n"  # one quiet line
    path = str(sample_path("server-least-privilege.toml"))
    assert main(["check", "--strict", path]) == 0  # advice never fails, not even --strict
    [line, summary] = capsys.readouterr().out.splitlines()
    assert LINE.match(line)["sev"] == "info" and line.endswith("[not-quantum-safe]")
    assert summary == f"{path}: valid, 1 note"
    assert main(["check", str(sample_path("site-to-site.toml"))]) == 0  # warnings allowed
    *lines, summary = capsys.readouterr().out.splitlines()
    assert summary.endswith(("valid", "warning", "warnings", "note", "notes"))
    for line in lines:
        m = LINE.match(line)
        assert m and m["sev"] in ("warning", "info"), line


def test_check_command_exit_1_and_one_line_per_finding(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("bad.toml").write_text('[engine]\nike_port = "500"\n[connections.c]\nencap = 1\n')
    assert main(["check", "bad.toml"]) == 1
    *lines, summary = capsys.readouterr().out.splitlines()
    assert "bad.toml:2:1: engine.ike_port: error: expected an integer, got a string ('500')" in lines
    assert "bad.toml:4:1: connections.c.encap: error: expected true or false, got an integer (1)" in lines
    assert all(LINE.match(line) for line in lines)
    assert summary.startswith("bad.toml: invalid: ") and summary.endswith(" errors, 0 warnings")
    Path("syntax.toml").write_text("[engine\n")
    assert main(["check", "syntax.toml"]) == 1
    [line, _summary] = capsys.readouterr().out.splitlines()
    m = LINE.match(line)
    assert m and m["line"] == "1" and m["sev"] == "error" and line.startswith("syntax.toml:1:")


def test_check_accepts_a_bare_sample_name_from_any_folder(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert resolve_policy_path("lab.toml") == str(sample_path("lab.toml"))
    assert main(["check", "lab.toml"]) == 0
    # A file of that name in the current folder wins over the sample.
    Path("lab.toml").write_text("[engine]\ndatapath = 5\n")
    capsys.readouterr()
    assert main(["check", "lab.toml"]) == 1
    assert capsys.readouterr().out.startswith("lab.toml:2:1: engine.datapath: error:")
    assert resolve_policy_path("no-such.toml") == "no-such.toml"
    assert resolve_policy_path("sub/lab.toml") == "sub/lab.toml"
