"""Terminate against an initiation that waits for its peer's host name to resolve
(``remote_addrs = ["vpn.example.org"]``): terminate cancels it and says so (control answer
``resolving``, the CLI's message and exit 0), as it does for a keyingtries attempt it stops."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses

from console import cli_control
from engine.datapath.base import NullDatapath
from engine.ike import names
from engine.runtime.client import ControlClient
from engine.runtime.control import ControlServer
from engine.runtime.engine import EngineRuntime

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy
from tests.engine.test_ike_names import GW, established, pair
from tests.loopback import addr


def test_terminate_tells_it_cancelled_an_initiation_waiting_for_the_name():
    p, _ = pair()
    assert p.a.resolving("tun") is None
    assert p.a.initiate("tun", p.now) is None
    assert p.a.resolving("tun") == GW
    assert p.a.terminate("tun", p.now) == 0
    assert p.a.resolving("tun") is None  # cancelled: not waiting any more
    p.a.resolved(GW, (RIGHT,), p.now)
    p.advance(2)
    assert not p.a.sas and not established(p.b)


def test_terminating_one_ike_sa_by_id_leaves_the_waiting_initiation_alone():
    p, _ = pair()
    p.a.initiate("tun", p.now)
    p.a.terminate("tun", p.now, unique_id=12345)
    assert p.a.resolving("tun") == GW
    p.a.resolved(GW, (RIGHT,), p.now)
    p.advance(2)
    assert len(established(p.a)) == 1


def test_every_connection_to_one_gateway_name_starts():
    """Twenty connections (a site-to-site with many subnet pairs) to one gateway name: each initiation
    waits for the same answer. Only MAX_WAITING of them were kept: the others were dropped unseen."""
    count = names.MAX_WAITING + 4
    ours, theirs = [], []
    for i in range(count):
        kid = child(local_ts=f"198.51.100.{i}/32", remote_ts=f"198.51.100.{128 + i}/32")
        conn = connection(f"tun{i}", children=(kid,), local_id=f"l{i}.example", remote_id=f"r{i}.example")
        ours.append(dataclasses.replace(conn, remote_addrs=(GW,)))
        theirs.append(mirror(conn, remote_addrs=(LEFT,)))
    p = Pair(policy(*ours, address=LEFT), policy(*theirs, address=RIGHT))
    p.a.names.resolve = lambda name: None
    for i in range(count):
        assert p.a.initiate(f"tun{i}", p.now) is None
    p.a.resolved(GW, (RIGHT,), p.now)
    p.advance(60)  # (twenty at once make the peer ask for cookies: some take a retransmit)
    assert sorted(sa.name for sa in established(p.a)) == sorted(f"tun{i}" for i in range(count))
    assert "name_waiting_dropped" not in p.a.stats


def test_a_shutdown_cancels_an_initiation_waiting_for_the_name():
    """The runtime keeps the loop going for a few seconds while the Deletes are answered: an answer
    then must not start a new IKE SA."""
    p, _ = pair()
    p.a.initiate("tun", p.now)
    p.a.shutdown(p.now)
    p.a.resolved(GW, (RIGHT,), p.now)
    assert not p.a.sas and not p.a.datagrams_to_send()


# ---------------------------------------------------------------- control socket and CLI
async def test_the_control_answer_and_the_cli_say_what_terminate_stopped(tmp_path, capsys):
    asked = asyncio.Event()
    never = asyncio.Event()

    async def hangs(loop, name):  # a slow DNS: the initiation waits
        asked.set()
        await never.wait()
        return ()

    conn = dataclasses.replace(connection(local=addr(1), local_port=25540, remote_port=25540), remote_addrs=(GW,))
    rt = EngineRuntime(policy(conn, address=addr(1), ike_port=25540, natt_port=25541), datapath=NullDatapath(),
                       lookup=hangs)
    await rt.start()
    srv = ControlServer(rt, str(tmp_path / "control.sock"))
    await srv.start()
    c = ControlClient(str(srv.path))
    try:
        await c.call("initiate", name="tun")
        await asyncio.wait_for(asked.wait(), 5)
        assert await c.call("terminate", name="tun") == {"deleted": 0, "retry_stopped": False, "resolving": GW,
                                                            "untrapped": []}
        assert await c.call("terminate", name="tun") == {"deleted": 0, "retry_stopped": False, "resolving": None,
                                                            "untrapped": []}

        await c.call("initiate", name="tun")
        args = argparse.Namespace(command="terminate", name="tun", control=str(srv.path), json=False)
        assert await cli_control._run(args) == 0
        out = capsys.readouterr().out
        assert f"'tun' was waiting for {GW} to resolve before initiating: its initiation is cancelled" in out
        assert await cli_control._run(args) == 1  # nothing left to stop
    finally:
        await c.close()
        await srv.stop()
        await rt.stop(delete=False)


def test_a_retry_whose_name_no_longer_resolves_goes_to_the_last_address_and_counts():
    """charon (ike_sa.c, retransmit(): keyingtry++, reset(), resolve_hosts()) keeps the peer's last
    address when its name does not resolve for a keyingtries attempt: the attempt is made, and
    counted. So do we (HostNames.answer keeps the last addresses): keyingtries runs on."""
    from tests.engine.test_terminate_retry import REFUSING, inits_sent

    a = dataclasses.replace(connection(keyingtries=0), remote_addrs=(GW,))
    b = mirror(connection(), remote_addrs=(LEFT,), proposals=REFUSING.proposals)
    p = Pair(policy(a, address=LEFT), policy(b, address=RIGHT))
    asked: list[str] = []
    p.a.names.resolve = asked.append
    p.a.initiate("tun", p.now)
    p.a.resolved(GW, (RIGHT,), p.now)
    asked.clear()
    for _ in range(100):  # the pause grows to a minute: the name is asked again (NAME_TTL)
        p.advance(10)
        if asked:
            asked.clear()
            p.a.resolved(GW, (), p.now)  # the DNS is down now
    assert inits_sent(p) > 20
    assert p.a.retrying("tun") is not None or p.a.resolving("tun") == GW or p.a.sas  # and on


def test_a_name_that_does_not_resolve_ends_the_initiation_with_an_event():
    """`initiate --wait` waited for its whole timeout, then said the connection "may still come up":
    the engine had given up at once (as charon: "unable to resolve, initiate aborted"), telling only
    its log."""
    from engine.events import NegotiationFailed

    p, _ = pair()
    p.a.initiate("tun", p.now, "lan")
    p.a.resolved(GW, (), p.now)
    failed = [e for e in iter(p.a.next_event, None) if isinstance(e, NegotiationFailed)]
    assert len(failed) == 1
    f = failed[0]
    assert (f.connection, f.child, f.exchange, f.notify) == ("tun", "lan", "IKE_SA_INIT", "UNRESOLVED")
    assert GW in f.reason and "connections.tun.remote_addrs" in f.reason
    assert f.ike_sa not in {sa.unique_id for sa in p.a.sas}


async def test_initiate_wait_fails_at_once_when_the_name_does_not_resolve(tmp_path, capsys):
    async def nothing(loop, name):
        return ()

    conn = dataclasses.replace(connection(local=addr(1), local_port=25542, remote_port=25542), remote_addrs=(GW,))
    rt = EngineRuntime(policy(conn, address=addr(1), ike_port=25542, natt_port=25543), datapath=NullDatapath(),
                       lookup=nothing)
    await rt.start()
    srv = ControlServer(rt, str(tmp_path / "control.sock"))
    await srv.start()
    try:
        args = argparse.Namespace(command="initiate", name="tun", child=None, wait=True, timeout=20.0,
                                  control=str(srv.path), json=False)
        assert await asyncio.wait_for(cli_control._run(args), 10) == 1
        err = capsys.readouterr().err
        assert f"initiating 'tun' failed: UNRESOLVED: {GW} did not resolve to an address" in err
    finally:
        await srv.stop()
        await rt.stop(delete=False)


async def test_conns_says_connecting_while_the_name_resolves_and_default_once(tmp_path):
    """`conns` said "down" for a connection initiated and waiting for its peer's name, and listed the
    default proposals as "default, default"."""
    never = asyncio.Event()

    async def hangs(loop, name):
        await never.wait()
        return ()

    from engine.policy.proposals import default_proposals

    kid = dataclasses.replace(child(), proposals=default_proposals("esp"))
    conn = dataclasses.replace(connection(local=addr(1), local_port=25548, remote_port=25548, children=(kid,)),
                               remote_addrs=(GW,), proposals=default_proposals("ike"))
    rt = EngineRuntime(policy(conn, address=addr(1), ike_port=25548, natt_port=25549), datapath=NullDatapath(),
                       lookup=hangs)
    await rt.start()
    srv = ControlServer(rt, str(tmp_path / "control.sock"))
    await srv.start()
    c = ControlClient(str(srv.path))
    try:
        [info] = (await c.call("list-conns"))["connections"]
        assert info["state"] == "down"
        assert info["proposals"] == ["default"] and info["children"][0]["proposals"] == ["default"]
        rt.initiate("tun")
        assert (await c.call("list-conns"))["connections"][0]["state"] == "connecting"
    finally:
        await c.close()
        await srv.stop()
        await rt.stop(delete=False)


def test_a_retry_whose_name_resolves_to_nothing_at_all_counts_and_tries_again():
    """Without a last address to fall back on (the name's answer no longer kept: a hub with more
    names than names.MAX_NAMES), a keyingtries attempt whose name did not resolve ended keyingtries
    at once; charon counts it as a failed attempt and tries again until keyingtries is spent."""
    from tests.engine.test_terminate_retry import REFUSING

    a = dataclasses.replace(connection(keyingtries=3), remote_addrs=(GW,))
    b = mirror(connection(), remote_addrs=(LEFT,), proposals=REFUSING.proposals)
    p = Pair(policy(a, address=LEFT), policy(b, address=RIGHT))
    asked: list[str] = []
    p.a.names.resolve = asked.append
    p.a.initiate("tun", p.now)
    p.a.resolved(GW, (RIGHT,), p.now)
    p.advance(1)  # attempt 1 failed (NO_PROPOSAL_CHOSEN)
    assert p.a.retrying("tun") is not None
    p.a.names._addrs.clear()  # the answer was not kept
    asked.clear()
    p.advance(5)  # attempt 2 waits for the name...
    assert asked == [GW]
    p.a.resolved(GW, (), p.now)  # ...which does not resolve
    assert p.a.retrying("tun") is not None  # attempt 3 follows
    p.advance(10)
    p.a.resolved(GW, (), p.now)
    assert p.a.retrying("tun") is None and p.a.resolving("tun") is None  # keyingtries = 3: spent
