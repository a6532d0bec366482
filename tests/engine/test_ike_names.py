"""Host names in remote_addrs (``remote_addrs = ["vpn.example.org"]``, what swanctl users
write for a gateway): the sans-IO endpoint asks the runtime to resolve them and initiates
when answered; the responder matches a peer on what a name last resolved to."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket

from engine.datapath.base import NullDatapath
from engine.events import IkeState
from engine.ike import names
from engine.ike.names import NAME_TTL, initiate_target
from engine.ike.policy_change import initiable
from engine.runtime import resolver
from engine.runtime.engine import EngineRuntime

from tests.engine.ike_pair import LEFT, RIGHT, Pair, connection, mirror, policy
from tests.loopback import addr

GW = "gw.test"  # RFC 6761: .test is never a real name


def pair(a_remote=(GW,), b_remote=(LEFT,)) -> tuple[Pair, list[str]]:
    a = dataclasses.replace(connection(), remote_addrs=tuple(a_remote))
    b = mirror(connection(), remote_addrs=tuple(b_remote))
    p = Pair(policy(a, address=LEFT), policy(b, address=RIGHT))
    asked: list[str] = []
    p.a.names.resolve = asked.append
    return p, asked


def established(ep) -> list:
    return [sa for sa in ep.sas if sa.state == IkeState.ESTABLISHED]


def test_initiating_to_a_host_name_waits_for_the_runtime_then_goes_to_its_address():
    p, asked = pair()
    assert p.a.initiate("tun", p.now) is None
    assert asked == [GW] and not p.a.datagrams_to_send() and not p.a.sas
    p.a.initiate("tun", p.now)  # asked again before the answer: one query, one initiation
    assert asked == [GW]
    p.a.resolved(GW, ("2001:db8::1", RIGHT), p.now)  # the family of our local_addrs wins
    sent = p.a.datagrams_to_send()
    assert len(sent) == 1 and sent[0].remote == (RIGHT, 500)
    p.wire.append(("a", sent[0]))
    p.advance(1)
    assert len(established(p.a)) == 1 and len(established(p.b)) == 1
    assert established(p.a)[0].remote == (RIGHT, 4500)  # the NAT-T port after IKE_SA_INIT (MOBIKE, RFC 4555 §3.3)


def test_an_answer_is_used_for_name_ttl_then_asked_again():
    p, asked = pair()
    p.a.initiate("tun", p.now)
    p.a.resolved(GW, (RIGHT,), p.now)
    p.advance(1)
    p.a.terminate("tun", p.now)
    p.advance(1)
    assert p.a.initiate("tun", p.now) is not None and asked == [GW]  # still fresh: no query
    p.advance(1)
    p.a.terminate("tun", p.now)
    p.advance(NAME_TTL)
    assert p.a.initiate("tun", p.now) is None and asked == [GW, GW]


def test_a_name_that_does_not_resolve_fails_the_initiation_and_says_why(caplog):
    p, _asked = pair()
    p.a.initiate("tun", p.now)
    with caplog.at_level(logging.WARNING, logger="engine"):
        p.a.resolved(GW, (), p.now)
    assert not p.a.sas and not p.a.datagrams_to_send()
    assert p.a.stats["name_unresolved"] == 1
    assert any(GW in r.getMessage() and "did not resolve" in r.getMessage() for r in caplog.records)


def test_a_resolver_failure_later_keeps_the_last_addresses():
    p, asked = pair()
    p.a.initiate("tun", p.now)
    p.a.resolved(GW, (RIGHT,), p.now)
    p.advance(1)
    p.a.terminate("tun", p.now)
    p.advance(NAME_TTL + 1)
    assert p.a.initiate("tun", p.now) is None
    p.a.resolved(GW, (), p.now)  # the DNS is down now: the peer we knew is still tried
    p.advance(1)
    assert len(established(p.a)) == 1


def test_garbage_in_an_answer_is_dropped():
    p, _asked = pair()
    p.a.initiate("tun", p.now)
    p.a.resolved(GW, ("not-an-address", RIGHT, RIGHT), p.now)
    assert p.a.names.addresses(GW) == (RIGHT,)


def test_the_first_address_or_name_is_initiated_to_not_a_subnet_or_range():
    conn = dataclasses.replace(connection(), remote_addrs=("198.51.100.0/24", "192.0.2.5-192.0.2.9", RIGHT))
    assert initiate_target(conn) == RIGHT
    p = Pair(policy(conn, address=LEFT), policy(mirror(connection()), address=RIGHT))
    p.a.initiate("tun", p.now)
    assert p.a.datagrams_to_send()[0].remote == (RIGHT, 500)
    only_nets = dataclasses.replace(conn, remote_addrs=("198.51.100.0/24", "%any"))
    assert not initiable(only_nets)


def test_the_responder_matches_a_peer_on_what_its_name_resolved_to():
    p, _ = pair(a_remote=(RIGHT,), b_remote=("client.test",))
    asked: list[str] = []
    p.b.names.resolve = asked.append
    p.b.start(p.now)
    assert asked == ["client.test"]  # the policy's names are asked for when it is loaded
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert not established(p.b)  # not resolved yet: no connection matches
    p.b.resolved("client.test", (LEFT,), p.now)
    p.a.terminate("tun", p.now)
    p.advance(5)
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert len(established(p.b)) == 1


# ---------------------------------------------------------------- the runtime (engine/runtime/resolver.py)
async def _until(cond, seconds=10.0):
    for _ in range(int(seconds / 0.02)):
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


async def test_the_runtime_resolves_the_name_and_brings_the_tunnel_up():
    lookups: list[str] = []

    async def lookup(loop, name):
        lookups.append(name)
        await asyncio.sleep(0.05)  # an answer that takes a while: the loop goes on meanwhile
        return (addr(2),)

    a = dataclasses.replace(connection(local=addr(1), local_port=25530, remote_port=25530), remote_addrs=(GW,))
    b = mirror(connection(local=addr(1), remote=addr(2), local_port=25530, remote_port=25530))
    ra = EngineRuntime(policy(a, address=addr(1), ike_port=25530, natt_port=25531), datapath=NullDatapath(),
                       lookup=lookup)
    rb = EngineRuntime(policy(b, address=addr(2), ike_port=25530, natt_port=25531), datapath=NullDatapath())
    await ra.start()
    await rb.start()
    try:
        ra.initiate("tun")
        ra.initiate("tun")
        assert await _until(lambda: established(ra.endpoint) and established(rb.endpoint))
        assert lookups == [GW] and established(ra.endpoint)[0].remote == (addr(2), 25530)
    finally:
        await ra.stop(delete=False)
        await rb.stop(delete=False)


async def test_a_lookup_that_hangs_or_fails_is_given_up_and_logged(monkeypatch, caplog):
    monkeypatch.setattr(resolver, "RESOLVE_TIMEOUT", 0.1)
    answers: list = []

    async def hangs(loop, name):
        await asyncio.sleep(30)

    async def fails(loop, name):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.WARNING, logger="engine"):
        for lookup in (hangs, fails):
            r = resolver.NameResolver(loop, lambda n, a: answers.append((n, a)), lookup)
            r.ask("Slow.TEST")
            assert await _until(lambda: len(answers) == 1 + (lookup is fails), 5)
    assert answers == [("slow.test", ()), ("slow.test", ())]
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "given up" in text and "Name or service not known" in text


async def test_the_system_lookup_reads_the_hosts_file():
    got = await resolver.system_lookup(asyncio.get_running_loop(), "localhost")
    assert "127.0.0.1" in got or "::1" in got


def test_the_answers_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(names, "MAX_NAMES", 4)
    p, _asked = pair()
    for n in range(6):
        p.a.resolved(f"gw{n}.test", (RIGHT,), p.now)
    assert [p.a.names.addresses(f"gw{n}.test") for n in range(6)] == [(), (), (RIGHT,), (RIGHT,), (RIGHT,), (RIGHT,)]


async def test_the_runtime_asks_the_policys_names_again_every_ttl(monkeypatch):
    """A responder whose peer is named (DynDNS) matches on a fresh answer, not the first one."""
    monkeypatch.setattr(names, "NAME_TTL", 0.05)
    lookups: list[str] = []

    async def lookup(loop, name):
        lookups.append(name)
        return (addr(1),)

    b = mirror(connection(local=addr(1), remote=addr(2), local_port=25532, remote_port=25532),
               remote_addrs=("client.test",))
    rb = EngineRuntime(policy(b, address=addr(2), ike_port=25532, natt_port=25533), datapath=NullDatapath(),
                       lookup=lookup)
    await rb.start()
    try:
        assert await _until(lambda: len(lookups) >= 3, 5)
        assert set(lookups) == {"client.test"} and rb.endpoint.names.addresses("client.test") == (addr(1),)
    finally:
        await rb.stop(delete=False)


class _PeerWatchingDatapath(NullDatapath):
    """A datapath with trap policies: told when a name's answer changes, and what it is then."""

    def __init__(self, runtime_of) -> None:
        super().__init__()
        self.runtime_of = runtime_of
        self.seen: list[str | None] = []

    def peer_addresses_changed(self) -> None:
        rt = self.runtime_of()
        self.seen.append(rt.peer_address(rt.policy.connections[0]))


async def test_the_datapath_follows_a_names_answer_when_it_changes(monkeypatch):
    """A trap names its peer: the datapath learns a new answer (the first one, a moved peer),
    not every repeat of the same one."""
    monkeypatch.setattr(names, "NAME_TTL", 0.05)
    answers = iter([(addr(3),), (addr(3),), (addr(4),)])

    async def lookup(loop, name):
        return next(answers, (addr(4),))

    a = dataclasses.replace(connection(local=addr(1), remote=addr(3), local_port=25534, remote_port=25534),
                            remote_addrs=(GW,))
    rt: EngineRuntime | None = None
    dp = _PeerWatchingDatapath(lambda: rt)
    rt = EngineRuntime(policy(a, address=addr(1), ike_port=25534, natt_port=25535), datapath=dp, lookup=lookup)
    assert rt.peer_address(a) is None  # not resolved yet
    await rt.start()
    try:
        assert await _until(lambda: len(dp.seen) >= 2, 5)
        await asyncio.sleep(0.2)  # more answers, all the same as the last
        assert dp.seen == [addr(3), addr(4)]
    finally:
        await rt.stop(delete=False)
