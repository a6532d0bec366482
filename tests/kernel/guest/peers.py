"""IKE peers inside the guest's namespaces: a private strongSwan charon with
its kernel-netlink backend (the guest kernel does ESP and AH), and our daemon
with ``datapath = "kernel"`` (through tests.kernel.keys_daemon, which also
writes the keys the engine derived). Plus a reader for ``ip -s xfrm state``.

Every connection has its own IKE identities, so each side picks the right
one when the other initiates, and several connections with the same
selectors (ESP and AH tunnels) can be configured at once and used in turn.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from .lab import LEFT_INNER, LEFT_OUTER, RIGHT_INNER, RIGHT_OUTER, sh

CHARON = "/usr/lib/ipsec/charon"
PSK = "guest-psk-not-secret-0123456789"
IKE_PROPOSAL = "aes256gcm16-prfsha256-x25519"
ROOT = Path(__file__).resolve().parents[3]
SIDES = {"left": (LEFT_OUTER, LEFT_INNER), "right": (RIGHT_OUTER, RIGHT_INNER)}


@dataclass(frozen=True)
class Conn:
    """One IKE connection with one CHILD (NAME-child), configured alike on both sides."""

    name: str
    mode: str          # tunnel | transport
    protocol: str      # esp | ah
    proposal: str      # strongSwan syntax, which our policy reads too
    encap: bool = False  # ESP in UDP without a NAT (our encap = true)

    def ts(self, side: str) -> str:
        outer, inner = SIDES[side]
        return f"{inner if self.mode == 'tunnel' else outer}/32"

    @property
    def child(self) -> str:
        return f"{self.name}-child"

    def id(self, side: str) -> str:
        return f"{self.name}.{side}.example"


def _other(side: str) -> str:
    return "right" if side == "left" else "left"


# ---------------------------------------------------------------- strongSwan

def swanctl_conf(conns: list[Conn], side: str) -> str:
    me, peer = side, _other(side)
    out = ["connections {"]
    for c in conns:
        out.append(textwrap.indent(textwrap.dedent(f"""\
            {c.name} {{
              version = 2
              local_addrs = {SIDES[me][0]}
              remote_addrs = {SIDES[peer][0]}
              proposals = {IKE_PROPOSAL}
              local {{
                auth = psk
                id = {c.id(me)}
              }}
              remote {{
                auth = psk
                id = {c.id(peer)}
              }}
              children {{
                {c.child} {{
                  mode = {c.mode}
                  local_ts = {c.ts(me)}
                  remote_ts = {c.ts(peer)}
                  {c.protocol}_proposals = {c.proposal}
                }}
              }}
            }}"""), "  "))
    out.append("}")
    ids = "\n".join(f"    id-{i} = {c.id(s)}" for i, (c, s) in enumerate((c, s) for c in conns for s in SIDES))
    out.append(f'secrets {{\n  ike-guest {{\n{ids}\n    secret = "{PSK}"\n  }}\n}}\n')
    return "\n".join(out)


class Charon:
    """strongSwan's charon in namespace ``ns`` with only private files: its
    strongswan.conf (explicit plugin list, kernel-netlink and no
    kernel-libipsec), swanctl dir, vici socket and /run (bind-mounted in a
    private mount namespace: charon 5.9 hard-codes /var/run/charon.pid)."""

    PLUGINS = ("random nonce aes sha1 sha2 hmac gcm curve25519 kdf openssl pem pkcs1 x509 pubkey "
               "kernel-netlink socket-default vici")

    def __init__(self, ns: str, workdir: Path, conf: str) -> None:
        self.ns = ns
        self.dir = workdir / "charon"
        self.conf = conf
        self.proc: subprocess.Popen | None = None

    @property
    def vici(self) -> str:
        return f"unix://{self.dir}/charon.vici"

    def env(self) -> dict:
        return {**os.environ, "STRONGSWAN_CONF": str(self.dir / "strongswan.conf"),
                "SWANCTL_DIR": str(self.dir / "swanctl")}

    def start(self) -> Charon:
        sw = self.dir / "swanctl"
        for sub in ("run", "swanctl/x509", "swanctl/x509ca", "swanctl/private", "swanctl/conf.d"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (sw / "swanctl.conf").write_text(self.conf)
        (sw / "swanctl.conf").chmod(0o600)
        (self.dir / "strongswan.conf").write_text(textwrap.dedent(f"""\
            charon {{
              load_modular = no
              load = {self.PLUGINS}
              # the lab's static routes carry the inner traffic; no table 220
              install_routes = no
              install_virtual_ip = no
              retransmit_timeout = 2
              retransmit_tries = 3
              filelog {{
                charon-log {{
                  path = {self.dir}/charon.log
                  append = no
                  flush_line = yes
                  ike_name = yes
                  default = 1
                  ike = 2
                  cfg = 2
                  knl = 2
                }}
              }}
              plugins {{
                vici {{ socket = {self.vici} }}
              }}
            }}
            swanctl {{
              load = pem pkcs1 x509 pubkey openssl random
            }}
            """))
        vici = self.dir / "charon.vici"
        vici.unlink(missing_ok=True)
        with open(self.dir / "charon.out", "wb") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", 'mount --bind "$1" /run && exec "$2"', "sh", str(self.dir / "run"), CHARON],
                env=self.env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 30
        while not vici.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"charon exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"charon's vici socket never appeared:\n{self.log()}")
            time.sleep(0.05)
        # The socket file exists from charon's bind(), before its listen(): a connect in between is
        # refused (swanctl exits with ECONNREFUSED). Try again briefly.
        while True:
            done = self.swanctl("--load-all", "--file", str(sw / "swanctl.conf"), check=False)
            if done.returncode != errno.ECONNREFUSED or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if done.returncode:
            self.swanctl("--load-all", "--file", str(sw / "swanctl.conf"))  # raises, with charon's log
        return self

    def swanctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(["swanctl", *args, "--uri", self.vici], env=self.env(), capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and proc.returncode:
            raise AssertionError(f"swanctl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}"
                                 f"{proc.stderr}\n--- charon.log:\n{self.log()[-6000:]}")
        return proc

    def log(self) -> str:
        parts = []
        for name in ("charon.out", "charon.log"):
            try:
                parts.append((self.dir / name).read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def stop(self) -> None:
        stop_child(self.proc)


# ---------------------------------------------------------------- ours

def our_policy(conns: list[Conn], side: str, ports: tuple[int, int] = (500, 4500),
               peer_ports: dict[str, tuple[int, int]] | None = None) -> str:
    """Our policy for ``side``: IKE and NAT-T on ``ports``; ``peer_ports``
    names the connections whose peer listens on other ports than 500/4500."""
    me, peer = side, _other(side)
    peer_ports = peer_ports or {}
    out = [textwrap.dedent(f"""\
        [engine]
        datapath = "kernel"
        listen = ["{SIDES[me][0]}"]
        ike_port = {ports[0]}
        natt_port = {ports[1]}
        secrets = "secrets.toml"
        retransmit_timeout = "2s"
        """)]
    for c in conns:
        remote_port, remote_natt = peer_ports.get(c.name, (500, 4500))
        out.append(textwrap.dedent(f"""\
            [connections.{c.name}]
            local_addrs = ["{SIDES[me][0]}"]
            remote_addrs = ["{SIDES[peer][0]}"]
            remote_port = {remote_port}
            remote_natt_port = {remote_natt}
            proposals = ["{IKE_PROPOSAL}"]
            encap = {str(c.encap).lower()}
            local = {{ auth = "psk", id = "{c.id(me)}" }}
            remote = {{ auth = "psk", id = "{c.id(peer)}" }}

            [connections.{c.name}.children.{c.child}]
            mode = "{c.mode}"
            protocol = "{c.protocol}"
            local_ts = ["{c.ts(me)}"]
            remote_ts = ["{c.ts(peer)}"]
            {c.protocol}_proposals = ["{c.proposal}"]
            """))
    return "\n".join(out)


class Ours:
    """Our daemon (``datapath = "kernel"``) in namespace ``ns``, run through
    tests.kernel.keys_daemon so the test can read the keys it derived."""

    def __init__(self, ns: str, workdir: Path, side: str, conns: list[Conn], **ports) -> None:
        self.ns = ns
        self.dir = workdir / f"ours-{side}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "policy.toml"
        self.config.write_text(our_policy(conns, side, **ports))
        secrets = self.dir / "secrets.toml"
        ids = ", ".join(f'"{c.id(s)}"' for c in conns for s in SIDES)
        secrets.write_text(f'[ike.guest]\nids = [{ids}]\nsecret = "{PSK}"\n')
        secrets.chmod(0o600)
        self.control_path = self.dir / "control.sock"
        self.keys_path = self.dir / "keys.json"
        self.proc: subprocess.Popen | None = None

    def spawn(self) -> Ours:
        """Start the process; :meth:`wait_ready` waits for its control socket
        (so something else can start meanwhile: imports take seconds here)."""
        with open(self.dir / "daemon.log", "wb") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "tests.kernel.keys_daemon",
                 str(self.keys_path), str(self.config), "--control", str(self.control_path), "-v"],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def start(self) -> Ours:
        return self.spawn().wait_ready()

    def wait_ready(self) -> Ours:
        deadline = time.monotonic() + 120  # imports alone take seconds under emulation
        while not self.control_path.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"our daemon exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"our daemon never opened its control socket:\n{self.log()}")
            time.sleep(0.1)
        return self

    def control(self, cmd: str, **args):
        """One request on the control socket (JSON lines), its result."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(self.control_path))
            s.sendall(json.dumps({"id": 1, "cmd": cmd, **args}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        msg = json.loads(buf)
        if not msg.get("ok"):
            raise AssertionError(f"control {cmd} {args}: {msg.get('error')}\n{self.log()[-6000:]}")
        return msg["result"]

    def derived_keys(self) -> list[dict]:
        """The records tests.kernel.keys_daemon wrote, one per CHILD SA installed."""
        try:
            return json.loads(self.keys_path.read_text())
        except FileNotFoundError:
            return []

    def log(self) -> str:
        try:
            return (self.dir / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> int | None:
        return stop_child(self.proc)


def stop_child(proc: subprocess.Popen | None) -> int | None:
    """SIGTERM, then SIGKILL after 10 s: only our own child, by PID (not yet
    reaped, so the PID cannot belong to anyone else); its exit status."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(10)


# ---------------------------------------------------------------- ip xfrm

@dataclass(frozen=True)
class KernelSa:
    """One SA as ``ip -s xfrm state`` shows it."""

    src: str
    dst: str
    proto: str
    spi: int
    reqid: int
    mode: str
    algs: dict[str, tuple[str, str]]
    """"aead"/"enc"/"auth-trunc" -> (algorithm name, key hex without 0x)."""
    bytes: int
    packets: int


_BLOCK = re.compile(r"^src (\S+) dst (\S+)\n(.*?)(?=^src |\Z)", re.MULTILINE | re.DOTALL)


def xfrm_states(ns: str) -> dict[int, KernelSa]:
    """The namespace's SAs by SPI."""
    out: dict[int, KernelSa] = {}
    for m in _BLOCK.finditer(sh("ip", "-s", "-n", ns, "xfrm", "state").stdout):
        body = m.group(3)
        head = re.search(r"proto (\w+) spi 0x([0-9a-f]+)\S* reqid (\d+)\S* mode (\w+)", body)
        if head is None:
            continue
        algs = {a: (name, key) for a, name, key in
                re.findall(r"^\s*(aead|enc|auth-trunc|auth) (\S+) 0x([0-9a-f]*)", body, re.MULTILINE)}
        cur = re.search(r"lifetime current:\s*\n\s*(\d+)\(bytes\), (\d+)\(packets\)", body)
        out[int(head.group(2), 16)] = KernelSa(
            m.group(1), m.group(2), head.group(1), int(head.group(2), 16), int(head.group(3)), head.group(4),
            algs, int(cur.group(1)) if cur else -1, int(cur.group(2)) if cur else -1)
    return out


def xfrm_errors(ns: str) -> dict[str, int]:
    """The namespace's non-zero XFRM error counters (/proc/net/xfrm_stat)."""
    text = sh("ip", "netns", "exec", ns, "cat", "/proc/net/xfrm_stat").stdout
    return {k: int(v) for k, v in (line.split() for line in text.splitlines() if line.strip()) if int(v)}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
