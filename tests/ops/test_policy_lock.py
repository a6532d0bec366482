"""Review of cli14: a reload and an apply-policy (the attached console's Apply) that overlap must apply
in the order they came. Both read and validate in a thread; only reloads took the lock, so an
apply-policy could slip past a reload still validating the file it read before, and the reload then
applied that older text last: the running policy was not the one the admin had just applied."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from engine.ops import reload
from engine.runtime.client import ControlClient

from tests.ops.test_control_ops import POLICY, server  # noqa: F401 (the fixture)


async def test_an_apply_policy_during_a_reload_is_applied_after_it(server, monkeypatch):  # noqa: F811
    path = Path(server.runtime.policy.path)
    first_read = threading.Event()
    go_on = threading.Event()
    real = reload.parse_text

    def slow_parse(text, p):  # the reload's validation (apply-policy parses with parse_policy)
        first_read.set()
        go_on.wait(10)
        return real(text, p)

    monkeypatch.setattr(reload, "parse_text", slow_parse)
    c = ControlClient(str(server.path))
    try:
        old = asyncio.create_task(reload.reload_from_file_async(server.runtime, via="test"))
        await asyncio.to_thread(first_read.wait, 10)  # the reload read the file as it was...
        new_text = POLICY.replace("a.example", "applied.example")
        path.write_text(new_text)  # ...the console saves and applies its edit meanwhile
        applying = asyncio.create_task(c.call("apply-policy", text=new_text))
        await asyncio.sleep(0.3)
        go_on.set()
        await old
        await applying
    finally:
        go_on.set()
        await c.close()
    assert str(server.runtime.policy.connections[0].local.id) == "applied.example"
    assert server.runtime.policy_text == new_text
