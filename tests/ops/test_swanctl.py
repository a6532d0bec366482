"""swanctl.conf import and export: the settings syntax, what carries over and what
is named in a warning, round trips through every sample, and (in network
namespaces, tests/interop/lab.py) an exported file that charon loads and uses
to negotiate with our daemon.

The swanctl.conf inputs are written here, in the style of the interop
harness's and strongSwan's own test configs (none of those is copied);
benchmarks/swanctl_corpus.py imports the real ones in bulk.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.ops.swanctl_conf import SettingsError, parse, quote, render
from engine.ops.swanctl_export import export_policy
from engine.ops.swanctl_import import SwanctlError, import_text
from engine.policy.parse import load_policy, parse_policy
from engine.policy.samples import sample_names, sample_path

ROOT = Path(__file__).resolve().parents[2]

PSK_TUNNEL = """\
# A site-to-site tunnel with a PSK, as in the interop harness
connections {

  psk-tunnel {
    version = 2
    local_addrs = 192.0.2.1
    remote_addrs = 192.0.2.2
    proposals = aes256gcm16-prfsha256-x25519, aes128-sha256-modp2048
    dpd_delay = 30s
    local {
      auth = psk
      id = left.example
    }
    remote {
      auth = psk
      id = right.example
    }
    children {
      net {
        mode = tunnel
        local_ts = 198.51.100.1/32
        remote_ts = 198.51.100.129/32
        esp_proposals = aes256gcm16, aes128-sha256
        start_action = trap
        dpd_action = restart
      }
    }
  }
}

secrets {
  ike-interop {
    id-left = left.example
    id-right = right.example
    secret = "interop-psk-not-secret-0123456789"
  }
}
"""

ROADWARRIOR_GW = """\
connections {
  rw-base {
    local_addrs = 192.0.2.1
    proposals = aes256-sha256-ecp256
    pools = rw_pool
    local {
      auth = pubkey
      certs = moonCert.pem
      id = moon.example.org
    }
    remote {
      auth = pubkey
      cacerts = strongswanCert.pem
      revocation = strict
    }
    children {
      net {
        local_ts = 198.51.100.0/24
        updown = /usr/local/libexec/ipsec/_updown iptables
        esp_proposals = aes128gcm16
      }
      local-bypass {
        mode = pass
        local_ts = 198.51.100.0/24
        remote_ts = 198.51.100.0/24
      }
    }
  }
  rw-eap : connections.rw-base {
    remote {
      auth = eap-md5
    }
  }
  old {
    version = 1
    remote_addrs = 192.0.2.9
  }
}
pools {
  rw_pool {
    addrs = 198.51.100.192/26
  }
}
secrets {
  eap-carol {
    id = carol
    secret = Ar3etTnp
  }
  ecdsa-moon {
    file = moonKey.pem
  }
}
"""


def test_settings_syntax():
    root = parse('a { x = one two   three # comment\n  y = "q\\"uo  ted" z\n  sub { k = v }}\n'
                 'b : a { x = 2 }\n# c\nempty =\n')
    a = root.section("a")
    assert a.value("x") == "one two three" and a.value("y") == 'q"uo  ted z' and a.section("sub").value("k") == "v"
    assert root.section("b").value("x") == "2" and root.section("b").value("y") == 'q"uo  ted z'  # inherited
    assert root.value("empty") == "" and a.settings["y"].line == 2
    for bad in ("a { x = 1", "a = 1 }", "a b c", "a { x = \"open }"):
        with pytest.raises(SettingsError):
            parse(bad)
    assert parse(render({"s": {"k": ["a", "b"], "t": 'we"ird # x', "u": "two  spaces"}})).section("s").settings[
        "t"].value == 'we"ird # x'
    assert quote("plain") == "plain" and quote("a  b").startswith('"')


def test_includes_are_resolved_relative_to_the_file(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("connections { a { version = 2 } }\n")
    (tmp_path / "conf.d" / "b.conf").write_text("secrets { ike-b { secret = x } }\n")
    root = parse("include conf.d/*.conf\n", str(tmp_path / "swanctl.conf"), tmp_path)
    assert root.section("connections").section("a").value("version") == "2"
    assert root.section("secrets").section("ike-b").value("secret") == "x"


def test_import_of_a_psk_tunnel_keeps_everything(tmp_path):
    r = import_text(PSK_TUNNEL, source="psk.conf", conf_dir=tmp_path, out_dir=tmp_path)
    assert r.errors == [] and (r.connections, r.children, r.secrets) == (1, 1, 1)
    assert r.warnings == []
    (tmp_path / "secrets.toml").write_text(r.secrets_toml)
    (tmp_path / "secrets.toml").chmod(0o600)
    (tmp_path / "p.toml").write_text(r.policy_toml)
    p = load_policy(tmp_path / "p.toml")
    c = p.connection("psk-tunnel")
    assert [x.text for x in c.proposals] == ["aes256gcm16-prfsha256-x25519", "aes128-sha256-modp2048"]
    assert str(c.local.id) == "left.example" and c.dpd_delay == 30.0
    k = c.child("net")
    assert [str(t) for t in k.remote_ts] == ["198.51.100.129/32"] and k.start_action == "trap"
    assert k.dpd_action == "restart" and [x.text for x in k.proposals] == ["aes256gcm16", "aes128-sha256"]
    assert p.secrets.ike[0].secret.reveal() == b"interop-psk-not-secret-0123456789"


def test_import_warns_once_per_key_it_cannot_carry_over(tmp_path):
    r = import_text(ROADWARRIOR_GW, source="gw.conf", conf_dir=tmp_path / "swanctl", out_dir=tmp_path)
    text = "\n".join(r.warnings)
    for key, why in (("connections.rw-base.children.net.updown", ""),
                     ("connections.old", "IKEv1"), ("connections.rw-eap", "eap-md5")):
        assert any(f": {key}: not imported: " in w and why in w for w in r.warnings), (key, text)
    assert all(w.startswith("gw.conf:") for w in r.warnings)
    assert (r.connections, r.rules, r.skipped) == (1, 1, 2)
    policy = parse_policy(r.policy_toml, tmp_path / "p.toml", load_secrets=False)
    c = policy.connection("rw-base")
    assert policy.pools[0].name == "rw_pool" and policy.pools[0].addrs == "198.51.100.192/26"
    assert c.pools == ("rw_pool",)  # configuration payloads are negotiated: the connection keeps its pool
    assert c.remote.revocation == "strict" and not any("revocation" in w for w in r.warnings)
    assert c.local.certs == ("swanctl/x509/moonCert.pem",)
    assert c.remote.cacerts == ("swanctl/x509ca/strongswanCert.pem",)
    assert policy.rules[0].name == "local-bypass" and policy.rules[0].action == "bypass"
    assert "swanctl/ecdsa/moonKey.pem" in r.secrets_toml
    assert "[eap.carol]" in r.secrets_toml and 'id = "carol"' in r.secrets_toml  # EAP users are imported


def test_import_cli_writes_a_0600_secrets_file(tmp_path):
    conf = tmp_path / "swanctl.conf"
    conf.write_text(PSK_TUNNEL)
    run = subprocess.run([sys.executable, "-m", "console", "import", str(conf), "-o", str(tmp_path / "gw.toml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "gw.secrets.toml").stat().st_mode & 0o777 == 0o600
    check = subprocess.run([sys.executable, "-m", "console", "check", str(tmp_path / "gw.toml")], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    # valid; a classic swanctl.conf gets only the advice to add ML-KEM (info, never a failure)
    assert check.returncode == 0 and check.stdout.strip().endswith("valid, 1 note"), check.stdout
    assert "[not-quantum-safe]" in check.stdout.splitlines()[0], check.stdout
    again = subprocess.run([sys.executable, "-m", "console", "import", str(conf), "-o", str(tmp_path / "gw.toml")],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "exists" in again.stderr
    with pytest.raises(SwanctlError):
        import_text("connections { broken")


def _comparable(policy):
    # swanctl.conf has no place for the peer's NAT-T port (the export warns about it), nor for our
    # expected_clients hint (a lint input only).
    conns = tuple(dataclasses.replace(c, remote_natt_port=4500, expected_clients=0) for c in policy.connections)
    return dataclasses.replace(policy, engine=None, path=None, secrets=None, lab=None, connections=conns)


@pytest.mark.parametrize("name", [n for n in sample_names()])
def test_export_then_import_gives_the_same_policy(name, tmp_path):
    policy = load_policy(sample_path(name), strict_secrets_mode=False)
    out = export_policy(policy, secrets_include=str(tmp_path / "secrets.conf"))
    (tmp_path / "secrets.conf").write_text(out.secrets_conf)
    back = import_text(out.conf, source="exported.conf", conf_dir=tmp_path, out_dir=sample_path(name).parent)
    again = parse_policy(back.policy_toml, sample_path(name), load_secrets=False)
    assert _comparable(again) == _comparable(policy), back.warnings
    secrets_back = import_text(out.secrets_conf, conf_dir=tmp_path).secrets_toml
    for s in policy.secrets.ike:
        assert f"0x{s.secret.reveal().hex()}" in secrets_back
    # The lab's own ports come back as [engine] ike_port, said on the way out and in.
    assert not [w for w in back.warnings if "renamed" not in w and "[engine] ike_port" not in w]
    assert all("remote_natt_port" in w or "ike_port" in w for w in out.warnings), out.warnings


def test_export_keeps_secrets_out_unless_asked():
    policy = load_policy(sample_path("site-to-site.toml"), strict_secrets_mode=False)
    out = export_policy(policy)
    raw = policy.secrets.ike[0].secret.reveal()
    assert raw.decode() not in out.conf and raw.hex() not in out.conf and "--secrets FILE" in out.conf


# -- charon loads it and negotiates with us ---------------------------------------------------------------
@pytest.mark.interop
def test_exported_conf_loads_in_charon_and_negotiates_with_our_daemon(tmp_path):
    from tests.interop.lab import Charon, lab, our_policy
    from tests.interop.lab_esp import Stopper, wait_child

    right = tmp_path / "right-policy"
    right.mkdir()
    (right / "policy.toml").write_text(our_policy("right", proposals=("aes256gcm16-prfsha256-x25519",),
                                                  esp=("aes256gcm16",)))
    from tests.interop.lab import PSK

    (right / "secrets.toml").write_text(f'[ike.interop]\nids = ["left.example", "right.example"]\nsecret = "{PSK}"\n')
    (right / "secrets.toml").chmod(0o600)
    with lab() as net, Stopper() as st:
        charon = Charon(net, "right", tmp_path)
        secrets = charon.dir / "swanctl" / "exported-secrets.conf"
        secrets.parent.mkdir(parents=True, exist_ok=True)
        run = subprocess.run([sys.executable, "-m", "console", "export", str(right / "policy.toml"), "--secrets",
                              str(secrets)], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        charon.conf = run.stdout  # Charon.start writes it as swanctl.conf and runs swanctl --load-all
        st.callback(charon.stop)
        charon.start()
        conns = charon.swanctl("--list-conns").stdout
        assert "psk-tunnel: IKEv2" in conns and "lan: TUNNEL" in conns
        ours = st.ours(net, "left", tmp_path, our_policy("left", start_action="start"))
        child = wait_child(ours, 30)
        assert child["name"] == "lan"
        net.ping("left", "198.51.100.129", count=3, interval=0.2)
        assert "ESTABLISHED" in charon.list_sas() and "INSTALLED" in charon.list_sas()


def test_import_never_writes_the_secrets_outside_its_scratch_folder(tmp_path):
    """The validation copy of the secrets went to scratch/RELPATH: with the secrets file in another
    branch of the tree than the policy, that climbed out of the scratch folder onto the real file
    (an existing one was overwritten before `exists (use --force)` was said) or anywhere else."""
    out_dir = tmp_path / "a" / "b"
    out_dir.mkdir(parents=True)
    keep = tmp_path / "keep.secrets.toml"
    keep.write_text("# the admin's own secrets\n")
    # the name relpath gives when the two share only "/" (e.g. -o /etc/x.toml --secrets /root/x.secrets.toml)
    rel = "../" * (len(out_dir.parts) - 1) + str(keep).lstrip("/")
    assert (out_dir / rel).resolve() == keep
    r = import_text(PSK_TUNNEL, conf_dir=tmp_path, out_dir=out_dir, secrets_name=rel)
    assert not r.errors
    assert keep.read_text() == "# the admin's own secrets\n"
    assert f'secrets = "{rel}"' in r.policy_toml


def test_import_reports_secrets_errors_by_the_secrets_file_name(tmp_path):
    conf = PSK_TUNNEL.replace("secrets {", "secrets {\n    ike-empty {\n        secret = 0xzz\n    }")
    r = import_text(conf, conf_dir=tmp_path, out_dir=tmp_path, secrets_name="gw.secrets.toml")
    assert r.errors and all(e.startswith(("gw.secrets.toml", "imported.toml")) for e in r.errors), r.errors


def test_eap_passwords_survive_export_and_import(tmp_path):
    """swanctl decodes 0x (hex) and 0s (base64) EAP secrets, and export writes them as 0x...; our EAP
    passwords are text taken as typed, so the import must decode them, not keep the 0x... text as the
    password (it doubled in length and no client could log in)."""
    policy = load_policy(sample_path("road-warrior-server.toml"), strict_secrets_mode=False)
    out = export_policy(policy, secrets_include=str(tmp_path / "secrets.conf"))
    (tmp_path / "secrets.conf").write_text(out.secrets_conf)
    back = import_text(out.conf, conf_dir=tmp_path, out_dir=sample_path("road-warrior-server.toml").parent)
    (tmp_path / "rw.secrets.toml").write_text(import_text(out.secrets_conf, conf_dir=tmp_path).secrets_toml)
    (tmp_path / "rw.secrets.toml").chmod(0o600)
    text = back.policy_toml.replace('secrets = "secrets.toml"', 'secrets = "rw.secrets.toml"')
    again = parse_policy(text, tmp_path / "rw.toml", strict_secrets_mode=True)
    assert policy.secrets.eap and len(again.secrets.eap) == len(policy.secrets.eap)
    for mine, theirs in zip(policy.secrets.eap, again.secrets.eap):
        assert theirs.ids == mine.ids and theirs.secret.reveal() == mine.secret.reveal()


def test_eap_secret_encodings_as_swanctl_reads_them(tmp_path):
    conf = ("secrets {\n  eap-a {\n    id = a\n    secret = 0s" + base64.b64encode(b"p\xc3\xa4ss").decode() + "\n  }\n"
            "  eap-b {\n    id = b\n    secret = 0xff00\n  }\n  eap-c {\n    id = c\n    secret = plain\n  }\n}\n")
    r = import_text(conf, conf_dir=tmp_path)
    assert '[eap.a]\nid = "a"\nsecret = "päss"' in r.secrets_toml
    assert '[eap.c]\nid = "c"\nsecret = "plain"' in r.secrets_toml
    assert "eap-b" not in r.secrets_toml and "0xff00" not in r.secrets_toml
    assert any("secrets.eap-b" in w and "UTF-8" in w for w in r.warnings), r.warnings


def test_an_include_of_a_device_or_fifo_is_refused(tmp_path):
    """`include /dev/zero` hung import, eating memory (the size check read st_size, 0 for a device, then
    read the file whole); a FIFO nobody writes hung it for good. Only regular files are read now (as
    for policies, engine.policy.tomlfile), at most MAX_SIZE bytes."""
    from engine.ops.swanctl_conf import parse_file

    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)
    for target, kind in (("/dev/null", "a character device"), (str(fifo), "a FIFO")):
        conf = tmp_path / "swanctl.conf"
        conf.write_text(f"include {target}\nconnections {{}}\n")
        with pytest.raises(SettingsError, match=f"{target}: not a regular file \\({kind}\\)"):
            parse_file(conf)
    with pytest.raises(SettingsError, match="not a regular file"):
        parse_file(fifo)


def test_latin1_in_a_comment_is_read_and_in_a_value_refused_by_line(tmp_path):
    """strongSwan reads swanctl.conf as bytes: an admin's comment in Latin-1 (an umlaut) must not stop
    an import; a value in Latin-1 is refused naming its line, never changed silently (an EAP password)."""
    from engine.ops.swanctl_conf import parse_file

    conf = tmp_path / "swanctl.conf"
    conf.write_bytes(b"# Verbindung zur Au\xdfenstelle\nconnections {\n  a {  # f\xfcr M\xfcller\n"
                     b"    remote_addrs = 192.0.2.1\n  }\n}\n")
    root = parse_file(conf)
    assert root.section("connections").section("a").value("remote_addrs") == "192.0.2.1"
    conf.write_bytes(b"secrets {\n  eap-m {\n    id = m\xfcller\n    secret = x\n  }\n}\n")
    with pytest.raises(SettingsError, match=r"not UTF-8 text: byte 0xfc at line 3.*only comments"):
        parse_file(conf)


def test_a_private_key_passphrase_is_exported_as_swanctl_reads_it(tmp_path):
    """swanctl takes a private key's secret literally (load_creds.c: chunk_from_str, no 0x/0s decoding,
    unlike ike/eap/ppk secrets): exported as 0x<hex>, the passphrase charon tried was the hex text."""
    (tmp_path / "s.toml").write_text('[private.gw]\nfile = "gw.key"\npassphrase = "0x not hex, #; {}"\n')
    (tmp_path / "s.toml").chmod(0o600)
    (tmp_path / "p.toml").write_text('[engine]\ndatapath = "kernel"\nsecrets = "s.toml"\n')
    policy = load_policy(tmp_path / "p.toml")
    out = export_policy(policy, secrets_include=str(tmp_path / "secrets.conf"))
    assert '"0x not hex, #; {}"' in out.secrets_conf and "0x3078" not in out.secrets_conf
    assert any("private" in w and "gw.key" in w for w in out.warnings), out.warnings
    back = import_text(out.secrets_conf, conf_dir=tmp_path)
    assert 'passphrase = "0x not hex, #; {}"' in back.secrets_toml


def test_import_errors_name_the_policy_file_being_written(tmp_path):
    """They named "imported.toml", the scratch copy, beside "wrote gw.toml"; the CLI passes the name."""
    conf = "connections {\n  a {\n    remote_addrs = 192.0.2.1\n    local { auth = psk }\n    remote { auth = psk }\n  }\n}\n"
    r = import_text(conf, conf_dir=tmp_path, out_dir=tmp_path, policy_name="out/gw.toml")
    assert r.errors and all(e.startswith("out/gw.toml: ") for e in r.errors), r.errors


@pytest.mark.parametrize("port", [4510])
def test_a_local_port_that_moves_the_gateways_ike_port_is_said(tmp_path, port):
    """local_port of the connections becomes [engine] ike_port (the engine has one): a gateway that
    stops listening on 500 must not be a silent change (4500: test_swanctl_fixes)."""
    conf = ("connections {\n  a {\n    remote_addrs = 192.0.2.1\n    local_port = %d\n"
            "    local { auth = psk\n id = a.example }\n    remote { auth = psk\n id = b.example }\n"
            "    children { c { local_ts = 198.51.100.0/25\n remote_ts = 198.51.100.128/25 } }\n  }\n}\n" % port)
    r = import_text(conf, conf_dir=tmp_path, out_dir=tmp_path)
    assert f"ike_port = {port}" in r.policy_toml
    moved = [w for w in r.warnings if f"[engine] ike_port = {port}" in w]
    assert moved and "not on 500" in moved[0], r.warnings


def test_unique_keep_is_read_from_toml_and_carried_over_from_swanctl(tmp_path):
    """unique = keep (charon's UNIQUE_KEEP: a second SA of the same peer from elsewhere is refused)
    is a policy value of its own and swanctl's `unique = keep` carries over, as never and replace do."""
    for value in ("keep", "replace", "never"):
        r = import_text(PSK_TUNNEL.replace("    dpd_delay = 30s\n", f"    dpd_delay = 30s\n    unique = {value}\n"),
                        source="u.conf", conf_dir=tmp_path, out_dir=tmp_path)
        assert r.errors == [] and r.warnings == [], value
        (tmp_path / "secrets.toml").write_text(r.secrets_toml)
        (tmp_path / "secrets.toml").chmod(0o600)
        (tmp_path / "p.toml").write_text(r.policy_toml)
        policy = load_policy(tmp_path / "p.toml")
        assert policy.connection("psk-tunnel").unique == value
        assert f"unique = {value}" in export_policy(policy).conf, value


def test_cert_policy_carries_over_both_ways(tmp_path):
    """swanctl's remote cert_policy (OIDs the peer's certificate must hold) is our remote.cert_policy;
    a value that is no dotted OID is named in a warning, not carried over."""
    text = ROADWARRIOR_GW.replace("      revocation = strict\n",
                                  "      revocation = strict\n      cert_policy = 1.3.6.1.4.1.36906.1.1, 2.5.29.32.0\n")
    r = import_text(text, source="gw.conf", conf_dir=tmp_path / "swanctl", out_dir=tmp_path)
    assert not any("cert_policy" in w for w in r.warnings), r.warnings
    policy = parse_policy(r.policy_toml, tmp_path / "p.toml", load_secrets=False)
    c = policy.connection("rw-base")
    assert c.remote.cert_policy == ("1.3.6.1.4.1.36906.1.1", "2.5.29.32.0")
    assert "cert_policy = 1.3.6.1.4.1.36906.1.1,2.5.29.32.0" in export_policy(policy).conf.replace(", ", ",")
    r = import_text(text.replace("2.5.29.32.0", "anyPolicy"), source="gw.conf", conf_dir=tmp_path / "swanctl",
                    out_dir=tmp_path)
    assert any("cert_policy" in w and "anyPolicy" in w for w in r.warnings), r.warnings
    assert "cert_policy" not in r.policy_toml
