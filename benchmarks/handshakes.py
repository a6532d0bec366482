"""Full IKEv2 handshakes per second: our daemon against strongSwan's charon as
responder, driven by the same load generator, side by side; plus the
in-process sans-IO rate of two IkeEndpoints and where the time goes.

A handshake: IKE_SA_INIT + IKE_AUTH, PSK, x25519, AES-GCM-256 with
PRF_HMAC_SHA2_256, one ESP AES-GCM-256 CHILD SA (tunnel, 198.51.100.1/32 ===
198.51.100.129/32, or with --distinct-ts one selector per handshake), then an
INFORMATIONAL deleting the IKE SA. Every handshake uses its own initiator ID
(charon scans a per-identity list); both responders accept any ID with one
PSK, and any initiator selector inside 198.51.100.0/25 (narrowed).

Lab (root, strongSwan): two namespaces joined by veth, 192.0.2.1 (left,
the generator benchmarks/ikeload.py, pinned to CPU 0) -> 192.0.2.2 (right,
the responder, pinned to CPU 1 with all its threads). Responders, the
shipped configuration first:

  ours        our daemon as shipped: `python -m console daemon CONFIG` with
              the userspace datapath (TUN device, a route per CHILD SA's
              remote selector, the SAs in the userspace SAD): what a user
              gets on a kernel without ESP, like this one. Logs INFO to
              stderr (here a file).
  charon      charon 5.9.8 with ../shared/interop/bench-charon.conf (stock
              plugin order with aesni and openssl, large IKE SA table, no
              DoS protection or half-open limit, no logging), the
              kernel-libipsec backend (this kernel has no ESP) with its
              defaults: SAs and policies in libipsec, routes into ipsec0.
              The counterpart of `ours`.
  ours-nolog  `ours` without its stderr log handler (what a --quiet flag
              would give): engine.runtime.daemon.serve()
  ours-none   diagnostic: `ours` with --datapath none (negotiates, installs
              nothing): the IKE engine alone
  null        benchmarks/ikeload.py's null responder (cached DH, no AUTH
              check): the generator's own ceiling

Responder and generator run at nice -15 (--nice), each thread and each
session's autogroup (the scheduler shares CPU between sessions first): on a
shared machine other work then disturbs them less.

NAT-T: the generator fakes its NAT-D source hash, so every responder sees a
NAT and IKE_AUTH and the delete run on port 4500 with the non-ESP marker
(charon's libipsec fakes a NAT on its side anyway).

Each run starts a fresh responder, warms up, then counts completed
handshakes over the window; responders are interleaved run by run so that
load from other processes on the machine hits them alike. Reported: the
median rate, every run, the responder's CPU use over the window (fraction
of its core) and its CPU time per handshake (steadier than the rate on a
busy machine), and the ratios to charon.

Held state: --hold N first brings up N SAs per run and keeps them while
measuring; --curve N instead holds every SA (no delete) up to N and reports
the rate of new SAs per --curve-step held, the road-warrior server's
"clients per second as clients accumulate". Both with --distinct-ts give
every CHILD SA its own selectors (198.51.100.1-126 x UDP ports: distinct
SPD entries; the routes are per address, so 126 of them).

    sudo python3 benchmarks/handshakes.py                   # ours, charon, ours-none; 3 runs x 15 s
    sudo python3 benchmarks/handshakes.py --runs 5 --duration 20 --concurrency 32
    sudo python3 benchmarks/handshakes.py --hold 10000 --distinct-ts --runs 1 --responders ours,charon
    sudo python3 benchmarks/handshakes.py --curve 10000 --distinct-ts --responders ours,charon
    sudo python3 benchmarks/handshakes.py --profile         # + py-spy of our daemon under load
    python3 benchmarks/handshakes.py --sansio-only          # no root needed

Exit status 2 when root, strongSwan, taskset or two CPUs are missing (the
message says what). No timed assertion anywhere: this is a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.ikeload import PSK  # noqa: E402

LEFT, RIGHT = "192.0.2.1", "192.0.2.2"
LOCAL_TS, REMOTE_TS = "198.51.100.1/32", "198.51.100.129/32"  # as the initiator sees them
CHARON = "/usr/lib/ipsec/charon"
GEN_CPU, RESP_CPU = 0, 1
RESPONDERS = ("ours", "charon", "ours-nolog", "ours-none", "null")
DEFAULT_RESPONDERS = ("ours", "charon", "ours-none")
CLIENT_TS = "198.51.100.0/25"
"""What both responders accept as the initiator's selector (narrowed to what it proposes)."""

# ../shared/interop/bench-charon.conf (as tests/interop/lab_esp.py uses it), inlined so
# that a checkout without ../shared runs the same settings.
BENCH_CHARON_CONF = """\
charon {
  ikesa_table_size = 32768
  ikesa_table_segments = 16
  dos_protection = no
  cookie_threshold = 1000000
  block_threshold = 1000000
  init_limit_half_open = 0
  filelog {
    charon-log {
      default = 0
      ike = 0
      enc = 0
      net = 0
      cfg = 0
      knl = 0
    }
  }
  load = %s
}
""" % " ".join((
    "aesni aes sha2 sha1 md5 rdrand random nonce x509 revocation constraints pubkey pkcs1 pem openssl pkcs8 gmp",
    "curve25519 chapoly xcbc cmac hmac kdf ctr gcm drbg kernel-libipsec kernel-netlink socket-default vici"))

CHARON_SWANCTL = f"""\
connections {{
  bench {{
    version = 2
    local_addrs = {RIGHT}
    remote_addrs = {LEFT}
    proposals = aes256gcm16-prfsha256-x25519
    local {{
      auth = psk
      id = right.example
    }}
    remote {{
      auth = psk
    }}
    children {{
      bench {{
        mode = tunnel
        local_ts = {REMOTE_TS}
        remote_ts = {CLIENT_TS}
        esp_proposals = aes256gcm16
      }}
    }}
  }}
}}
secrets {{
  ike-any {{
    secret = "{PSK.decode()}"
  }}
}}
"""

OUR_POLICY = f"""\
[engine]
datapath = "userspace"   # ours-none overrides it with --datapath none
listen = ["{RIGHT}"]
secrets = "secrets.toml"
half_open_threshold = 1000000   # no COOKIEs, no per-source limits: charon's bench settings turn them off too
cookie_threshold_ip = 1000000
block_threshold = 1000000
init_limit_half_open = 0

[connections.bench]
local_addrs = ["{RIGHT}"]
remote_addrs = ["{LEFT}"]
proposals = ["aes256gcm16-prfsha256-x25519"]
local = {{ auth = "psk", id = "right.example" }}
remote = {{ auth = "psk", id = "%any" }}

[connections.bench.children.lan]
mode = "tunnel"
local_ts = ["{REMOTE_TS}"]
remote_ts = ["{CLIENT_TS}"]
esp_proposals = ["aes256gcm16"]
"""

OUR_SECRETS = f'[ike.any]\nsecret = "{PSK.decode()}"\n'

# The daemon without setup_logging(): the "engine" logger keeps the default
# WARNING level, so log.info() returns at once.
NOLOG_DAEMON = ("import asyncio, sys; from engine.runtime.daemon import serve; "
                "sys.exit(asyncio.run(serve(sys.argv[1], sys.argv[2])))")


# ====================================================================== helpers
def engine_version() -> str:
    """The commit measured, with a note when engine/ has uncommitted changes."""
    try:
        rev = sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD", timeout=10).stdout.strip()
        dirty = sh("git", "-C", str(ROOT), "status", "--porcelain", "--", "engine", timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    return f"commit {rev}{' + uncommitted engine/ changes' if dirty else ''}"


def missing_requirements() -> list[str]:
    out = []
    if os.geteuid() != 0:
        out.append("root (network namespaces, binding ports 500/4500, taskset of other processes)")
    for tool in ("ip", "taskset", "swanctl"):
        if shutil.which(tool) is None:
            out.append(f"'{tool}' (apt-get install iproute2 util-linux strongswan-swanctl)")
    if not os.path.exists(CHARON):
        out.append(f"{CHARON} (apt-get install strongswan-charon libcharon-extra-plugins "
                   "libstrongswan-extra-plugins)")
    if len(os.sched_getaffinity(0)) < 2 or (os.cpu_count() or 1) < 2:
        out.append("two CPUs (responder and generator each get one)")
    return out


def sh(*args: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout, **kw)


NICE = -15  # set from --nice in main()


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of ``pid`` to one CPU and give each the benchmark's nice
    value (threads created later inherit both from their creator)."""
    sh("taskset", "-a", "-p", "-c", str(cpu), str(pid))
    prioritize(pid)


def prioritize(pid: int) -> None:
    """Apply NICE to every thread of ``pid`` and to its autogroup: with
    kernel.sched_autogroup_enabled the scheduler shares CPU between sessions
    first, so a thread's own nice value only counts inside its session (every
    process here is started in a session of its own)."""
    if not NICE:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(tid), NICE)
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(NICE))


def quote(cmd) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd)


def stop_process(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL: only the process we started, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


# ====================================================================== responders
class Responder:
    """One responder process in the right namespace, pinned to RESP_CPU."""

    kind = ""

    def __init__(self, lab, workdir: Path) -> None:
        self.lab = lab
        self.dir = workdir / self.kind
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.command: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ns_cmd(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.lab.ns["right"], *cmd]

    def start(self) -> "Responder":
        raise NotImplementedError

    def stop(self) -> None:
        stop_process(self.proc)


class OurDaemon(Responder):
    kind = "ours"

    def _write_config(self) -> None:
        (self.dir / "policy.toml").write_text(OUR_POLICY)
        secrets = self.dir / "secrets.toml"
        secrets.write_text(OUR_SECRETS)
        secrets.chmod(0o600)

    def daemon_cmd(self, control: Path) -> list[str]:
        return [sys.executable, "-m", "console", "daemon", str(self.dir / "policy.toml"), "--control", str(control)]

    def start(self, prefix: tuple[str, ...] = ()) -> "OurDaemon":
        self._write_config()
        control = self.dir / "control.sock"
        control.unlink(missing_ok=True)
        self.command = self.ns_cmd(*prefix, *self.daemon_cmd(control))
        self.log = open(self.dir / "daemon.log", "wb")
        self.proc = subprocess.Popen(self.command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            if control.exists():
                pin(self.pid, RESP_CPU)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"our daemon exited: {(self.dir / 'daemon.log').read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("our daemon never opened its control socket")

    def stop(self) -> None:
        super().stop()
        if getattr(self, "log", None) is not None:
            self.log.close()


class OurDaemonNoLog(OurDaemon):
    kind = "ours-nolog"

    def daemon_cmd(self, control: Path) -> list[str]:
        return [sys.executable, "-c", NOLOG_DAEMON, str(self.dir / "policy.toml"), str(control)]


class OurDaemonNoDatapath(OurDaemon):
    kind = "ours-none"

    def daemon_cmd(self, control: Path) -> list[str]:
        return super().daemon_cmd(control) + ["--datapath", "none"]


class CharonResponder(Responder):
    kind = "charon"

    def start(self) -> "CharonResponder":
        from tests.interop.lab import Charon

        self.charon = Charon(self.lab, "right", self.dir, extra=BENCH_CHARON_CONF)
        self.charon.conf = CHARON_SWANCTL
        self.charon.start()
        self.proc = self.charon.proc
        self.command = list(self.proc.args)
        pin(self.pid, RESP_CPU)
        return self

    def stop(self) -> None:
        if getattr(self, "charon", None) is not None:
            self.charon.stop()


class NullResponder(Responder):
    kind = "null"

    def start(self) -> "NullResponder":
        self.command = self.ns_cmd(sys.executable, "-m", "benchmarks.ikeload", "null", "--listen", RIGHT)
        self.proc = subprocess.Popen(self.command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=open(self.dir / "null.log", "wb"), start_new_session=True, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"null responder did not start: {(self.dir / 'null.log').read_text()[-2000:]}")
        pin(self.pid, RESP_CPU)
        return self


KINDS = {c.kind: c for c in (OurDaemon, OurDaemonNoLog, OurDaemonNoDatapath, CharonResponder, NullResponder)}


# ====================================================================== the generator
def generator_cmd(lab, args, cpu_pid: int | None) -> list[str]:
    cmd = ["taskset", "-c", str(GEN_CPU), "ip", "netns", "exec", lab.ns["left"], sys.executable, "-m",
           "benchmarks.ikeload", "run", "--json", "--source", LEFT, "--target", RIGHT,
           "--concurrency", str(args.concurrency), "--warmup", str(args.warmup), "--duration", str(args.duration)]
    cmd += ["--core", str(RESP_CPU)]
    if args.hold:
        cmd += ["--hold", str(args.hold)]
    if args.distinct_ts:
        cmd += ["--distinct-ts"]
    if args.curve:
        cmd += ["--curve", str(args.curve), "--curve-step", str(args.curve_step)]
    if cpu_pid is not None:
        cmd += ["--cpu-pid", str(cpu_pid)]
    return cmd


def run_generator(lab, args, cpu_pid: int | None) -> dict:
    cmd = generator_cmd(lab, args, cpu_pid)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        prioritize(proc.pid)  # before its warm-up ends
        # The SAs to hold come up before the window: charon slows to ~70 new SAs/s by 10,000 held
        # (more on a slower machine), so allow 25 per second on average for them.
        out, err = proc.communicate(timeout=args.warmup + args.duration + 60 + max(args.hold, args.curve) / 25)
    finally:
        stop_process(proc, grace=2)
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def measure_lab(args) -> tuple[dict[str, list[dict]], dict[str, str]]:
    from tests.interop.lab import Lab

    results: dict[str, list[dict]] = {k: [] for k in args.responders}
    commands: dict[str, str] = {}
    workdir = Path(tempfile.mkdtemp(prefix="ipsec-bench-hs-"))
    lab = Lab()
    responder: Responder | None = None
    try:
        lab.up()
        commands["lab"] = (f"ip netns add {lab.ns['left']}; ip netns add {lab.ns['right']}; veth0 "
                           f"{LEFT}/24 <-> {RIGHT}/24 (tests/interop/lab.py Lab)")
        for run in range(args.runs):
            for kind in args.responders:
                responder = KINDS[kind](lab, workdir).start()
                commands[kind] = quote(responder.command) + f"   # then: taskset -a -p -c {RESP_CPU} PID" + \
                    (f"; nice {NICE} for each thread and in /proc/PID/autogroup" if NICE else "")
                time.sleep(0.3)
                res = run_generator(lab, args, responder.pid)
                commands["generator"] = quote(generator_cmd(lab, args, None)) + " --cpu-pid PID" + \
                    (f"   # in a session of its own, nice {NICE} in /proc/PID/autogroup" if NICE else "")
                responder.stop()
                responder = None
                results[kind].append(res)
                if args.curve:
                    steps = " ".join(f"{c['rate']:.0f}" if c["rate"] else "-" for c in res["curve"])
                    print(f"  run {run + 1}/{args.runs} {kind:10} held {res['held']} (failed {res['hold_failed']}), "
                          f"new SAs/s per {args.curve_step}: {steps}", flush=True)
                    continue
                print(f"  run {run + 1}/{args.runs} {kind:10} {res['rate']:8.0f} hs/s  "
                      f"responder CPU {res['responder_cpu'] or 0:.2f}  others on its core {_others(res):.2f}  "
                      f"generator CPU {res['generator_cpu']:.2f}  "
                      f"p50 {res['latency_ms']['p50']} ms  failures {res['failures'] or '-'}", flush=True)
        if args.profile:
            print("\nprofiling our daemon under load (py-spy) ...", flush=True)
            results["_profile"] = [profile_daemon(lab, args, workdir)]
    finally:
        if responder is not None:
            responder.stop()
        lab.down()
        if args.keep:
            print(f"work files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return results, commands


# ====================================================================== profile of the daemon
# Component of a stack sample: the first frame from the leaf up that matches a
# rule decides (so each sample counts once, for the most specific component).
COMPONENT_RULES: list[tuple[str, str, str]] = [
    # (component, file fragment, function names separated by | or "" for any)
    ("x25519 key generation", "engine/crypto/ke.py", "_generate|__init__|_encode_public"),
    ("x25519 exchange", "engine/crypto/ke.py", "compute_shared"),
    ("NAT-D hashes", "engine/crypto/auth.py", "nat_detection_hash|_packed_address"),
    ("AUTH (PSK MAC, signed octets)", "engine/crypto/auth.py", ""),
    ("AUTH (PSK MAC, signed octets)", "engine/ike/auth.py", ""),
    ("key derivation (SKEYSEED, prf+, CHILD keymat)", "engine/crypto/keys.py", ""),
    ("key derivation (SKEYSEED, prf+, CHILD keymat)", "engine/crypto/prf.py", ""),
    ("key derivation (SKEYSEED, prf+, CHILD keymat)", "engine/ike/child.py", "derive_child_keys"),
    ("key derivation (SKEYSEED, prf+, CHILD keymat)", "engine/ike/init.py", "install_ike_keys"),
    ("logging", "logging/__init__.py", ""),
    ("logging", "engine/runtime/engine.py", "emit"),
    ("message summaries", "engine/wire/summary.py", ""),
    ("message summaries", "engine/ike/sa.py", "_summary_event"),
    ("runtime glue (engine.py, NAT-T classify)", "engine/wire/natt.py", ""),
    ("wire encode/decode", "engine/wire/", ""),
    ("SK encrypt/decrypt (AES-GCM)", "engine/crypto/encr.py", ""),
    ("SK encrypt/decrypt (AES-GCM)", "engine/ike/protection.py", ""),
    ("timers (get_timer/next_timer over all SAs)", "engine/ike/endpoint.py", "get_timer|handle_timer|call_at"),
    ("timers (get_timer/next_timer over all SAs)", "engine/ike/sa.py", "next_timer|handle_timer"),
    ("timers (get_timer/next_timer over all SAs)", "engine/runtime/engine.py", "_after"),
    ("events to datapath/subscribers", "engine/runtime/engine.py", "_dispatch|publish"),
    ("events to datapath/subscribers", "engine/datapath/", ""),
    ("events to datapath/subscribers", "engine/ike/child.py", "installed_event|deleted_event"),
    ("events to datapath/subscribers", "engine/events.py", ""),
    ("UDP sockets", "engine/runtime/udp.py", ""),
    ("runtime glue (engine.py, NAT-T classify)", "engine/runtime/", ""),
    ("policy/TS/proposal matching", "engine/policy/", ""),
    ("policy/TS/proposal matching", "engine/ike/proposals.py", ""),
    ("policy/TS/proposal matching", "engine/ike/identity.py", ""),
    ("policy/TS/proposal matching", "ipaddress.py", ""),
    ("policy/TS/proposal matching", "engine/ike/tasks.py", "resolve_ts|ts_payload|ts_from_payload"),
    ("IKE logic: {file}", "engine/ike/", ""),
    ("asyncio event loop", "asyncio/", ""),
    ("asyncio event loop", "selectors.py", ""),
]


def _frame_parts(frame: str) -> tuple[str, str]:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, rest = frame.partition(" (")
    return name.strip(), rest.rsplit(":", 1)[0]


def classify(stack: list[str]) -> str:
    for frame in reversed(stack):  # leaf first
        func, path = _frame_parts(frame)
        for component, fragment, funcs in COMPONENT_RULES:
            if fragment in path and (not funcs or func.rsplit(".", 1)[-1] in funcs.split("|")):
                return component.format(file=path.rsplit("/", 1)[-1])
    return "other"


def summarize_pyspy(raw: str) -> tuple[Counter, Counter, Counter, int]:
    components: Counter = Counter()
    leaves: Counter = Counter()
    generated: Counter = Counter()  # dataclass __init__ (frozen: object.__setattr__ per field), by caller
    total = 0
    for line in raw.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        n = int(count)
        stack = [f for f in stack_text.split(";") if f]
        if stack and stack[0].startswith("process "):
            stack = stack[1:]
        if stack and stack[0].startswith("thread "):
            stack = stack[1:]
        if not stack:
            continue
        total += n
        components[classify(stack)] += n
        leaf_func, leaf_path = _frame_parts(stack[-1])
        leaves[f"{leaf_func} ({_short(leaf_path)})"] += n
        if leaf_path == "<string>" and len(stack) > 1:
            caller, caller_path = _frame_parts(stack[-2])
            generated[f"{caller} ({_short(caller_path)})"] += n
    return components, leaves, generated, total


def _short(path: str) -> str:
    for marker in ("/work/main/", "site-packages/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def profile_daemon(lab, args, workdir: Path) -> dict:
    """py-spy on our daemon (as shipped, or --profile-responder) while the generator drives it."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        return dict(error="py-spy is not installed (pip install py-spy)")
    responder = KINDS[args.profile_responder](lab, workdir).start()
    out = workdir / "pyspy.txt"
    spy = None
    try:
        time.sleep(0.3)
        seconds = max(5, int(args.duration))
        # Blocking mode (py-spy pauses the daemon for each sample): consistent stacks, ~2 % overhead.
        spy_cmd = ["taskset", "-c", str(GEN_CPU), py_spy, "record", "-p", str(responder.pid), "-d", str(seconds + 2),
                   "-r", "250", "-f", "raw", "-o", str(out)]
        gen_args = argparse.Namespace(**{**vars(args), "duration": seconds, "warmup": 1.0})
        # Raised like the generator it shares CPU 0 with: a starved sampler samples
        # only when the generator idles, which biases what it sees.
        spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
        prioritize(spy.pid)
        res = run_generator(lab, gen_args, responder.pid)
        spy.wait(seconds + 30)
    finally:
        stop_process(spy)
        responder.stop()
    if not out.exists():
        return dict(error=f"py-spy wrote nothing: {spy.stderr.read() if spy and spy.stderr else ''}")
    components, leaves, generated, total = summarize_pyspy(out.read_text())
    return dict(result=res, components=dict(components), leaves=dict(leaves.most_common(25)), samples=total,
                generated=dict(generated.most_common(10)), command=quote(spy_cmd), raw=str(out),
                kind=args.profile_responder)


# ====================================================================== sans-IO
def _sansio_pair(held: int = 0):
    """Initiator ``a`` and responder ``b``; with ``held``, that many more IKE SAs
    (each with its own initiator ID) stay established on both while measuring."""
    import dataclasses

    from engine.ike.endpoint import IkeEndpoint
    from engine.policy.identity import parse_identity
    from tests.engine.ike_pair import child, connection, mirror, policy

    conn = connection("bench", local=LEFT, remote=RIGHT, local_id="left.example", remote_id="right.example",
                      children=(child(local_ts=LOCAL_TS, remote_ts=REMOTE_TS),))
    extra = [dataclasses.replace(conn, name=f"held{i}",
                                 local=dataclasses.replace(conn.local, id=parse_identity(f"held{i}.example")))
             for i in range(held)]
    a = IkeEndpoint(policy(conn, *extra, psk=PSK.decode(), address=LEFT))
    mine = mirror(conn)
    b = IkeEndpoint(policy(dataclasses.replace(mine, remote=dataclasses.replace(mine.remote, id=None)),
                           psk=PSK.decode(), address=RIGHT, half_open_threshold=10 ** 6,
                           cookie_threshold_ip=10 ** 6, block_threshold=10 ** 6, init_limit_half_open=0))
    clock = _Clock()
    for c in extra:
        a.initiate(c.name, 1000.0)
        _pump(a, b, 1000.0, clock)
    if held and sum(sa.established for sa in b.sas) != held:
        raise RuntimeError(f"only {sum(sa.established for sa in b.sas)} of {held} held SAs came up")
    return a, b


class _Clock:
    def __init__(self) -> None:
        self.responder = 0.0


def _pump(a, b, now: float, clock: _Clock) -> None:
    """Deliver datagrams between the endpoints until both are quiet (the
    non-ESP marker stripped as the runtime does); drain every event."""
    perf = time.perf_counter
    while True:
        out_a = a.datagrams_to_send()
        while a.next_event() is not None:
            pass
        if out_a:
            t = perf()
            for d in out_a:
                data = d.data
                b.receive_datagram(data[4:] if data[:4] == b"\0\0\0\0" else data, d.remote, d.local, now)
            clock.responder += perf() - t
        t = perf()
        out_b = b.datagrams_to_send()
        while b.next_event() is not None:
            pass
        b.get_timer()  # the runtime re-arms its timer after every event
        clock.responder += perf() - t
        for d in out_b:
            data = d.data
            a.receive_datagram(data[4:] if data[:4] == b"\0\0\0\0" else data, d.remote, d.local, now)
        if not out_a and not out_b:
            return


def _sansio_handshakes(a, b, n: int, clock: _Clock) -> int:
    from engine.events import IkeState

    ok = 0
    now = 1000.0
    for _ in range(n):
        sa = a.initiate("bench", now)
        _pump(a, b, now, clock)
        if sa.state == IkeState.ESTABLISHED and sa.children:
            ok += 1
        a.terminate("bench", now)
        _pump(a, b, now, clock)
        now += 0.001
    return ok


# Inclusive timers wrapped around the functions that matter, per side (a
# function imported by name is patched where it is looked up). They cost a
# fraction of a µs per call, unlike cProfile, which inflates call-heavy code
# (the summaries) several times over.
PROBES: list[tuple[str, str, list[tuple[str, str | None, str]]]] = [
    # (label, kind, sites): kind "total" is everything; "top" rows do not nest in one
    # another, so total - sum(top) is the rest of the IKE logic; "of" rows are part of
    # the "top" row above them; "cross" rows cut across the others.
    ("all IKE work (receive_datagram, initiate, terminate)", "total",
     [("engine.ike.endpoint", "IkeEndpoint", "receive_datagram"), ("engine.ike.endpoint", "IkeEndpoint", "initiate"),
      ("engine.ike.endpoint", "IkeEndpoint", "terminate")]),
    ("x25519 key generation (KeyExchange())", "top", [("engine.crypto.ke", "KeyExchange", "__init__")]),
    ("x25519 exchange (compute_shared)", "top", [("engine.crypto.ke", "KeyExchange", "compute_shared")]),
    ("IKE keys (install_ike_keys: SKEYSEED, prf+, SkCodec)", "top",
     [("engine.ike.endpoint", None, "install_ike_keys"), ("engine.ike.tasks", None, "install_ike_keys"),
      ("engine.ike.exchanges.ike_sa_init", None, "install_ike_keys")]),
    ("CHILD keys (derive_child_keys)", "top",
     [("engine.ike.responder", None, "derive_child_keys"), ("engine.ike.tasks", None, "derive_child_keys"),
      ("engine.ike.exchanges.child_sa", None, "derive_child_keys")]),
    ("AUTH: signed octets (prf(SK_p, ID))", "top",
     [("engine.ike.tasks", None, "octets"), ("engine.ike.responder", None, "octets"),
      ("engine.ike.exchanges.ike_auth", None, "octets")]),
    ("AUTH: PSK lookup (find_psk)", "top", [("engine.ike.endpoint", None, "find_psk"), ("engine.ike.authenticator", None, "find_psk")]),
    ("AUTH: PSK MAC (psk_auth/psk_verify)", "top",
     [("engine.ike.endpoint", None, "psk_auth"), ("engine.ike.endpoint", None, "psk_verify"),
      ("engine.ike.authenticator", None, "psk_auth"), ("engine.ike.authenticator", None, "psk_verify")]),
    ("NAT-D: notifies + check (SHA-1, ipaddress parsing)", "top",
     [("engine.ike.endpoint", None, "nat_notifies"), ("engine.ike.tasks", None, "nat_notifies"),
      ("engine.ike.endpoint", None, "check_nat"), ("engine.ike.tasks", None, "check_nat"),
      ("engine.ike.exchanges.ike_sa_init", None, "nat_notifies"), ("engine.ike.exchanges.ike_sa_init", None, "check_nat")]),
    ("IKE proposal selection (proposals.select/accept_response)", "top",
     [("engine.ike.proposals", None, "select"), ("engine.ike.proposals", None, "accept_response"),
      ("engine.ike.proposals", None, "to_wire")]),
    ("connection lookup (_candidates, select_for_auth)", "top",
     [("engine.ike.endpoint", "IkeEndpoint", "_candidates"),
      ("engine.ike.endpoint", "IkeEndpoint", "select_for_auth")]),
    ("CHILD selection + TS narrowing (select_child)", "top", [("engine.ike.responder", None, "select_child"), ("engine.ike.exchanges.child_sa", None, "choose")]),
    ("IDs to/from wire", "top",
     [("engine.ike.responder", None, "identity_from_wire"), ("engine.ike.responder", None, "identity_to_wire"),
      ("engine.ike.tasks", None, "identity_from_wire"), ("engine.ike.tasks", None, "identity_to_wire"),
      ("engine.ike.exchanges.ike_auth", None, "identity_from_wire"),
      ("engine.ike.exchanges.ike_auth", None, "identity_to_wire")]),
    ("SK seal (encode inner + AES-GCM)", "top", [("engine.ike.protection", "SkCodec", "seal")]),
    ("  of which encode_payloads", "of", [("engine.ike.protection", None, "encode_payloads")]),
    ("  of which AES-GCM encrypt", "of", [("engine.crypto.encr", "_AeadCipher", "encrypt")]),
    ("SK open (AES-GCM decrypt)", "top", [("engine.ike.protection", "SkCodec", "open")]),
    ("decode_message (outer)", "top", [("engine.ike.endpoint", None, "decode_message")]),
    ("decode_payloads (inner, after SK)", "top", [("engine.ike.sa", None, "decode_payloads"), ("engine.ike.sa_fragments", None, "decode_payloads")]),
    ("encode_message (IKE_SA_INIT)", "top", [("engine.ike.sa", None, "encode_message")]),
    ("message summary events (_summary_event)", "top", [("engine.ike.sa", "IkeSa", "_summary_event"), ("engine.ike.sa", "IkeSa", "summary_event")]),
    ("  of which summaries read (lazy)", "of", [("engine.wire.summary", "LazySummary", "_get")]),
    ("state changes (set_state: check, log, event)", "top", [("engine.ike.sa", "IkeSa", "set_state")]),
    ("CHILD install/remove (event, log)", "top",
     [("engine.ike.sa", "IkeSa", "install_child"), ("engine.ike.sa", "IkeSa", "remove_child")]),
    ("scans over all SAs (half-open count, forget, INITIAL_CONTACT)", "top",
     [("engine.ike.endpoint", "IkeEndpoint", "_half_open_count"), ("engine.ike.endpoint", "IkeEndpoint", "forget"),
      ("engine.ike.endpoint", "IkeEndpoint", "initial_contact"),
      ("engine.ike.endpoint", "IkeEndpoint", "initial_contact_received")]),
    ("logging calls (Logger.info/warning/debug)", "cross",
     [("logging", "Logger", "info"), ("logging", "Logger", "warning"), ("logging", "Logger", "debug")]),
    ("timer re-arm after each event (get_timer, outside receive)", "cross",
     [("engine.ike.endpoint", "IkeEndpoint", "get_timer")]),
]


@contextlib.contextmanager
def probes(side: list[str], acc: dict[str, dict[str, float]], missing: list[str]):
    import importlib

    perf = time.perf_counter
    undo = []

    def wrap(fn, label):
        def timed(*a, **kw):
            t = perf()
            try:
                return fn(*a, **kw)
            finally:
                d = acc[side[0]]
                d[label] = d.get(label, 0.0) + perf() - t
        return timed

    try:
        for label, _kind, sites in PROBES:
            for mod_name, owner, attr in sites:
                # The engine changes under this benchmark: a site that is gone is skipped
                # (its row then reads 0.0), never an error.
                try:
                    target = importlib.import_module(mod_name)
                    if owner is not None:
                        target = getattr(target, owner)
                    original = target.__dict__[attr] if owner is not None else getattr(target, attr)
                except (ImportError, AttributeError, KeyError):
                    missing.append(f"{mod_name}.{owner + '.' if owner else ''}{attr}")
                    continue
                undo.append((target, attr, original))
                setattr(target, attr, wrap(original, label))
        yield
    finally:
        for target, attr, original in reversed(undo):
            setattr(target, attr, original)


def measure_sansio(seconds: float, top: int, held: int = 0) -> dict:
    a, b = _sansio_pair(held)
    clock = _Clock()
    _sansio_handshakes(a, b, 50, clock)  # warm up
    clock.responder = 0.0
    ok = n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        ok += _sansio_handshakes(a, b, 50, clock)
        n += 50
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    left = len(a.sas) + len(b.sas) - 2 * held
    # Where the time goes, per side: inclusive probes...
    side = ["initiator"]
    acc: dict[str, dict[str, float]] = {"initiator": {}, "responder": {}}
    pn = 500
    missing: list[str] = []
    with probes(side, acc, missing):
        _sansio_handshakes_sided(a, b, pn, side)
    per_side = {s: {k: 1e6 * v / pn for k, v in d.items()} for s, d in acc.items()}
    # ... and the cProfile top list.
    prof = cProfile.Profile()
    prof.enable()
    _sansio_handshakes(a, b, pn, _Clock())
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return dict(handshakes=n, ok=ok, wall=wall, cpu=cpu, rate_wall=ok / wall, rate_cpu=ok / cpu,
                responder_us=1e6 * clock.responder / max(ok, 1), left_sas=left,
                profile_top=buf.getvalue(), probes_us=per_side, profiled=pn, probes_missing=missing)


def _sansio_handshakes_sided(a, b, n: int, side: list[str]) -> None:
    """As _sansio_handshakes, telling the probes whose work each call is."""
    now = 1000.0
    for _ in range(n):
        side[0] = "initiator"
        a.initiate("bench", now)
        _pump_sided(a, b, now, side)
        side[0] = "initiator"
        a.terminate("bench", now)
        _pump_sided(a, b, now, side)
        now += 0.001


def _pump_sided(a, b, now: float, side: list[str]) -> None:
    while True:
        side[0] = "initiator"
        out_a = a.datagrams_to_send()
        while a.next_event() is not None:
            pass
        a.get_timer()
        side[0] = "responder"
        for d in out_a:
            data = d.data
            b.receive_datagram(data[4:] if data[:4] == b"\0\0\0\0" else data, d.remote, d.local, now)
        out_b = b.datagrams_to_send()
        while b.next_event() is not None:
            pass
        b.get_timer()
        side[0] = "initiator"
        for d in out_b:
            data = d.data
            a.receive_datagram(data[4:] if data[:4] == b"\0\0\0\0" else data, d.remote, d.local, now)
        if not out_a and not out_b:
            return


# ====================================================================== report
def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _others(res: dict) -> float:
    """How busy the responder's core was with other processes over the window."""
    if res.get("core_busy") is None or res.get("responder_cpu") is None:
        return 0.0
    return max(0.0, res["core_busy"] - res["responder_cpu"])


def print_curve(results: dict[str, list[dict]], args) -> None:
    """New SAs per second at each step of held SAs, per responder (median over runs), beside charon."""
    kinds = [k for k in args.responders if results.get(k)]
    steps = max(len(r["curve"]) for k in kinds for r in results[k]) if kinds else 0
    head = ["SAs held"] + [f"{k} SAs/s" for k in kinds] + [f"{k}/charon" for k in kinds if k != "charon"
                                                         and "charon" in kinds]
    rows = []
    for i in range(steps):
        rates = {}
        span = ""
        for k in kinds:
            xs = [r["curve"][i]["rate"] for r in results[k] if len(r["curve"]) > i and r["curve"][i]["rate"]]
            rates[k] = _median(xs)
            for r in results[k]:
                if len(r["curve"]) > i:
                    span = f"{r['curve'][i]['held_from']}-{r['curve'][i]['held_to']}"
        row = [span] + [f"{rates[k]:.0f}" if rates[k] else "-" for k in kinds]
        if "charon" in kinds:
            row += [f"{rates[k] / rates['charon']:.2f}" if rates[k] and rates["charon"] else "-"
                    for k in kinds if k != "charon"]
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    for k in kinds:
        for r in results[k]:
            rss = r.get("responder_rss_kib")
            print(f"  {k}: {r['held']} held, {r['hold_failed']} failed, {r['retransmits']} retransmits, "
                  f"failures {r['failures'] or 'none'}" + (f"; resident {rss / 1024:.0f} MiB at the end" if rss else ""))


def print_table(results: dict[str, list[dict]], args) -> None:
    if args.curve:
        print_curve(results, args)
        return
    rows = []
    charon = _median([r["rate"] for r in results.get("charon", [])])
    charon_us = _median([r["responder_us_per_hs"] for r in results.get("charon", [])])
    for kind in args.responders:
        runs = results.get(kind) or []
        if not runs:
            continue
        rate = _median([r["rate"] for r in runs])
        cpu = _median([r["responder_cpu"] for r in runs])
        us = _median([r["responder_us_per_hs"] for r in runs])
        gen = max((r["generator_cpu"] or 0) for r in runs)
        others = _median([_others(r) for r in runs])
        fails = sum(sum(r["failures"].values()) for r in runs)
        ratio = f"{rate / charon:.2f}" if charon and kind != "charon" else ("1.00" if kind == "charon" else "-")
        cpu_ratio = f"{charon_us / us:.2f}" if charon_us and us and kind != "charon" else \
            ("1.00" if kind == "charon" else "-")
        rows.append((kind, f"{rate:.0f}", " ".join(f"{r['rate']:.0f}" for r in runs),
                     f"{cpu:.2f}" if cpu is not None else "-", f"{us:.0f}" if us else "-", ratio, cpu_ratio,
                     f"{others:.2f}", f"{gen:.2f}", str(fails)))
    head = ("responder", "median hs/s", "runs (hs/s)", "CPU used", "CPU µs/hs", "ratio", "CPU ratio",
            "others on core", "gen CPU max", "failures")
    if not rows:
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(textwrap.dedent("""\
        CPU used: the responder's CPU time over the window / window length (1.00 = its whole core).
        CPU µs/hs: responder CPU time per completed handshake. ratio: median hs/s / charon's;
        CPU ratio: charon's µs/hs / this one's (above 1 = cheaper than charon per handshake).
        others on core: how busy the responder's core was with anything else (other processes,
        softirq), median over the runs: above ~0.1 the rates are low because of them.
        gen CPU max: the generator's busiest run (near 1.00 = the generator, not the responder, was the limit;
        expected for null, whose row is the generator's own ceiling)."""))
    for kind in args.responders:
        runs = results.get(kind) or []
        lat = [r["latency_ms"]["p50"] for r in runs if r["latency_ms"]["p50"] is not None]
        extra = {k: sum(r[k] for r in runs) for k in ("retransmits", "late", "stray")}
        fails: Counter = Counter()
        for r in runs:
            fails.update(r["failures"])
        child = sum(r["child_ok"] for r in runs)
        ok = sum(r["ok"] for r in runs)
        print(f"  {kind}: {ok} handshakes in the windows, {child} with a CHILD SA; latency p50 "
              f"{_median(lat)} ms; retransmits {extra['retransmits']}, late {extra['late']}; "
              f"failures {dict(fails) or 'none'}")
        per_sa = [(r["responder_rss_kib"]["held"] - r["responder_rss_kib"]["start"]) / r["held"]
                  for r in runs if r.get("held") and r["responder_rss_kib"].get("held") is not None
                  and r["responder_rss_kib"].get("start") is not None]
        if per_sa:
            print(f"    held {runs[0]['held']} IKE SAs (+ CHILD SAs) during the window: resident memory grew by "
                  f"{_median(per_sa):.1f} KiB per held SA (median over runs)")
    for kind in args.responders:
        for r in results.get(kind) or []:
            if (r["generator_cpu"] or 0) > 0.9 and kind != "null":
                print(f"  WARNING: generator CPU {r['generator_cpu']:.2f} against {kind}: "
                      "that run may be generator-bound")
            if _others(r) > 0.15:
                print(f"  WARNING: other work took {_others(r):.2f} of the responder's core in a {kind} run: "
                      "its rate is too low (CPU µs/hs is the fairer figure)")


def print_profile(prof: dict) -> None:
    if "error" in prof:
        print(f"profile: {prof['error']}")
        return
    res = prof["result"]
    us = res.get("responder_us_per_hs")
    print(f"py-spy on {prof.get('kind', 'our daemon')}: {prof['samples']} samples while it ran "
          f"{res['rate']:.0f} hs/s at CPU "
          f"{res['responder_cpu']}, {us} µs CPU per handshake")
    print(f"  command: {prof['command']}")
    total = prof["samples"] or 1
    print(f"  {'component':48} {'share':>6} {'µs/hs':>7}")
    for comp, n in sorted(prof["components"].items(), key=lambda kv: -kv[1]):
        share = n / total
        print(f"  {comp:48} {100 * share:5.1f}% {share * us if us else 0:7.0f}")
    print("  top leaf functions (own Python frame, C calls included):")
    for leaf, n in prof["leaves"].items():
        print(f"    {100 * n / total:5.1f}%  {leaf}")
    if prof.get("generated"):
        print("  generated __init__ (dataclasses) by caller:")
        for caller, n in prof["generated"].items():
            print(f"    {100 * n / total:5.1f}%  {caller}")


def sansio_section(args) -> dict:
    """Measure and print the in-process rate; returns the figures."""
    print(f"\n== in-process sans-IO: two IkeEndpoints, datagrams handed over directly "
          f"({args.sansio_seconds:.0f} s{f', {args.sansio_held} more IKE SAs held' if args.sansio_held else ''})")
    s = measure_sansio(args.sansio_seconds, args.top, args.sansio_held)
    print(f"{s['ok']} of {s['handshakes']} handshakes (+ delete) in {s['wall']:.2f} s wall, {s['cpu']:.2f} s CPU: "
          f"{s['rate_wall']:.0f} hs/s wall, {s['rate_cpu']:.0f} hs/s per CPU-second "
          f"(both sides in one process); responder side {s['responder_us']:.0f} µs per handshake; "
          f"SAs left: {s['left_sas']}")
    print(f"inclusive µs per handshake, by side (timers around these functions, {s['profiled']} handshakes;"
          " nested rows are included in the row above them):")
    sides = s["probes_us"]
    print(f"  {'':60} {'initiator':>9} {'responder':>9}")
    rest = {k: 0.0 for k in sides}
    for label, kind, _ in PROBES:
        i, r = sides["initiator"].get(label, 0.0), sides["responder"].get(label, 0.0)
        print(f"  {label:60} {i:9.1f} {r:9.1f}")
        for k, v in (("initiator", i), ("responder", r)):
            rest[k] += v if kind == "total" else -v if kind == "top" else 0.0
        if kind == "total":
            print(f"  {'':60} {'-' * 9} {'-' * 9}")
    print(f"  {'rest (IKE logic, dataclasses, ...)':60} {rest['initiator']:9.1f} {rest['responder']:9.1f}")
    if s["probes_missing"]:
        print(f"  (not in the engine any more, skipped: {', '.join(s['probes_missing'])})")
    print(f"cProfile top {args.top} by own time ({s['profiled']} handshakes; cProfile inflates code made of "
          "many small calls):")
    print("\n".join("  " + ln for ln in s["profile_top"].splitlines() if ln.strip())[:6000])
    return {k: v for k, v in s.items() if k != "profile_top"}


def sansio_in_child(args) -> dict:
    """The sans-IO section in a child process pinned and raised like the
    responders, so other work on the machine disturbs it as little."""
    out = Path(tempfile.mkstemp(prefix="ipsec-bench-sansio-", suffix=".json")[1])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--sansio-only", "--nice", "0", "--sansio-seconds",
           str(args.sansio_seconds), "--sansio-held", str(args.sansio_held), "--top", str(args.top), "--json", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        pin(proc.pid, RESP_CPU)
        text, _ = proc.communicate(timeout=args.sansio_seconds * 4 + 120)
        print("\n".join(text.splitlines()[1:]))  # without the child's header line
        return json.loads(out.read_text()).get("sansio", {})
    finally:
        stop_process(proc, grace=2)
        out.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=32, help="handshakes in flight")
    ap.add_argument("--hold", type=int, default=0, metavar="N",
                    help="each run first brings up N IKE SAs and keeps them while measuring (cost of held state; "
                         "also reports the responder's memory per held SA)")
    ap.add_argument("--distinct-ts", action="store_true",
                    help="every handshake proposes its own initiator selector (no two CHILD SAs share selectors)")
    ap.add_argument("--curve", type=int, default=0, metavar="N",
                    help="hold every SA up to N and report new SAs/s per --curve-step held (replaces the window; "
                         "--duration caps the run)")
    ap.add_argument("--curve-step", type=int, default=1000)
    ap.add_argument("--responders", default=",".join(DEFAULT_RESPONDERS),
                    help=f"comma-separated, from {', '.join(RESPONDERS)}")
    ap.add_argument("--profile", action="store_true", help="also py-spy our daemon under load")
    ap.add_argument("--profile-responder", default="ours", choices=tuple(k for k in RESPONDERS if k.startswith("ours")),
                    help="which of our responders --profile samples")
    ap.add_argument("--sansio-only", action="store_true", help="only the in-process rate (no root needed)")
    ap.add_argument("--sansio-seconds", type=float, default=5.0)
    ap.add_argument("--sansio-held", type=int, default=None, metavar="N",
                    help="keep N more IKE SAs established on both endpoints while measuring (default: --hold)")
    ap.add_argument("--no-sansio", action="store_true")
    ap.add_argument("--top", type=int, default=20, help="lines of the cProfile top list")
    ap.add_argument("--nice", type=int, default=-15,
                    help="nice value of responder and generator (default -15: other work on a shared machine "
                         "disturbs them less; 0 leaves them alone)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    ap.add_argument("--json", metavar="FILE", help="also write every result to FILE")
    args = ap.parse_args(argv)
    args.responders = [r.strip() for r in args.responders.split(",") if r.strip()]
    global NICE
    NICE = args.nice
    if args.sansio_held is None:
        args.sansio_held = args.hold
    unknown = [r for r in args.responders if r not in KINDS]
    if unknown:
        ap.error(f"unknown responder(s) {', '.join(unknown)}; choose from {', '.join(RESPONDERS)}")
    if not args.sansio_only:
        missing = missing_requirements()
        if missing:
            print("benchmarks/handshakes.py needs:", file=sys.stderr)
            for m in missing:
                print(f"  - {m}", file=sys.stderr)
            print("(the in-process part alone runs without them: --sansio-only)", file=sys.stderr)
            return 2
    # SIGTERM -> the finally blocks remove namespaces and processes.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    report: dict = {}
    print(f"engine at {engine_version()}; load {os.getloadavg()[0]:.2f} (1 min average) on {os.cpu_count()} CPUs "
          f"(responders and generator run at nice {NICE} in their own sessions)")
    report["engine"] = engine_version()
    if not args.no_sansio:
        if not args.sansio_only and NICE:
            report["sansio"] = sansio_in_child(args)
        else:
            report["sansio"] = sansio_section(args)
    if not args.sansio_only:
        print(f"\n== lab: {LEFT} (generator, CPU {GEN_CPU}) -> {RIGHT} (responder, CPU {RESP_CPU}); "
              f"{args.runs} runs x {args.duration:.0f} s (+{args.warmup:.0f} s warm-up), "
              f"{args.concurrency} in flight", flush=True)
        try:
            results, commands = measure_lab(args)
        except KeyboardInterrupt:
            print("interrupted: namespaces and processes removed", file=sys.stderr)
            return 130
        report["lab"] = results
        report["commands"] = commands
        print()
        print_table(results, args)
        print("\ncommands:")
        for k, v in commands.items():
            print(f"  {k}: {v}")
        if "_profile" in results:
            print()
            print_profile(results["_profile"][0])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
