"""Virtual IP pools and leases: ranges, sticky addresses, hints, exhaustion, expiry, reload, 10,000 clients."""

from __future__ import annotations

import ipaddress as ip

import pytest

from engine.policy.model import PoolConfig
from engine.pools import Leases, PoolExhausted, pool_range, pool_size

V4 = PoolConfig("rw", "198.51.100.128/29")  # .129-.134: 6 addresses
V6 = PoolConfig("rw6", "2001:db8:1::/64")


@pytest.mark.parametrize("addrs, first, last", [
    ("198.51.100.128/29", "198.51.100.129", "198.51.100.134"),
    ("198.51.100.10-198.51.100.12", "198.51.100.10", "198.51.100.12"),
    ("198.51.100.7/32", "198.51.100.7", "198.51.100.7"),
    ("198.51.100.6/31", "198.51.100.6", "198.51.100.7"),
    ("2001:db8::/120", "2001:db8::1", "2001:db8::fe"),
])
def test_ranges(addrs, first, last):
    assert pool_range(addrs) == (ip.ip_address(first), ip.ip_address(last))


@pytest.mark.parametrize("addrs, words", [
    ("198.51.100.9-198.51.100.1", "ends before it starts"),
    ("198.51.100.1-2001:db8::1", "mixes IPv4 and IPv6"),
    ("nonsense", "neither a range"),
    ("198.51.100.1-x", "not a range of two addresses"),
])
def test_bad_ranges(addrs, words):
    with pytest.raises(ValueError, match=words):
        pool_range(addrs)


def test_same_identity_gets_its_address_back_while_free():
    leases = Leases([V4])
    a = leases.acquire("rw", "alice", 1, 0.0)
    b = leases.acquire("rw", "bob", 2, 0.0)
    assert (str(a.address), str(b.address)) == ("198.51.100.129", "198.51.100.130")
    leases.release(1)
    leases.release(2)
    c = leases.acquire("rw", "carol", 3, 1.0)
    assert str(c.address) == "198.51.100.131"  # never-used addresses before released ones
    assert leases.acquire("rw", "alice", 4, 2.0).address == a.address


def test_released_addresses_are_reused_oldest_first_when_the_rest_is_taken():
    leases = Leases([V4])
    for i in range(6):
        leases.acquire("rw", f"u{i}", i, 0.0)
    with pytest.raises(PoolExhausted, match="all 6 are in use"):
        leases.acquire("rw", "late", 99, 0.0)
    leases.release(3)
    leases.release(1)
    got = leases.acquire("rw", "late", 99, 1.0)
    assert str(got.address) == "198.51.100.132"  # u3's, released first
    # u3 lost its address to someone else; u1's is still remembered for u1.
    assert str(leases.acquire("rw", "u1", 100, 2.0).address) == "198.51.100.130"


def test_same_identity_online_twice_shares_the_address_until_both_go():
    leases = Leases([V4])
    a = leases.acquire("rw", "alice", "sa1", 0.0)
    b = leases.acquire("rw", "alice", "sa2", 0.0)
    assert a.address == b.address and b.holders == ("sa1", "sa2")
    leases.release("sa1")
    assert leases.usage()[0].used == 1
    leases.release("sa2")
    assert leases.usage()[0].used == 0 and leases.usage()[0].remembered == 1


def test_hints_are_granted_when_free_and_never_double_booked():
    leases = Leases([V4])
    hinted = leases.acquire("rw", "alice", 1, 0.0, requested="198.51.100.131")
    assert str(hinted.address) == "198.51.100.131"
    others = [leases.acquire("rw", f"u{i}", 10 + i, 0.0) for i in range(5)]
    addresses = {str(x.address) for x in others} | {str(hinted.address)}
    assert len(addresses) == 6
    leases.release(1)
    # A hint for a taken or foreign address falls back to the normal choice.
    assert str(leases.acquire("rw", "bob", 2, 0.0, requested="198.51.100.129").address) == "198.51.100.131"


def test_expiry_releases_and_a_later_holder_keeps_it():
    leases = Leases([V4])
    leases.acquire("rw", "alice", 1, 0.0, expires_at=10.0)
    leases.acquire("rw", "bob", 2, 0.0, expires_at=20.0)
    assert leases.expire(9.0) == []
    assert [x.identity for x in leases.expire(10.0)] == ["alice"]
    assert leases.usage()[0].used == 1
    assert leases.lease_of(1) is None and leases.lease_of(2).identity == "bob"


def test_reload_keeps_leases_and_flags_those_outside_the_new_range():
    leases = Leases([V4, V6])
    a = leases.acquire("rw", "alice", 1, 0.0)  # .129
    b = leases.acquire("rw", "bob", 2, 0.0)  # .130
    c = leases.acquire("rw6", "carol", 3, 0.0)
    flagged = leases.reload([PoolConfig("rw", "198.51.100.130-198.51.100.140")])
    assert sorted((x.identity, x.stale) for x in flagged) == [("alice", True), ("carol", True)]
    assert leases.lease_of(2).address == b.address and not leases.lease_of(2).stale
    assert leases.lease_of(1).stale and leases.lease_of(1).address == a.address
    usage = {u.name: u for u in leases.usage()}
    assert set(usage) == {"rw"} and usage["rw"].used == 1 and usage["rw"].stale == 1 and usage["rw"].size == 11
    # The new pool never hands out bob's address twice, and releasing a stale lease forgets it.
    taken = {str(leases.acquire("rw", f"n{i}", 10 + i, 1.0).address) for i in range(10)}
    assert str(b.address) not in taken and len(taken) == 10
    assert leases.release(1).identity == "alice" and leases.release(3).identity == "carol"
    assert leases.usage()[0].stale == 0
    assert c.pool == "rw6"


def test_usage_and_leases_by_identity():
    leases = Leases([V4, V6])
    leases.acquire("rw", "alice", 1, 0.0)
    leases.acquire("rw6", "alice", 2, 0.0)
    leases.acquire("rw", "bob", 3, 0.0)
    assert [(u.name, u.used, u.size) for u in leases.usage()] == [("rw", 2, 6), ("rw6", 1, 2 ** 64 - 2)]
    assert sorted(str(x.address) for x in leases.leases_of("alice")) == ["198.51.100.129", "2001:db8:1::1"]
    assert len(leases.leases()) == 3
    assert pool_size("2001:db8:1::/64") == 2 ** 64 - 2


def test_ten_thousand_clients_come_and_go():
    leases = Leases([PoolConfig("big", "198.51.0.0/16")])
    n = 10_000
    first = {}
    for i in range(n):
        first[i] = leases.acquire("big", f"user{i}", i, 0.0).address
    assert len(set(first.values())) == n
    for i in range(0, n, 2):
        leases.release(i)
    for i in range(0, n, 2):
        assert leases.acquire("big", f"user{i}", n + i, 1.0).address == first[i]
    assert leases.usage()[0].used == n


def test_a_hint_does_not_take_the_address_remembered_for_another_identity():
    """charon's mem_pool: a requested address is granted from the identity's own leases only, and
    another identity's remembered address goes to someone else only when nothing else is free.
    A client asking for it must not take a returning user's stable address while the pool has
    never-used ones."""
    leases = Leases([V4])
    alice = leases.acquire("rw", "alice", 1, 0.0)
    leases.release(1)
    bob = leases.acquire("rw", "bob", 2, 1.0, requested=str(alice.address))
    assert bob.address != alice.address
    assert leases.acquire("rw", "alice", 3, 2.0).address == alice.address
