"""``ipsec-console daemon CONFIG``: the engine headless in the foreground.

Logs to stderr (journald-friendly under systemd: a priority prefix and no
timestamp of its own, journald adds one), serves the control socket, and:

- tells systemd when it is ready (``Type=notify``: ``READY=1`` once the IKE
  sockets, the datapath and the control socket are up) and pings its watchdog;
- on SIGHUP reads the policy file again and applies it through the
  transactional ``apply_policy`` (unchanged connections keep their SAs; a file
  that does not validate changes nothing and the daemon keeps running);
- on SIGTERM (or SIGINT) deletes its SAs with INFORMATIONAL exchanges, removes
  what the datapath installed, and exits 0.

Opt-in extras from ``[engine]``: Prometheus metrics (``metrics_textfile``,
``metrics_listen``), Wireshark keys (``save_keys``); with a state folder
(engine.ops.state) the usage counters ``audit`` reads.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Mapping

from engine import logsafe
from engine.ops.sdnotify import Notifier
from engine.runtime.client import DEFAULT_CONTROL
from engine.runtime.loglines import TurnBufferedHandler

log = logging.getLogger("engine.daemon")

# sd-daemon(3) priority prefixes, which journald turns into the entry's priority.
_SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """``<6>engine.ike: message``: journald stores the priority and adds the time itself."""

    def format(self, record: logging.LogRecord) -> str:
        level = max((lv for lv in _SYSLOG_PRIORITY if lv <= record.levelno), default=logging.DEBUG)
        text = super().format(record)
        # Every line of a multi-line record (a traceback) gets the prefix, or journald files it as INFO.
        return "\n".join(f"<{_SYSLOG_PRIORITY[level]}>{line}" for line in text.split("\n"))


class SecondFormatter(logging.Formatter):
    """logging.Formatter with the date and time text made once per second (a strftime per line was
    a tenth of the one INFO line per handshake); the same text."""

    _second: int | None = None
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return self.default_msec_format % (self._text, record.msecs)


def under_journald(env: Mapping[str, str] | None = None, stream=None) -> bool:
    """Whether stderr goes to journald: ``$JOURNAL_STREAM`` names stderr's device and inode (systemd
    sets it when it connects stderr to the journal), or the process runs as a systemd unit
    (``$INVOCATION_ID``) with stderr not a terminal."""
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        st = None
    journal = env.get("JOURNAL_STREAM", "")
    if journal and st is not None:
        dev, _, ino = journal.partition(":")
        if dev.isdigit() and ino.isdigit() and (st.st_dev, st.st_ino) == (int(dev), int(ino)):
            return True
    if env.get("INVOCATION_ID"):
        return st is None or not (stat.S_ISCHR(st.st_mode) and os.isatty(stream.fileno()))
    return False


def setup_logging(verbose: int, env: Mapping[str, str] | None = None, stream=None) -> logging.Handler:
    """Engine logs to stderr: INFO by default, DEBUG with ``-v``, and with ``-vv`` also the DEBUG of the
    libraries underneath (asyncio, pyroute2). Returns the handler (tests remove it)."""
    stream = sys.stderr if stream is None else stream
    handler = TurnBufferedHandler(stream)  # a turn of the loop's lines in one write (engine.runtime.loglines)
    if under_journald(env, stream):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(SecondFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.getLogger("engine").setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)
    # -vv: everything through the root logger (the engine's records propagate there); else only the engine.
    target = logging.getLogger() if verbose >= 2 else logging.getLogger("engine")
    if verbose >= 2:
        target.setLevel(logging.DEBUG)
    logsafe.protect(handler)  # escaped, capped, rate-limited (engine.logsafe)
    target.addHandler(handler)
    if target is not logging.getLogger():
        # asyncio's own errors (an accept loop out of descriptors) go through the same limits.
        logging.getLogger("asyncio").addHandler(handler)
    return handler


def make_datapath(policy, kind: str | None = None):
    """The datapath the policy asks for (or ``kind``, from --datapath).

    ``IPSEC_CONSOLE_TUN_DEVICE`` names the userspace datapath's TUN device
    (default: ``[engine] tun_device``, else ipsecc0).
    """
    kind = kind or policy.engine.datapath
    if kind == "none":
        from engine.datapath.base import NullDatapath

        return NullDatapath()
    if kind == "kernel":
        from engine.datapath.kernel import KernelDatapath

        return KernelDatapath.for_runtime(policy)
    if kind == "userspace":
        from engine.datapath.tun import DEFAULT_DEVICE
        from engine.datapath.userspace import UserspaceDatapath

        e = policy.engine
        device = os.environ.get("IPSEC_CONSOLE_TUN_DEVICE") or e.tun_device or DEFAULT_DEVICE
        return UserspaceDatapath(policy, device=device, mtu=e.tun_mtu, offload=e.tun_offload != "off")
    if kind == "lab":
        from engine.datapath.lab import LabDatapath

        return LabDatapath(policy)
    raise ValueError(f"unknown datapath {kind!r}")


class Services:
    """What runs beside the engine in the daemon: reload on SIGHUP, systemd notifications and
    watchdog, metrics, key export, usage counters. Built after the runtime started; stopped
    before it stops."""

    def __init__(self, runtime, notifier: Notifier) -> None:
        from engine.ops.keylog import KeyLog
        from engine.ops.metrics_export import MetricsExporter
        from engine.ops.usage import UsageTracker

        self.runtime = runtime
        self.notifier = notifier
        self.metrics = MetricsExporter(runtime)
        self.keylog = KeyLog(runtime)
        self.usage = UsageTracker(runtime)
        self.reloads = SighupReloads(runtime, notifier, running=False)
        """Started by start(): SIGHUP's handler is set before the engine starts."""
        self._watchdog: asyncio.Task | None = None

    async def start(self) -> None:
        self.keylog.start()
        await self.metrics.start()
        self.usage.start()
        if self.notifier.watchdog_interval:
            self._watchdog = asyncio.create_task(self._ping(), name="watchdog")
        self.reloads.start()  # (a reload it starts runs after the caller's READY=1: no await between)

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.reloads.cancel()
        await self.usage.stop()
        await self.metrics.stop()
        await self.keylog.stop()

    async def _ping(self) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(self.notifier.watchdog_interval)

    def sighup(self) -> None:
        self.reloads.sighup()


class SighupReloads:
    """SIGHUP applies the policy file again, one reload at a time; a SIGHUP that comes while one
    runs makes one more after it (that one may have read the file before the edit announced).
    ``running=False``: the engine is still starting; a SIGHUP then reloads once start() says it runs
    (applied at once, it met a runtime half started, and told systemd READY before the daemon was)."""

    def __init__(self, runtime, notifier: Notifier | None = None, *, running: bool = True) -> None:
        self.runtime = runtime
        self.notifier = notifier
        self.running = running
        self.task: asyncio.Task | None = None
        self._again = False

    def start(self) -> None:
        """The engine runs: a SIGHUP that came while it started is served now."""
        self.running = True
        if self._again:
            self.sighup()

    def sighup(self) -> None:
        if not self.running:
            self._again = True
        elif self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="reload")
        else:
            self._again = True

    async def _run(self) -> None:
        while True:
            self._again = False
            await reload_on_sighup(self.runtime, self.notifier)
            if not self._again:
                return

    def cancel(self) -> None:
        """The daemon stops: the running reload ends, and a SIGHUP from now on starts none (the
        handler stays while the SAs are deleted)."""
        self.running, self._again = False, False
        if self.task is not None:
            self.task.cancel()


async def reload_on_sighup(runtime, notifier: Notifier | None = None) -> None:
    """Apply the policy file again (SIGHUP); errors are logged, the running policy stays."""
    from engine.ops.journal import Who
    from engine.ops.reload import ReloadError, reload_from_file_async

    if notifier is not None:
        notifier.reloading()
    try:
        applied = await reload_from_file_async(runtime, via="sighup", who=Who(user="SIGHUP"))
    except ReloadError as exc:
        log.error("reload of %s failed: %s", runtime.policy.path, exc)
        for line in exc.lines():
            log.error("%s", line)
        if notifier is not None:
            notifier.ready(f"reload failed, still running the previous policy: {exc}")
        return
    except Exception:  # a bug must not take the daemon down
        log.exception("reload of %s failed", runtime.policy.path)
        if notifier is not None:
            notifier.ready("reload failed, still running the previous policy")
        return
    log.info("reloaded %s: added %s, removed %s, changed %s", runtime.policy.path,
             ", ".join(applied.added) or "none", ", ".join(applied.removed) or "none",
             ", ".join(applied.changed) or "none")
    if notifier is not None:
        notifier.ready(_status_line(runtime))


def _privilege_hint(exc: Exception) -> str:
    """What to do about a start refused for want of privilege (not root: the kernel's XFRM, a TUN
    device, port 500)."""
    if getattr(exc, "errno", None) not in (errno.EPERM, errno.EACCES):
        return ""
    return " (run it as root, or with CAP_NET_ADMIN and CAP_NET_BIND_SERVICE as the systemd unit does)"


def _status_line(runtime) -> str:
    n = len(runtime.policy.connections)
    return f"running {runtime.policy.path} ({n} connection{'s' if n != 1 else ''}, datapath {runtime.datapath.name})"


async def serve(config: str, control: str | None, *, datapath: str | None = None, ready=None,
                env: Mapping[str, str] | None = None) -> int:
    from engine.ops.reload import ReloadError, parse_text, read_policy_file
    from engine.pki.errors import PkiError
    from engine.runtime.control import ControlServer, raise_open_files_limit
    from engine.runtime.engine import EngineRuntime

    raise_open_files_limit()

    # Absolute from here on: the console attaches from anywhere and resolves the policy's
    # relative paths (secrets, certificates, lab peers) against this file's folder.
    config = os.path.abspath(config)
    notifier = Notifier(env)
    try:
        # The text read once: the policy_text served (get-policy, the journal) is what was parsed.
        text = read_policy_file(config)
        policy = parse_text(text, config)
    except ReloadError as exc:
        print(f"ipsec-console: {exc}" if not exc.findings else "\n".join(exc.lines()), file=sys.stderr)
        return 1
    if (datapath or policy.engine.datapath) == "lab":
        return await _serve_lab(config, policy, control, ready)
    try:
        dp = make_datapath(policy, datapath)
    except (ImportError, ValueError, OSError) as exc:
        print(f"ipsec-console: datapath {policy.engine.datapath!r} unavailable: {exc}", file=sys.stderr)
        return 1
    try:
        runtime = EngineRuntime(policy, datapath=dp, policy_text=text)
    except PkiError as exc:
        print(f"ipsec-console: {config}: {exc}", file=sys.stderr)
        return 1
    server = ControlServer(runtime, control or policy.engine.control or DEFAULT_CONTROL)
    services = Services(runtime, notifier)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP's default action kills the process: from here on it reloads instead.
    loop.add_signal_handler(signal.SIGHUP, services.sighup)
    try:
        try:
            await server.check_free()  # before the engine: its datapath may flush the kernel's SAs
            await runtime.start()
            await server.start()
            await services.start()
        except Exception as exc:  # OSError, the kernel's refusal (KernelDatapathError): a line, not a traceback
            print(f"ipsec-console: {exc}{_privilege_hint(exc)}", file=sys.stderr)
            await services.stop()
            await server.stop()
            await runtime.stop(delete=False)
            return 1
        log.info("daemon running with %s (datapath %s)", config, dp.name)
        notifier.ready(_status_line(runtime))
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down: deleting SAs")
        notifier.stopping()
        await services.stop()
        await server.stop()
        await runtime.stop(delete=True)
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _serve_lab(config: str, policy, control: str | None, ready) -> int:
    """The lab headless: hq and the peers its [lab] section lists, one process; the control
    socket serves hq (what `ipsec-console` shows)."""
    from engine.policy.findings import PolicyError
    from engine.runtime.control import ControlServer
    from engine.runtime.lab import LabRuntime

    if policy.lab is None:
        print(f"ipsec-console: {config}: --datapath lab runs a lab, and this policy has no [lab] section "
              "naming its peers (see sample-configs/lab.toml). To negotiate without protecting traffic, use "
              "--datapath none.", file=sys.stderr)
        return 2
    lab = LabRuntime(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: SighupReloads | None = None  # once started

    def sighup() -> None:  # as the daemon's: apply hq's file again (SIGHUP's default action kills)
        if reloads is not None:
            reloads.sighup()

    loop.add_signal_handler(signal.SIGHUP, sighup)
    try:
        try:
            await lab.start()
        except (PolicyError, OSError, ValueError) as exc:
            print(f"ipsec-console: {exc}", file=sys.stderr)
            return 1
        server = ControlServer(lab.local, control or policy.engine.control or DEFAULT_CONTROL)
        try:
            await server.start()
        except OSError as exc:
            print(f"ipsec-console: {exc}", file=sys.stderr)
            await lab.stop()
            return 1
        reloads = SighupReloads(lab.local)
        log.info("daemon running the lab %s: %s", config, ", ".join(e.name for e in lab.endpoints))
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down: deleting SAs")
        reloads.cancel()
        await server.stop()
        await lab.stop()
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def main(config: str, control: str | None, verbose: int = 0, datapath: str | None = None) -> int:
    handler = setup_logging(verbose)
    lean_log_records()
    roomy_collector()
    try:
        return asyncio.run(serve(config, control, datapath=datapath))
    finally:
        handler.flush()  # the last turn's lines, before any traceback of how the loop ended


GC_YOUNG_THRESHOLD = 10_000
"""Net container allocations between two passes over the young generation (CPython's default: 700)."""


def roomy_collector() -> None:
    """Collector passes over the young generation after 10,000 net allocations instead of 700.
    What the engine lets go is freed by reference counting (it makes no reference cycles: see
    tests/engine/test_datapath_scale.py), so a pass only walks survivors: the last handshakes'
    SAs, events and summaries, again and again. Under a handshake load that was ~7 % of the
    daemon's CPU (740 young passes in 10 s, 0.78 s); with this threshold 8 passes, 0.09 s.
    The older generations keep their defaults: cycles, if any, are still collected."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def lean_log_records() -> None:
    """Records without what no format of the daemon shows (the calling source line, the process,
    thread and multiprocessing names): the logging HOWTO's "Optimization" switches, process-wide.
    Each of them cost a stack walk or a system call per log line (two lines per handshake)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
