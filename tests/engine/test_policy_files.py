"""`check` and policy loading on hostile input (issue 15 item 6): regular files
only, a size limit, no traceback on any input, short excerpts in errors, a
BOM, bounded time on pathological keys; the secrets file's owner (item 7).

Every test runs under an alarm: an input that hangs or takes minutes fails.
/dev/zero itself is never read: a FIFO fed by the test stands for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.policy import PolicyError, load_policy, parse_policy, run_check
from engine.policy.tomlfile import MAX_FILE_BYTES, MAX_KEY_DEPTH

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = (ROOT / "sample-configs" / "site-to-site.toml").read_text()


@pytest.fixture(autouse=True)
def alarm():
    """Fail (instead of hanging CI) when one test takes more than 20 s."""
    def expired(signum, frame):
        raise TimeoutError("the input took more than 20 s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _errors(findings) -> list[str]:
    return [f.format() for f in findings if f.severity == "error"]


@contextlib.contextmanager
def endless_fifo(path: Path, limit: int = 64 << 20):
    """A FIFO a thread fills with zeros (at most ``limit`` bytes): /dev/zero, bounded."""
    os.mkfifo(path)
    stop = threading.Event()

    def feed():
        try:
            fd = os.open(path, os.O_WRONLY)  # blocks until a reader opens it
        except OSError:
            return
        sent = 0
        try:
            while not stop.is_set() and sent < limit:
                sent += os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        finally:
            os.close(fd)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        yield path
    finally:
        stop.set()
        with contextlib.suppress(OSError):  # unblock a writer still waiting for a reader
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        t.join(5)


def test_a_fifo_is_refused_without_reading_or_hanging(tmp_path: Path):
    fifo = tmp_path / "policy.toml"
    os.mkfifo(fifo)  # no writer: opening it for reading would block
    [f] = run_check(fifo)
    assert f.severity == "error" and "not a regular file (a FIFO)" in f.message


def test_an_endless_stream_is_refused_before_it_is_read(tmp_path: Path):
    with endless_fifo(tmp_path / "zero.toml") as fifo:
        [f] = run_check(fifo)
    assert "not a regular file" in f.message


def test_a_device_is_refused():
    with pytest.raises(PolicyError, match="not a regular file \\(a character device\\)"):
        load_policy("/dev/null")


def test_a_file_over_the_size_limit_is_refused_without_reading_it(tmp_path: Path):
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing to read, only a size
    [f] = run_check(big)
    assert f.message == f"cannot read the policy: too large: {MAX_FILE_BYTES + 1} bytes, the limit is " \
                        f"{MAX_FILE_BYTES} bytes"
    with pytest.raises(PolicyError, match="too large"):
        parse_policy("# " + "x" * (MAX_FILE_BYTES + 10))


@pytest.mark.parametrize("text,what", [
    ("x = " + "[" * 100_000 + "]" * 100_000 + "\n", "nested arrays"),
    ("x = " + "{a = " * 50_000 + "1" + "}" * 50_000 + "\n", "nested inline tables"),
    ("x = [" + "[1, " * 20_000 + "2" + "]" * 20_001 + "\n", "nested arrays with items"),
], ids=["arrays", "inline-tables", "arrays-with-items"])
def test_deep_nesting_is_a_finding_not_a_recursion_error(text: str, what: str):
    with pytest.raises(PolicyError) as exc:
        parse_policy(text)
    [f] = exc.value.findings
    assert "nested too deeply" in f.message, what


def test_pathological_dotted_keys_are_refused_in_bounded_time(tmp_path: Path):
    # 100,000 dotted names: tomllib alone takes minutes (quadratic in a key's depth).
    for text in ("a." * 100_000 + "b = 1\n", "[" + "a." * 100_000 + "b]\n",
                 "x = { " + "a . " * 100_000 + "b = 1 }\n", '"q".' * 50_000 + '"r" = 1\n'):
        p = tmp_path / "deep.toml"
        p.write_text(text)
        [f] = run_check(p)
        assert f.severity == "error" and f"more than {MAX_KEY_DEPTH} dotted names" in f.message
        assert f.line == 1 and len(f.format()) < 300
    # A 40 KB apply-policy of dotted keys (3.6 s of tomllib before).
    with pytest.raises(PolicyError, match="dotted names"):
        parse_policy("[engine]\n" + "k." * 20_000 + "v = 1\n")


def test_dotted_keys_a_policy_uses_and_dotted_strings_are_fine():
    deep = ".".join(["a"] * MAX_KEY_DEPTH) + " = 1\n"
    with pytest.raises(PolicyError) as exc:
        parse_policy(deep)
    assert "unknown section 'a'" in str(exc.value)  # parsed: only the policy's own check speaks
    parse_policy(SAMPLE.replace('id = "branch.example.org"',
                                'id = "C=DE, 1.3.6.1.4.1.311.60.2.1.3=DE, O=a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t, CN=x"'),
                 str(ROOT / "sample-configs" / "site-to-site.toml"), load_secrets=False)


def test_huge_values_and_keys_are_quoted_as_a_short_excerpt():
    value = "v" * 900_000
    for text in (f'[engine]\ndatapath = "{value}"\n', f'[engine]\n{"k" * 900_000} = 1\n',
                 f'[connections.c]\nlocal_addrs = ["{value}"]\n', f'[engine]\nike_port = "{value}"\n'):
        with pytest.raises(PolicyError) as exc:
            parse_policy(text)
        for f in exc.value.findings:
            assert len(f.format()) < 1000, f.format()[:200]


def test_many_problems_are_listed_up_to_a_limit():
    text = "[engine]\n" + "".join(f"unknown_{i} = 1\n" for i in range(20_000))
    with pytest.raises(PolicyError) as exc:
        parse_policy(text)
    assert len(exc.value.findings) <= 201
    assert any("more problems than the first" in f.message for f in exc.value.findings)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path):
    p = tmp_path / "site-to-site.toml"
    p.write_bytes(b"\xef\xbb\xbf" + SAMPLE.encode())
    secrets = ROOT / "sample-configs" / "site-to-site.secrets.toml"
    (tmp_path / secrets.name).write_bytes(secrets.read_bytes())
    (tmp_path / secrets.name).chmod(0o600)
    policy = load_policy(p)
    assert policy.connections and _errors(run_check(p)) == []
    assert parse_policy("\ufeff" + SAMPLE, str(p)).connections == policy.connections


def test_bytes_that_are_not_utf8_are_named_with_their_line(tmp_path: Path):
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'[engine]\n# caf\xe9\n')
    [f] = run_check(p)
    assert f.message == "cannot read the policy: not UTF-8 text: byte 0xe9 at line 2, column 6"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.text(alphabet=st.sampled_from('[]{}=."\'#\n ab1,\\\x00\ufeff'), max_size=300))
def test_no_traceback_on_any_input(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("fuzz") / "p.toml"
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    for f in run_check(p):  # findings, never an exception
        assert f.format()


@pytest.mark.parametrize("kind", ["fifo", "nested-arrays", "nested-inline-tables", "dotted-keys", "huge"])
def test_check_command_on_hostile_files_exits_1_in_a_few_lines(tmp_path: Path, kind: str):
    """The whole command, findings placed on lines for the output included (it reads the file too)."""
    p = tmp_path / "policy.toml"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "huge":
        with open(p, "wb") as f:
            f.truncate(20_000_000)
    else:
        p.write_text({"nested-arrays": "x = " + "[" * 100_000 + "]" * 100_000 + "\n",
                      "nested-inline-tables": "x = " + "{a = " * 50_000 + "1" + "}" * 50_000 + "\n",
                      "dotted-keys": "a." * 100_000 + "b = 1\n"}[kind])
    r = subprocess.run([sys.executable, "-m", "console", "check", str(p)], cwd=ROOT, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.stdout) + len(r.stderr) < 2048 and "error:" in r.stdout + r.stderr


# -- the secrets file (item 7) ----------------------------------------------------------------------

def _secrets_policy(tmp_path: Path) -> Path:
    secrets = ROOT / "sample-configs" / "site-to-site.secrets.toml"
    real = tmp_path / "keys" / secrets.name
    real.parent.mkdir()
    real.write_bytes(secrets.read_bytes())
    real.chmod(0o600)
    p = tmp_path / "site-to-site.toml"
    p.write_text(SAMPLE)
    return p


def test_a_secrets_file_that_is_a_symbolic_link_is_refused(tmp_path: Path):
    p = _secrets_policy(tmp_path)
    (tmp_path / "site-to-site.secrets.toml").symlink_to(tmp_path / "keys" / "site-to-site.secrets.toml")
    with pytest.raises(PolicyError, match="symbolic link"):
        load_policy(p)
    # `check` loads it and warns (lint rule secrets-owner).
    assert [f.rule for f in run_check(p) if f.severity != "info"] == ["secrets-owner"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user; CI runs as root")
def test_a_secrets_file_owned_by_another_user_is_refused(tmp_path: Path):
    p = _secrets_policy(tmp_path)
    target = tmp_path / "site-to-site.secrets.toml"
    (tmp_path / "keys" / target.name).rename(target)
    os.chown(target, 4242, 4242)
    with pytest.raises(PolicyError, match="owned by uid 4242, not by root or by the user running the engine"):
        load_policy(p)
    os.chown(target, 0, 0)
    assert load_policy(p).secrets.ike


def test_the_lab_sample_loads_as_shipped():
    policy = load_policy(ROOT / "sample-configs" / "lab.toml")
    assert policy.engine.datapath == "lab" and policy.secrets.ike
