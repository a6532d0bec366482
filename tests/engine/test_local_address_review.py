"""Second review of the initiator's local address (addr17): a host name in local_addrs is waited
for as charon's resolve_me resolves it before it picks a source (ike_sa.c resolve_hosts); a
refusal after a wait is said once; traps take the address IKE will; the family lint."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from engine.events import IkeState

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, mirror, policy


def established(ep) -> list:
    return [sa for sa in ep.sas if sa.state == IkeState.ESTABLISHED]


def named_pair(local_addrs, *, remote=RIGHT, start=False) -> Pair:
    kids = (child(start_action="start"),) if start else (child(),)
    a = dataclasses.replace(connection(remote=remote, children=kids), local_addrs=tuple(local_addrs))
    b = mirror(connection(), local_addrs=(RIGHT,), remote_addrs=())
    pa = policy(a)
    pa = dataclasses.replace(pa, engine=dataclasses.replace(pa.engine, listen=()))
    p = Pair(pa, policy(b, address=RIGHT))
    p.a.source_address = lambda peer: LEFT
    return p


def test_start_action_start_with_a_local_host_name_starts_once_the_name_resolves():
    # The runtime answers names later: at start nothing knows me.test is 192.0.2.1 yet. charon
    # resolves local_addrs' names before it picks its source; the connection must not be
    # refused for good at start (start_action = start is tried once).
    p = named_pair(("me.test",), start=True)
    asked: list[str] = []
    p.a.names.resolve = asked.append
    p.a.start(p.now)
    assert "me.test" in asked and not p.a.sas
    p.a.resolved("me.test", (LEFT,), p.now)
    p.advance(1)
    assert established(p.a) and established(p.b) and p.a.sas[0].local[0] == LEFT


def test_an_initiation_waits_for_a_local_host_name_and_terminate_cancels_it():
    p = named_pair(("me.test",))
    p.a.names.resolve = lambda name: None
    assert p.a.initiate("tun", p.now) is None
    assert p.a.resolving("tun") == "me.test"
    p.a.terminate("tun", p.now)
    p.a.resolved("me.test", (LEFT,), p.now)
    assert not p.a.sas


def test_a_local_host_name_that_does_not_resolve_is_said_once_and_not_asked_forever(caplog):
    p = named_pair(("me.test",))
    asked: list[str] = []
    p.a.names.resolve = asked.append
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert p.a.initiate("tun", p.now) is None
        p.a.resolved("me.test", (), p.now)  # the resolver failed
    assert asked == ["me.test"]  # no second query: the initiation ends
    assert not p.a.sas and not p.a.datagrams_to_send()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "me.test" in warnings[0] and "did not resolve" in warnings[0]


def test_a_local_literal_of_the_peers_family_needs_no_name_resolved():
    p = named_pair(("me.test", LEFT))
    p.a.names.resolve = lambda name: None
    assert p.a.initiate("tun", p.now).local[0] == LEFT


def test_a_refusal_after_waiting_for_the_peers_name_is_logged_once(caplog):
    p = named_pair(("198.51.100.0/24",), remote="peer.test")
    p.a.names.resolve = lambda name: None
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert p.a.initiate("tun", p.now) is None
        p.a.resolved("peer.test", (RIGHT,), p.now)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "does not hold" in warnings[0], warnings


# ---------------------------------------------------------------- traps take the address IKE will (2a)
def _trap_text(local_addrs, listen) -> str:
    from tests.engine.test_trap_notes import BASE
    from tests.engine.test_userspace_trap import _transport

    text = _transport(BASE).replace('local_addrs = ["127.0.0.1"]\n', "").replace('listen = ["127.0.0.1"]\n', "")
    text = text.replace("[connections.rw]\n", f"[connections.rw]\nlocal_addrs = {list(local_addrs)!r}\n"
                        if local_addrs else "[connections.rw]\n")
    text = text.replace("[engine]\n", f"[engine]\nlisten = {list(listen)!r}\n" if listen else "[engine]\n")
    return text.replace("'", '"')


def _routed_runtime(answer):
    from tests.engine.test_userspace_trap import FakeRuntime

    class Sockets:
        def source_for(self, remote):
            return answer

    class Routed(FakeRuntime):
        def __init__(self, policy) -> None:
            super().__init__(policy)
            self.sockets = Sockets()
            self.endpoint.source_address = self.sockets.source_for

    return Routed


CASES = [  # local_addrs, listen, the route's source towards 127.0.0.2
    (("127.0.5.0/24",), ("127.0.0.1",), "127.0.0.1"),  # listen outside local_addrs: IKE refuses
    (("127.0.5.0/24",), (), "127.0.0.1"),  # the route's source outside local_addrs: IKE refuses
    (("127.0.0.0/24",), (), "127.0.0.1"),  # the route's source inside: both take it
    (("127.0.0.0/24",), ("127.0.0.3", "127.0.0.1"), "127.0.0.1"),  # the first listen address inside
    (("127.0.5.0/24",), ("127.0.0.1", "127.0.5.1"), "127.0.0.1"),  # the one listen address inside
    (("%any",), ("0.0.0.0",), "127.0.0.1"),
    ((), (), "127.0.0.1"),
]


@pytest.mark.parametrize("local_addrs, listen, source", CASES)
def test_a_kernel_trap_goes_in_from_the_address_ike_initiates_from_or_not_at_all(local_addrs, listen, source, caplog):
    from engine.ike.errors import LocalError
    from tests.engine.test_trap_notes import kernel, said

    caplog.set_level(logging.INFO, logger="engine")
    dp = kernel(_trap_text(local_addrs, listen), _routed_runtime(source))
    ep = dp.runtime.endpoint
    conn = ep.policy.connection("rw")
    try:
        ike = ep.local_address(conn, "127.0.0.2")
    except LocalError as exc:
        ike = None
        why = str(exc)
    traps = list(dp.kernel.traps.values())
    if ike is None:
        assert traps == []
        assert len(said(caplog)) == 1 and why in said(caplog)[0] and "rw/lan" in said(caplog)[0]
        dp.apply_policy(dp.policy)
        assert len(said(caplog)) == 1  # said once, not at each apply
    else:
        assert traps == [("lan", ike, "127.0.0.2")]


@pytest.mark.parametrize("local_addrs, listen, source", CASES)
def test_a_userspace_trap_never_names_a_local_address_ike_would_not_use(local_addrs, listen, source):
    from engine.ike.errors import LocalError
    from tests.engine.test_trap_notes import userspace

    dp = userspace(_trap_text(local_addrs, listen), _routed_runtime(source))
    ep = dp.runtime.endpoint
    try:
        ike = ep.local_address(ep.policy.connection("rw"), "127.0.0.2")
    except LocalError:
        ike = None
    (lan,) = dp.path.policy.connection("rw").children
    (ts,) = lan.local_ts
    if not ts.dynamic and ts.start == ts.end:
        assert str(ts.start) == ike  # a concrete end is IKE's own


# ---------------------------------------------------------------- lint: families that never meet (2c)
def _lint_text(local_addrs, remote_addrs) -> str:
    from tests.engine.test_policy_lint import conn

    text = conn().replace('local_addrs = ["192.0.2.1"]', f"local_addrs = {list(local_addrs)!r}")
    return text.replace('remote_addrs = ["192.0.2.2"]', f"remote_addrs = {list(remote_addrs)!r}").replace("'", '"')


def _family_findings(local_addrs, remote_addrs) -> list:
    from engine.policy import lint, parse_policy

    return [f for f in lint(parse_policy(_lint_text(local_addrs, remote_addrs))) if f.rule == "address-family"]


@pytest.mark.parametrize("local_addrs, remote_addrs", [
    (("192.0.2.1",), ("2001:db8::2",)),
    (("192.0.2.0/24", "%any4"), ("2001:db8::/64", "2001:db8::2")),
    (("2001:db8::1", "2001:db8::5-2001:db8::9"), ("192.0.2.2", "198.51.100.0/24")),
    (("0.0.0.0",), ("::1",)),
])
def test_local_and_remote_addrs_of_two_families_are_flagged_naming_the_connection(local_addrs, remote_addrs):
    (f,) = _family_findings(local_addrs, remote_addrs)
    assert f.severity == "warning" and f.key_path == "connections.c.local_addrs"
    assert "'c'" in f.message and "IPv4" in f.message and "IPv6" in f.message and "never" in f.message


@pytest.mark.parametrize("local_addrs, remote_addrs", [
    (("192.0.2.1",), ("192.0.2.2",)),
    (("192.0.2.1", "2001:db8::1"), ("2001:db8::2",)),
    (("192.0.2.1",), ("2001:db8::2", "192.0.2.2")),
    (("%any",), ("2001:db8::2",)),
    (("me.example",), ("2001:db8::2",)),  # a name may resolve to either
    (("192.0.2.1",), ("gw.example",)),
    (("192.0.2.1",), ("%any",)),
    ((), ("2001:db8::2",)),
    (("192.0.2.1",), ()),
])
def test_addrs_that_share_a_family_or_may_are_not_flagged(local_addrs, remote_addrs):
    assert _family_findings(local_addrs, remote_addrs) == []


# ---------------------------------------------------------------- [engine] listen without the peer's family
@pytest.mark.parametrize("listen", [("0.0.0.0",), (LEFT,)])
def test_listen_without_the_peers_family_is_a_clear_error_not_a_send_with_no_socket(listen):
    from engine.ike.errors import LocalError
    from tests.engine.test_local_address import LEFT6, RIGHT6, pair

    p = pair((), remote=RIGHT6, listen=listen, source=LEFT6)
    with pytest.raises(LocalError, match=r"'tun'.*\[engine\] listen.*no IPv6 address"):
        p.a.initiate("tun", p.now)
    assert not p.a.sas
    p = pair(("%any",), remote=RIGHT6, listen=listen + ("::",), source=LEFT6)
    assert p.a.initiate("tun", p.now).local[0] == LEFT6


# ---------------------------------------------------------------- the runtime's sockets without [engine] listen
def _listened(*conns) -> list[str]:
    from engine.datapath.base import NullDatapath
    from engine.runtime.engine import EngineRuntime

    pol = policy(*conns)
    pol = dataclasses.replace(pol, engine=dataclasses.replace(pol.engine, listen=()))
    return EngineRuntime(pol, datapath=NullDatapath())._addresses_from_connections()


def _conn(name, local_addrs, remote_addrs):
    return dataclasses.replace(connection(name), local_addrs=tuple(local_addrs), remote_addrs=tuple(remote_addrs))


def test_an_ipv6_peer_with_local_addrs_unset_gets_an_ipv6_socket():
    # charon listens on both wildcards; ours bound 0.0.0.0 only, and the SA's IKE_SA_INIT from
    # the route's IPv6 source found no socket ("no socket for ..." at each retransmit)
    assert _listened(_conn("v6", (), ("2001:db8::2",))) == ["::"]
    assert _listened(_conn("v6", ("%any",), ("2001:db8::/64",))) == ["::"]
    assert _listened(_conn("v6", (), ("2001:db8::2",)), _conn("v4", (), (RIGHT,))) == ["::", "0.0.0.0"]


def test_no_wildcard_where_an_address_of_that_family_is_configured():
    # a family some local_addrs already names keeps its specific sockets (no wider listening)
    assert _listened(_conn("a", (LEFT,), (RIGHT,)), _conn("b", (), ("198.51.100.2",))) == [LEFT]
    assert _listened(_conn("a", ("2001:db8::1",), ("2001:db8::2",)), _conn("b", (), ("2001:db8::9",))) == \
        ["2001:db8::1"]
    assert _listened(_conn("rw", ("%any",), ("%any",))) == ["0.0.0.0"]  # (revlisten17: was the default)
    assert _listened(_conn("n", (), ("gw.example",))) == ["0.0.0.0"]


# ---------------------------------------------------------------- a refusal repeated by ACQUIREs
def test_the_same_refusal_for_each_acquire_is_said_once_a_minute(caplog):
    # the userspace datapath asks again every ACQUIRE_HOLD (2 s) while traffic hits the trap
    from tests.engine.test_local_address import pair

    p = pair(("198.51.100.0/24",), listen=(), source=LEFT)
    with caplog.at_level(logging.DEBUG, logger="engine"):
        for i in range(10):
            p.a.initiate_logged("tun", p.now + 2 * i)
        p.a.initiate_logged("tun", p.now + 61)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("does not hold" in w for w in warnings)
    assert sum("does not hold" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG) == 9


def test_a_connection_removed_while_its_local_name_resolves_is_not_warned_about(caplog):
    p = named_pair(("me.test",))
    p.a.names.resolve = lambda name: None
    assert p.a.initiate("tun", p.now) is None
    p.a.apply_policy(dataclasses.replace(p.a.policy, connections=()), p.now)
    with caplog.at_level(logging.WARNING, logger="engine"):
        p.a.resolved("me.test", (LEFT,), p.now)
    assert not p.a.sas and not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_kernel_trap_waits_for_a_local_host_name_then_goes_in_from_what_it_holds(caplog):
    # At start the datapath applies the policy before any name is answered: that is a wait, said
    # at info as for a peer's name, not a warning that the name "did not resolve".
    from tests.engine.test_trap_notes import kernel, said

    caplog.set_level(logging.INFO, logger="engine")
    dp = kernel(_trap_text(("me.test",), ()), _routed_runtime("127.0.0.1"))
    assert dp.kernel.traps == {} or not list(dp.kernel.traps.values())
    assert said(caplog) == ["trap rw/lan: waiting for me.test to resolve"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    rt = dp.runtime
    rt.endpoint.resolved("me.test", ("127.0.0.1",), rt.t)
    dp.peer_addresses_changed()
    assert list(dp.kernel.traps.values()) == [("lan", "127.0.0.1", "127.0.0.2")]


# ---------------------------------------------------------------- without [engine] listen: the sockets the daemon has
def test_without_listen_the_initiator_takes_a_socket_the_daemon_has_not_the_route_source():
    # listen unset, another connection's local_addrs = ["192.0.2.1"]: the daemon binds 192.0.2.1
    # only. A connection with local_addrs unset sent from the route's source (198.51.100.5), on
    # no socket: "no socket for ..." at each retransmit, never up.
    from engine.ike.errors import LocalError
    from tests.engine.test_local_address import LEFT6, RIGHT6, pair

    p = pair((), listen=(), source="198.51.100.5")
    p.a.listening = (LEFT,)  # (EngineRuntime.start: what it bound)
    assert p.a.initiate("tun", p.now).local[0] == LEFT
    p = pair((), remote=RIGHT6, listen=(), source=LEFT6)
    p.a.listening = ("0.0.0.0",)
    with pytest.raises(LocalError, match=r"'tun'.*listens on no IPv6 address.*\[engine\] listen"):
        p.a.initiate("tun", p.now)


def test_the_runtime_tells_the_engine_what_it_listens_on(monkeypatch):
    import asyncio

    from engine.datapath.base import NullDatapath
    from engine.runtime.engine import EngineRuntime

    pol = policy(_conn("a", ("127.0.0.1",), ("127.0.0.2",)), _conn("b", (), ("127.0.0.3",)))
    pol = dataclasses.replace(pol, engine=dataclasses.replace(pol.engine, listen=(), ike_port=0, natt_port=0))
    rt = EngineRuntime(pol, datapath=NullDatapath())
    opened: list = []
    monkeypatch.setattr(rt.sockets, "open", lambda addresses, ports: opened.append(addresses))

    async def go():
        await rt.start()
        await rt.stop(delete=False)

    asyncio.run(go())
    assert opened == [["127.0.0.1"]] and rt.endpoint.listening == ("127.0.0.1",)


def test_a_kernel_trap_without_listen_goes_in_from_a_socket_the_daemon_has():
    from tests.engine.test_trap_notes import kernel

    class Bound(_routed_runtime("127.0.0.9")):
        def __init__(self, policy) -> None:
            super().__init__(policy)
            self.endpoint.listening = ("127.0.0.1",)

    dp = kernel(_trap_text((), ()), Bound)
    ep = dp.runtime.endpoint
    assert ep.local_address(ep.policy.connection("rw"), "127.0.0.2") == "127.0.0.1"
    assert list(dp.kernel.traps.values()) == [("lan", "127.0.0.1", "127.0.0.2")]
