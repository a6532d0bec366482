"""The daemon's log handler writes a turn of the loop's lines at once, and never holds one longer:
the next turn, a WARNING, no running loop, a full buffer, flush/close and the end of main() write them."""

from __future__ import annotations

import asyncio
import io
import logging
import threading

import pytest

from engine.runtime import daemon
from engine.runtime.daemon import setup_logging
from engine.runtime.loglines import TurnBufferedHandler

FORMAT = "%(levelname)s %(name)s: %(message)s"


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


@pytest.fixture
def logger():
    stream = CountingStream()
    handler = TurnBufferedHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    log = logging.getLogger("engine.test_log_lines")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(handler)
    yield log, handler, stream
    log.removeHandler(handler)
    log.propagate = True
    log.setLevel(logging.NOTSET)


def test_a_turns_lines_are_written_at_once_by_the_next_turn(logger):
    log, _handler, stream = logger

    async def main():
        for i in range(5):
            log.info("CHILD_SA lan{%d} established", i)
        assert stream.getvalue() == ""  # one write for the turn, not one per line
        await asyncio.sleep(0)
        return stream.getvalue(), stream.writes

    text, writes = asyncio.run(main())
    assert text == "".join(f"INFO engine.test_log_lines: CHILD_SA lan{{{i}}} established\n" for i in range(5))
    assert writes == 1


def test_same_text_as_a_stream_handler(logger):
    log, _handler, stream = logger
    plain_stream = io.StringIO()
    plain = logging.StreamHandler(plain_stream)
    plain.setFormatter(logging.Formatter(FORMAT))
    log.addHandler(plain)
    try:
        async def main():
            log.info("one %s", "x")
            log.debug("two")
            try:
                raise ValueError("boom")
            except ValueError:
                log.info("three", exc_info=True)
            await asyncio.sleep(0)

        asyncio.run(main())
    finally:
        log.removeHandler(plain)
    assert stream.getvalue() == plain_stream.getvalue()
    assert "ValueError: boom" in stream.getvalue()


def test_a_warning_is_written_at_once_after_the_lines_before_it(logger):
    log, _handler, stream = logger

    async def main():
        log.info("before")
        log.warning("trouble")
        return stream.getvalue()

    assert asyncio.run(main()) == "INFO engine.test_log_lines: before\nWARNING engine.test_log_lines: trouble\n"


def test_outside_a_running_loop_lines_are_written_at_once(logger):
    log, _handler, stream = logger
    log.info("starting")
    assert stream.getvalue() == "INFO engine.test_log_lines: starting\n"
    done = []

    def thread():
        log.info("from a thread")
        done.append(stream.getvalue())

    async def main():
        t = threading.Thread(target=thread)
        t.start()
        t.join()

    asyncio.run(main())
    assert done == ["INFO engine.test_log_lines: starting\nINFO engine.test_log_lines: from a thread\n"]


def test_a_full_buffer_is_written_at_once(logger):
    log, handler, stream = logger
    handler.max_buffered = 100

    async def main():
        for i in range(10):
            log.info("line %d of a long burst of lines", i)
        return stream.getvalue(), handler.waiting

    text, waiting = asyncio.run(main())
    assert text.count("\n") >= 6 and waiting < 100


def test_flush_and_close_write_what_waits(logger):
    log, handler, stream = logger

    async def main():
        log.info("waiting")
        handler.flush()
        first = stream.getvalue()
        log.info("still waiting")
        handler.close()
        return first, stream.getvalue()

    first, last = asyncio.run(main())
    assert first == "INFO engine.test_log_lines: waiting\n"
    assert last.endswith("INFO engine.test_log_lines: still waiting\n")


def test_a_loop_closed_before_its_turn_loses_no_line(logger):
    log, _handler, stream = logger
    loop = asyncio.new_event_loop()
    asyncio.events._set_running_loop(loop)  # logged inside a turn that never comes: the loop is closed
    try:
        log.info("last words")
    finally:
        asyncio.events._set_running_loop(None)
        loop.close()
    assert stream.getvalue() == ""

    async def main():
        log.info("next loop")
        await asyncio.sleep(0)

    asyncio.run(main())
    assert stream.getvalue() == "INFO engine.test_log_lines: last words\nINFO engine.test_log_lines: next loop\n"


def test_main_writes_the_last_lines_when_the_loop_ends_by_an_exception(monkeypatch):
    stream = io.StringIO()
    engine = logging.getLogger("engine")
    handlers = []

    def setup(verbose):
        handlers.append(setup_logging(verbose, env={}, stream=stream))
        return handlers[-1]

    async def serve(*_args, **_kwargs):
        logging.getLogger("engine.daemon").info("about to fail")
        raise RuntimeError("crashed")

    monkeypatch.setattr(daemon, "setup_logging", setup)
    monkeypatch.setattr(daemon, "serve", serve)
    monkeypatch.setattr(daemon, "roomy_collector", lambda: None)
    monkeypatch.setattr(daemon, "lean_log_records", lambda: None)
    try:
        with pytest.raises(RuntimeError):
            daemon.main("policy.toml", None)
        assert isinstance(handlers[0], TurnBufferedHandler)
        assert "engine.daemon: about to fail\n" in stream.getvalue()
    finally:
        for h in handlers:
            engine.removeHandler(h)
            logging.getLogger("asyncio").removeHandler(h)
        engine.setLevel(logging.NOTSET)
