"""addr17 follow-ups (listen17): a host without (usable) IPv6 and the sockets the daemon derives
without [engine] listen (charon socket_default_socket.c: "could not open socket" for that family,
then on with the other)."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import socket

import pytest

from engine.ike.errors import LocalError

from tests.engine.ike_pair import connection, policy

_real_socket = socket.socket


def _no_ipv6(monkeypatch) -> None:
    """socket(AF_INET6) fails as on a kernel booted with ipv6.disable=1."""

    def factory(family=socket.AF_INET, *args, **kwargs):
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return _real_socket(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", factory)


def _runtime(*conns, listen=()):
    from engine.datapath.base import NullDatapath
    from engine.runtime.engine import EngineRuntime

    pol = policy(*conns)
    pol = dataclasses.replace(pol, engine=dataclasses.replace(pol.engine, listen=tuple(listen), ike_port=0,
                                                              natt_port=0))
    return EngineRuntime(pol, datapath=NullDatapath())


def _conn(name, local_addrs, remote_addrs):
    return dataclasses.replace(connection(name), local_addrs=tuple(local_addrs), remote_addrs=tuple(remote_addrs))


def test_a_derived_ipv6_socket_on_a_host_without_ipv6_is_a_warning_not_a_failed_start(monkeypatch, caplog):
    # (with an IPv4 connection: no family at all is a start error, revlisten17)
    rt = _runtime(_conn("v6", (), ("2001:db8::2",)), _conn("v6b", ("%any",), ("2001:db8::3",)),
                  _conn("v4", (), ("127.0.0.2",)))

    async def go():
        loop = asyncio.get_running_loop()  # (its own sockets made before IPv6 goes)
        assert loop is not None
        _no_ipv6(monkeypatch)
        await rt.start()
        try:
            assert rt.endpoint.listening == ("0.0.0.0",)
            with pytest.raises(LocalError, match=r"'v6'.*no IPv6 socket.*:: could not be opened.*not supported"):
                rt.initiate("v6")
        finally:
            await rt.stop(delete=False)

    with caplog.at_level(logging.WARNING, logger="engine"):
        asyncio.run(go())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no IPv6 socket" in w and "v6, v6b" in w for w in warned), warned


def test_the_other_family_goes_on(monkeypatch):
    rt = _runtime(_conn("v6", (), ("2001:db8::2",)), _conn("v4", (), ("127.0.0.2",)))

    async def go():
        _no_ipv6(monkeypatch)
        await rt.start()
        try:
            assert rt.endpoint.listening == ("0.0.0.0",)
            assert [ep.addr for ep in rt.sockets.endpoints] == ["0.0.0.0"]
        finally:
            await rt.stop(delete=False)

    asyncio.run(go())


def test_ipv6_named_in_listen_stays_a_start_error_that_names_the_address(monkeypatch):
    rt = _runtime(_conn("v6", (), ("2001:db8::2",)), listen=("::",))

    async def go():
        _no_ipv6(monkeypatch)
        try:
            await rt.start()
        finally:
            await rt.stop(delete=False)

    with pytest.raises(OSError, match="cannot listen on :: port"):
        asyncio.run(go())


def test_a_literal_ipv6_local_address_without_an_ipv6_socket_is_refused_not_sent_from(monkeypatch, caplog):
    # local_addrs names 2001:db8::1: configured() took it as is, and the SA sent from an address
    # with no socket ("no socket for ..." at each retransmit)
    rt = _runtime(_conn("v6", ("2001:db8::1",), ("2001:db8::2",)), _conn("v4", (), ("127.0.0.2",)))

    async def go():
        _no_ipv6(monkeypatch)
        await rt.start()
        try:
            assert rt.endpoint.listening == ("0.0.0.0",)
            with pytest.raises(LocalError, match=r"'v6'.*no IPv6 socket.*:: could not be opened"):
                rt.initiate("v6")
            assert not rt.endpoint.sas
        finally:
            await rt.stop(delete=False)

    with caplog.at_level(logging.WARNING, logger="engine"):
        asyncio.run(go())
    assert any("no IPv6 socket" in r.getMessage() and "connections v6 " in r.getMessage() for r in caplog.records)
