"""The FakeRuntime itself: deterministic, scripted failures, commands recorded."""

from __future__ import annotations

import pytest

from engine.events import ChildSaDeleted, ChildSaInstalled, NegotiationFailed, PolicyApplied

from console.runtime.base import CommandError
from console.runtime.fake import FakeRuntime


async def _drain(rt: FakeRuntime) -> list:
    await rt.stop()
    return [e async for e in rt.events()]


async def test_scenario_is_deterministic():
    a, b = FakeRuntime(), FakeRuntime()
    await a.start()
    await b.start()
    sa, sb = await a.status(), await b.status()
    assert sa == sb
    assert [c.state for c in sa.connections] == ["up", "up", "failing", "failing", "failing"]
    a.advance(1.0)
    b.advance(1.0)
    assert await a.status() == await b.status()


async def test_scripted_failures_carry_what_the_console_explains():
    rt = FakeRuntime()
    await rt.start()
    failures = {e.notify: e for e in await _drain(rt) if isinstance(e, NegotiationFailed)}
    npc = failures["NO_PROPOSAL_CHOSEN"]
    assert npc.local_proposals and npc.remote_proposals
    assert set(npc.local_proposals).isdisjoint(npc.remote_proposals)
    assert failures["TS_UNACCEPTABLE"].local_ts and failures["TS_UNACCEPTABLE"].remote_ts
    assert failures["AUTHENTICATION_FAILED"].sent_by_peer


async def test_counters_move_only_when_time_advances():
    rt = FakeRuntime()
    await rt.start()
    before = await rt.status()
    assert await rt.status() == before  # frozen: nothing moves by itself
    rt.advance(2.0)
    after = await rt.status()
    b0 = before.ike_sas[0].children[0]
    b1 = after.ike_sas[0].children[0]
    assert b1.bytes_in > b0.bytes_in and b1.packets_out > b0.packets_out
    assert after.time == before.time + 2.0


async def test_commands_are_recorded_and_rekey_changes_spis():
    rt = FakeRuntime()
    await rt.start()
    old = (await rt.status()).ike_sas[0].children[0]
    await rt.rekey("branch", unique_id=old.unique_id)
    new_children = (await rt.status()).ike_sas[0].children
    assert old.spi_in not in {c.spi_in for c in new_children}
    assert rt.commands == [("rekey", {"name": "branch", "ike": False, "unique_id": old.unique_id})]
    events = await _drain(rt)
    assert any(isinstance(e, ChildSaInstalled) and e.rekeyed_from == old.spi_in for e in events)
    assert any(isinstance(e, ChildSaDeleted) and e.spi_in == old.spi_in for e in events)


async def test_refusals_are_command_errors():
    rt = FakeRuntime()
    await rt.start()
    with pytest.raises(CommandError):
        await rt.initiate("nope")
    with pytest.raises(CommandError):
        await rt.rekey("legacy")  # not established
    rt.fail_next["terminate"] = CommandError("daemon said no")
    with pytest.raises(CommandError, match="daemon said no"):
        await rt.terminate("branch")
    assert [c[0] for c in rt.commands] == ["initiate", "rekey", "terminate"]


async def test_apply_policy_touches_only_changed_connections():
    from dataclasses import replace

    rt = FakeRuntime()
    await rt.start()
    policy, _ = await rt.policy()
    before = {i.name: i.unique_id for i in (await rt.status()).ike_sas}
    changed = replace(policy, connections=tuple(
        replace(c, dpd_delay=60.0) if c.name == "branch" else c for c in policy.connections))
    result = await rt.apply_policy(changed)
    assert isinstance(result, PolicyApplied) and result.changed == ("branch",)
    after = {i.name: i.unique_id for i in (await rt.status()).ike_sas}
    assert after["roadwarrior"] == before["roadwarrior"]  # untouched SA stays up
    assert after["branch"] != before["branch"]  # renegotiated


def test_scale_mode_builds_the_requested_children():
    rt = FakeRuntime(scale_children=1000, children_per_ike=100)
    snap = rt.status_now()
    assert sum(len(i.children) for i in snap.ike_sas) == 1000
    assert len({c.spi_in for i in snap.ike_sas for c in i.children}) == 1000
