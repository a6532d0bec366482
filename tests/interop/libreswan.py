"""A private Libreswan pluto in a namespace (config, NSS db and run dir in a
work dir; the unpacked tree bind-mounted over /usr/libexec in a private
mount namespace, because pluto insists on /usr/libexec/ipsec/addconn)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.interop.lab import PSK, SIDES, Lab

ROOT = Path(os.environ.get("LIBRESWAN_ROOT", "/opt/libreswan-4.10"))
LIBEXEC = ROOT / "usr/libexec/ipsec"

CONF = """\
config setup
    plutodebug=base

conn psk-tunnel
    ikev2=yes
    authby=secret
    left={local_addr}
    leftid=@{local_id}
    leftsubnet={local_ts}
    right={remote_addr}
    rightid=@{remote_id}
    rightsubnet={remote_ts}
    ike=aes_gcm256-sha2_256-dh31,aes128-sha2_256-modp2048
    esp=aes_gcm256,aes128-sha2_256
    auto=add
"""


def require_libreswan() -> None:
    if not (LIBEXEC / "pluto").exists():
        pytest.skip(f"Libreswan is missing from {ROOT}: run .ci/install-libreswan")
    if subprocess.run(["which", "certutil"], capture_output=True).returncode != 0:
        pytest.skip("certutil is missing: apt-get install -y libnss3-tools")


class Pluto:
    def __init__(self, lab: Lab, side: str, workdir: Path) -> None:
        self.lab = lab
        self.side = side
        self.dir = workdir / f"pluto-{side}"
        me = SIDES[side]
        peer = SIDES["right" if side == "left" else "left"]
        self.conf = CONF.format(local_addr=me["addr"], local_id=me["id"], local_ts=f"{me['inner']}/32",
                                remote_addr=peer["addr"], remote_id=peer["id"], remote_ts=f"{peer['inner']}/32")
        self.proc: subprocess.Popen | None = None

    @property
    def ctl(self) -> str:
        return str(self.dir / "run/pluto.ctl")

    def start(self) -> "Pluto":
        d = self.dir
        (d / "run").mkdir(parents=True, exist_ok=True)
        (d / "nss").mkdir(exist_ok=True)
        (d / "ipsec.conf").write_text(self.conf)
        secrets = d / "ipsec.secrets"
        secrets.write_text(f'@left.example @right.example : PSK "{PSK}"\n')
        secrets.chmod(0o600)
        subprocess.run(["certutil", "-N", "-d", f"sql:{d}/nss", "--empty-password"], check=True,
                       capture_output=True)
        ns = self.lab.ns[self.side]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount --bind "$1/usr/libexec" /usr/libexec && shift && exec "$@"', "sh", str(ROOT),
             str(LIBEXEC / "pluto"), "--nofork", "--config", str(d / "ipsec.conf"), "--rundir", str(d / "run"),
             "--dumpdir", str(d / "run"), "--secretsfile", str(secrets), "--ipsecdir", str(d),
             "--nssdir", str(d / "nss"), "--logfile", str(d / "pluto.log"), "--log-no-audit", "--no-dnssec"],
            stdin=subprocess.DEVNULL, stdout=open(d / "pluto.out", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        for _ in range(100):
            if os.path.exists(self.ctl):
                break
            if self.proc.poll() is not None:
                raise RuntimeError((d / "pluto.out").read_text())
            time.sleep(0.05)
        else:
            raise RuntimeError("pluto's control socket never appeared")
        # The socket file exists from pluto's bind(), before its listen(): a connect in between is
        # refused. Try again briefly.
        deadline = time.monotonic() + 10
        while True:
            done = subprocess.run(["ip", "netns", "exec", ns, str(LIBEXEC / "addconn"), "--ctlsocket", self.ctl,
                                   "--config", str(d / "ipsec.conf"), "--autoall"], capture_output=True, text=True)
            refused = "refused" in (done.stdout + done.stderr).lower()
            if not done.returncode or not refused or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        done.check_returncode()
        self.whack("--listen")
        return self

    def whack(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([str(LIBEXEC / "whack"), "--ctlsocket", self.ctl, *args], capture_output=True,
                              text=True, timeout=timeout)

    def log(self) -> str:
        try:
            return (self.dir / "pluto.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
