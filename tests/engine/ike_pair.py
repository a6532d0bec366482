"""Two IkeEndpoints joined by a fake link with explicit time: the sans-IO
test bench for the IKE engine. Datagrams go through a queue; tests can drop,
duplicate, reorder, inspect or mutate them."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
from collections.abc import Callable

from engine.events import Event, IkeState
from engine.ike.endpoint import Datagram, IkeEndpoint
from engine.policy.identity import parse_identity
from engine.policy.model import (
    AuthConfig,
    ChildConfig,
    ConnectionConfig,
    EngineConfig,
    IkeSecret,
    Policy,
    Secrets,
)
from engine.policy.proposals import parse_proposal
from engine.policy.ts import parse_ts
from engine.secret import Secret
from engine.wire.constants import NON_ESP_MARKER

LEFT = "192.0.2.1"
RIGHT = "192.0.2.2"
PSK = "interop-psk-not-secret-0123456789"


def child(name="lan", *, local_ts="198.51.100.1/32", remote_ts="198.51.100.129/32",
          esp=("aes256gcm16",), **kw) -> ChildConfig:
    return ChildConfig(
        name=name,
        local_ts=tuple(parse_ts(t) for t in local_ts.split(",")),
        remote_ts=tuple(parse_ts(t) for t in remote_ts.split(",")),
        proposals=tuple(parse_proposal(p, "esp") for p in esp),
        **kw,
    )


def connection(name="tun", *, local=LEFT, remote=RIGHT, local_id="left.example", remote_id="right.example",
               ike=("aes256gcm16-prfsha256-x25519",), children=None, **kw) -> ConnectionConfig:
    return ConnectionConfig(
        name=name,
        local_addrs=(local,),
        remote_addrs=(remote,) if remote else (),
        proposals=tuple(parse_proposal(p, "ike") for p in ike),
        local=AuthConfig("psk", parse_identity(local_id) if local_id else None),
        remote=AuthConfig("psk", parse_identity(remote_id) if remote_id else None),
        children=tuple(children if children is not None else (child(),)),
        **kw,
    )


def policy(*connections: ConnectionConfig, psk: str = PSK, address: str = LEFT, **engine) -> Policy:
    return Policy(
        engine=EngineConfig(datapath="lab", listen=(address,), **engine),
        connections=tuple(connections),
        secrets=Secrets(ike=(IkeSecret("all", (), Secret(psk)),)),
    )


def mirror(conn: ConnectionConfig, **changes) -> ConnectionConfig:
    """The peer's view of a connection: addresses, IDs and selectors swapped."""
    kids = tuple(dataclasses.replace(c, local_ts=c.remote_ts, remote_ts=c.local_ts) for c in conn.children)
    swapped = dataclasses.replace(conn, local_addrs=conn.remote_addrs, remote_addrs=conn.local_addrs,
                                  local=conn.remote, remote=conn.local, children=kids)
    return dataclasses.replace(swapped, **changes)


class Pair:
    """Endpoint ``a`` at LEFT and ``b`` at RIGHT."""

    def __init__(self, pol_a: Policy, pol_b: Policy, *, seed: int = 1, nat_b: bool = False) -> None:
        counter = itertools.count()
        rnd = random.Random(seed)

        def rng(n: int) -> bytes:
            next(counter)
            return rnd.randbytes(n)

        self.a = IkeEndpoint(pol_a, rng=rng, seed=seed)
        self.b = IkeEndpoint(pol_b, rng=rng, seed=seed + 1)
        self.now = 1000.0
        self.wire: list[tuple[str, Datagram]] = []
        self.log: list[tuple[str, Datagram]] = []
        self.events: dict[str, list[Event]] = {"a": [], "b": []}
        self.filter: Callable[[str, Datagram], bool | bytes] | None = None
        self.esp: list[tuple[str, Datagram]] = []

    def ep(self, side: str) -> IkeEndpoint:
        return self.a if side == "a" else self.b

    def collect(self) -> None:
        for side in ("a", "b"):
            ep = self.ep(side)
            for d in ep.datagrams_to_send():
                self.wire.append((side, d))
                self.log.append((side, d))
            while (e := ep.next_event()) is not None:
                self.events[side].append(e)

    def deliver(self, max_steps: int = 200) -> None:
        """Move datagrams until the link is quiet."""
        for _ in range(max_steps):
            self.collect()
            if not self.wire:
                return
            side, d = self.wire.pop(0)
            data = d.data
            if self.filter is not None:
                verdict = self.filter(side, d)
                if verdict is False:
                    continue
                if isinstance(verdict, bytes):
                    data = verdict
            dst = self.b if side == "a" else self.a
            if d.local[1] == dst.natt_port or d.remote[1] == dst.natt_port:
                if data == b"\xff":
                    continue
                if not data.startswith(NON_ESP_MARKER):
                    self.esp.append((side, d))
                    continue
                data = data[len(NON_ESP_MARKER):]
            dst.receive_datagram(data, d.remote, d.local, self.now)
        raise AssertionError("link never went quiet")

    def advance(self, seconds: float, step: float | None = None) -> None:
        """Let time pass, firing timers in order."""
        end = self.now + seconds
        while True:
            self.deliver()
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None and t <= end]
            if not timers:
                break
            t = min(timers)
            self.now = max(self.now, t)
            for ep in (self.a, self.b):
                ept = ep.get_timer()
                if ept is not None and ept <= self.now:
                    ep.handle_timer(self.now)
        self.now = end
        self.deliver()

    def of(self, side: str, cls) -> list:
        return [e for e in self.events[side] if isinstance(e, cls)]


class Network:
    """A link with delays between the two endpoints of a Pair, for schedules:
    each datagram takes the next fate (drop, duplicate, delay) from ``fates``;
    once they run out the link is perfect. Time only moves through ``run_until``."""

    def __init__(self, pair: Pair, fates=(), *, base_delay: float = 0.01) -> None:
        self.p = pair
        self.fates = list(fates)
        self.base = base_delay
        self.flight: list[tuple[float, int, str, Datagram]] = []
        self.seq = itertools.count()
        self.delivered = 0

    def _launch(self, side: str, d: Datagram) -> None:
        now = self.p.now
        if self.fates:
            kind, delay = self.fates.pop(0)
            if kind == "drop":
                return
            heapq.heappush(self.flight, (now + self.base + delay, next(self.seq), side, d))
            if kind == "dup":
                heapq.heappush(self.flight, (now + self.base + 2 * delay + 0.5, next(self.seq), side, d))
            return
        heapq.heappush(self.flight, (now + self.base, next(self.seq), side, d))

    def collect(self) -> None:
        for side in ("a", "b"):
            ep = self.p.ep(side)
            for d in ep.datagrams_to_send():
                self._launch(side, d)
            while ep.next_event() is not None:
                pass

    def _deliver(self, side: str, d: Datagram) -> None:
        dst = self.p.b if side == "a" else self.p.a
        data = d.data
        if d.local[1] == dst.natt_port or d.remote[1] == dst.natt_port:
            if data == b"\xff" or not data.startswith(NON_ESP_MARKER):
                return  # keepalive or ESP
            data = data[len(NON_ESP_MARKER):]
        self.delivered += 1
        dst.receive_datagram(data, d.remote, d.local, self.p.now)

    def next_time(self) -> float | None:
        times = [t for t in (self.p.a.get_timer(), self.p.b.get_timer()) if t is not None]
        if self.flight:
            times.append(self.flight[0][0])
        return min(times) if times else None

    def run_until(self, end: float, max_steps: int = 100_000) -> None:
        """Deliver datagrams and fire timers in time order up to ``end``."""
        p = self.p
        for _ in range(max_steps):
            self.collect()
            t = self.next_time()
            if t is None or t > end:
                p.now = max(p.now, end)
                return
            p.now = max(p.now, t)
            if self.flight and self.flight[0][0] <= p.now:
                _, _, side, d = heapq.heappop(self.flight)
                self._deliver(side, d)
                continue
            for ep in (p.a, p.b):
                et = ep.get_timer()
                if et is not None and et <= p.now:
                    ep.handle_timer(p.now)
        raise AssertionError("the schedule never settled")

    def settle(self, max_rounds: int = 10_000) -> None:
        """Deliver whatever is in flight (time moves only as far as the last arrival)."""
        for _ in range(max_rounds):
            self.collect()
            if not self.flight:
                return
            self.run_until(self.flight[0][0])
        raise AssertionError("the link never went quiet")


def started(conn: ConnectionConfig | None = None, peer: ConnectionConfig | None = None, **engine) -> Pair:
    """A Pair with ``conn`` (default: connection()) at LEFT against ``peer`` (default: its mirror)
    at RIGHT, initiated by ``a`` and given a second to come up."""
    a = conn or connection()
    p = Pair(policy(a, address=LEFT, **engine), policy(peer or mirror(a), address=RIGHT, **engine))
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def live(p: Pair, side: str) -> list:
    """``side``'s IKE SAs not destroyed."""
    return [sa for sa in p.ep(side).sas if sa.state != IkeState.DESTROYED]


def handshake_events(side: str = "b") -> list[Event]:
    """The events one endpoint emits (engine clock) for a PSK handshake of connection() and its
    delete: the responder's by default."""
    conn = connection()
    pair = Pair(policy(conn), policy(mirror(conn)))
    pair.a.initiate("tun", pair.now)
    pair.deliver()
    pair.a.terminate("tun", pair.now)
    pair.deliver()
    return pair.events[side]


def ike_data(data: bytes) -> bytes | None:
    """The IKE message in a datagram from the log: without the non-ESP marker a message on the
    NAT-T port carries (MOBIKE floats there after IKE_SA_INIT, RFC 4555 §3.3); None for a NAT-T
    keepalive or ESP."""
    if data.startswith(NON_ESP_MARKER):
        return data[len(NON_ESP_MARKER):]
    if data == b"\xff" or len(data) < 28:
        return None
    return data if data[17] >> 4 == 2 else None  # IKE major version 2 (ESP would not be in the log)
