"""Log hygiene (issue 15 item 3): what a peer sends cannot forge a log line,
no line passes 1 KB, and a flood of one warning is a bounded number of lines
plus a summary (engine.logsafe, engine.printable)."""

from __future__ import annotations

import dataclasses
import io
import logging

import pytest

from engine import logsafe
from engine.events import LogMessage
from engine.policy.model import AuthConfig, Identity
from engine.printable import clean, escape
from engine.runtime import daemon
from engine.runtime.engine import _EventLogHandler
from tests.engine.ike_pair import Pair, connection, mirror, policy

HOSTILE = "evil\n2026-01-01 00:00:00,000 ERROR   engine.ike: forged line\x1b[31m red\x00 nul\rend"


@pytest.fixture
def daemon_log(monkeypatch):
    """The daemon's stderr handler (setup_logging) writing into a StringIO, and a fresh rate limiter."""
    out = io.StringIO()
    monkeypatch.setattr(daemon.sys, "stderr", out)
    monkeypatch.setattr(logsafe, "LIMITER", logsafe.RateLimiter())
    engine_log, asyncio_log = logging.getLogger("engine"), logging.getLogger("asyncio")
    before = (list(engine_log.handlers), list(asyncio_log.handlers), engine_log.level)
    daemon.setup_logging(0)
    try:
        yield out
    finally:
        for lg, handlers in ((engine_log, before[0]), (asyncio_log, before[1])):
            for h in list(lg.handlers):
                if h not in handlers:
                    lg.removeHandler(h)
        engine_log.setLevel(before[2])


def test_escape_shows_every_non_printable_and_keeps_the_rest():
    assert escape("plain é 中 \\x41") == "plain é 中 \\x41"
    assert escape("a\nb\rc\td\x1b[31m\x00\x7f\u2028\u202e\U000e0001") == \
        "a\\nb\\rc\\td\\x1b[31m\\x00\\x7f\\u2028\\u202e\\U000e0001"
    assert "\n" not in escape(HOSTILE) and "\x1b" not in escape(HOSTILE) and "\x00" not in escape(HOSTILE)


def test_clean_cuts_long_text_with_a_marker_and_bounded_work():
    text = "\x00" * 100_000
    out = clean(text, 1024)
    assert len(out) <= 1024 and out.endswith("...[cut: 100000 chars]") and out.startswith("\\x00")


def test_a_peer_identity_cannot_forge_a_log_line(daemon_log):
    # The initiator sends an identity no connection of the responder accepts: the responder logs it.
    conn = connection()
    evil = dataclasses.replace(conn, local=AuthConfig("psk", Identity("fqdn", HOSTILE)))
    pair = Pair(policy(evil), policy(mirror(conn), address="192.0.2.2"))
    pair.a.initiate("tun", pair.now)
    pair.advance(5)
    text = daemon_log.getvalue()
    assert "evil\\n2026-01-01" in text, text  # the identity is there, escaped
    assert "\x1b" not in text and "\x00" not in text and "\r" not in text
    lines = text.splitlines()
    assert lines and all(line[:4].isdigit() for line in lines), lines  # every line is a record of its own
    assert not any(line.startswith("2026-01-01") for line in lines)


def test_a_98_kb_message_is_capped(daemon_log):
    logging.getLogger("engine.ike").warning("offer: %s", "IKE:AES_CBC_128/HMAC_SHA1_96; " * 3300)
    [line] = daemon_log.getvalue().splitlines()
    assert len(line) < 1024 + 80 and "...[cut: " in line


def test_a_flood_of_one_warning_is_bounded_and_summarised(daemon_log):
    clock = [0.0]
    logsafe.LIMITER.clock = lambda: clock[0]
    log = logging.getLogger("engine.ike")
    for i in range(42_000):
        clock[0] = i * (30 / 42_000)  # 42,000 half-open timeouts in 30 s
        log.warning("half-open IKE SA #%d from %s timed out", i, "192.0.2.77")
    clock[0] = 40.0
    logsafe.flush()
    lines = daemon_log.getvalue().splitlines()
    summaries = [line for line in lines if "suppressed" in line]
    assert len(lines) <= 4 * logsafe.BURST + 4  # three windows of BURST lines, and their summaries
    assert summaries and "similar messages" in summaries[0] and "half-open IKE SA" in summaries[0]
    total = sum(int(line.split("suppressed ")[1].split()[0]) for line in summaries)
    assert total + len(lines) - len(summaries) == 42_000  # nothing vanishes without being counted


def test_asyncio_errors_go_through_the_same_limits(daemon_log):
    log = logging.getLogger("asyncio")
    for _ in range(1000):
        log.error("socket.accept() out of system resource\nsocket: <fd=8>", exc_info=OSError(24, "Too many"))
    out = daemon_log.getvalue()
    assert 1 <= out.count("out of system resource") <= logsafe.BURST  # through our handler, limited


def test_log_messages_for_events_are_escaped_and_capped():
    class Runtime:
        _subscribers = [object()]
        published: list = []

        def publish(self, event):
            self.published.append(event)

    rt = Runtime()
    handler = _EventLogHandler(rt)
    log = logging.getLogger("engine.test_logsafe")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        log.info("peer %s", HOSTILE)
        log.info("x" * 98_000)
    finally:
        log.removeHandler(handler)
        log.propagate = True
        log.setLevel(logging.NOTSET)
    first, second = rt.published
    assert isinstance(first, LogMessage) and "\n" not in first.text and "\x1b" not in first.text
    assert "evil\\n2026" in first.text
    assert len(second.text) <= logsafe.MAX_MESSAGE
