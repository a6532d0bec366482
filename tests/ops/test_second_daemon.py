"""A second daemon (an admin starting one by hand beside the systemd unit) must be refused before it
touches anything the first one runs: it used to start its engine first, and the kernel datapath's
start flushes every SA and policy carrying ipsec-console's tag, the first daemon's too (its tunnels
down), before the second found the control socket or the IKE port taken."""

from __future__ import annotations

import os

import pytest

from engine.datapath import kernel_runtime
from engine.datapath.kernel_runtime import KernelRuntimeDatapath, claim_namespace
from engine.policy.model import Policy
from engine.runtime import daemon
from engine.runtime.control import ControlServer
from engine.runtime.engine import EngineRuntime


def test_the_kernel_datapath_of_a_namespace_is_claimed_once():
    first = claim_namespace("cli14-test-ns")
    try:
        with pytest.raises(OSError, match=rf"another ipsec-console \(pid {os.getpid()}\) runs the kernel datapath "
                                          "in network namespace cli14-test-ns"):
            claim_namespace("cli14-test-ns")
        claim_namespace("cli14-test-other").close()  # another namespace is another claim
    finally:
        first.close()
    claim_namespace("cli14-test-ns").close()  # free again once the holder let go (or died)


async def test_a_second_kernel_datapath_refuses_before_it_flushes(monkeypatch):
    opened: list = []
    monkeypatch.setattr(kernel_runtime, "KernelDatapath", lambda netns: opened.append(netns))
    held = claim_namespace("cli14-test-ns2")
    try:
        dp = KernelRuntimeDatapath(Policy(), netns="cli14-test-ns2")
        with pytest.raises(OSError, match="would flush its SAs and policies"):
            await dp.start(None)
        assert opened == []  # no netlink socket, no flush
        assert dp._claim is None
    finally:
        held.close()


async def test_a_second_daemon_on_the_same_control_socket_starts_no_engine(tmp_path, monkeypatch, capsys):
    sock = tmp_path / "control.sock"
    (tmp_path / "gw.toml").write_text(f"""\
[engine]
datapath = "kernel"
listen = ["127.0.0.1"]
control = "{sock}"
""")
    started: list = []

    async def start(self):
        started.append(self)

    monkeypatch.setattr(EngineRuntime, "start", start)
    first = ControlServer(None, str(sock))
    await first.start()
    try:
        assert await daemon.serve(str(tmp_path / "gw.toml"), None, datapath="none") == 1
    finally:
        await first.stop()
    assert started == []
    assert f"another daemon is serving {sock}" in capsys.readouterr().err


async def test_a_datapath_the_kernel_refuses_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    """Not root: the kernel refuses the XFRM dump of the datapath's start with EPERM, a
    KernelDatapathError (not an OSError): the daemon died with a traceback."""
    from engine.datapath.base import NullDatapath
    from engine.datapath.kernel_base import KernelDatapathError

    class Refused(NullDatapath):
        name = "kernel"

        async def start(self, runtime):
            raise KernelDatapathError("GETPOLICY dump: Operation not permitted", 1)

    monkeypatch.setattr(daemon, "make_datapath", lambda policy, kind=None: Refused())
    (tmp_path / "gw.toml").write_text('[engine]\ndatapath = "kernel"\nlisten = ["127.0.0.1"]\n')
    assert await daemon.serve(str(tmp_path / "gw.toml"), str(tmp_path / "control.sock")) == 1
    err = capsys.readouterr().err
    assert err == ("ipsec-console: GETPOLICY dump: Operation not permitted (run it as root, or with CAP_NET_ADMIN "
                   "and CAP_NET_BIND_SERVICE as the systemd unit does)\n")
    assert not (tmp_path / "control.sock").exists()
