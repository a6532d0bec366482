"""The control CLI as an admin meets it: `terminate --ike-id N` (swanctl --terminate --ike-id), a reason
on stderr whenever it exits 1, initiate --wait on failing and mid-rekey connections."""

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


async def test_nothing_to_do_is_exit_1_with_a_reason_on_stderr(tmp_path, capsys):
    """terminate, rekey and roam exited 1 with only their count on stdout ("deleting 0 IKE SA(s)"): a
    script reading stderr for the reason got nothing."""
    conn = connection(local=addr(1), remote=addr(2), local_port=25546, remote_port=25546)
    rt = EngineRuntime(policy(conn, address=addr(1), ike_port=25546, natt_port=25547), datapath=NullDatapath())
    await rt.start()
    srv = ControlServer(rt, str(tmp_path / "control.sock"))
    await srv.start()
    try:
        for argv, out, err in (
                (["terminate", "tun"], "deleting 0 IKE SA(s) of 'tun'", "'tun' has no IKE SA to terminate"),
                (["rekey", "tun"], "rekeying 0 CHILD SA(s) of 'tun'", "'tun' has no established CHILD SA to rekey"),
                (["rekey", "tun", "--ike"], "rekeying 0 IKE SA(s) of 'tun'", "'tun' has no established IKE SA"),
                (["roam", "tun"], "0 IKE SA(s) moved", "no IKE SA of 'tun' needed to move")):
            args = cli.build_parser().parse_args([*argv, "--control", str(srv.path)])
            assert await cli_control._run(args) == 1
            got = capsys.readouterr()
            assert out in got.out
            assert got.err.count("\n") == 1 and got.err.startswith(f"ipsec-console: {err}"), got.err
    finally:
        await srv.stop()
        await rt.stop(delete=False)


async def test_initiate_wait_says_a_failed_connection_will_be_tried_again(tmp_path, capsys):
    """keyingtries: the first attempt failed and initiate exited 1, but the daemon goes on trying (for
    ever with keyingtries = 0): the admin was not told, nor how to stop it."""
    from tests.engine.test_terminate_retry import _policies

    ours, theirs = _policies()
    rt = EngineRuntime(ours, datapath=NullDatapath())
    peer = EngineRuntime(theirs, datapath=NullDatapath())
    await peer.start()
    await rt.start()
    srv = ControlServer(rt, str(tmp_path / "control.sock"))
    await srv.start()
    try:
        args = cli.build_parser().parse_args(["initiate", "tun", "--timeout", "10", "--control", str(srv.path)])
        assert await cli_control._run(args) == 1
        err = capsys.readouterr().err
        assert "initiating 'tun' failed: NO_PROPOSAL_CHOSEN" in err
        assert "'tun' will be tried again (keyingtries); `ipsec-console terminate tun` stops it" in err
    finally:
        await srv.stop()
        await rt.stop(delete=False)
        await peer.stop(delete=False)


def test_a_connection_mid_rekey_is_already_up_for_initiate():
    """initiate --wait on a connection whose IKE or CHILD SA was being rekeyed initiated again: the
    engine, seeing the SA, started nothing, and the wait ran out its timeout (exit 124)."""
    sa = {"name": "tun", "state": "REKEYING", "children": [{"name": "lan", "state": "REKEYING"}]}
    assert cli_control._up([sa], "tun", {"lan"})
    sa = {"name": "tun", "state": "ESTABLISHED", "children": [{"name": "lan", "state": "REKEYING"}]}
    assert cli_control._up([sa], "tun", {"lan"})
    sa = {"name": "tun", "state": "CONNECTING", "children": []}
    assert not cli_control._up([sa], "tun", {"lan"})
