"""The control socket's limits (issue 15 item 5): connection cap, bounded and
sane requests, every error a JSON reply, no traceback when a client leaves,
long listings and apply-policy that leave the event loop running, a slow
subscriber disconnected with a last line saying why, the open-files limit."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.datapath.base import NullDatapath
from engine.events import LogMessage
from engine.policy import parse
from engine.runtime import control
from engine.runtime.client import ControlClient, ControlError
from engine.runtime.control import ControlServer
from engine.runtime.control_wire import MAX_REQUEST
from engine.runtime.engine import EngineRuntime
from engine.status import IkeSaInfo, StatusSnapshot
from tests.engine.ike_pair import connection, policy
from tests.loopback import addr

ROOT = Path(__file__).resolve().parents[2]


def _runtime() -> EngineRuntime:
    conn = connection(local=addr(1), remote="127.0.0.9", local_port=25800)
    return EngineRuntime(policy(conn, address=addr(1), ike_port=25800, natt_port=25801),
                         datapath=NullDatapath(), policy_text="# text\n")


@pytest.fixture
async def server(tmp_path):
    rt = _runtime()
    await rt.start()
    srv = ControlServer(rt, str(tmp_path / "control.sock"))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
        await rt.stop(delete=False)


async def _open(srv):
    return await asyncio.open_unix_connection(str(srv.path), limit=64 << 20)


async def _ask(reader, writer, raw: bytes) -> dict:
    writer.write(raw)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    # Strict JSON: NaN or Infinity would not parse here.
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c} in {line!r}"))


async def test_extra_connections_get_a_json_line_and_are_closed(server):
    server.max_clients = 3
    conns = [await _open(server) for _ in range(3)]
    for r, w in conns:
        assert (await _ask(r, w, b'{"id": 1, "cmd": "version"}\n'))["ok"]
    r4, w4 = await _open(server)
    msg = json.loads(await asyncio.wait_for(r4.readline(), 5))
    assert msg["ok"] is False and msg["id"] is None and "too many control connections" in msg["disconnected"]
    assert await asyncio.wait_for(r4.read(), 5) == b""  # closed
    client = ControlClient(str(server.path))
    with pytest.raises(ControlError, match="too many control connections"):
        await client.call("version")
    await client.close()
    conns[0][1].close()
    await asyncio.sleep(0.1)
    r5, w5 = await _open(server)
    assert (await _ask(r5, w5, b'{"id": 5, "cmd": "version"}\n'))["id"] == 5
    for _, w in conns[1:] + [(r5, w5), (r4, w4)]:
        w.close()


async def test_bad_requests_get_json_errors_and_the_connection_lives(server):
    r, w = await _open(server)
    cases = [
        (b"[" * 100_000 + b"\n", "nested too deeply"),
        (b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b', "cmd": "version"}\n', "nested too deeply"),
        # The bound is ours (MAX_DEPTH), not the interpreter's recursion limit (3.13's json parses 5000 levels).
        (b'{"id": 7, "cmd": "version", "x": ' + b"[" * 32 + b"]" * 32 + b"}\n", "nested too deeply"),
        (b'{"id": NaN, "cmd": "version"}\n', "NaN is not a JSON number"),
        (b'{"id": Infinity, "cmd": "version"}\n', "Infinity is not a JSON number"),
        (b'{"id": 1e400, "cmd": "version"}\n', "too large"),
        (b'{"id": {"a": 1}, "cmd": "version"}\n', "'id' must be a number or a string"),
        (b'{"id": "' + b"i" * 300 + b'", "cmd": "version"}\n', "'id' must be"),
        (b"\xff\xfe\n", "not JSON"),
        (b'{"id": 1, "cmd": 7}\n', "string 'cmd'"),
    ]
    for raw, why in cases:
        msg = await _ask(r, w, raw)
        assert msg["ok"] is False and msg["id"] is None and why in msg["error"], (raw[:40], msg)
    for raw, why in [(b'{"id": 2, "cmd": "terminate", "name": "tun", "unique_id": "x"}\n', "'unique_id' must be"),
                     (b'{"id": 3, "cmd": "initiate", "name": "tun", "child": ["x"]}\n', "'child' must be"),
                     (b'{"id": 4, "cmd": "rekey", "name": 5}\n', "needs 'name'"),
                     (b'{"id": 5, "cmd": "' + b"z" * 10_000 + b'"}\n', "unknown command"),
                     (b'{"id": 6, "cmd": "apply-policy", "text": 5}\n', "needs 'text'")]:
        msg = await _ask(r, w, raw)
        assert msg["ok"] is False and why in msg["error"] and len(msg["error"]) < 300, msg
    assert (await _ask(r, w, b'{"id": 8, "cmd": "version", "x": ' + b"[" * 31 + b"]" * 31 + b"}\n"))["ok"]
    assert (await _ask(r, w, b'{"id": 9, "cmd": "version"}\n'))["ok"]
    w.close()


async def test_a_request_line_over_the_limit_is_answered_then_closed(server):
    r, w = await _open(server)
    try:
        w.write(b'{"cmd": "' + b"x" * (MAX_REQUEST + 10) + b'"}\n')
        await w.drain()
    except ConnectionError:
        pass  # the server may close before it has all of it
    msg = json.loads(await asyncio.wait_for(r.readline(), 5))
    assert "longer than" in msg["disconnected"]
    w.close()


async def test_a_client_that_leaves_before_reading_makes_no_traceback(server, caplog):
    caplog.set_level(logging.DEBUG, logger="engine")
    caplog.set_level(logging.DEBUG, logger="asyncio")
    for cmd in (b"status", b"list-sas", b"version", b"counters", b"list-conns"):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(server.path))
            s.sendall(b'{"id": 1, "cmd": "%s"}\n' % cmd * 50)
    await asyncio.sleep(0.5)
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]  # no traceback, nor asyncio's lost-write warnings


class _SlowRuntime:
    """Many SAs, each slow to describe: a listing built in one go would hold the loop.
    ``seen`` records, at each SA described, how often a ticker task had run by then."""

    def __init__(self, n: int, cost: float = 0.0005) -> None:
        self.cost = cost
        self.endpoint = SimpleNamespace(sas=list(range(n)), stats={})
        self.policy = SimpleNamespace(connections=[], path=None)
        self.datapath = SimpleNamespace(counters=lambda: ([], {}))
        self.turns = 0
        self.seen: list[int] = []

    def now(self) -> float:
        return 0.0

    def sa_status(self, sa, now):
        self.seen.append(self.turns)
        end = time.perf_counter() + self.cost
        while time.perf_counter() < end:
            pass
        return IkeSaInfo(name="c", unique_id=sa, state="ESTABLISHED", initiator=False, spi_i=sa, spi_r=1,
                         local_addr="127.0.0.1", local_port=500, remote_addr="127.0.0.9", remote_port=500)

    def status(self) -> StatusSnapshot:  # the way listings were built before
        return StatusSnapshot(time.time(), tuple(self.sa_status(sa, 0.0) for sa in self.endpoint.sas), ())

    def connection_states(self) -> dict:
        return {}

    def connections(self) -> list:
        return []

    def pools(self) -> tuple:
        return ()


def _longest_run(values: list[int]) -> int:
    """The most SAs described one after the other with no other task run in between."""
    best = run = 0
    for i, v in enumerate(values):
        run = run + 1 if i and v == values[i - 1] else 1
        best = max(best, run)
    return best


async def test_long_listings_let_the_event_loop_run(tmp_path):
    rt = _SlowRuntime(400)  # 400 x 0.5 ms: 200 ms of work
    srv = ControlServer(rt, str(tmp_path / "c.sock"))
    await srv.start()
    client = ControlClient(str(srv.path))
    done = False

    async def ticker():
        while not done:
            rt.turns += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    try:
        for cmd in ("list-sas", "status"):
            rt.seen.clear()
            result = await client.call(cmd)
            assert len(result["ike_sas"]) == 400
            longest = _longest_run(rt.seen)
            assert longest <= 50, f"{cmd}: {longest} SAs described without the loop running anything else"
    finally:
        done = True
        await t
        await client.close()
        await srv.stop()


async def test_apply_policy_is_parsed_off_the_event_loop(server, monkeypatch):
    threads = []
    real = parse.parse_policy

    def recording(*args, **kw):
        threads.append(threading.current_thread())
        return real(*args, **kw)

    monkeypatch.setattr(parse, "parse_policy", recording)
    big = "[unused]\n" + "".join(f"k{i} = {i}\n" for i in range(60_000))  # ~0.5 s of TOML parsing
    client = ControlClient(str(server.path))
    try:
        with pytest.raises(ControlError, match="does not validate") as exc:
            await client.call("apply-policy", text=big)
        assert any("unknown section 'unused'" in f for f in exc.value.findings)
        assert threads and threading.main_thread() not in threads  # not on the event loop's thread
    finally:
        await client.close()


async def _stalled_subscriber(server) -> socket.socket:
    """A subscriber that reads nothing (a paused `ipsec-console events`), with a small receive buffer."""
    rt = server.runtime
    s = socket.socket(socket.AF_UNIX)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(str(server.path))
    s.sendall(b'{"id": 1, "cmd": "subscribe"}\n')
    for _ in range(100):
        if rt._subscribers:
            break
        await asyncio.sleep(0.01)
    big = LogMessage(0.0, "INFO", "engine.test", "z" * 100_000)
    for _ in range(1000):  # up to 100 MB of events
        rt.publish(big)
        await asyncio.sleep(0)
        if not rt._subscribers:
            break
    assert not rt._subscribers, "the slow subscriber was never dropped"
    return s


def _read_to_end(s: socket.socket) -> bytes:
    s.settimeout(10)
    chunks = []
    while chunk := s.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_subscriber_that_does_not_read_is_disconnected_with_a_last_line(server, monkeypatch):
    monkeypatch.setattr(control, "FINAL_LINE_GRACE", 30.0)
    s = await _stalled_subscriber(server)
    lines = (await asyncio.get_running_loop().run_in_executor(None, _read_to_end, s)).splitlines()
    s.close()
    assert json.loads(lines[0]) == {"id": 1, "ok": True, "result": "subscribed"}
    assert all("event" in json.loads(line) for line in lines[1:-1])
    last = json.loads(lines[-1])  # then the end of the connection
    assert last["ok"] is False and "not read fast enough" in last["disconnected"]


async def test_a_subscriber_that_never_reads_is_cut_after_the_grace(server, monkeypatch):
    monkeypatch.setattr(control, "FINAL_LINE_GRACE", 0.3)
    s = await _stalled_subscriber(server)
    await asyncio.sleep(1.0)
    assert not server._clients  # the connection is gone, not waiting for a reader forever
    s.close()


async def test_the_client_reports_why_the_daemon_ended_the_subscription(server):
    client = ControlClient(str(server.path))
    events = client.events_raw()
    try:
        task = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.2)
        for q in list(server.runtime._subscribers):
            q.drop("a test says so")
        with pytest.raises(ControlError, match="ended the subscription: subscription ended: a test says so"):
            await asyncio.wait_for(task, 5)
    finally:
        await client.close()


def test_the_open_files_limit_is_raised_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert control.raise_open_files_limit() == (hard, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_daemon_flooded_with_connections_stays_quiet_and_answers(tmp_path):
    """1,000 connections held open against a daemon started with a soft limit of 64 files: before,
    asyncio's accept loop logged a traceback per attempt (6 million in 10 s)."""
    (tmp_path / "s.toml").write_text('[ike.x]\nsecret = "0123456789abcdef0123456789"\n')
    (tmp_path / "s.toml").chmod(0o600)
    (tmp_path / "p.toml").write_text(
        f'[engine]\ndatapath = "lab"\nlisten = ["{addr(1)}"]\nike_port = 25810\nnatt_port = 25811\n'
        f'secrets = "s.toml"\n[connections.tun]\nlocal_addrs = ["{addr(1)}"]\nremote_addrs = ["127.0.0.9"]\n'
        'local = { auth = "psk", id = "a.example" }\nremote = { auth = "psk", id = "b.example" }\n')
    sock = tmp_path / "c.sock"
    log = open(tmp_path / "daemon.log", "wb")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < 2048:
        pytest.skip(f"the hard limit of open files is {hard}: the test needs 2048 (ulimit -Hn)")
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "daemon", str(tmp_path / "p.toml"), "--control", str(sock),
         "--datapath", "none"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard)))
    held = []
    try:
        deadline = time.monotonic() + 60  # a start-up on a loaded machine took over 5 s
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), (tmp_path / "daemon.log").read_text(errors="replace")[-2000:]
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        for _ in range(1000):
            held.append(_connect(sock))
        time.sleep(2)
        answer = subprocess.run([sys.executable, "-m", "console", "conns", "--json", "--control", str(sock)],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        for s in held:
            s.close()
        held.clear()
        time.sleep(0.5)
        answer = subprocess.run([sys.executable, "-m", "console", "conns", "--json", "--control", str(sock)],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert answer.returncode == 0 and json.loads(answer.stdout)["connections"][0]["name"] == "tun"
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(10)
        log.close()
    text = (tmp_path / "daemon.log").read_text(errors="replace")
    assert f"{hard}" in [line.split()[3] for line in limits.splitlines() if line.startswith("Max open files")]
    assert text.count("Traceback") <= 2 and len(text) < 20_000, text[:2000]


def _connect(path: Path, patience: float = 10.0) -> socket.socket:
    """A connection to a daemon that may be slow to accept (its backlog full): retried, not waited on."""
    deadline = time.monotonic() + patience
    while True:
        s = socket.socket(socket.AF_UNIX)
        s.setblocking(False)
        try:
            s.connect(str(path))
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon stopped accepting connections on {path}") from None
            time.sleep(0.01)
