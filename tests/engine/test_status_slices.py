"""A status listing built a step at a time (EngineRuntime.status_async, for
the embedded console) while IKE SAs come, go and are rekeyed between its
steps: every IKE SA that lives throughout is listed once, one gone before it
was reached is not, one that came meanwhile is, and no CHILD SA is lost or
listed twice when a rekey moves it to a new IKE SA. Then the long walks of
the runtime and datapath (engine.slicing) end their steps by count or by
clock, whichever comes first, and lose nothing."""

from __future__ import annotations

import asyncio

import engine.runtime.reporting as reporting
from engine.datapath.base import NullDatapath
from engine.datapath.userspace_path import SaPath
from engine.events import IkeState
from engine.policy.parse import parse_policy
from engine.runtime.engine import EngineRuntime
from engine.slicing import Pace, Steps, release, release_dict

from tests.engine.ike_pair import Pair, child, connection, mirror, policy
from tests.engine.test_datapath_scale import POLICY as LAB_POLICY, client

N = 6


def _pair() -> Pair:
    """N connections up, and one more (c{N}) configured but not initiated."""
    conns = [connection(f"c{i}", local_id=f"left{i}.example", remote_id=f"right{i}.example",
                        children=(child(local_ts=f"198.51.100.{i}/32", remote_ts=f"198.51.100.{128 + i}/32"),))
             for i in range(N + 1)]
    p = Pair(policy(*conns), policy(*(mirror(c) for c in conns), address="192.0.2.2"))
    for i in range(N):
        p.a.initiate(f"c{i}", p.now)
        p.deliver()
    assert sum(sa.state == IkeState.ESTABLISHED for sa in p.a.sas) == N
    return p


def _runtime(p: Pair) -> EngineRuntime:
    rt = EngineRuntime(p.a.policy, datapath=NullDatapath())
    rt.endpoint = p.a
    return rt


def _children(snap) -> list[int]:
    return [c.unique_id for info in snap.ike_sas for c in info.children]


def _live_children(p: Pair) -> set[int]:
    return {c.unique_id for sa in p.a.sas if sa.state not in (IkeState.DESTROYED, IkeState.CREATED)
            for c in sa.children.values()}


async def _listing_with_changes(rt: EngineRuntime, changes) -> object:
    """status_async one IKE SA per step, with ``changes[k]()`` run after its step k."""
    task = asyncio.create_task(rt.status_async(chunk=1))
    for change in changes:
        await asyncio.sleep(0)
        assert not task.done()
        change()
    return await task


async def test_a_rekey_between_steps_loses_no_child_sa_and_lists_none_twice():
    p = _pair()
    rt = _runtime(p)
    first_children = _live_children(p)

    def rekey(name: str):
        def go():
            assert p.a.rekey(name, p.now, ike=True) == 1
            p.deliver()
        return go

    # c0 is listed in the first step, then rekeyed (its CHILD SA moves to a new IKE SA, which the
    # listing finds at its end); c4 is rekeyed before its turn (its old IKE SA is gone by then).
    snap = await _listing_with_changes(rt, [rekey("c0"), rekey("c4")])
    listed = _children(snap)
    assert len(listed) == len(set(listed)), listed  # none twice
    assert set(listed) == first_children == _live_children(p)  # none lost
    names = sorted(info.name for info in snap.ike_sas if info.children)
    assert names == [f"c{i}" for i in range(N)]


async def test_ike_sas_that_come_or_go_between_steps():
    p = _pair()
    rt = _runtime(p)
    ids = {sa.name: sa.unique_id for sa in p.a.sas}

    def gone():
        assert p.a.terminate("c3", p.now) == 1
        p.deliver()

    def came():
        p.a.initiate(f"c{N}", p.now)
        p.deliver()

    snap = await _listing_with_changes(rt, [gone, came])
    listed = [info.unique_id for info in snap.ike_sas]
    assert len(listed) == len(set(listed))
    assert ids["c3"] not in listed  # went before its turn
    now_up = {sa.unique_id for sa in p.a.sas if sa.state == IkeState.ESTABLISHED}
    assert set(listed) == now_up and len(now_up) == N  # c3 gone, c6 came
    assert len(_children(snap)) == len(set(_children(snap))) == len(_live_children(p))


async def test_the_listing_matches_status_when_nothing_changes():
    p = _pair()
    rt = _runtime(p)
    rt._loop = asyncio.get_running_loop()
    sync = rt.status()
    sliced = await rt.status_async(chunk=2)
    assert [i.unique_id for i in sliced.ike_sas] == [i.unique_id for i in sync.ike_sas]
    assert _children(sliced) == _children(sync)


def _count_turns(turns: list[int]) -> asyncio.Task:
    """A task that notes each turn of the loop it gets (how many steps the work under test took)."""
    async def run():
        while True:
            turns.append(1)
            await asyncio.sleep(0)
    return asyncio.create_task(run())


class _Clock:
    """A clock that moves ``tick`` seconds each time it is read."""

    def __init__(self, tick: float) -> None:
        self.t = 0.0
        self.tick = tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


def _slow_steps(items, seconds=0.001):
    """Steps on a loaded machine: every item seems to take a whole step's time."""
    return Steps(items, seconds, clock=_Clock(seconds))


async def test_a_step_ends_at_its_count_or_its_time_whichever_comes_first():
    quick = Steps(10, 1.0, clock=_Clock(0.001))
    slow = Steps(10, 1.0, clock=_Clock(0.3))
    assert [quick.done() for _ in range(10)] == [False] * 9 + [True]  # by count
    assert [slow.done() for _ in range(4)] == [False, False, False, True]  # by time, long before 10
    await slow.next()
    assert not slow.done() and slow.steps == 2


def test_a_pace_shrinks_at_once_and_grows_by_doubling():
    pace = Pace(100, 5, 400, seconds=0.001)
    pace.took(100, 0.010)  # ten times too long
    assert pace.n == 10
    pace.took(10, 0.00001)  # very quick: doubles, no more
    assert pace.n == 20
    pace.took(20, 1.0)
    assert pace.n == 5  # never below its floor
    for _ in range(20):
        pace.took(pace.n, 1e-7)
    assert pace.n == 400


async def test_release_lets_go_a_slice_per_step():
    items = list(range(2500))
    d = {i: str(i) for i in range(2500)}
    seen = []

    async def watch():
        while items or d:
            seen.append((len(items), len(d)))
            await asyncio.sleep(0)
    w = asyncio.create_task(watch())
    await asyncio.gather(release(items, 1000), release_dict(d, 1000))
    await w
    assert not items and not d
    assert seen == [(2500, 2500), (1500, 1500), (500, 500)]  # 1,000 a step


async def test_status_steps_end_on_the_clock_with_a_fixed_count_not_reached(monkeypatch):
    """A loaded machine: every SA seems to take a long time; each step then lists one SA, not 100."""
    monkeypatch.setattr(reporting, "Steps", _slow_steps)
    p = _pair()
    rt = _runtime(p)
    turns: list[int] = []
    t = _count_turns(turns)
    await asyncio.sleep(0)
    snap = await rt.status_async(chunk=100)
    t.cancel()
    assert len(snap.ike_sas) == N
    assert len(turns) >= N  # one SA a step


async def test_datapath_counters_are_read_in_steps_and_miss_no_pair():
    path = SaPath(parse_policy(LAB_POLICY, load_secrets=False))
    for n in range(30):
        path.install(client(n), lambda d, a: None, None)
    turns: list[int] = []
    t = _count_turns(turns)
    await asyncio.sleep(0)
    sas, _drops = await path.counters_async(chunk=4)
    t.cancel()
    assert sorted(c.spi for c in sas if c.direction == "in") == [0x1000 + n for n in range(30)]
    assert len(sas) == 60 and len(turns) >= 30 // 4


async def test_datapath_counters_steps_end_on_the_clock(monkeypatch):
    import engine.datapath.userspace_path as up

    monkeypatch.setattr(up, "Steps", _slow_steps, raising=False)
    path = SaPath(parse_policy(LAB_POLICY, load_secrets=False))
    for n in range(30):
        path.install(client(n), lambda d, a: None, None)
    turns: list[int] = []
    t = _count_turns(turns)
    await asyncio.sleep(0)
    sas, _drops = await path.counters_async(chunk=1000)
    t.cancel()
    assert len(sas) == 60 and len(turns) >= 29  # a pair a step, not 1,000


async def test_the_counters_loop_indexes_in_steps_that_end_on_the_clock(monkeypatch):
    from engine.events import CountersSnapshot, SaCounters

    monkeypatch.setattr(reporting, "COUNTERS_INTERVAL", 0.0)
    monkeypatch.setattr(reporting, "Steps", _slow_steps)
    p = _pair()
    rt = _runtime(p)
    rt._loop = asyncio.get_running_loop()
    read = [SaCounters(i, d, 0, 1, (), None) for i in range(1, 41) for d in ("in", "out")]

    class Datapath(NullDatapath):
        async def counters_async(self):
            return list(read), {}
    rt.datapath = Datapath()
    q = rt.subscribe(kinds=(CountersSnapshot,))
    turns: list[int] = []
    t = _count_turns(turns)
    task = asyncio.create_task(rt._counters_loop())
    snap = await asyncio.wait_for(q.get(), 10)
    task.cancel()
    t.cancel()
    assert len(snap.sas) == 80 and len(rt._counters) == 80
    assert len(turns) >= 2 * 80  # indexing and the wall clock: one SA a step each


async def test_control_listings_are_encoded_a_bounded_count_at_a_time_and_join_into_json():
    import json

    from engine.runtime import control_wire

    turns: list[int] = []
    t = _count_turns(turns)
    await asyncio.sleep(0)
    parts = await control_wire.encode_sliced(range(1000), lambda i: {"n": i} if i % 7 else None)
    t.cancel()
    assert len(turns) >= 1000 // 200  # SLICE_ITEMS a step, even when each is quick
    assert json.loads(b"".join(control_wire.join_list(parts))) == [{"n": i} for i in range(1000) if i % 7]
    assert json.loads(b"".join(control_wire.join_list(parts[:1]))) == [{"n": 1}]
    assert b"".join(control_wire.join_list([])) == b"[]"
