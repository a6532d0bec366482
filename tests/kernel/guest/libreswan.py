"""Libreswan's pluto in a namespace of the guest, with its own XFRM backend: the host's kernel has no
ESP, so only here can pluto install CHILD SAs. The unpacked tree of .ci/install-libreswan is on the
host's root, which the guest shares; as in tests/interop/libreswan.py, it is bind-mounted over
/usr/libexec in a private mount namespace (pluto insists on /usr/libexec/ipsec/addconn), and every
file (config, secrets, NSS db, control socket, log) is in the test's work dir."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from .lab import LEFT_INNER, LEFT_OUTER, RIGHT_INNER, RIGHT_OUTER
from .peers import PSK, Conn, stop_child

ROOT = Path(os.environ.get("LIBRESWAN_ROOT", "/opt/libreswan-4.10"))
LIBEXEC = ROOT / "usr/libexec/ipsec"
# Libreswan's names for the proposals peers.Conn carries (strongSwan syntax, which ours reads)
PHASE2 = {"aes256gcm16-x25519": "aes_gcm256", "aes256gcm16": "aes_gcm256", "aes128-sha256": "aes128-sha2_256",
          "sha256": "sha2_256"}


def missing() -> str | None:
    if not (LIBEXEC / "pluto").exists():
        return f"Libreswan is missing from {ROOT}: run .ci/install-libreswan on the host"
    if subprocess.run(["which", "certutil"], capture_output=True).returncode != 0:
        return "certutil is missing: apt-get install -y libnss3-tools"
    return None


def ipsec_conf(conns: list[Conn]) -> str:
    """pluto on the right: each connection as peers.Conn describes it (PFS when its proposal names
    a group, as Libreswan's pfs=yes then uses the IKE SA's group, x25519 here). ``Conn.encap`` is
    ours alone: pluto picks a connection for IKE_SA_INIT by address only and keeps that one's
    ``encapsulation=yes`` after it switches by ID, which would put every connection in UDP."""
    out = ["config setup\n    plutodebug=base\n"]
    for c in conns:
        tunnel = c.mode == "tunnel"
        out.append("\n".join(filter(None, [
            f"conn {c.name}",
            "    ikev2=yes",
            "    authby=secret",
            f"    left={RIGHT_OUTER}",
            f"    leftid=@{c.id('right')}",
            f"    leftsubnet={RIGHT_INNER}/32" if tunnel else "",
            f"    right={LEFT_OUTER}",
            f"    rightid=@{c.id('left')}",
            f"    rightsubnet={LEFT_INNER}/32" if tunnel else "",
            f"    type={c.mode}",
            f"    phase2={c.protocol}",
            "    ike=aes_gcm256-sha2_256-dh31",
            f"    phase2alg={PHASE2[c.proposal]}",
            f"    pfs={'yes' if c.proposal.endswith('x25519') else 'no'}",
            # pluto's default updown is /usr/lib/ipsec/_updown, strongSwan's on this machine (it fails
            # the CHILD SA); the lab's static routes are all the routing these tests need
            "    leftupdown=/bin/true",
            "    retransmit-timeout=30s",
            "    auto=add",
        ])) + "\n")
    return "\n".join(out)


class Pluto:
    def __init__(self, ns: str, workdir: Path, conns: list[Conn]) -> None:
        self.ns = ns
        self.dir = workdir / "pluto"
        self.conns = conns
        self.proc: subprocess.Popen | None = None

    @property
    def ctl(self) -> str:
        return str(self.dir / "run/pluto.ctl")

    def start(self) -> Pluto:
        d = self.dir
        (d / "run").mkdir(parents=True, exist_ok=True)
        (d / "nss").mkdir(exist_ok=True)
        (d / "ipsec.conf").write_text(ipsec_conf(self.conns))
        secrets = d / "ipsec.secrets"
        secrets.write_text("".join(f'@{c.id("right")} @{c.id("left")} : PSK "{PSK}"\n' for c in self.conns))
        secrets.chmod(0o600)
        subprocess.run(["certutil", "-N", "-d", f"sql:{d}/nss", "--empty-password"], check=True, capture_output=True)
        with open(d / "pluto.out", "wb") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                 'mount --bind "$1/usr/libexec" /usr/libexec && shift && exec "$@"', "sh", str(ROOT),
                 str(LIBEXEC / "pluto"), "--nofork", "--config", str(d / "ipsec.conf"), "--rundir", str(d / "run"),
                 "--dumpdir", str(d / "run"), "--secretsfile", str(secrets), "--ipsecdir", str(d),
                 "--nssdir", str(d / "nss"), "--logfile", str(d / "pluto.log"), "--log-no-audit", "--no-dnssec"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60  # slow under emulation
        while not os.path.exists(self.ctl):
            if self.proc.poll() is not None:
                raise AssertionError(f"pluto exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"pluto's control socket never appeared:\n{self.log()}")
            time.sleep(0.1)
        # The socket exists from bind(), before listen(): a connect in between is refused.
        while True:
            done = subprocess.run(["ip", "netns", "exec", self.ns, str(LIBEXEC / "addconn"), "--ctlsocket", self.ctl,
                                   "--config", str(d / "ipsec.conf"), "--autoall"], capture_output=True, text=True)
            if not done.returncode or "refused" not in (done.stdout + done.stderr).lower() \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if done.returncode:
            raise AssertionError(f"addconn failed ({done.returncode}): {done.stdout}{done.stderr}\n{self.log()}")
        self.whack("--listen")
        return self

    def whack(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        """whack's exit status is that of the last state it saw, not whether the command worked: the
        tests look at the kernels instead."""
        return subprocess.run([str(LIBEXEC / "whack"), "--ctlsocket", self.ctl, *args], capture_output=True,
                              text=True, timeout=timeout)

    def log(self) -> str:
        parts = []
        for name in ("pluto.out", "pluto.log"):
            try:
                parts.append((self.dir / name).read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def events(self) -> str:
        """The log without plutodebug's lines (those have "| " after the time stamp)."""
        return "\n".join(line for line in self.log().splitlines() if not re.match(r"[^|]*: \| ", line))

    def stop(self) -> int | None:
        return stop_child(self.proc)
