"""listen17: a host name in local_addrs that does not resolve ends the initiation with a
NegotiationFailed, as an unresolved peer name does (charon's resolve_me: "unable to resolve",
initiate aborted), so `initiate --wait` and the console learn it is over, and from which side."""

from __future__ import annotations

from engine.events import NegotiationFailed

from tests.engine.test_local_address_review import named_pair


def _failures(ep) -> list[NegotiationFailed]:
    return [e for e in iter(ep.next_event, None) if isinstance(e, NegotiationFailed)]


def test_an_unresolved_local_name_ends_the_initiation_with_an_event():
    p = named_pair(("me.test",))
    p.a.names.resolve = lambda name: None
    assert p.a.initiate("tun", p.now, "lan") is None
    _failures(p.a)
    p.a.resolved("me.test", (), p.now)
    failed = _failures(p.a)
    assert len(failed) == 1, failed
    f = failed[0]
    assert (f.connection, f.child, f.exchange, f.notify) == ("tun", "lan", "IKE_SA_INIT", "UNRESOLVED")
    assert "me.test" in f.reason and "connections.tun.local_addrs" in f.reason
    assert "remote_addrs" not in f.reason
    assert f.ike_sa not in {sa.unique_id for sa in p.a.sas}


def test_a_local_name_that_resolves_gives_no_failure():
    from tests.engine.ike_pair import LEFT

    p = named_pair(("me.test",))
    p.a.names.resolve = lambda name: None
    p.a.initiate("tun", p.now)
    p.a.resolved("me.test", (LEFT,), p.now)
    assert not _failures(p.a) and p.a.sas


def test_an_unresolved_name_beside_a_usable_entry_is_no_failure():
    # the route's source is inside the subnet: the initiation goes on without the name
    p = named_pair(("me.test", "192.0.2.0/24"))
    p.a.names.resolve = lambda name: None
    p.a.initiate("tun", p.now)
    p.a.resolved("me.test", (), p.now)
    assert not _failures(p.a) and p.a.sas


async def test_initiate_wait_fails_at_once_when_our_name_does_not_resolve(tmp_path, capsys):
    import argparse
    import asyncio
    import dataclasses

    from console import cli_control
    from engine.datapath.base import NullDatapath
    from engine.runtime.control import ControlServer
    from engine.runtime.engine import EngineRuntime

    from tests.engine.ike_pair import connection, policy
    from tests.loopback import addr

    async def nothing(loop, name):
        return ()

    conn = dataclasses.replace(connection(local=addr(1), local_port=25552, remote_port=25552),
                               remote_addrs=(addr(2),), local_addrs=("me.test",))
    rt = EngineRuntime(policy(conn, address=addr(1), ike_port=25552, natt_port=25553), datapath=NullDatapath(),
                       lookup=nothing)
    await rt.start()
    srv = ControlServer(rt, str(tmp_path / "control.sock"))
    await srv.start()
    try:
        args = argparse.Namespace(command="initiate", name="tun", child=None, wait=True, timeout=20.0,
                                  control=str(srv.path), json=False)
        assert await asyncio.wait_for(cli_control._run(args), 10) == 1
        err = capsys.readouterr().err
        assert "initiating 'tun' failed: UNRESOLVED: our host name me.test (connections.tun.local_addrs)" in err
    finally:
        await srv.stop()
        await rt.stop(delete=False)
