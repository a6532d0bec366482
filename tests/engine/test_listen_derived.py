"""revlisten17: the sockets derived without [engine] listen, reviewed against what the daemon bound
before this session (engine.runtime.engine before addr17: literal local_addrs, else 0.0.0.0) and
charon's socket_default_socket.c (both families; no socket at all is a start error)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from engine.runtime import listening

from tests.engine.ike_pair import policy
from tests.engine.test_listen_families import _conn, _no_ipv6, _runtime


def test_a_road_warrior_responder_keeps_ipv4_when_another_connection_reaches_an_ipv6_peer():
    # local_addrs unset, remote_addrs %any: served on 0.0.0.0 before this session (and by charon);
    # a second connection to an IPv6 peer made the daemon derive "::" alone, and IPv4 road
    # warriors got no answer
    pol = policy(_conn("rw", (), ("%any",)), _conn("site6", (), ("2001:db8::2",)))
    needs = listening.derived(pol)
    assert needs.get("0.0.0.0") == ["rw"], needs
    assert needs.get("::") == ["site6"], needs


def test_a_peer_host_name_keeps_ipv4_too():
    pol = policy(_conn("gw", (), ("gw.example",)), _conn("site6", (), ("2001:db8::2",)))
    assert "0.0.0.0" in listening.derived(pol)


def test_no_wider_than_needed():
    # a literal IPv4 local address keeps the daemon on it alone (as before this session)
    pol = policy(_conn("a", ("192.0.2.1",), ("198.51.100.2",)), _conn("rw", (), ("%any",)))
    assert list(listening.derived(pol)) == ["192.0.2.1"]
    pol = policy(_conn("a", ("192.0.2.1",), ("198.51.100.2",)))
    assert list(listening.derived(pol)) == ["192.0.2.1"]


def test_no_family_at_all_is_a_start_error_not_the_ipv4_wildcard(monkeypatch):
    # only IPv6 local addresses on a host without IPv6: before this session a failed start (the
    # bind failed), charon "could not create any sockets"; listen17 fell back to 0.0.0.0, a
    # socket on every IPv4 address that no connection asked for
    rt = _runtime(_conn("v6", ("2001:db8::1",), ("2001:db8::2",)))

    async def go():
        _no_ipv6(monkeypatch)
        try:
            await rt.start()
            bound = [ep.addr for ep in rt.sockets.endpoints]
        finally:
            await rt.stop(delete=False)
        return bound

    with pytest.raises(OSError, match="no socket"):
        print(asyncio.run(go()))


def test_a_reload_needing_an_address_the_daemon_did_not_bind_says_so(caplog):
    # sockets are chosen at start: a reload adding a connection on an address (or family) not
    # bound went in silently; a responder-only connection then never heard its peer, and nothing
    # anywhere said why
    import logging

    rt = _runtime(_conn("v4", (), ("127.0.0.2",)))

    async def go():
        await rt.start()
        try:
            assert rt.endpoint.listening == ("0.0.0.0",)
            pol = policy(_conn("v4", (), ("127.0.0.2",)), _conn("new6", ("2001:db8::1",), ("2001:db8::2",)),
                         _conn("more4", ("127.0.0.5",), ("127.0.0.2",)))
            pol = dataclasses.replace(pol, engine=rt.policy.engine)
            with caplog.at_level(logging.WARNING, logger="engine"):
                rt.apply_policy(pol)
        finally:
            await rt.stop(delete=False)

    asyncio.run(go())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2001:db8::1" in w and "new6" in w and "restart" in w for w in warned), warned
    assert not any("more4" in w for w in warned), warned  # 0.0.0.0 covers 127.0.0.5


def test_a_road_warrior_beside_a_literal_ipv6_address_listens_as_before():
    # before this session: the literal alone; %any as the peer adds no family then
    pol = policy(_conn("a", ("2001:db8::1",), ("2001:db8::2",)), _conn("rw", (), ("%any",)))
    assert list(listening.derived(pol)) == ["2001:db8::1"]
