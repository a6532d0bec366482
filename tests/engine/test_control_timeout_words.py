"""Review of the CLI --timeout (cli15): giving up on the answer to a command that changes something
(terminate, rekey, initiate, roam, reload, apply-policy) does not take it back. The daemon, busy,
may still carry it out once it reads it: the error says so, so that a script or an admin looks
before sending it again."""

from __future__ import annotations

import asyncio
import json

import pytest

from engine.runtime import control
from engine.runtime.client import ControlClient, ControlError
from tests.engine.test_control_idle_and_timeout import wedged  # noqa: F401 (fixture)
from tests.engine.test_control_limits import server  # noqa: F401 (fixture)


@pytest.mark.parametrize("cmd", ["terminate", "reload"])
async def test_a_command_that_changes_something_may_still_be_carried_out(wedged, cmd):  # noqa: F811
    client = ControlClient(wedged, timeout=0.2)
    try:
        with pytest.raises(ControlError, match=rf"to '{cmd}' within 0.2s .*may still carry it out") as err:
            await asyncio.wait_for(client.call(cmd, name="c"), 10)
        assert wedged in str(err.value)
    finally:
        await client.close()


async def test_a_listing_that_timed_out_says_nothing_of_the_kind(wedged):  # noqa: F811
    client = ControlClient(wedged, timeout=0.2)
    try:
        with pytest.raises(ControlError) as err:
            await asyncio.wait_for(client.call("list-sas"), 10)
        assert "carry it out" not in str(err.value)
    finally:
        await client.close()


async def test_a_refused_newcomer_learns_why_none_made_room(server):  # noqa: F811
    """Since idle connections make room, a refusal means every connection is busy, subscribed to
    events or used within IDLE_EVICT seconds: "close an idle console" no longer says what to do."""
    server.max_clients = 0
    r, w = await asyncio.open_unix_connection(str(server.path))
    why = json.loads(await asyncio.wait_for(r.readline(), 5))["disconnected"]
    assert "too many control connections (0 open" in why
    assert f"none idle for {control.IDLE_EVICT:g}s" in why and "try again" in why
    w.close()
