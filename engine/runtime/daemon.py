"""``ipsec-console daemon CONFIG``: the engine headless in the foreground.

Logs to stderr, serves the control socket, and on SIGTERM (or SIGINT)
deletes its SAs with INFORMATIONAL exchanges, removes what the datapath
installed, and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from engine.runtime.client import DEFAULT_CONTROL

log = logging.getLogger("engine.daemon")


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose >= 0 else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger("engine")
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    handler.setLevel(level)
    root.addHandler(handler)


def make_datapath(policy, kind: str | None = None):
    """The datapath the policy asks for (or ``kind``, from --datapath).

    ``IPSEC_CONSOLE_TUN_DEVICE`` names the userspace datapath's TUN device
    (default: ``[engine] tun_device``, else ipsecc0).
    """
    import os

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


async def serve(config: str, control: str | None, *, datapath: str | None = None, ready=None) -> int:
    from engine.pki.errors import PkiError
    from engine.policy.findings import PolicyError
    from engine.policy.parse import load_policy
    from engine.runtime.control import ControlServer
    from engine.runtime.engine import EngineRuntime

    try:
        policy = load_policy(config)
        text = open(config, encoding="utf-8").read()
    except PolicyError as exc:
        for f in exc.findings:
            print(f.format(), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ipsec-console: {config}: {exc.strerror}", file=sys.stderr)
        return 1
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await runtime.start()
            await server.start()
        except OSError as exc:
            print(f"ipsec-console: {exc}", file=sys.stderr)
            await runtime.stop(delete=False)
            return 1
        log.info("daemon running with %s (datapath %s)", config, dp.name)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down: deleting SAs")
        await server.stop()
        await runtime.stop(delete=True)
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(config: str, control: str | None, verbose: int = 0, datapath: str | None = None) -> int:
    setup_logging(verbose)
    return asyncio.run(serve(config, control, datapath=datapath))
