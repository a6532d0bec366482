"""Interop lab: two network namespaces joined by veth, a private strongSwan
charon on one side, our daemon on the other (same layout as the shared
harness in ../shared/interop, rewritten here so the suite is self-contained).

    NAME-l  veth0 192.0.2.1/24  <-- veth -->  NAME-r  veth0 192.0.2.2/24
            lo    198.51.100.1/32                     lo    198.51.100.129/32

Nothing is created in the root namespace. Every namespace and process is
removed by the context managers, also when a test fails.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_ALL  # noqa: F401  (skips become failures in CI)

CHARON = "/usr/lib/ipsec/charon"
STRONGSWAN6_ROOT = Path(os.environ.get("IPSEC_CONSOLE_STRONGSWAN6_ROOT", "/var/tmp/strongswan6"))
"""A Debian root with strongSwan 6.1 (ML-KEM, PPK), made by .ci/strongswan6-root."""
APT_STRONGSWAN = ("apt-get install -y strongswan-swanctl strongswan-charon libcharon-extra-plugins "
                  "libcharon-extauth-plugins "
                  "libstrongswan-extra-plugins iproute2 iputils-ping nftables iperf3")
PSK = "interop-psk-not-secret-0123456789"
ROOT = Path(__file__).resolve().parents[2]
SIDES = {
    "left": dict(addr="192.0.2.1", inner="198.51.100.1", id="left.example"),
    "right": dict(addr="192.0.2.2", inner="198.51.100.129", id="right.example"),
}
_names = itertools.count()


def require_lab() -> None:
    """Skip (a failure under IPSEC_CONSOLE_REQUIRE_ALL=1) unless root with strongSwan."""
    if os.geteuid() != 0:
        pytest.skip("interop tests need root (network namespaces): run as root")
    for tool in ("ip", "swanctl", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"'{tool}' is missing: {APT_STRONGSWAN}")
    if not os.path.exists(CHARON):
        pytest.skip(f"strongSwan's charon is missing: {APT_STRONGSWAN}")


def require_charon_plugins(*names: str) -> None:
    """Skip (a failure under IPSEC_CONSOLE_REQUIRE_ALL=1) unless charon has these plugins (eap-mschapv2
    comes with libcharon-extauth-plugins, not with the packages the other tests need)."""
    require_lab()
    for name in names:
        if not os.path.exists(f"/usr/lib/ipsec/plugins/libstrongswan-{name}.so"):
            pytest.skip(f"charon's {name} plugin is missing: {APT_STRONGSWAN}")


def require_strongswan6(root: Path = STRONGSWAN6_ROOT) -> Path:
    """Skip (a failure in CI) unless ``root`` holds strongSwan 6's charon."""
    require_lab()
    if not (root / "usr/lib/ipsec/charon").exists():
        pytest.skip(f"no strongSwan 6.1 root at {root}: run .ci/strongswan6-root {root}")
    return root


def sh(*args: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout, **kw)


class Lab:
    def __init__(self) -> None:
        self.name = f"ipc{os.getpid() % 100000}x{next(_names)}"
        self.ns = {"left": f"{self.name}-l", "right": f"{self.name}-r"}

    def up(self) -> "Lab":
        l, r = self.ns["left"], self.ns["right"]
        try:
            sh("ip", "netns", "add", l)
            sh("ip", "netns", "add", r)
            sh("ip", "-n", l, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", r)
            for side, ns in self.ns.items():
                s = SIDES[side]
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                   "net.ipv6.conf.default.disable_ipv6=1")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh("ip", "-n", ns, "addr", "add", f"{s['addr']}/24", "dev", "veth0")
                sh("ip", "-n", ns, "link", "set", "veth0", "up")
                sh("ip", "-n", ns, "addr", "add", f"{s['inner']}/32", "dev", "lo")
            for _ in range(50):
                states = [sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/veth0/operstate").stdout.strip()
                          for ns in self.ns.values()]
                if states == ["up", "up"]:
                    break
                time.sleep(0.1)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for ns in self.ns.values():
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in out.stdout.split():
                # Only ever processes inside our own namespaces.
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            # A test's per-namespace /etc files (ip netns exec mounts /etc/netns/NAME/*) go too.
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)

    def exec(self, side: str, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.ns[side], *cmd, check=check, timeout=timeout)

    def loss(self, percent: int) -> None:
        """Drop PERCENT% of packets arriving on each veth end (nftables numgen)."""
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "ipc_loss"],
                           capture_output=True)
            if percent:
                rules = ("table inet ipc_loss {\n  chain input {\n"
                         "    type filter hook input priority -300; policy accept;\n"
                         f"    iifname \"veth0\" numgen random mod 100 < {percent} counter drop\n  }}\n}}\n")
                sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=rules)

    def ping(self, side: str, dst: str, count: int = 3, interval: float = 0.2, timeout: float = 30,
             check: bool = True) -> subprocess.CompletedProcess:
        src = SIDES[side]["inner"]
        return self.exec(side, "ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "2",
                         "-I", src, dst, check=check, timeout=timeout)


@contextlib.contextmanager
def lab():
    require_lab()
    lab = Lab().up()
    try:
        yield lab
    finally:
        lab.down()


SWANCTL_CONF = """\
connections {{
  psk-tunnel {{
    version = 2
    local_addrs = {local_addr}
    remote_addrs = {remote_addr}
    proposals = {proposals}
    encap = {encap}
    dpd_delay = {dpd_delay}
    rekey_time = {rekey_time}
    local {{
      auth = {auth}
      id = {local_id}{local_certs}
    }}
    remote {{
      auth = {auth}
      id = {remote_id}
    }}{conn_extra}
    children {{
      psk-tunnel {{
        mode = {mode}
        local_ts = {local_ts}
        remote_ts = {remote_ts}
        esp_proposals = {esp_proposals}
        rekey_time = {child_rekey_time}
        start_action = {start_action}
        dpd_action = {dpd_action}
      }}
    }}
  }}
}}
secrets {{
  ike-interop {{
    id-left = left.example
    id-right = right.example
    secret = "{psk}"
  }}{secrets_extra}
}}
"""


class Charon:
    """A private charon in a namespace: its own strongswan.conf, swanctl dir,
    vici socket and /run (bind-mounted in a private mount namespace)."""

    def __init__(self, lab: Lab, side: str, workdir: Path, *, proposals="aes256gcm16-prfsha256-x25519",
                 esp_proposals="aes256gcm16", encap="no", dpd_delay="0s", rekey_time="4h",
                 child_rekey_time="1h", mode="tunnel", start_action="none", dpd_action="clear",
                 debug_keys: bool = False, extra: str = "", retransmit: str = "",
                 certs: dict[str, Path] | None = None, root: Path | None = None, conn_extra: str = "",
                 secrets_extra: str = "") -> None:
        """``root``: run that root's charon (e.g. strongSwan 6.1 from .ci/strongswan6-root) in a
        chroot, as ../shared/interop/strongswan-peer --root does. ``conn_extra`` and
        ``secrets_extra`` are swanctl.conf lines added to the connection and the secrets
        sections (e.g. ``ppk_id = ...`` and a ``ppk-x { ... }`` block)."""
        self.lab = lab
        self.root = root
        self.side = side
        self.dir = workdir / f"charon-{side}"
        self.dir.mkdir(parents=True, exist_ok=True)
        me = SIDES[side]
        peer = SIDES["right" if side == "left" else "left"]
        self.conf = SWANCTL_CONF.format(
            local_addr=me["addr"], remote_addr=peer["addr"], proposals=proposals, encap=encap,
            dpd_delay=dpd_delay, rekey_time=rekey_time, local_id=me["id"], remote_id=peer["id"],
            mode=mode, local_ts=f"{me['inner']}/32", remote_ts=f"{peer['inner']}/32",
            esp_proposals=esp_proposals, child_rekey_time=child_rekey_time, start_action=start_action,
            dpd_action=dpd_action, psk=PSK, auth="pubkey" if certs else "psk",
            local_certs=f"\n      certs = {certs['cert'].name}" if certs else "",
            conn_extra=textwrap.indent("\n" + conn_extra.strip(), " " * 4) if conn_extra.strip() else "",
            secrets_extra=textwrap.indent("\n" + secrets_extra.strip(), " " * 2) if secrets_extra.strip() else "")
        self.certs = certs or {}
        levels = "ike = 4\n      chd = 4" if debug_keys else "ike = 2"
        self.strongswan_conf = textwrap.dedent(f"""\
            charon {{
              load_modular = no
              load = random nonce drbg aes sha1 sha2 md5 hmac gcm chapoly cmac xcbc ctr kdf curve25519 gmp openssl pem pkcs1 pkcs8 x509 pubkey revocation constraints kernel-libipsec kernel-netlink socket-default vici
              install_routes = yes
              {retransmit}
              filelog {{
                charon-log {{
                  path = {self.dir}/charon.log
                  append = no
                  flush_line = yes
                  time_format = %H:%M:%S
                  ike_name = yes
                  default = 1
                  {levels}
                  enc = 1
                  net = 1
                  cfg = 2
                  knl = 1
                }}
              }}
              plugins {{
                vici {{ socket = unix://{self.dir}/charon.vici }}
              }}
            }}
            swanctl {{
              load = pem pkcs1 pkcs8 x509 revocation constraints pubkey openssl random
            }}
            {extra}
            """)
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        return {**os.environ, "STRONGSWAN_CONF": str(self.dir / "strongswan.conf"),
                "SWANCTL_DIR": str(self.dir / "swanctl")}

    def start(self) -> "Charon":
        (self.dir / "run").mkdir(exist_ok=True)
        sw = self.dir / "swanctl"
        for sub in ("x509", "x509ca", "x509crl", "private", "conf.d"):
            (sw / sub).mkdir(parents=True, exist_ok=True)
        (sw / "swanctl.conf").write_text(self.conf)
        for kind, sub in (("ca", "x509ca"), ("cert", "x509"), ("key", "private"), ("crl", "x509crl")):
            if kind in self.certs:
                target = sw / sub / self.certs[kind].name
                target.write_bytes(self.certs[kind].read_bytes())
                if kind == "key":
                    target.chmod(0o600)
        (self.dir / "strongswan.conf").write_text(self.strongswan_conf)
        vici = self.dir / "charon.vici"
        vici.unlink(missing_ok=True)
        # charon 5.9.8 hard-codes /var/run/charon.pid: give it a private /run.
        if self.root is None:
            cmd = ["sh", "-c", 'mount --bind "$1" /run && exec "$2"', "sh", str(self.dir / "run"), CHARON]
        else:
            # The work dir appears inside the root at the same path, so every path in the
            # configs stays valid; the mounts live in charon's private mount namespace only.
            root = str(self.root)
            for sub in (str(self.dir).lstrip("/"), "run", "proc", "dev"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            cmd = ["sh", "-c", 'mount --bind "$1" "$3$1" && mount --bind "$1/run" "$3/run" && '
                   'mount -t proc proc "$3/proc" && mount --bind /dev "$3/dev" && '
                   'exec chroot "$3" /usr/lib/ipsec/charon', "sh", str(self.dir), "unused", root]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns[self.side], "unshare", "--mount", "--propagation", "private",
             *cmd],
            env=self.env(), stdin=subprocess.DEVNULL, stdout=open(self.dir / "charon.out", "wb"),
            stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(100):
            if vici.exists():
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"charon exited: {(self.dir / 'charon.out').read_text()}")
            time.sleep(0.05)
        else:
            raise RuntimeError("charon's vici socket never appeared")
        # The socket file exists from charon's bind(), before its listen(): on a busy machine a
        # connect in between is refused (swanctl exits with ECONNREFUSED, 111). Try again briefly.
        deadline = time.monotonic() + 10
        while True:
            done = self.swanctl("--load-all", "--file", str(sw / "swanctl.conf"), check=False)
            if done.returncode != errno.ECONNREFUSED or time.monotonic() > deadline:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"charon exited: {(self.dir / 'charon.out').read_text()}")
            time.sleep(0.05)
        done.check_returncode()
        return self

    def swanctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["swanctl", *args, "--uri", f"unix://{self.dir}/charon.vici"], env=self.env(),
                              capture_output=True, text=True, check=check, timeout=timeout)

    def list_sas(self) -> str:
        return self.swanctl("--list-sas").stdout

    def log(self) -> str:
        try:
            return (self.dir / "charon.log").read_text()
        except FileNotFoundError:
            return ""

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def our_policy(side: str, *, proposals=("aes256gcm16-prfsha256-x25519",), esp=("aes256gcm16",),
               datapath="userspace", encap=False, dpd_delay="0s", start_action="none", dpd_action="clear",
               rekey_time="4h", child_rekey_time="1h", mode="tunnel", extra_engine="", extra_conn="",
               certs: dict[str, Path] | None = None) -> str:
    """Our policy for one side of the lab. ``certs`` ({"cert", "ca", "crl"?}) switches to
    certificate authentication; Ours(key=...) puts the private key in the secrets file."""
    me = SIDES[side]
    peer = SIDES["right" if side == "left" else "left"]
    quote = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    if certs:
        local = f'{{ auth = "pubkey", id = "{me["id"]}", certs = ["{certs["cert"]}"] }}'
        remote = f'{{ auth = "pubkey", id = "{peer["id"]}", cacerts = ["{certs["ca"]}"] }}'
        if "crl" in certs:
            extra_engine += f'\ncrls = ["{certs["crl"]}"]'
    else:
        local = f'{{ auth = "psk", id = "{me["id"]}" }}'
        remote = f'{{ auth = "psk", id = "{peer["id"]}" }}'
    return textwrap.dedent(f"""\
        [engine]
        datapath = "{datapath}"
        listen = ["{me['addr']}"]
        secrets = "secrets.toml"
        {extra_engine}

        [connections.psk-tunnel]
        local_addrs = ["{me['addr']}"]
        remote_addrs = ["{peer['addr']}"]
        proposals = {quote(proposals)}
        local = {local}
        remote = {remote}
        encap = {str(encap).lower()}
        dpd_delay = "{dpd_delay}"
        rekey_time = "{rekey_time}"
        {extra_conn}

        [connections.psk-tunnel.children.lan]
        mode = "{mode}"
        local_ts = ["{me['inner']}/32"]
        remote_ts = ["{peer['inner']}/32"]
        esp_proposals = {quote(esp)}
        rekey_time = "{child_rekey_time}"
        start_action = "{start_action}"
        dpd_action = "{dpd_action}"
        """)


class Ours:
    """Our daemon in a namespace, with its control socket in the work dir."""

    def __init__(self, lab: Lab, side: str, workdir: Path, policy_text: str, key: Path | None = None) -> None:
        self.lab = lab
        self.side = side
        self.dir = workdir / f"ours-{side}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "policy.toml"
        self.config.write_text(policy_text)
        secrets = self.dir / "secrets.toml"
        text = f'[ike.interop]\nids = ["left.example", "right.example"]\nsecret = "{PSK}"\n'
        if key is not None:
            text += f'\n[private.mine]\nfile = "{key}"\n'
        secrets.write_text(text)
        secrets.chmod(0o600)
        self.control = self.dir / "control.sock"
        self.proc: subprocess.Popen | None = None

    def start(self, *args: str, entry: tuple[str, ...] = ("console", "daemon")) -> "Ours":
        """``entry``: the module (and its first arguments) run with ``python -m``; tests may
        name a test-only wrapper of the daemon (e.g. tests.interop.tamper_daemon)."""
        if "--datapath" not in args and '"lab"' in self.config.read_text():
            args = ("--datapath", "none", *args)
        self.stderr = open(self.dir / "daemon.log", "wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns[self.side], sys.executable, "-m", *entry,
             str(self.config), "--control", str(self.control), "-v", *args],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=subprocess.STDOUT,
            start_new_session=True)
        for _ in range(200):
            if self.control.exists():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"our daemon exited: {self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"our daemon never opened its control socket: {self.log()}")

    def cli(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "console", *args, "--control", str(self.control)],
                              cwd=ROOT, capture_output=True, text=True, check=check, timeout=timeout)

    def sas(self) -> list[dict]:
        return json.loads(self.cli("sas", "--json").stdout)["ike_sas"]

    def watch_events(self) -> None:
        """Start `ipsec-console events` into a file; read with events()."""
        self._events_file = open(self.dir / "events.jsonl", "wb")
        self._events = subprocess.Popen(
            [sys.executable, "-m", "console", "events", "--control", str(self.control)], cwd=ROOT,
            stdout=self._events_file, stderr=subprocess.DEVNULL, start_new_session=True)
        # Subscribed once something came through: the daemon publishes a counters snapshot every
        # second, so an idle daemon still proves the subscription within a second or two.
        path = self.dir / "events.jsonl"
        deadline = time.monotonic() + 15
        while path.stat().st_size == 0:
            if time.monotonic() > deadline or self._events.poll() is not None:
                raise RuntimeError(f"'ipsec-console events' never subscribed: {self.log()[-2000:]}")
            time.sleep(0.05)

    def events(self, type_: str | None = None) -> list[dict]:
        try:
            lines = (self.dir / "events.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if type_ is None or e.get("type") == type_:
                out.append(e)
        return out

    def log(self) -> str:
        try:
            return (self.dir / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> int | None:
        ev = getattr(self, "_events", None)
        if ev is not None and ev.poll() is None:
            ev.terminate()
            ev.wait(5)
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
