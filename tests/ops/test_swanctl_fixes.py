"""swanctl.conf import and export: private keys where swanctl loads them, secret names that survive
round trips, local_port = 4500, CR in values, bad numbers, key paths, CRLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.ops.swanctl_conf import parse, quote
from engine.ops.swanctl_export import export_policy
from engine.ops.swanctl_import import import_text
from engine.pki import ca
from engine.policy.parse import load_policy, parse_policy

PSK_CONN = """\
connections {
  a {
    remote_addrs = 192.0.2.2
    %s
    local {
      auth = psk
      id = a.example
    }
    remote {
      auth = psk
      id = b.example
    }
    children {
      c {
        local_ts = 198.51.100.0/25
        remote_ts = 198.51.100.128/25
        %s
      }
    }
  }
}
secrets {
  ike-office {
    id-1 = a.example
    id-2 = b.example
    secret = 0x0123456789abcdef0123456789abcdef
  }
}
"""


def _pem(key, fmt) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _policy(tmp_path: Path, secrets: str, engine: str = "") -> object:
    (tmp_path / "s.toml").write_text(secrets)
    (tmp_path / "s.toml").chmod(0o600)
    (tmp_path / "p.toml").write_text(f'[engine]\ndatapath = "kernel"\nsecrets = "s.toml"\n{engine}')
    return load_policy(tmp_path / "p.toml")


# -- 5, 10, 13: keys and CRLs go where swanctl --load-creds reads them ------------------------------------
def test_export_puts_each_key_in_its_formats_folder_and_says_how_to_copy_it(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "gw.key").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8))
    (keys / "old.key").write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                        serialization.PrivateFormat.TraditionalOpenSSL))
    (keys / "ec.key").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1()),
                                       serialization.PrivateFormat.TraditionalOpenSSL))
    other = tmp_path / "other"
    other.mkdir()
    (other / "gw.key").write_bytes((keys / "gw.key").read_bytes())
    (tmp_path / "ca.crl").write_text("-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n")
    policy = _policy(tmp_path, '[private.gw]\nfile = "keys/gw.key"\npassphrase = "pw"\n\n'
                     '[private.old]\nfile = "keys/old.key"\n\n[private.ec]\nfile = "keys/ec.key"\n\n'
                     '[private.twin]\nfile = "other/gw.key"\n', engine='crls = ["ca.crl"]\n')
    out = export_policy(policy, secrets_include=str(tmp_path / "secrets.conf"))
    secrets = parse(out.secrets_conf).section("secrets")
    assert secrets.section("pkcs8-gw").value("file") == "gw.key"
    assert secrets.section("pkcs8-gw").value("secret") == "pw"
    assert secrets.section("rsa-old").value("file") == "old.key"
    assert secrets.section("ecdsa-ec").value("file") == "ec.key"
    assert secrets.section("pkcs8-twin").value("file") == "gw-2.key"  # never copied over the first gw.key
    d = '"${SWANCTL_DIR:-/etc/swanctl}"'
    assert out.commands == [f"install -m 600 {keys / 'gw.key'} {d}/pkcs8/gw.key",
                            f"install -m 600 {keys / 'old.key'} {d}/rsa/old.key",
                            f"install -m 600 {keys / 'ec.key'} {d}/ecdsa/ec.key",
                            f"install -m 600 {other / 'gw.key'} {d}/pkcs8/gw-2.key",
                            f"install -m 644 {tmp_path / 'ca.crl'} {d}/x509crl/ca.crl"]
    assert "#   install -m 644" in out.conf
    assert any("crls" in w and "x509crl/" in w for w in out.warnings), out.warnings
    # without --secrets the keys still have to be copied
    assert export_policy(policy).commands == out.commands


def test_export_cli_prints_the_copy_commands(tmp_path, monkeypatch, capsys):
    from console.cli import main

    (tmp_path / "gw.key").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1()),
                                           serialization.PrivateFormat.PKCS8))
    _policy(tmp_path, '[private.gw]\nfile = "gw.key"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["export", "p.toml", "-o", "gw.conf"]) == 0
    err = capsys.readouterr().err
    assert f"install -m 600 {tmp_path / 'gw.key'} \"${{SWANCTL_DIR:-/etc/swanctl}}\"/pkcs8/gw.key" in err, err


# -- 6: secret names ------------------------------------------------------------------------------------
def test_secret_names_are_stable_over_import_and_export(tmp_path):
    (tmp_path / "gw.key").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1()),
                                           serialization.PrivateFormat.PKCS8))
    (tmp_path / "s.toml").write_text(
        '[ike.office]\nids = ["a.example", "b.example"]\nsecret = "0x00112233445566778899aabbccddeeff"\n\n'
        '[eap.carol]\nid = "carol"\nsecret = "Ar3etTnp"\n\n[ppk.q]\nid = "q-id"\nsecret = "0x' + "ab" * 32 + '"\n\n'
        '[private.gw]\nfile = "gw.key"\n')
    (tmp_path / "s.toml").chmod(0o600)
    (tmp_path / "p.toml").write_text('[engine]\ndatapath = "kernel"\nsecrets = "s.toml"\n')
    names = None
    for _ in range(3):
        policy = load_policy(tmp_path / "p.toml")
        now = sorted(f"{kind}.{s.name}" for kind in ("ike", "eap", "ppk", "private")
                     for s in getattr(policy.secrets, kind))
        assert names is None or now == names
        names = now
        out = export_policy(policy, secrets_include=str(tmp_path / "secrets.conf"))
        back = import_text(out.secrets_conf, conf_dir=tmp_path, out_dir=tmp_path, secrets_name="s.toml")
        (tmp_path / "s.toml").write_text(back.secrets_toml)
    assert names == ["eap.carol", "ike.office", "ppk.q", "private.gw"]


# -- 7: local_port = 4500 -------------------------------------------------------------------------------
def test_local_port_4500_is_ike_on_the_natt_port(tmp_path):
    """swanctl's local_port = 4500 starts IKE on the NAT-T port; it became [engine] ike_port = 4500 and
    natt_port = 4501: the whole gateway moved off 500 and NAT-T off 4500."""
    r = import_text(PSK_CONN % ("local_port = 4500", ""), conf_dir=tmp_path, out_dir=tmp_path)
    assert not r.errors and "ike_port" not in r.policy_toml and "natt_port" not in r.policy_toml, r.policy_toml
    policy = parse_policy(r.policy_toml, tmp_path / "p.toml", load_secrets=False)
    assert policy.connection("a").local_port == 4500 == policy.engine.natt_port and policy.engine.ike_port == 500
    assert r.warnings == []


# -- 8: CR ----------------------------------------------------------------------------------------------
def test_a_carriage_return_survives_quoting():
    """strongSwan's lexer drops a bare CR inside quotes (settings_lexer.l): it is written \\r."""
    assert quote("a\rb") == '"a\\rb"'
    assert parse("k = " + quote("a\rb") + "\n").value("k") == "a\rb"


# -- 9: bad numbers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("conn, child, key", [
    ("local_port = 70000", "", "local_port"),
    ("remote_port = 0", "", "remote_port"),
    ("keyingtries = -1", "", "keyingtries"),
    ("rekey_time = " + "9" * 400, "", "rekey_time"),
    ("dpd_delay = 99999999999s", "", "dpd_delay"),
    ("", "replay_window = 99999999999999", "replay_window"),
    ("", "priority = -3", "priority"),
    ("", "rekey_bytes = 99999999999999999999999", "rekey_bytes"),
])
def test_bad_numbers_are_warnings(tmp_path, conn, child, key):
    r = import_text(PSK_CONN % (conn, child), conf_dir=tmp_path, out_dir=tmp_path)
    assert r.errors == [], r.errors
    assert any(f".{key}: not imported: " in w for w in r.warnings), r.warnings
    assert f"{key} =" not in r.policy_toml


def test_a_bad_round_number_is_a_warning(tmp_path):
    conf = PSK_CONN.replace("      id = a.example\n", "      id = a.example\n      round = x\n", 1)
    r = import_text(conf % ("", ""), conf_dir=tmp_path, out_dir=tmp_path)
    assert r.errors == [] and any("local.round" in w for w in r.warnings), r.warnings


# -- 11, 12: keys of certificate gateways, paths relative to the secrets file --------------------------------
CERT_GW = """\
connections {
  gw {
    remote_addrs = 192.0.2.2
    local {
      auth = pubkey
      certs = gw.crt
      id = gw.example
    }
    remote {
      auth = pubkey
      cacerts = ca.crt
    }
    children {
      net {
        local_ts = 198.51.100.0/25
        remote_ts = 198.51.100.128/25
      }
    }
  }
}
"""


def _swanctl_dir(tmp_path: Path) -> Path:
    pki = tmp_path / "pki"
    ca.init_ca(pki, "Test CA")
    ca.issue(pki, "gw.example")
    ca.issue(pki, "other.example")
    sw = tmp_path / "swanctl"
    for folder in ("x509", "x509ca", "private", "pkcs8", "rsa"):
        (sw / folder).mkdir(parents=True)
    (sw / "x509" / "gw.crt").write_bytes((pki / "certs" / "gw.example.crt").read_bytes())
    (sw / "x509ca" / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    (sw / "pkcs8" / "0-other.pem").write_bytes((pki / "private" / "other.example.key").read_bytes())
    (sw / "pkcs8" / "gw.pem").write_bytes((pki / "private" / "gw.example.key").read_bytes())
    (sw / "rsa" / "junk.pem").write_text("not a key\n")
    for f in (sw / "pkcs8").iterdir():
        f.chmod(0o600)
    return sw


def test_a_certificate_gateway_gets_the_key_swanctl_loads_from_its_folders(tmp_path):
    sw = _swanctl_dir(tmp_path)
    out = tmp_path / "policy"
    out.mkdir()
    r = import_text(CERT_GW, conf_dir=sw, out_dir=out, secrets_name="../secrets/gw.secrets.toml")
    assert r.errors == [], r.errors
    assert '[private.gw]\nfile = "../swanctl/pkcs8/gw.pem"' in r.secrets_toml, r.secrets_toml
    assert "other" not in r.secrets_toml and "junk" not in r.secrets_toml
    assert not any("private key" in w for w in r.warnings), r.warnings
    (sw / "pkcs8" / "gw.pem").unlink()
    r = import_text(CERT_GW, conf_dir=sw, out_dir=out)
    assert any("no private key for" in w and "gw.crt" in w for w in r.warnings), r.warnings


def test_key_files_are_written_relative_to_the_secrets_file(tmp_path):
    """The engine reads [private] files relative to the secrets file: they were written relative to
    the policy's folder, wrong as soon as --secrets put the secrets file elsewhere."""
    sw = _swanctl_dir(tmp_path)
    conf = CERT_GW + "secrets {\n  pkcs8-gw {\n    file = gw.pem\n  }\n}\n"
    out = tmp_path / "policy"
    out.mkdir()
    r = import_text(conf, conf_dir=sw, out_dir=out, secrets_name="../secrets/gw.secrets.toml")
    assert '[private.gw]\nfile = "../swanctl/pkcs8/gw.pem"' in r.secrets_toml, r.secrets_toml
    (tmp_path / "secrets").mkdir()
    secrets = tmp_path / "secrets" / "gw.secrets.toml"
    secrets.write_text(r.secrets_toml)
    secrets.chmod(0o600)
    (out / "gw.toml").write_text(r.policy_toml)
    policy = load_policy(out / "gw.toml")
    from engine.pki import load_private_key_secret

    assert load_private_key_secret(policy.secrets.private[0], secrets.parent) is not None


def test_an_encrypted_key_with_its_passphrase_in_the_secrets_is_matched(tmp_path):
    sw = _swanctl_dir(tmp_path)
    key = (sw / "pkcs8" / "gw.pem")
    from engine.pki.keys import load_private_key_file

    k = load_private_key_file(key)
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(b"pw")))
    r = import_text(CERT_GW, conf_dir=sw, out_dir=tmp_path)
    assert any("no private key for" in w and "pkcs8/gw.pem" in w for w in r.warnings), r.warnings
    conf = CERT_GW + "secrets {\n  pkcs8-x {\n    file = gw.pem\n    secret = pw\n  }\n}\n"
    r = import_text(conf, conf_dir=sw, out_dir=tmp_path)
    assert not any("private key" in w for w in r.warnings), r.warnings
    assert r.secrets_toml.count("[private.") == 1 and 'passphrase = "pw"' in r.secrets_toml


# -- found while there ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["connections { c { remote_addrs = 192.0.2.1\n children { k : connections.c { } } } }",
                                  "connections { x : connections { } }", "a { x : a { }\n y : a { } }"])
def test_a_section_referencing_its_own_ancestor_is_read(tmp_path, text):
    """A reference to an enclosing section copied the section into itself without end (RecursionError
    out of import); strongSwan ignores a reference it already follows."""
    import_text(text, conf_dir=tmp_path, out_dir=tmp_path)


ODD_NAMES = """\
[engine]
datapath = "kernel"
secrets = "s.toml"
[connections."a.b"]
remote_addrs = ["192.0.2.1"]
pools = ["p,1"]
local = { auth = "psk", id = "a.example" }
remote = { auth = "psk", id = "b.example" }
[connections."a.b".children."c:d"]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/25"]
[rules."r#1"]
action = "bypass"
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/25"]
[pools."p,1"]
addrs = "198.51.100.192/26"
"""


def test_names_swanctl_cannot_hold_are_renamed_and_said(tmp_path):
    """Policy names may hold . : , # (quoted TOML keys); written as they were, the exported file was
    not swanctl.conf (`a.b {` is a syntax error, `pools = p,1` two pools)."""
    (tmp_path / "p.toml").write_text(ODD_NAMES)
    (tmp_path / "s.toml").write_text('[ike."x.y"]\nids = ["a.example", "b.example"]\nsecret = "' + "k" * 32 + '"\n')
    (tmp_path / "s.toml").chmod(0o600)
    policy = load_policy(tmp_path / "p.toml")
    out = export_policy(policy, secrets_include=str(tmp_path / "with space" / "secrets.conf"))
    root = parse(out.conf.split("\ninclude ")[0])
    conn = root.section("connections").section("a_b")
    assert conn.section("children").section("c_d") is not None and conn.value("pools") == "p_1"
    assert root.section("pools").section("p_1").value("addrs") == "198.51.100.192/26"
    assert root.section("connections").section("ipsec-console-rules").section("children").section("r_1")
    assert parse(out.secrets_conf).section("secrets").section("ike-x_y") is not None
    assert 'include "' + str(tmp_path / "with space" / "secrets.conf") + '"' in out.conf
    for name in ("'a.b'", "'c:d'", "'r#1'", "'p,1'", "'ike-x.y'"):
        assert any(name in w and "written as" in w for w in out.warnings), (name, out.warnings)
    back = import_text(out.conf.split("\ninclude ")[0], conf_dir=tmp_path, out_dir=tmp_path)
    assert back.connections == 1 and back.rules == 1


def test_an_include_that_matches_no_file_is_said(tmp_path):
    """`include conf.d/*.conf` with conf.d not copied along: its connections were silently missing
    from the import (strongSwan logs "no files found matching")."""
    conf = tmp_path / "swanctl.conf"
    conf.write_text("include conf.d/*.conf\nconnections {\n}\n")
    from engine.ops.swanctl_import import import_file

    r = import_file(conf, out_dir=tmp_path)
    assert any(w.startswith(f"{conf}:1: include {tmp_path}/conf.d/*.conf: no file matches") for w in r.warnings), \
        r.warnings
