"""Usage counters the audit reads, kept across restarts in ``STATE_DIR/usage.json``.

While the daemon runs, :class:`UsageTracker` samples the runtime every
SAMPLE_INTERVAL seconds (and once at shutdown) and records, per item of the
policy:

- connections: first seen, last time one of its IKE SAs was up;
- children: first seen, last time traffic went through one of its CHILD SAs,
  bytes and packets in total (across rekeys and restarts);
- rules: first seen, last time the rule decided a flow, flows in total (when
  the datapath counts them: userspace and lab do, the kernel's does not yet);
- negotiated suites: per connection and peer, the IKE and ESP/AH algorithms
  actually negotiated, first and last seen;
- PSKs: when each ``[ike.NAME]`` secret was first seen with its current value
  (a keyed digest tells a changed value from the same one without storing it;
  the key is ``STATE_DIR/usage.key``, mode 0600, one per namespace: :func:`key_name`).

The file is rewritten atomically (mode 0600). :func:`load` reads it back for
``audit``. It is per network namespace (:func:`usage_name`): daemons in two
namespaces share the default state folder, and each rewrote the whole file
with its own record every sample, so each wiped out the other's counters.

An unnamed namespace's file is named by its nsfs inode, which the kernel hands
to the next namespace as soon as one dies: the file records the namespace's
identity (:func:`netns_identity`) and one of another identity is not loaded.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path

from engine.crypto.digests import hmac_sha256
from engine.ops.metrics import TrafficTotals
from engine.ops.state import state_dir, write_private

log = logging.getLogger("engine.usage")

USAGE = "usage.json"
DIGEST_KEY = "usage.key"
SAMPLE_INTERVAL = 30.0
VERSION = 1


def empty() -> dict:
    return {"version": VERSION, "connections": {}, "children": {}, "rules": {}, "suites": {}, "psks": {},
            "samples": 0, "first_sample": None, "last_sample": None}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _optional(check):
    return lambda v: v is None or check(v)


def _seen(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(e, dict) and _number(e.get("first_seen"))
                                       and _number(e.get("last_seen")) for k, e in v.items())


_ENTRIES = {
    "connections": {"first_seen": (None, _optional(_number)), "last_up": (None, _optional(_number))},
    "children": {"first_seen": (None, _optional(_number)), "last_traffic": (None, _optional(_number)),
                 "bytes": (0, _count), "packets": (0, _count)},
    "rules": {"first_seen": (None, _optional(_number)), "last_matched": (None, _optional(_number)),
              "flows": (0, _count), "counted": (False, lambda v: isinstance(v, bool))},
    "psks": {"digest": ("", lambda v: isinstance(v, str)), "since": (None, _optional(_number))},
    "suites": {"connection": ("", lambda v: isinstance(v, str)), "peer": ("", lambda v: isinstance(v, str)),
               "remote_addr": ("", lambda v: isinstance(v, str)), "ike": ({}, _seen), "child": ({}, _seen)},
}
"""Per table of the usage file: each field's default (when missing) and check. The file is ours, but a
disk, an editor or another version may have damaged it: an entry that fails is dropped (the daemon
starts it again), never a traceback out of audit or out of the daemon's sampling."""


def _entries(table, fields: dict) -> dict:
    if not isinstance(table, dict):
        return {}
    out = {}
    for name, entry in table.items():
        if not isinstance(entry, dict):
            continue
        clean = {}
        for field_name, (default, check) in fields.items():
            value = entry.get(field_name, default)
            if not check(value):
                break
            clean[field_name] = dict(value) if isinstance(value, dict) else value
        else:
            out[name] = clean
    return out


SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", None if sys.platform != "linux" else 71)
"""getsockopt giving a socket's network namespace cookie (Linux 5.14; 71 on the generic socket ABI)."""
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def netns_identity() -> dict | None:
    """What tells this process's network namespace from an earlier one with the same nsfs inode: the
    kernel's netns cookie (unique in a boot, never reused) and the boot id (cookies start again at
    boot). None when neither can be read. Without a cookie (a kernel before 5.14) only a reboot tells
    a reused inode."""
    try:
        boot = BOOT_ID.read_text(encoding="ascii").strip() or None
    except (OSError, ValueError):
        boot = None
    cookie = None
    if SO_NETNS_COOKIE is not None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:  # made in our namespace
                raw = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
            if len(raw) == 8:
                cookie = int.from_bytes(raw, sys.byteorder)
        except OSError:
            pass
    if boot is None and cookie is None:
        return None
    return {"boot_id": boot, "cookie": cookie}


def unnamed(name: str) -> bool:
    """Whether a usage file is an unnamed namespace's (named by an inode the kernel reuses)."""
    return name.startswith("usage.netns-")


def key_name(name: str) -> str:
    """The digest key's file for a usage file: ``usage.key`` for ``usage.json``, ``usage.NAME.key`` for
    ``usage.NAME.json``. One key per namespace: two files' digests of one PSK differ (they do not tell
    that two namespaces share a secret), and no daemon rewrites the key another one digests with."""
    return name.removesuffix(".json") + ".key"


NETNS_DIR = Path("/run/netns")
"""Where ``ip netns add NAME`` keeps its namespaces (bind mounts of their nsfs files)."""


def usage_name(proc: str = "/proc") -> str:
    """The usage file's name for this process's network namespace: ``usage.NAME.json`` in one ``ip netns``
    named NAME, ``usage.json`` in the host's (that of pid 1, or when that cannot be told), and
    ``usage.netns-INODE.json`` in another (as the kernel datapath's claim, keyed by namespace)."""
    try:
        ours = _dev_ino(os.stat(f"{proc}/self/ns/net"))
    except OSError:  # no /proc: the host's name, as before
        return USAGE
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except OSError:
        names = []
    for name in names:
        try:
            if _dev_ino(os.stat(NETNS_DIR / name)) == ours and re.fullmatch(r"[\w.-]{1,64}", name):
                return f"usage.{name}.json"
        except OSError:
            continue
    try:
        if _dev_ino(os.stat(f"{proc}/1/ns/net")) != ours:
            return f"usage.netns-{ours[1]}.json"
    except OSError:  # pid 1's namespace hidden from us (a sandbox): cannot tell, the host's name
        pass
    return USAGE


def other_files(folder: Path, name: str | None = None) -> list[str]:
    """The usage files in ``folder`` of other network namespaces than this one (or than ``name``): audit
    run in one namespace names them rather than report no counters."""
    ours = name or usage_name()
    try:
        found = os.listdir(folder)
    except OSError:
        return []
    return sorted(f for f in found if f != ours and (f == USAGE or re.fullmatch(r"usage\.[\w.-]{1,64}\.json", f)))


def namespace_of(file: str) -> str | None:
    """The ``ip netns`` name a usage file is named for (None: the host's, or an unnamed namespace)."""
    m = re.fullmatch(r"usage\.([\w.-]{1,64})\.json", file)
    return None if m is None or m.group(1).startswith("netns-") else m.group(1)


def _dev_ino(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def load(folder: Path, name: str | None = None) -> dict:
    """The usage file of a state folder, of this network namespace unless ``name`` is given (an empty
    record when there is none or it is damaged; a damaged entry is left out). An unnamed namespace's
    file is this namespace's only when it records this namespace's identity: else it is a dead
    namespace's whose inode ours reuses (or one written before identities were kept: cannot tell)."""
    name = name or usage_name()
    try:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty()
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return empty()
    if unnamed(name) and (data.get("netns") is None or data.get("netns") != netns_identity()):
        log.info("usage: %s is another network namespace's (its inode was reused): starting anew", name)
        return empty()
    base = empty()
    for table, fields in _ENTRIES.items():
        base[table] = _entries(data.get(table), fields)
    if _count(data.get("samples")):
        base["samples"] = data["samples"]
    for key in ("first_sample", "last_sample"):
        if _number(data.get(key)):
            base[key] = data[key]
    return base


def _read_key(path: Path) -> bytes | None:
    try:
        key = path.read_bytes()
    except OSError:
        return None
    return key if len(key) == 32 else None


def _digest_key(folder: Path, name: str = USAGE, fresh: bool = False) -> bytes:
    """The namespace's digest key (made on first use). ``fresh``: a key file there is not ours (a dead
    namespace's of the same inode): replace it."""
    path = folder / key_name(name)
    key = None if fresh else _read_key(path)
    if key is None:
        key = os.urandom(32)
        write_private(path, key)
    return key


def child_key(connection: str, child: str) -> str:
    return f"{connection}/{child}"


class UsageTracker:
    """Samples one runtime into its state folder's usage file (see the module docstring)."""

    def __init__(self, runtime, folder: Path | None = None) -> None:
        self.runtime = runtime
        if folder is None:
            try:
                folder = state_dir(runtime.policy, create=True)
            except OSError as exc:  # the engine runs on; only the audit's counters are off
                log.warning("usage counters off: state folder %s: %s", exc.filename, exc.strerror or exc)
        self.folder = folder
        self.name = usage_name()
        self.data = load(self.folder, self.name) if self.folder else empty()
        if unnamed(self.name):
            self.data["netns"] = netns_identity()
        # Digests in a record written before a key per namespace were made with the key all namespaces
        # shared (usage.key): checked once with it, so no PSK looks new, then digested with our own key
        # (taking usage.key over would digest a PSK as the host does, for good).
        self._shared_key = bool(self.data["psks"]) and key_name(self.name) != DIGEST_KEY
        # An unnamed namespace's key file is named by the inode too: with no digest of ours in the record,
        # one there may be a dead namespace's, and digesting with it would link their PSKs.
        self._fresh_key = unnamed(self.name) and not self.data["psks"]
        self.traffic = TrafficTotals()
        self._rule_counts: dict[str, int] = {}
        self._task: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="usage")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.enabled:
            self.sample()

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL)

    # ------------------------------------------------------------ one sample
    def sample(self, now: float | None = None) -> None:
        """Record what the runtime shows now, and save."""
        now = time.time() if now is None else now
        d = self.data
        policy = self.runtime.policy
        d["samples"] += 1
        d["first_sample"] = d["first_sample"] or now
        d["last_sample"] = now
        for c in policy.connections:
            d["connections"].setdefault(c.name, {"first_seen": now, "last_up": None})
            for k in c.children:
                d["children"].setdefault(child_key(c.name, k.name), {
                    "first_seen": now, "last_traffic": None, "bytes": 0, "packets": 0})
        for r in policy.rules:
            d["rules"].setdefault(r.name, {"first_seen": now, "last_matched": None, "flows": 0,
                                           "counted": False})
        try:
            status = self.runtime.status()
        except Exception:  # a runtime that is stopping: keep what we have
            log.exception("usage: reading the status failed")
            status = None
        if status is not None:
            self._sas(status, now)
        self._rules(now)
        self._psks(now)
        self.save()

    def _sas(self, status, now: float) -> None:
        d = self.data
        before = {k: dict(v) for k, v in self.traffic.totals.items()}
        self.traffic.update(status)
        for (conn, child), totals in self.traffic.totals.items():
            old = before.get((conn, child), {})
            grew_bytes = totals["bytes_in"] + totals["bytes_out"] - old.get("bytes_in", 0) - old.get("bytes_out", 0)
            grew_packets = (totals["packets_in"] + totals["packets_out"] - old.get("packets_in", 0)
                            - old.get("packets_out", 0))
            entry = d["children"].setdefault(child_key(conn, child), {
                "first_seen": now, "last_traffic": None, "bytes": 0, "packets": 0})
            if grew_packets > 0:
                entry["bytes"] += grew_bytes
                entry["packets"] += grew_packets
                entry["last_traffic"] = now
        for sa in status.ike_sas:
            if sa.state in ("ESTABLISHED", "REKEYING", "REKEYED"):
                conn = d["connections"].setdefault(sa.name, {"first_seen": now, "last_up": None})
                conn["last_up"] = now
                self._suite(sa, now)

    def _suite(self, sa, now: float) -> None:
        peer = sa.remote_id or sa.remote_addr
        key = f"{sa.name}|{peer}"
        entry = self.data["suites"].setdefault(key, {"connection": sa.name, "peer": peer,
                                                     "remote_addr": sa.remote_addr, "ike": {}, "child": {}})
        entry["remote_addr"] = sa.remote_addr
        ike = "/".join(a for a in (sa.encr, sa.integ, sa.prf, sa.ke) if a)
        if ike:
            seen = entry["ike"].setdefault(ike, {"first_seen": now, "last_seen": now})
            seen["last_seen"] = now
        for c in sa.children:
            child = "/".join(a for a in (c.protocol.upper(), c.encr, c.integ, c.ke) if a)
            seen = entry["child"].setdefault(child, {"first_seen": now, "last_seen": now})
            seen["last_seen"] = now

    def _rules(self, now: float) -> None:
        counters = getattr(self.runtime.datapath, "rule_counters", None)
        if counters is None:
            return
        try:
            counts = counters()
        except Exception:
            log.exception("usage: reading the rule counters failed")
            return
        for name in {r.name for r in self.runtime.policy.rules}:
            entry = self.data["rules"][name]
            entry["counted"] = True
            n = counts.get(name, 0)
            grew = n - self._rule_counts.get(name, 0)
            if grew > 0:
                entry["flows"] += grew
                entry["last_matched"] = now
            self._rule_counts[name] = max(n, self._rule_counts.get(name, 0))

    def _psks(self, now: float) -> None:
        secrets = self.runtime.policy.secrets
        if not secrets.ike or self.folder is None:
            return
        shared = _read_key(self.folder / DIGEST_KEY) if self._shared_key else None
        key = _digest_key(self.folder, self.name, fresh=self._fresh_key)
        self._fresh_key = self._shared_key = False
        for entry in secrets.ike:
            digest = hmac_sha256(key, entry.secret.reveal()).hex()[:32]
            known = self.data["psks"].get(entry.name)
            if known is not None and shared is not None and hmac.compare_digest(
                    known.get("digest", ""), hmac_sha256(shared, entry.secret.reveal()).hex()[:32]):
                known["digest"] = digest
            if known is None or not hmac.compare_digest(known.get("digest", ""), digest):
                self.data["psks"][entry.name] = {"digest": digest, "since": now}

    def save(self) -> None:
        if self.folder is None:
            return
        try:
            write_private(self.folder / self.name, json.dumps(self.data, indent=1, sort_keys=True).encode())
        except OSError as exc:
            log.warning("usage: cannot write %s: %s", self.folder / self.name, exc.strerror or exc)
