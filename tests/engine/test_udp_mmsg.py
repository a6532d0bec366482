"""The NAT-T socket of a datapath that takes ESP-in-UDP itself reads with recvmmsg
(engine.runtime.udp): many datagrams per system call, each still handled on its own and in order;
ESP goes to the datapath in runs from one peer, IKE (the zero non-ESP marker) one by one between
them; UDP GRO batches are still split. On this process's own loopback addresses (tests/loopback.py)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from engine.datapath import mmsg
from engine.datapath.userspace_io import UdpSender
from engine.runtime.udp import UDP_SLOTS, UdpSockets
from tests.loopback import addr

pytestmark = pytest.mark.skipif(not mmsg.recv_available, reason="libc without recvmmsg")
NATT = 4500


class _Io:
    dirty: list = []

    def send_failed(self, exc, dest, n):
        raise AssertionError(f"send failed: {exc}")

    def learn_pmtu(self, sender):
        return False


def _esp(i: int, size: int = 200) -> bytes:
    return (0x1000 + i).to_bytes(4, "big") + i.to_bytes(4, "big") + os.urandom(size - 8)


def _ike(i: int) -> bytes:
    return bytes(4) + i.to_bytes(4, "big") + bytes(40)


def _natt(log: list) -> UdpSockets:
    udp = UdpSockets(lambda data, local, remote: log.append(("ike", data, local, remote)))
    udp.esp_sink = lambda datagrams, local, remote: log.append(("esp", list(datagrams), local, remote))
    udp.natt_port = NATT
    return udp


async def _until(cond, what: str) -> None:
    for _ in range(300):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_esp_comes_in_runs_per_peer_and_ike_in_its_place():
    log: list = []
    udp = _natt(log)
    here = addr(11)
    udp.open([here], [NATT])
    [ep] = udp.endpoints
    assert ep.batch is not None
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((addr(12), 0))
    b.bind((addr(13), 0))
    pa, pb = a.getsockname(), b.getsockname()
    # a: ESP x3, b: ESP x2, a: IKE, a: ESP x2, then 100 more ESP from a.
    plan = [(a, _esp(i)) for i in range(3)] + [(b, _esp(10 + i)) for i in range(2)] + [(a, _ike(1))] \
        + [(a, _esp(20 + i)) for i in range(102)]
    asyncio.get_running_loop().remove_reader(ep.sock.fileno())  # read below, once everything is queued
    try:
        for s, d in plan:
            s.sendto(d, (here, NATT))
        udp._readable_batch(ep)
        while ep.batch.calls < 10 and sum(len(e[1]) if e[0] == "esp" else 1 for e in log) < len(plan):
            udp._readable_batch(ep)
    finally:
        udp.close()
        a.close()
        b.close()
    where = (here, NATT)
    assert [(k, d if k == "ike" else len(d), w, p) for k, d, w, p in log[:4]] == [
        ("esp", 3, where, pa), ("esp", 2, where, pb), ("ike", _ike(1), where, pa), ("esp", UDP_SLOTS - 6, where, pa)]
    assert [d for e in log if e[0] == "esp" for d in e[1]] == [d for _s, d in plan if d[:4] != bytes(4)]
    assert ep.batch.calls <= -(-len(plan) // UDP_SLOTS) + 1  # not one system call per datagram


async def test_a_gro_batch_is_still_split_into_its_datagrams():
    log: list = []
    udp = _natt(log)
    here = addr(14)
    udp.open([here], [NATT])
    [ep] = udp.endpoints
    sent = [_esp(i, 1400) for i in range(20)] + [_esp(99, 700)]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.bind((addr(15), 0))
            sender = UdpSender(_Io(), tx, (here, NATT))
            for p in sent:
                sender.add(p)
            sender.flush()
            await _until(lambda: sum(len(e[1]) for e in log) >= len(sent), "the ESP datagrams")
    finally:
        udp.close()
    assert [d for e in log for d in e[1]] == sent
    assert ep.batch.calls < len(sent)


def test_only_the_natt_socket_of_an_esp_sink_reads_in_batches():
    udp = UdpSockets(lambda data, local, remote: None)
    udp.natt_port = NATT
    udp.esp_sink = None
    loop = asyncio.new_event_loop()
    try:
        async def opened():
            udp.open([addr(16)], [NATT])
            return [ep.batch for ep in udp.endpoints]
        assert loop.run_until_complete(opened()) == [None]
        udp.close()
    finally:
        loop.close()


async def test_a_handler_that_raises_is_counted_and_the_rest_still_handled():
    seen: list = []

    def on_ike(data, local, remote):
        if data == _ike(2):
            raise RuntimeError("an engine bug")
        seen.append(data)

    udp = UdpSockets(on_ike)
    udp.esp_sink = lambda datagrams, local, remote: seen.extend(datagrams)
    udp.natt_port = NATT
    here = addr(17)
    udp.open([here], [NATT])
    [ep] = udp.endpoints
    asyncio.get_running_loop().remove_reader(ep.sock.fileno())
    plan = [_esp(1), _ike(1), _esp(2), _ike(2), _esp(3), _ike(3)]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for d in plan:
                tx.sendto(d, (here, NATT))
        udp._readable_batch(ep)
    finally:
        udp.close()
    assert seen == [d for d in plan if d != _ike(2)]
    assert udp.handler_errors == 1


async def test_a_batch_of_ike_yields_to_the_loop_once_its_time_is_up(monkeypatch):
    """32 IKE messages read in one recvmmsg are each a handshake step: handled in one callback they
    held every timer back by tens of milliseconds under load. Past READ_BATCH_SECONDS the rest
    waits for the next turns of the loop (the socket unread meanwhile), still in order, ESP too."""
    from engine.runtime import udp as udp_mod

    now = [0.0]
    monkeypatch.setattr(udp_mod, "_clock", lambda: now[0], raising=False)
    log: list = []
    udp = _natt(log)

    def slow_ike(data, local, remote):  # each IKE message "takes" 1 ms
        log.append(("ike", data, local, remote))
        now[0] += 0.001

    udp.on_datagram = slow_ike
    here = addr(14)
    udp.open([here], [NATT])
    [ep] = udp.endpoints
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((addr(15), 0))
    plan = [_ike(i) for i in range(10)] + [_esp(100 + i) for i in range(3)] + [_ike(10 + i) for i in range(10)]
    loop = asyncio.get_running_loop()
    loop.remove_reader(ep.sock.fileno())
    turns: list[int] = []
    try:
        for d in plan:
            a.sendto(d, (here, NATT))
        udp._readable_batch(ep)
        first = len(log)
        assert first <= round(udp_mod.READ_BATCH_SECONDS / 0.001) + 1  # 4 ms of the 10 ms it read
        ticker = loop.call_soon(lambda: turns.append(len(log)))  # a timer due now: it runs between
        await _until(lambda: sum(len(e[1]) if e[0] == "esp" else 1 for e in log) == len(plan), "the rest")
        ticker.cancel()
        assert turns and turns[0] < len(log)  # the loop ran other work before the batch was done
        got = [d for e in log for d in (e[1] if e[0] == "esp" else [e[1]])]
        assert got == plan  # in order
        # The socket is read again once the rest is done.
        a.sendto(_ike(99), (here, NATT))
        await _until(lambda: log[-1][1] == _ike(99), "a datagram after the backlog")
    finally:
        udp.close()
        a.close()
