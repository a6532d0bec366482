"""`ipsec-console terminate --ike-id N`, as swanctl --terminate --ike-id: one IKE SA by the #N that
`sas` shows (the control protocol had unique_id; the CLI could only take a whole connection down)."""

from __future__ import annotations

import asyncio

from console import cli, cli_control
from engine.datapath.base import NullDatapath
from engine.runtime.control import ControlServer
from engine.runtime.engine import EngineRuntime

from tests.engine.ike_pair import connection, mirror, policy
from tests.loopback import addr


async def _up(rt: EngineRuntime, n: int) -> None:
    for _ in range(200):
        if sum(1 for sa in rt.endpoint.sas if sa.established) >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the IKE SAs did not come up")


async def test_terminate_one_ike_sa_by_its_id(tmp_path, capsys):
    conn = connection(local=addr(1), remote=addr(2), local_port=25544, remote_port=25544, remote_natt_port=25545)
    other = connection("two", local=addr(1), remote=addr(2), local_port=25544, remote_port=25544,
                       remote_natt_port=25545, local_id="l2.example", remote_id="r2.example")
    ours = EngineRuntime(policy(conn, other, address=addr(1), ike_port=25544, natt_port=25545),
                         datapath=NullDatapath())
    peers = [mirror(c, local_addrs=(addr(2),), remote_addrs=(addr(1),)) for c in (conn, other)]
    theirs = EngineRuntime(policy(*peers, address=addr(2), ike_port=25544, natt_port=25545), datapath=NullDatapath())
    await theirs.start()
    await ours.start()
    srv = ControlServer(ours, str(tmp_path / "control.sock"))
    await srv.start()
    try:
        ours.initiate("tun")
        ours.initiate("two")
        await _up(ours, 2)
        ids = {sa.name: sa.unique_id for sa in ours.endpoint.sas}
        run = lambda *argv: cli_control._run(cli.build_parser().parse_args(  # noqa: E731
            ["terminate", *argv, "--control", str(srv.path)]))

        assert await run("--ike-id", f"#{ids['two']}") == 0
        assert capsys.readouterr().out == f"deleting IKE SA #{ids['two']} of 'two'\n"
        await asyncio.sleep(0.2)
        assert [sa.name for sa in ours.endpoint.sas if sa.established] == ["tun"]

        assert await run("tun", "--ike-id", str(ids["two"])) == 1  # that id is not one of tun's
        assert f"no IKE SA #{ids['two']} of 'tun'" in capsys.readouterr().err
        assert await run("--ike-id", "999") == 1
        assert "no IKE SA #999 (ipsec-console sas lists them)" in capsys.readouterr().err
        assert await run() == 1
        assert "terminate needs a connection NAME or --ike-id" in capsys.readouterr().err
        assert await run("tun", "--ike-id", str(ids["tun"])) == 0
    finally:
        await srv.stop()
        await ours.stop(delete=False)
        await theirs.stop(delete=False)
