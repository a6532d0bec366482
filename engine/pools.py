"""Virtual IP pools and their leases, for road-warrior gateways (RFC 7296 §3.15). Sans-IO.

A pool is a range of addresses (``[pools.NAME] addrs``: ``a-b``, or a network
whose first and last addresses are left out, as strongSwan's mem_pool does).
``Leases`` hands them out like strongSwan does:

- the same identity gets the address it had while nobody else took it (a
  reconnecting phone keeps its IP); an identity already online shares that
  address only from the same peer address and port (a make-before-break
  reauthentication) or when the new IKE SA replaces the old ones
  (INITIAL_CONTACT, unique = replace); a second device of the same identity
  gets an address of its own (as charon's mem_pool: two tunnels claiming one
  address would take each other's traffic);
- otherwise a never-used address, then the address released longest ago;
- a client may ask for a specific address (a CFG_REQUEST hint): granted when
  it is in the pool and free.

Everything is O(1) per acquire/release (dicts and an ordered dict of released
addresses, no scan over the pool), so 10,000 clients cost nothing extra, and
an IPv6 /64 pool needs no table of its size. Holders are what the engine
releases by (an IKE SA's unique id): ``release(holder)`` on delete,
``expire(now)`` for leases whose ``expires_at`` passed. ``reload(pools)``
keeps every lease: those outside a pool's new range (or of a pool removed)
are flagged ``stale`` for the engine to end. ``usage()`` reports used/size.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from engine.policy.model import PoolConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PoolExhausted(Exception):
    """No free address: the engine answers INTERNAL_ADDRESS_FAILURE (RFC 7296 §3.10.1)."""


def pool_range(addrs: str) -> tuple[IPAddress, IPAddress]:
    """First and last address handed out from a pool's ``addrs``; ValueError says what is wrong."""
    text = addrs.strip()
    if "-" in text and "/" not in text:
        lo, _, hi = text.partition("-")
        try:
            a, b = ipaddress.ip_address(lo.strip()), ipaddress.ip_address(hi.strip())
        except ValueError:
            raise ValueError(f"{addrs!r} is not a range of two addresses") from None
        if a.version != b.version:
            raise ValueError(f"{addrs!r} mixes IPv{a.version} and IPv{b.version}")
        if a > b:
            raise ValueError(f"{addrs!r} ends before it starts")
        return a, b
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{addrs!r} is neither a range (a-b) nor a network (CIDR)") from None
    if net.num_addresses <= 2:
        return net.network_address, net.broadcast_address
    return net.network_address + 1, net.broadcast_address - 1


def pool_size(addrs: str) -> int:
    first, last = pool_range(addrs)
    return int(last) - int(first) + 1


@dataclass(frozen=True)
class Lease:
    """One address given to one identity."""

    pool: str
    address: IPAddress
    identity: str
    """Who holds it (the EAP identity, else the IKE identity), as text."""
    since: float
    """When it was first given (the engine's ``now``)."""
    holders: tuple[object, ...] = ()
    """IKE SAs using it (their unique ids)."""
    expires_at: float | None = None
    stale: bool = False
    """Its pool no longer contains it (policy reloaded): the engine should end its SAs."""
    peer: object = None
    """The client's (address, port) when it got the lease: another IKE SA of the identity from
    there shares it (a reauthentication), one from elsewhere is another device."""


@dataclass(frozen=True)
class PoolUsage:
    name: str
    addrs: str
    size: int
    used: int
    """Addresses online (held by at least one IKE SA)."""
    remembered: int
    """Released addresses kept for their last identity until someone else needs them."""
    stale: int = 0

    @property
    def free(self) -> int:
        return self.size - self.used


class _Pool:
    def __init__(self, cfg: PoolConfig) -> None:
        self.cfg = cfg
        self.first, self.last = pool_range(cfg.addrs)
        self.base = int(self.first)
        self.size = int(self.last) - self.base + 1
        self.cursor = 0  # offsets below it were handed out once
        self.online: dict[int, Lease] = {}
        self.offline: OrderedDict[int, str] = OrderedDict()  # released offset -> last identity, oldest first
        self.by_identity: dict[str, int] = {}  # identity -> its offset (online, or offline and not reused)
        self.online_of: dict[str, list[int]] = {}  # identity -> its online offsets (one per device)

    def put(self, off: int, lease: Lease) -> None:
        if off not in self.online:
            self.online_of.setdefault(lease.identity, []).append(off)
        self.online[off] = lease

    def drop(self, off: int) -> Lease:
        lease = self.online.pop(off)
        offs = self.online_of.get(lease.identity, [])
        if off in offs:
            offs.remove(off)
        if not offs:
            self.online_of.pop(lease.identity, None)
        return lease

    def offset(self, address) -> int | None:
        try:
            addr = ipaddress.ip_address(address)
        except ValueError:
            return None
        if addr.version != self.first.version or not self.first <= addr <= self.last:
            return None
        return int(addr) - self.base

    def address(self, offset: int) -> IPAddress:
        return ipaddress.ip_address(self.base + offset)


class Leases:
    """The gateway's leases over all pools."""

    def __init__(self, pools: tuple[PoolConfig, ...] | list[PoolConfig] = ()) -> None:
        self._pools: dict[str, _Pool] = {p.name: _Pool(p) for p in pools}
        self._by_holder: dict[object, tuple[str, int]] = {}
        self._stale: dict[tuple[str, str], Lease] = {}  # (pool, address) -> lease outside any pool now
        self._expiry: list[tuple[float, int, object]] = []
        self._seq = 0

    # -- acquire / release ---------------------------------------------------------------------
    def acquire(self, pool: str, identity: str, holder: object, now: float, *, requested=None,
                expires_at: float | None = None, peer: object = None,
                take_over: Callable[[Lease], bool] | None = None) -> Lease:
        """An address of ``pool`` for ``identity``, held by ``holder``. The identity's online lease is
        shared when it was given to the same ``peer`` (address, port), or when ``take_over(lease)``
        says its holders all go (the new IKE SA replaces them); otherwise the identity's remembered
        address, the ``requested`` one, a new one. PoolExhausted when none is free; KeyError for an
        unknown pool."""
        p = self._pools[pool]
        if holder in self._by_holder:
            self.release(holder, now)
        online = p.online_of.get(identity, ())
        off = next((o for o in online if p.online[o].peer == peer), None)
        taken = False
        if off is None and take_over is not None:
            off = next((o for o in online if take_over(p.online[o])), None)
            taken = off is not None
        if off is not None:
            lease = p.online[off]
            # Taken over, the address is the new device's (its holders go): its next reauthentication
            # comes from there (charon records the peer of the SA that gets the lease).
            lease = replace(lease, holders=lease.holders + (holder,),
                            expires_at=_later(lease.expires_at, expires_at), peer=peer if taken else lease.peer)
        else:
            off = self._choose(p, identity, requested)
            lease = Lease(pool, p.address(off), identity, now, (holder,), expires_at, peer=peer)
            p.by_identity[identity] = off
        p.put(off, lease)
        self._by_holder[holder] = (pool, off)
        if expires_at is not None:
            self._seq += 1
            heapq.heappush(self._expiry, (expires_at, self._seq, holder))
        return lease

    def _choose(self, p: _Pool, identity: str, requested) -> int:
        off = p.by_identity.get(identity)
        if off is not None and p.offline.get(off) == identity:
            del p.offline[off]
            return off
        if requested is not None:
            want = p.offset(requested)
            # Never one remembered for another identity (its own was taken above): as charon's
            # mem_pool, that goes to someone else only when nothing else is free (below).
            if want is not None and want not in p.online and want not in p.offline and want >= p.cursor:
                return want  # never used: the cursor steps over it later
        # Never-used addresses first; the cursor skips those a hint took (online, or released since).
        while p.cursor < p.size and (p.cursor in p.online or p.cursor in p.offline):
            p.cursor += 1
        if p.cursor < p.size:
            p.cursor += 1
            return p.cursor - 1
        if p.offline:
            off, _ = next(iter(p.offline.items()))
            self._forget(p, off)
            return off
        raise PoolExhausted(f"pool '{p.cfg.name}' ({p.cfg.addrs}) has no free address: all {p.size} are in use")

    @staticmethod
    def _forget(p: _Pool, off: int) -> None:
        owner = p.offline.pop(off)
        if p.by_identity.get(owner) == off:
            del p.by_identity[owner]

    def release(self, holder: object, now: float | None = None) -> Lease | None:
        """The holder (an IKE SA) is gone; the address is free when its last holder went. Returns the
        lease as it was, or None if the holder held none."""
        where = self._by_holder.pop(holder, None)
        if where is None:
            return None
        pool, off = where
        p = self._pools.get(pool)
        if p is None or off not in p.online:
            return self._release_stale(holder)
        lease = p.online[off]
        rest = tuple(h for h in lease.holders if h != holder)
        if rest:
            p.online[off] = replace(lease, holders=rest)
            return lease
        p.drop(off)
        p.offline[off] = lease.identity
        p.by_identity[lease.identity] = off  # the address it gets back (another device may still be on)
        return lease

    def transfer(self, holder: object, new_holder: object) -> Lease | None:
        """An IKE rekey: ``new_holder`` takes over ``holder``'s lease (same address, same peer).
        Returns the lease, or None if ``holder`` held none."""
        where = self._by_holder.pop(holder, None)
        if where is None:
            return None
        pool, off = where
        p = self._pools.get(pool)
        if p is not None and off in p.online:
            lease = p.online[off]
            lease = replace(lease, holders=tuple(new_holder if h == holder else h for h in lease.holders))
            p.online[off] = lease
        else:
            key = next((k for k, v in self._stale.items() if holder in v.holders), None)
            if key is None:
                return None
            lease = self._stale[key]
            lease = replace(lease, holders=tuple(new_holder if h == holder else h for h in lease.holders))
            self._stale[key] = lease
        self._by_holder[new_holder] = where
        return lease

    def _release_stale(self, holder) -> Lease | None:
        for key, lease in list(self._stale.items()):
            if holder in lease.holders:
                rest = tuple(h for h in lease.holders if h != holder)
                if rest:
                    self._stale[key] = replace(lease, holders=rest)
                else:
                    del self._stale[key]
                return lease
        return None

    def expire(self, now: float) -> list[Lease]:
        """Release every holder whose lease expired by ``now``; the leases released."""
        out = []
        while self._expiry and self._expiry[0][0] <= now:
            when, _, holder = heapq.heappop(self._expiry)
            where = self._by_holder.get(holder)
            if where is None:
                continue
            p = self._pools.get(where[0])
            lease = p.online.get(where[1]) if p else None
            if lease is not None and lease.expires_at is not None and lease.expires_at > now:
                continue  # renewed by another holder's later expiry
            released = self.release(holder, now)
            if released is not None:
                out.append(released)
        return out

    # -- policy reload ---------------------------------------------------------------------------
    def reload(self, pools: tuple[PoolConfig, ...] | list[PoolConfig]) -> list[Lease]:
        """Use the new pools; leases stay. Returns the leases now outside their pool (flagged stale)."""
        new: dict[str, _Pool] = {}
        flagged: list[Lease] = []
        for cfg in pools:
            old = self._pools.get(cfg.name)
            if old is not None and old.cfg.addrs == cfg.addrs:
                old.cfg = cfg
                new[cfg.name] = old
                continue
            fresh = _Pool(cfg)
            if old is not None:
                flagged += self._move(old, fresh)
            new[cfg.name] = fresh
        for name, old in self._pools.items():
            if name not in new:
                flagged += self._move(old, None)
        self._pools = new
        return flagged

    def _move(self, old: _Pool, fresh: _Pool | None) -> list[Lease]:
        flagged = []
        for off, lease in old.online.items():
            new_off = fresh.offset(lease.address) if fresh is not None else None
            if new_off is None:
                lease = replace(lease, stale=True)
                self._stale[(lease.pool, str(lease.address))] = lease
                for h in lease.holders:
                    self._by_holder[h] = (lease.pool, -1)
                flagged.append(lease)
                continue
            fresh.put(new_off, lease)
            fresh.by_identity[lease.identity] = new_off
            for h in lease.holders:
                self._by_holder[h] = (lease.pool, new_off)
        if fresh is not None:
            for off, identity in old.offline.items():
                new_off = fresh.offset(old.address(off))
                if new_off is not None and new_off not in fresh.online:
                    fresh.offline[new_off] = identity
                    fresh.by_identity.setdefault(identity, new_off)
            # Never-used addresses of the new range stay never-used; used ones are tracked above.
            fresh.cursor = 0
        return flagged

    def stale(self) -> list[Lease]:
        """Leases a reload left outside every pool, still held (their IKE SAs are to end)."""
        return list(self._stale.values())

    # -- reporting ------------------------------------------------------------------------------
    def usage(self) -> list[PoolUsage]:
        stale_by_pool: dict[str, int] = {}
        for (pool, _), _lease in self._stale.items():
            stale_by_pool[pool] = stale_by_pool.get(pool, 0) + 1
        return [PoolUsage(name, p.cfg.addrs, p.size, len(p.online), len(p.offline), stale_by_pool.get(name, 0))
                for name, p in self._pools.items()]

    def leases(self) -> list[Lease]:
        """Every online lease (stale ones included)."""
        out = [lease for p in self._pools.values() for lease in p.online.values()]
        return out + list(self._stale.values())

    def leases_of(self, identity: str) -> list[Lease]:
        out = [p.online[off] for p in self._pools.values() for off in p.online_of.get(identity, ())]
        return out + [lease for lease in self._stale.values() if lease.identity == identity]

    def lease_of(self, holder: object) -> Lease | None:
        where = self._by_holder.get(holder)
        if where is None:
            return None
        p = self._pools.get(where[0])
        if p is not None and where[1] in p.online:
            return p.online[where[1]]
        return next((lease for lease in self._stale.values() if holder in lease.holders), None)


def _later(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return max(a, b)
