"""Review of the CLI --timeout (cli15): giving up on the answer to a command that changes something
(terminate, rekey, initiate, roam, reload, apply-policy) does not take it back. The daemon, busy,
may still carry it out once it reads it: the error says so, so that a script or an admin looks
before sending it again."""

from __future__ import annotations

import asyncio

import pytest

from engine.runtime.client import ControlClient, ControlError
from tests.engine.test_control_idle_and_timeout import wedged  # noqa: F401 (fixture)


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
