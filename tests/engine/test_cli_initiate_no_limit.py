"""Review of the CLI --timeout (cli15): "0 or inf: no limit", as every control command's --timeout
says. `initiate --timeout 0` took no limit for the daemon's answers, but gave up on the outcome at
once (exit 124, "no outcome within 0s") before the daemon could even start."""

from __future__ import annotations

import asyncio
import json

from console.cli import main


def _line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_initiate_with_timeout_0_waits_for_the_outcome(tmp_path, capsys):
    path = str(tmp_path / "control.sock")

    async def scenario():
        watchers: list[asyncio.StreamWriter] = []

        async def serve(reader, writer):
            while raw := await reader.readline():
                req = json.loads(raw)
                cmd, rid = req["cmd"], req["id"]
                if cmd == "list-conns":
                    result = {"connections": [{"name": "c", "children": [{"name": "net"}]}]}
                elif cmd == "list-sas":
                    result = {"ike_sas": []}
                elif cmd == "subscribe":
                    watchers.append(writer)
                    result = "subscribed"
                elif cmd == "initiate":
                    result = {"initiated": "c"}

                    async def up_later():
                        await asyncio.sleep(0.5)  # an IKE_AUTH takes a while
                        for w in watchers:
                            w.write(_line({"event": {"type": "ChildSaInstalled", "connection": "c", "child": "net",
                                                     "unique_id": 1, "spi_in": 1, "spi_out": 2}}))
                    asyncio.get_running_loop().create_task(up_later())
                else:
                    result = None
                writer.write(_line({"id": rid, "ok": True, "result": result}))
                await writer.drain()

        srv = await asyncio.start_unix_server(serve, path=path)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, main, ["initiate", "c", "--control", path, "--timeout", "0"])
        finally:
            srv.close()

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == 0
    assert "established successfully" in capsys.readouterr().out
