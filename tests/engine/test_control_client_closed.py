"""The client when the daemon closes the connection while a request is being written (it refused the
connection: too many open): the CLI printed a traceback (ConnectionResetError out of drain(), and
"Future exception was never retrieved") instead of the daemon's reason."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from engine.runtime.client import ControlClient, ControlError

WHY = "too many control connections (32 open)"


async def test_a_refused_connection_gives_the_daemons_reason_not_a_traceback(tmp_path):
    async def refuse(reader, writer):
        writer.write(json.dumps({"id": None, "ok": False, "error": WHY, "disconnected": WHY}).encode() + b"\n")
        writer.transport.abort()  # at once, as a refusing daemon closes: the client's write then fails

    path = str(tmp_path / "control.sock")
    server = await asyncio.start_unix_server(refuse, path=path)
    client = ControlClient(path)
    try:
        await client.connect()
        with pytest.raises(ControlError, match=re.escape(f"the daemon closed the connection: {WHY}")):
            await asyncio.wait_for(client.call("apply-policy", text="x" * (8 << 20)), 10)
        with pytest.raises(ControlError, match=re.escape(WHY)):  # and a later call does not hang
            await asyncio.wait_for(client.call("version"), 10)
    finally:
        await client.close()
        server.close()
