"""apply-policy is plan, then commit (issue 9 item 6): a change that would
fail at any step changes nothing (same SAs, same policy object, no event, no
datagram) and the error names the connection; a change that can be applied
is applied whole."""

from __future__ import annotations

import dataclasses

import pytest

from engine.datapath.base import NullDatapath
from engine.events import IkeState, PolicyApplied
from engine.ike.errors import LocalError
from engine.pki.errors import PkiError
from engine.policy.model import AuthConfig
from engine.runtime.engine import EngineRuntime

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy
from tests.loopback import addr


def up() -> Pair:
    a = connection()
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    p.collect()
    return p


def with_conn(pol, conn):
    return dataclasses.replace(pol, connections=(conn,))


def state(ep):
    return (ep.policy, [(sa, sa.state, tuple(sa.children)) for sa in ep.sas], dict(ep.stats),
            len(ep._events), len(ep._out))


def refused_whole(p: Pair, new_policy, match: str, credentials=None) -> None:
    before = state(p.a)
    with pytest.raises(LocalError, match=match):
        p.a.apply_policy(new_policy, p.now, credentials)
    assert state(p.a) == before
    assert p.a.policy is before[0]
    assert not p.a.datagrams_to_send() and p.a.next_event() is None


def test_start_on_a_peer_without_address_is_refused_before_anything_is_terminated():
    p = up()
    conn = p.a.policy.connections[0]
    changed = dataclasses.replace(conn, remote_addrs=("%any",),
                                  children=tuple(dataclasses.replace(c, start_action="start") for c in conn.children))
    refused_whole(p, with_conn(p.a.policy, changed), "connection 'tun'.*start_action")
    assert p.a.sas[0].state == IkeState.ESTABLISHED


def test_engine_keys_that_need_a_restart_are_refused():
    p = up()
    moved = dataclasses.replace(p.a.policy, engine=dataclasses.replace(p.a.policy.engine, ike_port=5500))
    refused_whole(p, moved, r"\[engine\] ike_port needs a restart")


def test_a_certificate_connection_without_credentials_is_refused():
    p = up()
    conn = p.a.policy.connections[0]
    changed = dataclasses.replace(conn, local=AuthConfig("pubkey", conn.local.id, certs=("me.pem",)))
    refused_whole(p, with_conn(p.a.policy, changed), "connection 'tun': no certificate")


def test_an_added_connection_failing_the_plan_leaves_the_others_alone():
    p = up()
    extra = connection("road", remote="%any", children=[child("rw", start_action="start")])
    refused_whole(p, dataclasses.replace(p.a.policy, connections=(*p.a.policy.connections, extra)),
                  "connection 'road'")


def test_a_plan_that_works_is_applied_whole():
    p = up()
    old_sa = p.a.sas[0]
    conn = p.a.policy.connections[0]
    changed = dataclasses.replace(conn, dpd_delay=30.0,
                                  children=tuple(dataclasses.replace(c, start_action="start") for c in conn.children))
    extra = connection("other", local_id="left2.example", children=[child("lan2", local_ts="198.51.100.2/32")])
    new = dataclasses.replace(p.a.policy, connections=(changed, extra))
    event = p.a.apply_policy(new, p.now)
    assert event == PolicyApplied(("other",), (), ("tun",))
    assert p.a.policy is new and old_sa.state == IkeState.DELETING
    assert any(sa.state == IkeState.CONNECTING and sa.name == "tun" for sa in p.a.sas)


# ---------------------------------------------------------------- the runtime (engine/runtime/engine.py)
class RefusingDatapath(NullDatapath):
    def __init__(self) -> None:
        super().__init__()
        self.applied: list = []

    def check_policy(self, policy) -> None:
        if any(c.name == "refused" for c in policy.connections):
            raise ValueError("connection 'refused': the datapath cannot install its policies")

    def apply_policy(self, policy) -> None:
        self.applied.append(policy)


def _runtime_policy(*extra):
    conn = connection(local=addr(1), remote="127.0.0.9", local_port=25510)
    return policy(conn, *extra, address=addr(1), ike_port=25510, natt_port=25511)


@pytest.fixture
async def runtime():
    dp = RefusingDatapath()
    rt = EngineRuntime(_runtime_policy(), datapath=dp)
    await rt.start()
    rt.initiate("tun")
    try:
        yield rt
    finally:
        await rt.stop(delete=False)


def runtime_state(rt):
    return (rt.policy, rt.endpoint.policy, [(sa, sa.state) for sa in rt.endpoint.sas], len(rt.history),
            len(rt.datapath.applied))


@pytest.mark.parametrize("case", ["datapath", "credentials", "plan", "restart"])
async def test_the_runtime_changes_nothing_when_a_step_would_fail(runtime, case):
    rt = runtime
    base = rt.policy
    if case == "datapath":
        new, error = _runtime_policy(connection("refused", remote="127.0.0.8")), ValueError
    elif case == "credentials":
        conn = dataclasses.replace(connection("certs", remote="127.0.0.8"),
                                   local=AuthConfig("pubkey", None, certs=("/nonexistent/me.pem",)))
        new, error = dataclasses.replace(base, connections=(*base.connections, conn)), PkiError
    elif case == "plan":
        conn = connection("rw", remote="%any", children=[child(start_action="start")])
        new, error = dataclasses.replace(base, connections=(*base.connections, conn)), LocalError
    else:
        new, error = dataclasses.replace(base, engine=dataclasses.replace(base.engine, listen=("127.0.0.2",))), \
            LocalError
    before = runtime_state(rt)
    with pytest.raises(error):
        rt.apply_policy(new, "# new")
    assert runtime_state(rt) == before
    assert rt.policy is base and rt.policy_text is None


async def test_the_runtime_applies_a_good_plan_to_both_endpoint_and_datapath(runtime):
    rt = runtime
    new = _runtime_policy(connection("more", remote="127.0.0.8"))
    result = rt.apply_policy(new, "# new")
    assert result.added == ("more",)
    assert rt.policy is new and rt.endpoint.policy is new and rt.datapath.applied[-1] is new
