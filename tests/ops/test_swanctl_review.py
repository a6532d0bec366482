"""Review of the swanctl import/export fixes (ops13): CRLs that share a file name, CRLs over a round
trip through swanctl's folders, key and certificate files that are FIFOs or devices."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.ops.swanctl_export import export_policy
from engine.ops.swanctl_import import import_text
from engine.pki import ca
from engine.policy.parse import load_policy
from tests.ops.test_swanctl_fixes import CERT_GW, _policy, _swanctl_dir

ROOT = Path(__file__).resolve().parents[2]


def test_two_crls_of_one_file_name_are_copied_to_two_names(tmp_path):
    """`pki crl` writes crl.pem in each CA's folder: two CAs' CRLs were both copied to x509crl/crl.pem,
    the second over the first, and a certificate the first CA revoked was accepted again."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "crl.pem").write_text(f"-----BEGIN X509 CRL-----\n{d}\n-----END X509 CRL-----\n")
    policy = _policy(tmp_path, "", engine='crls = ["a/crl.pem", "b/crl.pem"]\n')
    out = export_policy(policy)
    targets = [c.rsplit(" ", 1)[1] for c in out.commands if "x509crl" in c]
    assert len(targets) == 2 and len(set(targets)) == 2, out.commands
    assert targets[0].endswith("/x509crl/crl.pem") and targets[1].endswith("/x509crl/crl-2.pem"), targets


def test_crls_survive_export_and_import_through_swanctls_folders(tmp_path):
    """swanctl --load-creds loads every CRL of x509crl/; the export copies [engine] crls there, but the
    import read nothing from x509crl/: the policy that came back checked no revocation at all."""
    sw = _swanctl_dir(tmp_path)
    (sw / "x509crl").mkdir()
    crl = ca.crl(tmp_path / "pki")
    (sw / "x509crl" / "ca.crl").write_bytes(crl.read_bytes())
    os.mkfifo(sw / "x509crl" / "not-a-file")
    out = tmp_path / "policy"
    out.mkdir()
    r = import_text(CERT_GW, conf_dir=sw, out_dir=out)
    assert 'crls = ["../swanctl/x509crl/ca.crl"]' in r.policy_toml, r.policy_toml
    assert any("x509crl" in w and "crls" in w for w in r.warnings), r.warnings
    assert r.errors == [], r.errors


def test_crls_round_trip_with_the_cli(tmp_path):
    sw = _swanctl_dir(tmp_path)
    (sw / "x509crl").mkdir()
    crl = ca.crl(tmp_path / "pki")
    (sw / "x509crl" / "ca.crl").write_bytes(crl.read_bytes())
    (sw / "swanctl.conf").write_text(CERT_GW)
    first = tmp_path / "p1"
    first.mkdir()

    def run(*args):
        return subprocess.run([sys.executable, "-m", "console", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)

    assert run("import", str(sw / "swanctl.conf"), "-o", str(first / "gw.toml")).returncode == 0
    sw2 = tmp_path / "sw2"
    for f in ("x509crl", "pkcs8"):
        (sw2 / f).mkdir(parents=True)
    r = run("export", str(first / "gw.toml"), "-o", str(sw2 / "swanctl.conf"), "--secrets", str(sw2 / "s.conf"))
    assert r.returncode == 0, r.stderr
    for line in r.stderr.splitlines():
        if line.startswith("  install "):
            subprocess.run(line, shell=True, check=True, env={**os.environ, "SWANCTL_DIR": str(sw2)})
    second = tmp_path / "p2"
    second.mkdir()
    assert run("import", str(sw2 / "swanctl.conf"), "-o", str(second / "gw.toml")).returncode == 0
    assert list(load_policy(second / "gw.toml").engine.crls) == ["../sw2/x509crl/ca.crl"]


def _finishes(fn, seconds: float = 10.0) -> bool:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()


def test_a_fifo_as_a_certificate_or_key_does_not_hang_the_import(tmp_path):
    """Key and certificate files were opened for reading as they were: a FIFO (or a device such as
    /dev/stdin on a terminal) named in swanctl.conf blocked the import for ever."""
    sw = _swanctl_dir(tmp_path)
    (sw / "x509" / "gw.crt").unlink()
    os.mkfifo(sw / "x509" / "gw.crt")
    assert _finishes(lambda: import_text(CERT_GW, conf_dir=sw, out_dir=tmp_path))
    conf = CERT_GW + "secrets {\n  pkcs8-x {\n    file = fifo.pem\n  }\n}\n"
    os.mkfifo(sw / "pkcs8" / "fifo.pem")
    assert _finishes(lambda: import_text(conf, conf_dir=sw, out_dir=tmp_path))


def test_a_fifo_as_a_private_key_does_not_hang_the_export(tmp_path):
    os.mkfifo(tmp_path / "gw.key")
    policy = _policy(tmp_path, '[private.gw]\nfile = "gw.key"\n')
    assert _finishes(lambda: export_policy(policy))


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_devices_are_no_key_files(device):
    from engine.pki.keyfiles import certificate_file_public_der, key_file_public_der, swanctl_key_folder

    assert key_file_public_der(device) is None and certificate_file_public_der(device) is None
    assert swanctl_key_folder(device) == "private"


def _doubling(levels: int) -> str:
    lines = ["s0 {\n  k = v\n}"]
    for i in range(1, levels):
        lines.append(f"s{i} {{\n  a : s{i - 1} {{\n  }}\n  b : s{i - 1} {{\n  }}\n}}")
    return "\n".join(lines) + "\n"


def test_references_that_double_at_each_level_are_refused_not_expanded(tmp_path):
    """Every reference copies its source whole: 24 sections each naming the one before twice (under
    800 bytes) expanded to 2^24 sections, and the import never ended."""
    from engine.ops.swanctl_import import SwanctlError

    def run():
        with pytest.raises(SwanctlError, match="references"):
            import_text(_doubling(24), conf_dir=tmp_path, out_dir=tmp_path)

    assert _finishes(run, 20)


def test_a_long_chain_of_references_is_refused_without_a_traceback(tmp_path):
    from engine.ops.swanctl_import import SwanctlError

    text = "s0 {\n  k = v\n}\n" + "".join(f"s{i} {{\n  a : s{i - 1} {{\n  }}\n}}\n" for i in range(1, 1500))
    with pytest.raises(SwanctlError):
        import_text(text, conf_dir=tmp_path, out_dir=tmp_path)


def test_references_of_a_real_size_still_resolve(tmp_path):
    r = import_text(_doubling(8) + "connections {\n}\n", conf_dir=tmp_path, out_dir=tmp_path)
    assert r.errors == []


def test_only_readable_crls_of_x509crl_are_imported(tmp_path):
    """strongSwan skips a file of x509crl/ it cannot parse (a README, a half-copied CRL) with a log
    line; listed in [engine] crls, the engine would refuse to start on it."""
    sw = _swanctl_dir(tmp_path)
    (sw / "x509crl").mkdir()
    (sw / "x509crl" / "ca.crl").write_bytes(ca.crl(tmp_path / "pki").read_bytes())
    (sw / "x509crl" / "README").write_text("CRLs go here\n")
    r = import_text(CERT_GW, conf_dir=sw, out_dir=tmp_path)
    assert 'crls = ["swanctl/x509crl/ca.crl"]' in r.policy_toml, r.policy_toml
    assert any("README" in w and "not a CRL" in w for w in r.warnings), r.warnings
