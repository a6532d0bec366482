"""Network schedules on the two-endpoint bench: hypothesis draws a seed (the
nonces, so who wins each collision), a list of commands at given times (both
sides rekey CHILD and IKE SAs, delete CHILD SAs, terminate, initiate again)
and the fate of each datagram while they run (dropped, duplicated, delayed,
so also reordered); DPD runs on its own. Then the link becomes perfect and
time moves past every retransmission, deadline and DPD interval. After that:

- no exception escaped the endpoints;
- both ends hold the same IKE SAs (SPIs) and the same CHILD SAs (SPIs crossed,
  same keys), all of them ESTABLISHED / INSTALLED;
- at most one IKE SA and one CHILD SA per configured child;
- no destroyed IKE SA or CHILD SA is reachable (weakref), no SPI is leaked.

CI runs IPSEC_CONSOLE_SCHEDULES schedules (default 3,000); the long run is
``IPSEC_CONSOLE_SCHEDULES=100000 python3 -m pytest -q tests/engine/test_ike_schedule.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import weakref

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import ChildState, IkeState
from engine.ike import sa as sa_module
from engine.policy.model import EngineConfig

from tests.engine.ike_pair import LEFT, RIGHT, Network, Pair, child, connection, mirror, policy

SCHEDULES = int(os.environ.get("IPSEC_CONSOLE_SCHEDULES", "3000"))
FAST = dict(retransmit_timeout=1.0, retransmit_base=1.5, retransmit_tries=4)
"""Retransmissions over 13 s: long schedules in little simulated time."""
DPD = 10.0
CHAOS = 40.0
"""Commands happen in the first CHAOS seconds."""
QUIET = 400.0
"""Then this long on a perfect link: past twice the retransmission budget (the
deadline of an SA waiting for the peer's delete), a DPD round and its retries,
several times over."""

OPS = ("a_rekey_child", "b_rekey_child", "a_rekey_ike", "b_rekey_ike", "a_delete_child", "b_delete_child",
       "a_terminate", "b_terminate", "a_initiate", "a_rekey_both", "b_rekey_both",
       # both sides in the same instant: a collision for sure
       "ab_rekey_child", "ab_rekey_ike", "ab_rekey_both", "ab_delete_child")
FATES = st.tuples(st.sampled_from(["ok", "ok", "ok", "drop", "dup"]), st.sampled_from([0.0, 0.0, 0.3, 1.5, 4.0]))


@contextlib.contextmanager
def tracked_sas():
    """Every IkeSa created meanwhile, held weakly."""
    seen: weakref.WeakSet = weakref.WeakSet()
    original = sa_module.IkeSa.__init__

    def init(self, *args, **kw):
        original(self, *args, **kw)
        seen.add(self)

    sa_module.IkeSa.__init__ = init
    try:
        yield seen
    finally:
        sa_module.IkeSa.__init__ = original


@pytest.fixture(autouse=True, scope="module")
def quiet_engine_log():
    logger = logging.getLogger("engine")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)


def make_pair(seed: int, two_children: bool) -> Pair:
    kids = [child(esp=("aes256gcm16-x25519",), dpd_action="clear")]
    if two_children:
        kids.append(child("voice", local_ts="198.51.100.2/32", remote_ts="198.51.100.130/32",
                          esp=("aes128gcm16",), dpd_action="clear"))
    a = connection(dpd_delay=DPD, children=kids)
    engine = dict(datapath="lab", **FAST)
    pol_a = dataclasses.replace(policy(a, address=LEFT), engine=EngineConfig(listen=(LEFT,), **engine))
    pol_b = dataclasses.replace(policy(mirror(a), address=RIGHT), engine=EngineConfig(listen=(RIGHT,), **engine))
    return Pair(pol_a, pol_b, seed=seed)


def live(ep):
    return [sa for sa in ep.sas if sa.state != IkeState.DESTROYED]


def apply(p: Pair, op: str) -> None:
    side, what = op.split("_", 1)
    if side == "ab":
        apply(p, f"a_{what}")
        apply(p, f"b_{what}")
        return
    ep = p.ep(side)
    if what == "rekey_child":
        ep.rekey("tun", p.now)
    elif what == "rekey_ike":
        ep.rekey("tun", p.now, ike=True)
    elif what == "rekey_both":
        ep.rekey("tun", p.now)
        ep.rekey("tun", p.now, ike=True)
    elif what == "delete_child":
        kids = [c for sa in live(ep) for c in sa.children.values() if c.state == ChildState.INSTALLED]
        if kids:
            ep.rekey_child_spi(kids[0].spi_in_int, p.now, hard=True)
    elif what == "terminate":
        ep.terminate("tun", p.now)
    elif what == "initiate":
        ep.initiate("tun", p.now)


def snapshot_children(p: Pair, children: dict) -> None:
    """CHILD SAs (unhashable dataclasses) by id, held weakly."""
    for ep in (p.a, p.b):
        for sa in ep.sas:
            for c in sa.children.values():
                children[id(c)] = weakref.ref(c)


def check_agreement(p: Pair) -> None:
    sas = {side: live(p.ep(side)) for side in ("a", "b")}
    for side, group in sas.items():
        for sa in group:
            assert sa.state == IkeState.ESTABLISHED, (side, sa.unique_id, sa.state)
            assert sa.outstanding is None and not sa.queue and not sa.deferred, (side, sa.unique_id)
    ike_a = {(sa.spi_i, sa.spi_r) for sa in sas["a"]}
    ike_b = {(sa.spi_i, sa.spi_r) for sa in sas["b"]}
    assert ike_a == ike_b, (ike_a, ike_b)
    assert len(ike_a) <= 1, ike_a
    for side in ("a", "b"):
        for sa in sas[side]:
            names = [c.config.name for c in sa.children.values()]
            assert len(names) == len(set(names)), (side, names)
    ca = {c.spi_in: c for sa in sas["a"] for c in sa.children.values()}
    cb = {c.spi_in: c for sa in sas["b"] for c in sa.children.values()}
    assert len(ca) == len(cb), (sorted(ca), sorted(cb))
    for spi, c in ca.items():
        assert c.state == ChildState.INSTALLED, c.state
        peer = cb.get(c.spi_out)
        assert peer is not None and peer.spi_out == spi, (spi.hex(), c.spi_out.hex())
        assert peer.state == ChildState.INSTALLED
        assert peer.keys.encr_in == c.keys.encr_out and peer.keys.encr_out == c.keys.encr_in
    for side, ep in (("a", p.a), ("b", p.b)):
        assert ep.registry.spis_in_use() == sum(len(sa.children) for sa in sas[side]), side
        assert not ep.registry._reserved_ike, side


def check_nothing_dead_reachable(p: Pair, seen: weakref.WeakSet, children: dict) -> None:
    def leftovers():
        alive_sas = {id(sa) for ep in (p.a, p.b) for sa in live(ep)}
        alive_kids = {id(c) for ep in (p.a, p.b) for sa in live(ep) for c in sa.children.values()}
        kids = [r() for r in children.values()]
        return ([sa for sa in seen if id(sa) not in alive_sas],
                [c for c in kids if c is not None and id(c) not in alive_kids])

    dead_sas, dead_kids = leftovers()
    if dead_sas or dead_kids:
        del dead_sas, dead_kids
        gc.collect()  # reference cycles wait for the collector; anything left after it is kept
        dead_sas, dead_kids = leftovers()
    assert not dead_sas, [(sa.unique_id, sa.state, gc.get_referrers(sa)) for sa in dead_sas]
    assert not dead_kids, [(c.unique_id, c.state) for c in dead_kids]


def run_schedule(seed: int, two_children: bool, ops, fates) -> None:
    with tracked_sas() as seen:
        children: dict = {}
        p = make_pair(seed, two_children)
        net = Network(p)
        p.a.initiate("tun", p.now)
        net.run_until(p.now + 2)
        snapshot_children(p, children)
        start = p.now
        net.fates = list(fates)
        for at, op in sorted(ops):
            net.run_until(start + at)
            snapshot_children(p, children)
            apply(p, op)
        net.run_until(start + CHAOS)
        net.fates = []
        net.run_until(start + CHAOS + QUIET)
        net.settle()
        snapshot_children(p, children)
        check_agreement(p)
        net = None
        check_nothing_dead_reachable(p, seen, children)


SCHEDULE = st.tuples(
    st.integers(0, 2**16),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, int(CHAOS * 10)).map(lambda t: t / 10), st.sampled_from(OPS)), max_size=12),
    st.lists(FATES, max_size=120),
)


@settings(max_examples=SCHEDULES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(SCHEDULE)
def test_network_schedules(schedule):
    run_schedule(*schedule)


@pytest.mark.parametrize("seed", range(8))
def test_everything_at_once_on_a_clean_link(seed):
    """Both sides rekey everything in the same instant, then delete and bring back a child."""
    ops = [(0.0, "a_rekey_both"), (0.0, "b_rekey_both"), (5.0, "a_delete_child"), (10.0, "a_initiate")]
    run_schedule(seed, True, ops, [])
