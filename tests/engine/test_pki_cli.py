"""``ipsec-console pki`` through engine.pki.cli.main: a full round trip and its errors."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone

import pytest

from engine.pki import load_certificate_file, load_crl_files, validate_chain
from engine.pki.ca import list_certs
from engine.pki.cli import main

T0 = datetime(2031, 3, 1, 9, 30, tzinfo=timezone.utc)


def test_round_trip_init_issue_revoke_crl_list(tmp_path, capsys):
    d = str(tmp_path / "pki")
    clock = lambda: T0  # noqa: E731

    assert main(["--dir", d, "init-ca", "O=Interop Lab, CN=CLI CA", "--key-type", "ecdsa-p384", "--days", "100"], clock=clock) == 0
    assert 'created CA "O=Interop Lab, CN=CLI CA"' in capsys.readouterr().out

    assert main(["issue", "--dir", d, "left.example", "--san", "IP:192.0.2.1"], clock=clock) == 0
    out = capsys.readouterr().out
    assert "issued server certificate" in out and "DNS:left.example, IP:192.0.2.1" in out

    assert main(["--dir", d, "issue", "alice@example.com", "--client", "--key-type", "rsa-2048", "--days", "30"], clock=clock) == 0
    assert "issued client certificate" in capsys.readouterr().out

    assert main(["--dir", d, "revoke", "alice@example.com", "--reason", "key-compromise"], clock=clock) == 0
    assert "revoked" in capsys.readouterr().out

    later = lambda: T0 + timedelta(days=2)  # noqa: E731
    assert main(["--dir", d, "crl", "--days", "14"], clock=later) == 0
    assert "CRL valid for 14 days" in capsys.readouterr().out

    assert main(["--dir", d, "list"], clock=later) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("CA: O=Interop Lab, CN=CLI CA  (ecdsa-p384, until 2031-06-09)")
    assert out[1].split()[:2] == ["NAME", "SERIAL"]
    left_row = next(line for line in out if line.startswith("left.example"))
    alice_row = next(line for line in out if line.startswith("alice@example.com"))
    assert " valid " in left_row and "2031-06-09" in left_row  # clamped to the CA's end
    assert "revoked 2031-03-01" in alice_row and "2031-03-31" in alice_row

    # what the files say agrees with what the CLI said
    entries = list_certs(d)
    assert [e.name for e in entries] == ["left.example", "alice@example.com"]
    assert stat.S_IMODE((tmp_path / "pki" / "private" / "alice@example.com.key").stat().st_mode) == 0o600
    ca_cert = load_certificate_file(tmp_path / "pki" / "ca.crt")[0]
    crl = load_crl_files([tmp_path / "pki" / "crl.pem"])
    alice = load_certificate_file(tmp_path / "pki" / "certs" / "alice@example.com.crt")[0]
    left = load_certificate_file(tmp_path / "pki" / "certs" / "left.example.crt")[0]
    assert not validate_chain(alice, [], [ca_cert], crl, later()).ok
    assert validate_chain(left, [], [ca_cert], crl, later()).ok

    # later: alice's certificate has expired, the list says so
    assert main(["--dir", d, "list"], clock=lambda: T0 + timedelta(days=60)) == 0
    out = capsys.readouterr().out
    assert "expired" not in next(line for line in out.splitlines() if line.startswith("alice"))  # revoked wins
    assert main(["--dir", d, "issue", "bob.example", "--days", "1"], clock=clock) == 0
    capsys.readouterr()
    assert main(["--dir", d, "list"], clock=lambda: T0 + timedelta(days=3)) == 0
    assert "expired" in next(line for line in capsys.readouterr().out.splitlines() if line.startswith("bob.example"))


@pytest.mark.parametrize("argv", [["--help"], ["init-ca", "--help"], ["issue", "--help"], ["revoke", "--help"], ["crl", "--help"],
                                  ["list", "--help"]])
def test_help_on_every_command(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ipsec-console pki")
    assert "--dir" in out


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["issue"]) == 2
    assert main(["init-ca", "X", "--key-type", "dsa-1024"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_errors_are_one_line_and_exit_1(tmp_path, capsys):
    d = str(tmp_path / "pki")
    assert main(["--dir", d, "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ipsec-console pki: error: ") and "no CA here" in err

    assert main(["--dir", d, "init-ca", "Test CA"]) == 0
    assert main(["--dir", d, "init-ca", "Test CA"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists (use --force" in err

    assert main(["--dir", d, "issue", "gw.example", "--san", "IP:300.1.1.1"]) == 1
    assert "not an IP address" in capsys.readouterr().err
    assert main(["--dir", d, "revoke", "nobody.example"]) == 1
    assert main(["--dir", d, "issue", "gw.example", "--ca-passphrase-file", str(tmp_path / "missing")]) == 1
    assert "cannot read passphrase" in capsys.readouterr().err


def test_passphrase_files(tmp_path, capsys):
    d = str(tmp_path / "pki")
    pw = tmp_path / "ca.pass"
    pw.write_text("s3cret ca\n")
    kp = tmp_path / "key.pass"
    kp.write_text("key pass\n")
    assert main(["--dir", d, "init-ca", "Enc CA", "--passphrase-file", str(pw)]) == 0
    assert main(["--dir", d, "issue", "gw.example"]) == 1
    assert "encrypted and no passphrase" in capsys.readouterr().err
    assert main(["--dir", d, "issue", "gw.example", "--ca-passphrase-file", str(pw), "--key-passphrase-file", str(kp)]) == 0
    key = (tmp_path / "pki" / "private" / "gw.example.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in key
    out = capsys.readouterr().out
    assert "s3cret" not in out and "key pass" not in out
    (tmp_path / "empty").write_text("")
    assert main(["--dir", d, "crl", "--ca-passphrase-file", str(tmp_path / "empty")]) == 1
    assert "passphrase file is empty" in capsys.readouterr().err


def test_days_past_the_year_9999_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    d = str(tmp_path / "pki")
    assert main(["--dir", d, "init-ca", "Test CA", "--days", "99999999"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--days 99999999 is too long" in err
    assert not (tmp_path / "pki" / "ca.crt").exists()

    assert main(["--dir", d, "init-ca", "Test CA", "--days", "100"], clock=lambda: T0) == 0
    assert main(["--dir", d, "crl", "--days", "999999999"], clock=lambda: T0) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--days 999999999 is too long" in err
    assert not (tmp_path / "pki" / "crl.pem").exists()

    # issue clamps to the CA's end, however long the wish
    assert main(["--dir", d, "issue", "gw.example", "--days", "999999999"], clock=lambda: T0) == 0
    assert list_certs(d)[0].not_after == load_certificate_file(tmp_path / "pki" / "ca.crt")[0].not_valid_after_utc


def test_common_name_over_64_characters_is_a_clear_error(tmp_path, capsys):
    d = str(tmp_path / "pki")
    assert main(["--dir", d, "init-ca", "Test CA"]) == 0
    capsys.readouterr()
    cn = "a" * 70 + ".example"
    assert main(["--dir", d, "issue", cn, "--name", "long"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ipsec-console pki: error: common name") and "64" in err
    assert not (tmp_path / "pki" / "certs" / "long.crt").exists()
    assert not (tmp_path / "pki" / "private" / "long.key").exists()


@pytest.mark.parametrize(
    "damage, says",
    [
        (('serial = "', 'serial = "zz'), "certificate entry 1"),
        (("revoked = ", 'revoked = "yesterday"\n#'), "certificate entry 1"),
        (("name = ", "name = 5\n#"), "certificate entry 1"),
        (("crl_number = ", 'crl_number = "x"\n#'), "crl_number"),
        (("crl_days = ", "crl_days = 0\n#"), "crl_days"),
        (('reason = "unspecified"', 'reason = "because"'), "revocation reason"),
    ],
)
def test_a_damaged_index_is_a_clear_error_for_every_command(tmp_path, capsys, damage, says):
    d = str(tmp_path / "pki")
    assert main(["--dir", d, "init-ca", "Test CA"]) == 0
    assert main(["--dir", d, "issue", "a.example"]) == 0
    assert main(["--dir", d, "revoke", "a.example"]) == 0
    index = tmp_path / "pki" / "index.toml"
    text = index.read_text()
    assert damage[0] in text
    index.write_text(text.replace(damage[0], damage[1], 1))
    capsys.readouterr()
    for argv in (["list"], ["crl"], ["issue", "b.example"], ["revoke", "a.example"], ["revoke", "ab"]):
        assert main(["--dir", d, *argv]) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(index) in err and says in err, (argv, err)
    assert not (tmp_path / "pki" / "certs" / "b.example.crt").exists()


@pytest.mark.parametrize("uri", ["http://ü.example/ca.crl", "not a uri", "", "http://crl.example/a b.crl"])
def test_a_crl_uri_peers_cannot_fetch_is_refused_by_init_ca(tmp_path, capsys, uri):
    # was: accepted, then a ValueError traceback on every issue, or a junk CRL URI in every certificate
    d = str(tmp_path / "pki")
    assert main(["--dir", d, "init-ca", "Test CA", "--crl-uri", uri]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--crl-uri: CRL URI" in err and "not an ASCII URI" in err
    assert not (tmp_path / "pki" / "ca.crt").exists()


def test_a_bad_crl_uri_in_the_index_is_a_clear_error_on_issue(tmp_path, capsys):
    d = str(tmp_path / "pki")
    assert main(["--dir", d, "init-ca", "Test CA", "--crl-uri", "http://crl.example/ca.crl"]) == 0
    index = tmp_path / "pki" / "index.toml"
    index.write_text(index.read_text().replace("http://crl.example/", "http://ü.example/"))
    capsys.readouterr()
    assert main(["--dir", d, "issue", "gw.example"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "index.toml: [ca] crl_uri: CRL URI" in err
    assert not (tmp_path / "pki" / "certs" / "gw.example.crt").exists()
    assert main(["--dir", d, "issue", "gw.example"]) == 1  # nothing half-written either
    assert "already exists" not in capsys.readouterr().err


def test_a_file_that_cannot_be_written_is_named_not_its_temp_file(tmp_path, capsys):
    d = tmp_path / "pki"
    assert main(["--dir", str(d), "init-ca", "Test CA"]) == 0
    (d / "certs").rmdir()  # a CA folder someone tidied up
    capsys.readouterr()
    assert main(["--dir", str(d), "issue", "gw.example"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{d / 'certs' / 'gw.example.crt'}: cannot write (No such file or directory)" in err
    assert ".tmp" not in err
    assert not (d / "private" / "gw.example.key").exists()  # nothing half-issued


def test_init_ca_that_fails_half_way_leaves_no_ca_key(tmp_path, capsys):
    d = tmp_path / "pki"
    d.mkdir()
    (d / "ca.crt").symlink_to(tmp_path / "gone.crt")  # dangling: not "existing", yet in the way
    assert main(["--dir", str(d), "init-ca", "Test CA"]) == 1
    assert "ca.crt" in capsys.readouterr().err
    assert not (d / "private" / "ca.key").exists()
    (d / "ca.crt").unlink()
    assert main(["--dir", str(d), "init-ca", "Test CA"]) == 0  # the retry works


@pytest.mark.parametrize("name", ["Acme, Inc. Root CA", "R&D \\ Lab CA", 'The "Best" CA', "#1 CA"])
def test_a_plain_ca_name_is_taken_as_it_is(tmp_path, capsys, name):
    # "Acme, Inc. Root CA" was refused as a bad DN; a backslash was silently dropped
    d = tmp_path / "pki"
    assert main(["--dir", str(d), "init-ca", name]) == 0
    cert = load_certificate_file(d / "ca.crt")[0]
    assert [a.value for a in cert.subject] == [name]
    assert main(["--dir", str(d), "issue", "gw.example"]) == 0
    assert [a.value for a in load_certificate_file(d / "certs" / "gw.example.crt")[0].issuer] == [name]


def test_a_ca_certificate_that_is_not_a_ca_is_refused(tmp_path, capsys):
    # a server certificate and its key copied over ca.crt/ca.key: issue signed happily, openssl then
    # said "unable to get issuer certificate" for everything it issued
    d = tmp_path / "pki"
    assert main(["--dir", str(d), "init-ca", "Test CA"]) == 0
    assert main(["--dir", str(d), "issue", "gw.example"]) == 0
    (d / "ca.crt").write_bytes((d / "certs" / "gw.example.crt").read_bytes())
    (d / "private" / "ca.key").write_bytes((d / "private" / "gw.example.key").read_bytes())
    capsys.readouterr()
    for argv in (["issue", "other.example"], ["revoke", "gw.example"], ["crl"]):
        assert main(["--dir", str(d), *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{d / 'ca.crt'} is not a CA certificate" in err
    assert not (d / "certs" / "other.example.crt").exists() and not (d / "crl.pem").exists()


def test_days_past_the_cas_end_is_said_not_silently_cut(tmp_path, capsys):
    """issue --days longer than the CA has left gave a certificate ending with the CA and a message
    that only showed the (earlier) date: the admin found out at expiry."""
    d = str(tmp_path / "pki")
    assert main(["--dir", d, "init-ca", "Test CA", "--days", "100"], clock=lambda: T0) == 0
    capsys.readouterr()
    assert main(["--dir", d, "issue", "gw.example", "--days", "365"], clock=lambda: T0) == 0
    out, err = capsys.readouterr()
    ca_end = load_certificate_file(tmp_path / "pki" / "ca.crt")[0].not_valid_after_utc
    assert list_certs(d)[0].not_after == ca_end
    assert "--days 365 reaches past the CA's own end" in err and f"{ca_end:%Y-%m-%d}" in err, err
    assert main(["--dir", d, "issue", "gw2.example", "--days", "30"], clock=lambda: T0) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["--dir", d, "issue", "gw3.example", "--days", "999999999"], clock=lambda: T0) == 0
    assert "reaches past the CA's own end" in capsys.readouterr().err


def test_a_missing_parent_folder_is_named(tmp_path, capsys):
    assert main(["--dir", str(tmp_path / "no" / "such" / "pki"), "init-ca", "Test CA"]) == 1
    err = capsys.readouterr().err
    assert f"the folder {tmp_path / 'no'} does not exist" in err and err.count("\n") == 1, err
    assert not (tmp_path / "no").exists()


def test_a_passphrase_file_without_end_is_refused(tmp_path, capsys):
    """--passphrase-file /dev/zero read the device into memory without end (readline never finds a
    line break); a passphrase over 1023 bytes was a ValueError traceback from the key encryption."""
    assert main(["--dir", str(tmp_path / "pki"), "init-ca", "Test CA", "--passphrase-file", "/dev/zero"]) == 1
    assert "longer than 1023 bytes" in capsys.readouterr().err
    (tmp_path / "pw").write_bytes(b"x" * 1024 + b"\n")
    assert main(["--dir", str(tmp_path / "pki"), "init-ca", "Test CA", "--passphrase-file", str(tmp_path / "pw")]) == 1
    assert "longer than 1023 bytes" in capsys.readouterr().err
    (tmp_path / "pw").write_bytes(b"x" * 1023 + b"\n")
    assert main(["--dir", str(tmp_path / "pki"), "init-ca", "Test CA", "--passphrase-file", str(tmp_path / "pw")]) == 0


@pytest.mark.parametrize("command", [["list"], ["issue", "gw.example"], ["revoke", "gw"], ["crl"]])
def test_a_missing_ca_folder_is_named(tmp_path, capsys, command):
    assert main(["--dir", str(tmp_path / "nope"), *command]) == 1
    err = capsys.readouterr().err
    assert f"the folder {tmp_path / 'nope'} does not exist" in err and err.count("\n") == 1, err
