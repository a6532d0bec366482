"""Two of our daemons on loopback, for the ops tests (no root, no namespaces).

Each pair gets two addresses of this process's loopback /24 (tests/loopback.py)
picked by a counter, so neither another test run at the same time nor an
earlier pair of this run (a daemon slow to exit) shares its address and port.
Both daemons run ``--datapath none`` unless told otherwise: IKE and CHILD SAs
are negotiated, nothing is installed.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.interop.lab import wait_for  # noqa: F401  (re-exported for the ops tests)
from tests.loopback import addr

ROOT = Path(__file__).resolve().parents[2]
PSK = "ops-test-psk-not-secret-0123456789"
_pairs = itertools.count()
PAIR_HOSTS = range(101, 255)
"""Hosts of the process's /24 the pairs take in turn (1-100 are other tests' single endpoints)."""


def addresses() -> tuple[str, str]:
    n = next(_pairs) * 2 % (len(PAIR_HOSTS) - 1)
    return addr(PAIR_HOSTS[n]), addr(PAIR_HOSTS[n + 1])


def policy(me: str, peer: str, conns: dict[str, str], *, initiate: bool, extra_engine: str = "") -> str:
    """A policy with one PSK connection per entry of ``conns`` (name -> inner /32 of the peer side)."""
    parts = [textwrap.dedent(f"""\
        # A test policy: comments must survive edits.
        [engine]
        datapath = "userspace"
        listen = ["{me}"]
        ike_port = 25700
        natt_port = 25701
        secrets = "secrets.toml"
        {extra_engine}
        """)]
    for i, (name, esp) in enumerate(conns.items()):
        a, b = ("198.51.100", "198.51.100")
        mine, theirs = (f"{a}.{10 + i}/32", f"{b}.{130 + i}/32")
        if not initiate:
            mine, theirs = theirs, mine
        parts.append(textwrap.dedent(f"""\
            [connections.{name}]
            local_addrs = ["{me}"]
            remote_addrs = ["{peer}"]
            remote_port = 25700
            remote_natt_port = 25701
            local = {{ auth = "psk", id = "{name}.{'left' if initiate else 'right'}.example" }}
            remote = {{ auth = "psk", id = "{name}.{'right' if initiate else 'left'}.example" }}

            [connections.{name}.children.{name}-{'net' if initiate else 'peer'}]
            local_ts = ["{mine}"]
            remote_ts = ["{theirs}"]
            esp_proposals = ["{esp}"]
            start_action = "{'start' if initiate else 'none'}"
            """))
    return "\n".join(parts)


class Daemon:
    """``python -m console daemon`` in a folder of its own."""

    def __init__(self, folder: Path, text: str, *, notify: str | None = None, env: dict | None = None) -> None:
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "policy.toml"
        self.config.write_text(text)
        secrets = folder / "secrets.toml"
        secrets.write_text(f'[ike.test]\nsecret = "{PSK}"\n')
        secrets.chmod(0o600)
        self.control = folder / "control.sock"
        self.log_path = folder / "daemon.log"
        self.notify = notify
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self, *args: str, datapath: str = "none") -> "Daemon":
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM")}
        if self.notify:
            env["NOTIFY_SOCKET"] = self.notify
        env.update(self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console", "daemon", str(self.config), "--control", str(self.control),
             "--datapath", datapath, *args],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.control.exists():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited: {self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"no control socket: {self.log()}")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "console", *args, "--control", str(self.control)], cwd=ROOT,
                              capture_output=True, text=True, check=check, timeout=30)

    def sas(self) -> list[dict]:
        return json.loads(self.cli("sas", "--json").stdout)["ike_sas"]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)


class NotifySocket:
    """A NOTIFY_SOCKET like systemd's: a unix datagram socket collecting what the service sends."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str = "1", timeout: float = 20.0) -> dict[str, str]:
        """The next message with ``key=value`` (earlier ones are kept in ``messages``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.messages.append(fields)
            if fields.get(key) == value:
                return fields
        raise AssertionError(f"no {key}={value} on the notify socket; got {self.messages}")

    def close(self) -> None:
        self.sock.close()
