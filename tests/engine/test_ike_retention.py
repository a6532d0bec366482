"""Nothing dead is kept: destroyed IKE and CHILD SAs, and their keys, become
unreachable (weakref + gc), and events can drop their keys for history."""

from __future__ import annotations

import gc
import weakref

from engine.events import ChildSaInstalled, IkeState

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy


def make(**kw) -> Pair:
    a = connection(children=[child(esp=("aes256gcm16-x25519",))], **kw)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def remember_ike_sas(p: Pair, seen: dict) -> None:
    """Weak references to every IKE SA, its keys and its SK codec (a function: a loop
    variable of the test would keep the last one alive). Keyed by endpoint and unique ID,
    not id(): a freed SA's id() may be a new SA's."""
    for side, ep in (("a", p.a), ("b", p.b)):
        for sa in ep.sas:
            seen[(side, sa.unique_id)] = (weakref.ref(sa), weakref.ref(sa.keys), weakref.ref(sa.sk))


def dead(refs) -> bool:
    gc.collect()
    return all(r() is None for r in refs)


def test_ike_rekeys_keep_no_previous_ike_sa_or_its_keys():
    """Six IKE rekeys leave twelve replaced IKE SAs: none of them, nor their keys
    (SK_d included) or SK codecs, may stay reachable."""
    p = make()
    seen = {}
    for n in range(6):
        remember_ike_sas(p, seen)
        p.ep("ab"[n % 2]).rekey("tun", p.now, ike=True)
        p.advance(2)
    current = {(side, sa.unique_id) for side, ep in (("a", p.a), ("b", p.b)) for sa in ep.sas}
    assert len(current) == 2
    gone = [refs for key, refs in seen.items() if key not in current]
    assert len(gone) == 12
    assert dead([r for refs in gone for r in refs])


def test_rekeyed_and_deleted_child_sas_are_unreachable():
    p = make()
    refs: list = []
    for n in range(4):
        refs += [weakref.ref(c) for ep in (p.a, p.b) for sa in ep.sas for c in sa.children.values()]
        p.ep("ab"[n % 2]).rekey("tun", p.now)
        p.advance(2)
    live = {id(c) for ep in (p.a, p.b) for sa in ep.sas for c in sa.children.values()}
    refs = [r for r in refs if id(r()) not in live]
    assert len(refs) == 8
    assert dead(refs)


def test_a_terminated_ike_sa_is_not_held_by_its_timers():
    """A rekey timer an hour ahead sits in the timer heap below another SA's
    earlier timer: it must not keep the SA alive once the SA is gone."""
    gone = connection(rekey_time=3600.0)
    stays = connection("other", local_id="left2.example", dpd_delay=30.0,
                       children=[child("lan2", local_ts="198.51.100.2/32", remote_ts="198.51.100.130/32")])
    p = Pair(policy(gone, stays, address=LEFT), policy(mirror(gone), mirror(stays), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.a.initiate("other", p.now)
    p.advance(1)
    refs = [weakref.ref(sa) for ep in (p.a, p.b) for sa in ep.sas if sa.name == "tun"]
    assert len(refs) == 2
    p.a.terminate("tun", p.now)
    p.advance(2)
    assert [sa.name for sa in p.a.sas] == ["other"] and p.a.get_timer() is not None
    assert dead(refs)


def test_destroyed_ike_sa_drops_its_keys_even_if_referenced():
    p = make()
    sa = p.a.sas[0]
    p.a.terminate("tun", p.now)
    p.advance(2)
    assert sa.state == IkeState.DESTROYED
    assert sa.keys is None and sa.sk is None


def test_child_sa_installed_without_keys():
    p = make()
    ev = p.of("a", ChildSaInstalled)[0]
    assert ev.keys is not None
    light = ev.without_keys()
    assert light.keys is None
    assert light.spi_in == ev.spi_in and light.local_ts == ev.local_ts and light.child == ev.child
