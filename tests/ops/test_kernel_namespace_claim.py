"""Review of cli14: the kernel datapath's claim on its network namespace (an abstract unix socket).
Abstract names have no owner and no permissions: any local user could bind the name first and the
daemon (root) then refused to start ("another ipsec-console (pid N) runs the kernel datapath"), a
local denial of service that a crash restart (RestartSec) leaves a window for. And the holder never
accepted the probes: after two refused starts its backlog was full and later refusals lost the
holder's pid."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from types import SimpleNamespace

import pytest

from engine.datapath import kernel_runtime
from engine.datapath.kernel_runtime import KernelRuntimeDatapath, claim_namespace
from engine.policy.model import Policy

NOBODY = 65534


def _squat(netns: str, *, listen: bool) -> int:
    """A child process, unprivileged when we are root, that binds the claim's name first. Returns its pid."""
    name = b"\0ipsec-console/kernel-datapath/" + netns.encode()
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(ready_r)
            os.close(hold_w)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(name)
            if listen:
                s.listen(1)
            os.write(ready_w, b"x")
            os.read(hold_r, 1)  # until the parent closes its end
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    _squat.release = lambda: (os.close(hold_w), os.waitpid(pid, 0))
    return pid


@pytest.mark.parametrize("listen", [True, False])
def test_a_local_user_squatting_the_name_does_not_keep_the_daemon_down(listen, caplog):
    if os.geteuid() != 0:
        pytest.skip("needs root: the squatter must be another, unprivileged user")
    pid = _squat("claim-test-squat", listen=listen)
    try:
        with caplog.at_level(logging.WARNING):
            claim = claim_namespace("claim-test-squat")
        assert claim is None  # not held: nobody's to hold, and this instance goes on
        assert any("claim-test-squat" in r.getMessage() and "not an ipsec-console" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        if listen:
            assert any(f"pid {pid}" in r.getMessage() and f"uid {NOBODY}" in r.getMessage()
                       for r in caplog.records)
    finally:
        _squat.release()


async def test_a_running_datapath_names_its_pid_to_every_second_start(monkeypatch):
    a, b = socket.socketpair()
    fake = SimpleNamespace(flush_ours=lambda: SimpleNamespace(policies=0, sas=0), events_fileno=a.fileno,
                           close=lambda flush=True: None)
    monkeypatch.setattr(kernel_runtime, "KernelDatapath", lambda netns: fake)
    dp = KernelRuntimeDatapath(Policy(), netns="claim-test-held")
    await dp.start(None)
    try:
        for _ in range(5):
            with pytest.raises(OSError, match=rf"another ipsec-console \(pid {os.getpid()}\) runs"):
                claim_namespace("claim-test-held")
            await asyncio.sleep(0.05)  # the holder's loop accepts (and drops) the probe
    finally:
        await dp.stop()
        a.close()
        b.close()
    claim_namespace("claim-test-held").close()  # released
