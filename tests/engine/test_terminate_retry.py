"""Terminate against keyingtries: a connection that failed and waits for its next attempt has no
IKE SA, yet it is not down. Terminate must stop that attempt (with keyingtries = 0 it would retry
for ever), the status calls it failing, and a connection that comes up drops the pending attempt."""

from __future__ import annotations

import asyncio

from engine.datapath.base import NullDatapath
from engine.runtime.client import ControlClient
from engine.runtime.control import ControlServer
from engine.runtime.engine import EngineRuntime
from engine.wire.constants import FLAG_RESPONSE, ExchangeType
from engine.wire.message import decode_header
from tests.engine.ike_pair import Pair, connection, ike_data, mirror, policy
from tests.loopback import addr

GOOD = connection(keyingtries=0)
# The peer takes only another IKE proposal: every attempt ends in NO_PROPOSAL_CHOSEN at once.
REFUSING = mirror(GOOD, proposals=connection(ike=("aes128-sha256-x25519",)).proposals)


def inits_sent(p: Pair, side: str = "a") -> int:
    """IKE_SA_INIT requests ``side`` sent: one per attempt."""
    headers = [decode_header(m) for s, d in p.log if s == side and (m := ike_data(d.data)) is not None]
    return sum(1 for h in headers if h.exchange == ExchangeType.IKE_SA_INIT and not h.flags & FLAG_RESPONSE)


def failed_pair() -> Pair:
    p = Pair(policy(GOOD), policy(REFUSING, address="192.0.2.2"))
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert not [sa for sa in p.a.sas if sa.established]
    assert inits_sent(p) == 1
    return p


def test_a_failed_connection_waits_for_its_next_attempt_and_makes_it():
    p = failed_pair()
    when = p.a.retrying("tun")
    assert when is not None and p.now < when <= p.now + 4
    p.advance(5)
    assert inits_sent(p) == 2  # keyingtries = 0: it keeps trying


def test_terminate_stops_the_next_attempt():
    p = failed_pair()
    assert p.a.terminate("tun", p.now) == 0  # no IKE SA to delete, but the attempt is cancelled
    p.advance(300)
    assert inits_sent(p) == 1
    assert p.a.retrying("tun") is None


def test_terminating_one_ike_sa_by_id_leaves_the_retry_alone():
    p = failed_pair()
    p.a.terminate("tun", p.now, unique_id=12345)
    assert p.a.retrying("tun") is not None


def test_coming_up_drops_the_pending_attempt():
    p = failed_pair()
    # The peer is fixed and starts the connection itself before our next attempt.
    p.b.apply_policy(policy(mirror(GOOD), address="192.0.2.2"), p.now)
    p.b.initiate("tun", p.now)
    p.deliver()
    assert [sa for sa in p.a.sas if sa.established]
    p.advance(120)
    assert inits_sent(p) == 1  # no second IKE SA of ours later
    assert p.a.retrying("tun") is None


def _policies():
    conn = connection(local=addr(1), remote=addr(2), local_port=25510, remote_port=25510,
                      remote_natt_port=25511, keyingtries=0)
    ours = policy(conn, address=addr(1), ike_port=25510, natt_port=25511)
    peer = mirror(conn, proposals=REFUSING.proposals, local_addrs=(addr(2),), remote_addrs=(addr(1),))
    return ours, policy(peer, address=addr(2), ike_port=25510, natt_port=25511)


async def test_the_status_says_failing_and_terminate_says_it_stopped_the_retry(tmp_path):
    ours, theirs = _policies()
    rt = EngineRuntime(ours, datapath=NullDatapath())
    peer = EngineRuntime(theirs, datapath=NullDatapath())
    await peer.start()
    await rt.start()
    srv = ControlServer(rt, str(tmp_path / "control.sock"))
    await srv.start()
    c = ControlClient(str(srv.path))
    try:
        rt.initiate("tun")
        for _ in range(100):
            if rt.endpoint.retrying("tun") is not None:
                break
            await asyncio.sleep(0.05)
        conns = (await c.call("list-conns"))["connections"]
        assert conns[0]["state"] == "failing"
        assert await c.call("terminate", name="tun") == {"deleted": 0, "retry_stopped": True, "resolving": None,
                                                            "untrapped": []}
        assert (await c.call("list-conns"))["connections"][0]["state"] == "down"
        assert await c.call("terminate", name="tun") == {"deleted": 0, "retry_stopped": False, "resolving": None,
                                                            "untrapped": []}
    finally:
        await c.close()
        await srv.stop()
        await rt.stop(delete=False)
        await peer.stop(delete=False)
