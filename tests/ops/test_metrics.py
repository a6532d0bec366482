"""Prometheus metrics: per connection and per CHILD SA, drops by reason, in the
text exposition format, from a textfile and from the loopback HTTP endpoint
(a lab runs the daemon's services in-process; no root)."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from engine.ops.metrics import Metrics, TrafficTotals
from engine.ops.sdnotify import Notifier
from engine.policy.parse import parse_policy
from engine.runtime.daemon import Services
from engine.runtime.lab import LabRuntime
from engine.status import ChildSaInfo, IkeSaInfo, StatusSnapshot
from tests.ops.labcopy import lab_copy

SAMPLE = re.compile(r'^[a-z_:][a-z0-9_:]*(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+-]+$')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _valid_exposition(text: str) -> dict[str, float]:
    """Every line is HELP, TYPE or a sample; returns sample -> value."""
    out = {}
    typed = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge") and (kind != "counter" or name.endswith("_total")), line
            typed.add(name)
            continue
        assert SAMPLE.match(line), line
        series, value = line.rsplit(" ", 1)
        assert series.split("{")[0] in typed, line
        out[series] = float(value)
    return out


def _lab(tmp_path: Path, port: int) -> Path:
    return lab_copy(tmp_path, engine=f'metrics_listen = "127.0.0.1:{port}"\nmetrics_textfile = "lab.prom"\n'
                    'metrics_interval = "1s"',
                    tail='\n[rules.drop-https]\naction = "discard"\nlocal_ts = ["198.51.100.0/26"]\n'
                         'remote_ts = ["198.51.100.65/32[tcp/443]"]\n')


def _get(url: str, method: str = "GET") -> tuple[int, str, str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", ""


def test_lab_metrics_over_http_and_in_the_textfile(tmp_path):
    port = _free_port()
    config = _lab(tmp_path, port)

    async def run():
        lab = LabRuntime(config, rate=60)
        await lab.start()
        services = Services(lab, Notifier({}))
        await services.start()
        try:
            await asyncio.sleep(5)
            first = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
            await asyncio.sleep(1.5)
            second = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
            other = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/")
            post = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics", "POST")
            return first, second, other, post
        finally:
            await services.stop()
            await lab.stop()

    (code, ctype, text), (_, _, later), other, post = asyncio.run(run())
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    m = _valid_exposition(text)
    assert m['ipsec_console_connection_up{connection="branch"}'] == 1
    assert m['ipsec_console_connection_up{connection="roadwarrior"}'] == 0
    assert m['ipsec_console_negotiation_failures_total{connection="roadwarrior",notify="NO_PROPOSAL_CHOSEN"}'] >= 1
    sa_bytes = {k: v for k, v in m.items() if k.startswith("ipsec_console_child_sa_bytes_total{connection=\"branch\"")}
    assert any('direction="out"' in k and v > 0 for k, v in sa_bytes.items()), sa_bytes
    assert any('direction="in"' in k and v > 0 for k, v in sa_bytes.items()), sa_bytes
    assert m['ipsec_console_drops_total{reason="discard_rule"}'] > 0
    conn = 'ipsec_console_connection_packets_total{connection="branch",child="hq-branch",direction="out"}'
    assert _valid_exposition(later)[conn] >= m[conn] > 0  # a counter: only grows
    assert other[0] == 404 and post[0] == 405
    prom = (config.parent / "lab.prom").read_text()
    assert _valid_exposition(prom) and 'ipsec_console_connection_up{connection="branch"}' in prom


def test_metrics_endpoint_bounds_what_it_reads(tmp_path):
    port = _free_port()
    config = _lab(tmp_path, port)

    async def run():
        lab = LabRuntime(config, rate=1)
        await lab.start()
        services = Services(lab, Notifier({}))
        await services.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.0\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return data
        finally:
            await services.stop()
            await lab.stop()

    assert asyncio.run(run()) == b""  # an oversized request is dropped unanswered


def test_label_values_are_escaped_and_totals_survive_rekeys():
    def snap(spi, packets):
        child = ChildSaInfo(name='k"\\x', unique_id=spi, reqid=1, state="INSTALLED", protocol="esp", mode="tunnel",
                            encap=False, spi_in=spi, spi_out=spi + 1, packets_in=packets, bytes_in=packets * 100)
        sa = IkeSaInfo(name="c", unique_id=1, state="ESTABLISHED", initiator=True, spi_i=1, spi_r=2,
                       local_addr="127.0.0.1", local_port=500, remote_addr="127.0.0.2", remote_port=500,
                       children=(child,))
        return StatusSnapshot(0.0, (sa,))

    totals = TrafficTotals()
    totals.update(snap(10, 5))
    totals.update(snap(10, 8))
    totals.update(snap(20, 2))  # rekeyed: a new SA starts at zero
    assert totals.totals[("c", 'k"\\x')]["packets_in"] == 10

    class Rt:
        policy = parse_policy('[engine]\ndatapath = "kernel"\n', load_secrets=False)
        datapath = type("D", (), {"name": "none", "counters": staticmethod(lambda: ([], {"no_sa": 3}))})()

        def status(self):
            return snap(20, 4)

    text = Metrics().render(Rt())
    m = _valid_exposition(text)
    series = 'ipsec_console_child_sa_packets_total{connection="c",child="k\\"\\\\x",unique_id="20",direction="in"}'
    assert m[series] == 4
    assert m['ipsec_console_drops_total{reason="no_sa"}'] == 3


@pytest.mark.parametrize("value", ["192.0.2.1:9814", "0.0.0.0:9814", "127.0.0.1", "[::1]:0", "localhost:9814"])
def test_metrics_listen_is_loopback_address_and_port_only(value):
    from engine.policy.findings import PolicyError

    with pytest.raises(PolicyError, match="metrics_listen"):
        parse_policy(f'[engine]\nmetrics_listen = "{value}"\n', load_secrets=False)
    assert parse_policy('[engine]\nmetrics_listen = "[::1]:9814"\n', load_secrets=False).engine.metrics_listen


def test_the_textfile_is_written_through_a_fresh_temporary_file(tmp_path):
    """The temporary file had a predictable name (.NAME.PID.tmp) opened without O_EXCL: a symbolic link
    placed there by whoever may write to node_exporter's folder made the root daemon truncate and
    overwrite the file it points to (and renamed the link over the .prom file)."""
    import os

    from engine.ops.metrics_export import write_textfile

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "ipsec.prom"
    (tmp_path / f".{target.name}.{os.getpid()}.tmp").symlink_to(victim)
    write_textfile(target, "ipsec_up 1\n")
    assert victim.read_text() == "precious\n"
    assert target.read_text() == "ipsec_up 1\n" and not target.is_symlink()
    assert target.stat().st_mode & 0o777 == 0o644
