"""Key pairs made ahead (engine.crypto.keypool) and the runtime that fills the pool when idle:
no key pair is ever handed out twice, an empty pool falls back to a fresh key, and a pool
emptied by a burst fills again."""

from __future__ import annotations

import pytest

from engine.crypto.ke import KeyExchange, respond
from engine.crypto.keypool import KeyPool
from engine.crypto.transforms import KeId
from engine.events import ChildSaInstalled
from engine.datapath.base import NullDatapath
import engine.runtime.engine as engine_runtime
from engine.runtime.engine import EngineRuntime

from tests.engine.ike_pair import LEFT, RIGHT, Pair, connection, mirror, policy
from tests.loopback import addr

X25519 = int(KeId.CURVE25519)


def test_no_key_pair_is_handed_out_twice_and_an_empty_pool_says_so():
    pool = KeyPool([X25519], size=8)
    assert pool.short and pool.fill(100) == 8 and not pool.short and len(pool) == 8
    taken = [pool.take(X25519) for _ in range(8)]
    assert all(isinstance(k, KeyExchange) for k in taken)
    assert len({id(k) for k in taken}) == 8
    assert len({k.public_bytes() for k in taken}) == 8
    assert pool.take(X25519) is None and pool.missed == 1 and pool.taken == 8
    assert pool.short and pool.fill(3) == 3  # refills after exhaustion, a budget at a time
    again = [pool.take(X25519) for _ in range(3)]
    assert not {k.public_bytes() for k in again} & {k.public_bytes() for k in taken}
    assert pool.take(X25519) is None


def test_only_cheap_groups_are_pooled_and_unknown_ones_are_left_out():
    pool = KeyPool([X25519, 14, int(KeId.ECP_256), X25519, 9999, int(KeId.ML_KEM_768)])
    assert pool.groups == (X25519, int(KeId.ECP_256))
    assert pool.take(14) is None and pool.missed == 0
    pool.set_groups([int(KeId.ECP_256)])
    assert pool.groups == (int(KeId.ECP_256),)
    assert "KeyPool(" in repr(pool) and "private" not in repr(pool).lower()


def test_respond_uses_the_ready_key_once_and_checks_its_group():
    peer = KeyExchange(X25519)
    ready = KeyExchange(X25519)
    reply, shared = respond(X25519, peer.public_bytes(), ready)
    assert reply == ready.public_bytes() and shared == peer.compute_shared(reply)
    with pytest.raises(ValueError, match="ready key"):
        respond(int(KeId.ECP_256), KeyExchange(int(KeId.ECP_256)).public_bytes(), ready)


def test_the_responder_takes_its_key_from_the_pool_a_new_one_each_time():
    a = connection()
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    pool = p.b.key_pool = KeyPool([X25519], size=2)
    pool.fill(2)
    ready = list(pool._keys[X25519])
    for n in range(3):  # the third finds the pool empty: a fresh key, as without a pool
        p.a.initiate("tun", p.now)
        p.advance(1)
        p.a.terminate("tun", p.now)
        p.advance(1)
    assert len(p.of("a", ChildSaInstalled)) == 3 and len(p.of("b", ChildSaInstalled)) == 3
    assert pool.taken == 2 and pool.missed == 1 and len(pool) == 0
    sent = [d.data for side, d in p.log if side == "b" and d.data[18] == 34]  # IKE_SA_INIT responses
    assert len(sent) == 3
    for key, data in zip(ready, sent):
        assert key.public_bytes() in data
    assert ready[0].public_bytes() not in sent[1] and ready[1].public_bytes() not in sent[2]


class Loop:
    """The runtime's loop as _fill_pool uses it: callbacks run when the test says (no clock)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, object]] = []

    def call_later(self, delay, fn):
        self.pending.append(("later", fn))
        return self

    def call_soon(self, fn):
        self.pending.append(("soon", fn))
        return self

    def call_at(self, when, fn):
        return self

    def cancel(self) -> None:
        pass

    def time(self) -> float:
        return 0.0

    def run_one(self) -> str:
        kind, fn = self.pending.pop(0)
        fn()
        return kind


def test_the_runtime_fills_the_pool_only_while_no_datagram_comes_in():
    conn = connection(local=addr(1), remote="127.0.0.9", local_port=25710)
    rt = EngineRuntime(policy(conn, address=addr(1), ike_port=25710, natt_port=25711), datapath=NullDatapath())
    assert rt.endpoint.key_pool is rt.key_pool and rt.key_pool.groups == (X25519,)
    rt.key_pool.size = 2 * engine_runtime.KEY_POOL_STEP + 1
    loop = rt._loop = Loop()
    rt._after()  # an empty pool: the runtime looks again after KEY_POOL_IDLE
    assert [k for k, _ in loop.pending] == ["later"]
    for _ in range(5):  # busy: a datagram came in before every look
        rt._datagrams += 1
        assert loop.run_one() == "later" and len(rt.key_pool) == 0
    assert loop.run_one() == "later"  # quiet since the last look: a step, then the next one at once
    assert len(rt.key_pool) == engine_runtime.KEY_POOL_STEP and [k for k, _ in loop.pending] == ["soon"]
    rt._datagrams += 1  # a burst starts: the next step waits for a quiet moment again
    assert loop.run_one() == "soon" and len(rt.key_pool) == engine_runtime.KEY_POOL_STEP
    while loop.pending:
        loop.run_one()
    assert len(rt.key_pool) == rt.key_pool.size and rt._pool_timer is None
    rt.key_pool.take(X25519)  # the responder took one: the next turn of the loop arms the look again
    rt._after()
    while loop.pending:
        loop.run_one()
    assert len(rt.key_pool) == rt.key_pool.size
