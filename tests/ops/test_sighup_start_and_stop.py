"""Review of cli14: a SIGHUP that comes while the daemon is still starting (its datapath flushing,
its sockets opening). The handler is installed before the engine starts (SIGHUP's default action
kills), and the reload ran at once: it applied a policy to a runtime half started and told systemd
RELOADING then READY=1 before the daemon was ready. It now waits for the start, then reloads once
(the file may have changed since it was read)."""

from __future__ import annotations

import asyncio
import os
import signal

from engine.runtime import daemon
from engine.runtime.engine import EngineRuntime

from tests.ops.test_control_ops import POLICY


async def test_a_sighup_during_the_start_reloads_once_the_daemon_runs(tmp_path, monkeypatch):
    (tmp_path / "s.toml").write_text('[ike.x]\nsecret = "control-ops-psk-0123456789abcdef"\n')
    (tmp_path / "s.toml").chmod(0o600)
    (tmp_path / "gw.toml").write_text(POLICY)
    starting, release = asyncio.Event(), asyncio.Event()
    real_start = EngineRuntime.start

    async def slow_start(self):
        starting.set()
        await release.wait()
        await real_start(self)

    ready = asyncio.Event()
    reloads: list[bool] = []

    async def reload_on_sighup(runtime, notifier=None):
        reloads.append(ready.is_set())

    monkeypatch.setattr(EngineRuntime, "start", slow_start)
    monkeypatch.setattr(daemon, "reload_on_sighup", reload_on_sighup)
    task = asyncio.create_task(daemon.serve(str(tmp_path / "gw.toml"), str(tmp_path / "control.sock"),
                                            datapath="none", ready=ready))
    try:
        await asyncio.wait_for(starting.wait(), 10)
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.2)
        assert reloads == []  # not while the engine starts
        release.set()
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.sleep(0.2)
        assert reloads == [True]  # once it runs
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, 20) == 0
    finally:
        release.set()
        if not task.done():
            task.cancel()


async def test_a_sighup_during_the_shutdown_starts_no_reload(monkeypatch):
    """The handler stays until the SAs are deleted (seconds, runtime.stop): a SIGHUP then started a
    reload after Services.stop() had cancelled the last one, applying a policy (start_action = start
    initiating) to an engine shutting down."""
    from engine.ops.sdnotify import Notifier

    reloads: list[int] = []

    async def reload_on_sighup(runtime, notifier=None):
        reloads.append(1)

    monkeypatch.setattr(daemon, "reload_on_sighup", reload_on_sighup)
    reload = daemon.SighupReloads(object(), Notifier({}), running=False)
    reload.start()
    reload.cancel()  # Services.stop()
    reload.sighup()
    await asyncio.sleep(0.05)
    assert reload.task is None and reloads == []
