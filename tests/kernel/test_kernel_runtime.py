"""KernelDatapath.for_runtime: the runtime's Datapath protocol over the kernel,
in a throw-away namespace of this kernel (policies only), with the real
EngineRuntime and IkeEndpoint (not started: no socket opens)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket

from engine.datapath.kernel import KernelDatapath, KernelDatapathError
from engine.datapath.kernel_policy import kernel_reqid
from engine.datapath.kernel_runtime import KernelRuntimeDatapath, read_xfrm_stat
from engine.events import ChildKeys, ChildSaInstalled
from engine.policy.model import (
    ChildConfig,
    ConnectionConfig,
    EngineConfig,
    Policy,
    RuleConfig,
)
from engine.policy.ts import parse_ts
from engine.runtime.engine import EngineRuntime
from engine.secret import Secret

from .hostns import ip, our_policies


def _policy(trap: bool = True) -> Policy:
    child = ChildConfig("net", local_ts=(parse_ts("198.51.100.1"),), remote_ts=(parse_ts("198.51.100.129"),),
                        start_action="trap" if trap else "none")
    conn = ConnectionConfig("branch", local_addrs=("192.0.2.1",), remote_addrs=("192.0.2.2",), children=(child,))
    return Policy(engine=EngineConfig(datapath="kernel"), connections=(conn,),
                  rules=(RuleConfig("rest", "discard"),))


async def test_adapter_applies_rules_and_traps_and_cleans_up(netns, caplog):
    # a leftover of a crashed run: removed when the datapath starts
    crashed = KernelDatapath(netns=netns)
    crashed.install_rules([RuleConfig("old", "bypass", remote_ts=(parse_ts("0.0.0.0/0[udp/53]"),))])
    crashed.close(flush=False)
    assert len(our_policies(netns)) == 4

    policy = _policy()
    dp = KernelDatapath.for_runtime(policy, netns=netns)
    assert isinstance(dp, KernelRuntimeDatapath) and dp.name == "kernel"
    runtime = EngineRuntime(policy, datapath=dp)
    await dp.start(runtime)
    try:
        assert our_policies(netns) == []
        dp.apply_policy(policy)
        policies = ip("-n", netns, "xfrm", "policy")
        # the trap carries the reqid the engine gives that child, so an ACQUIRE finds it
        engine_reqid = runtime.endpoint.reqid_for(type("Ref", (), {"name": "branch"})(),
                                                  policy.connections[0].children[0], None)
        assert f"reqid {kernel_reqid(engine_reqid)}" in policies
        assert "action block" in policies
        assert len(our_policies(netns)) == 3 + 4

        # the trap goes when the child no longer asks for it
        dp.apply_policy(_policy(trap=False))
        assert len(our_policies(netns)) == 3

        # without kernel ESP the install fails: logged and raised (the runtime deletes the CHILD SA
        # with the peer), nothing left
        ev = ChildSaInstalled(
            ike_sa=1, connection="branch", child="net", unique_id=1, reqid=engine_reqid, protocol="esp",
            mode="tunnel", spi_in=0xC0DE0001, spi_out=0xC0DE1001, local_addr="192.0.2.1", remote_addr="192.0.2.2",
            local_ts=(parse_ts("198.51.100.1"),), remote_ts=(parse_ts("198.51.100.129"),), encr_id=12,
            encr_key_length=128, integ_id=12, esn=False,
            keys=ChildKeys(Secret(b"\1" * 16), Secret(b"\2" * 32), Secret(b"\3" * 16), Secret(b"\4" * 32)))
        try:
            dp.install(ev)
        except KernelDatapathError:
            assert "cannot install CHILD SA" in caplog.text
        sas, drops = dp.counters()
        if "cannot install CHILD SA" in caplog.text:
            assert sas == [] and ip("-n", netns, "xfrm", "state") == ""
        else:  # a kernel with ESP
            assert {c.spi for c in sas} == {0xC0DE0001, 0xC0DE1001}
        assert all(v > 0 for v in drops.values())

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            dp.prepare_socket(s)
    finally:
        await dp.stop()
    assert our_policies(netns) == []
    assert ip("-n", netns, "xfrm", "state") == ""


def test_xfrm_stat_reading(tmp_path):
    stat = tmp_path / "xfrm_stat"
    stat.write_text("XfrmInError 0\nXfrmInNoStates 3\nXfrmOutNoStates 1\nXfrmInPolBlock 2\nXfrmInTmplMismatch 5\n")
    drops = read_xfrm_stat(str(stat))
    assert drops == {"no_sa": 4, "discard_rule": 2, "policy_mismatch": 5, "malformed": 0}
    assert read_xfrm_stat(str(tmp_path / "missing")) == {}


def test_stop_before_start_is_harmless():
    asyncio.run(KernelRuntimeDatapath(_policy()).stop())


async def test_a_trap_to_a_host_name_goes_in_once_it_resolves_and_follows_it(netns, caplog):
    """``remote_addrs = ["gw.test"]`` with a trap: the trap's tunnel endpoint is what the name
    resolved to, installed once answered and moved when the answer changes (DynDNS)."""
    policy = _policy()
    conn = dataclasses.replace(policy.connections[0], remote_addrs=("gw.test",))
    policy = dataclasses.replace(policy, connections=(conn,))
    dp = KernelDatapath.for_runtime(policy, netns=netns)
    runtime = EngineRuntime(policy, datapath=dp)
    await dp.start(runtime)
    try:
        with caplog.at_level(logging.INFO, logger="engine"):
            dp.apply_policy(policy)
        assert "trap branch/net: waiting for gw.test to resolve" in caplog.text
        assert "tmpl" not in ip("-n", netns, "xfrm", "policy")  # the rules' policies only
        for answer in ("192.0.2.2", "192.0.2.3"):
            runtime.endpoint.resolved("gw.test", (answer,), 0.0)
            dp.peer_addresses_changed()
            policies = ip("-n", netns, "xfrm", "policy")
            assert f"src 192.0.2.1 dst {answer}" in policies, policies
            assert len(our_policies(netns)) == 3 + 4
        assert "192.0.2.2" not in ip("-n", netns, "xfrm", "policy")
    finally:
        await dp.stop()
    assert our_policies(netns) == []
