"""A datagram whose handling raised (engine.runtime.udp): the socket reader goes on, the datagram is
counted (UdpSockets.handler_errors, and the runtime's IKE counter ``datagram_errors`` that stats,
the control socket's counters and the metrics show), and the log is bounded: a peer that found an
input the engine chokes on gets a few tracebacks logged, not one per datagram."""

from __future__ import annotations

import asyncio
import logging
import socket

from engine.datapath.base import NullDatapath
from engine.ops import stats as ops_stats
from engine.ops.metrics import Metrics
from engine.runtime.engine import EngineRuntime
from engine.runtime.udp import DATAGRAM_ERRORS, ERROR_LOG_BURST, UdpSockets

from tests.engine.ike_pair import connection, policy
from tests.loopback import addr


async def _until(predicate, what: str) -> None:
    for _ in range(400):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_errors_are_counted_the_log_is_bounded_and_the_reader_goes_on(caplog):
    good = []

    def handle(data, local, remote):
        if data.startswith(b"bad"):
            raise ValueError("a bug this datagram found")
        good.append(data)

    counted = []
    udp = UdpSockets(handle)
    udp.count = counted.append
    udp.open([addr(1)], [0])
    port = udp.endpoints[0].port
    try:
        with caplog.at_level(logging.ERROR, logger="engine.runtime"), \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i in range(40):
                tx.sendto(b"bad %d" % i, (addr(1), port))
            await _until(lambda: udp.handler_errors == 40, "40 errors counted")
            tx.sendto(b"good", (addr(1), port))
            await _until(lambda: good, "the next datagram")
        assert good == [b"good"] and counted == [DATAGRAM_ERRORS] * 40
        logged = [r for r in caplog.records if "error handling a datagram" in r.getMessage()]
        assert len(logged) == int(ERROR_LOG_BURST)  # the burst, then at most one every 10 s
        assert all(r.exc_info and r.exc_info[0] is ValueError for r in logged)
        assert logged[0].getMessage().endswith("(0 more since the last one logged, 1 in all)")
    finally:
        udp.close()


async def test_the_runtime_shows_them_with_the_ike_counters_in_stats_and_metrics():
    conn = connection(local=addr(1), remote="127.0.0.9", local_port=25720)
    rt = EngineRuntime(policy(conn, address=addr(1), ike_port=25720, natt_port=25721), datapath=NullDatapath())
    await rt.start()
    try:
        def broken(*args):
            raise RuntimeError("an engine bug")

        rt.endpoint.receive_datagram = broken
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(3):
                tx.sendto(bytes(28), (addr(1), 25720))
            await _until(lambda: rt.sockets.handler_errors == 3, "3 errors")
        assert ops_stats.collect(rt)["ike"][DATAGRAM_ERRORS] == 3
        assert 'ipsec_console_ike_messages_total{event="datagram_errors"} 3' in Metrics().render(rt)
    finally:
        await rt.stop(delete=False)
