"""The daemon's stderr formatter: its date and time text, made once per second, is the standard one."""

from __future__ import annotations

import logging

from engine.runtime.daemon import SecondFormatter

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _record(created: float) -> logging.LogRecord:
    r = logging.LogRecord("engine.ike", logging.INFO, __file__, 1, "CHILD_SA %s established", ("lan{1}",), None)
    r.created = created
    r.msecs = (created - int(created)) * 1000
    return r


def test_same_text_as_logging_formatter_across_seconds():
    plain, cached = logging.Formatter(FORMAT), SecondFormatter(FORMAT)
    # Within a second, across a second, backwards (a clock step), and far apart.
    for t in (1765000000.001, 1765000000.5, 1765000000.999, 1765000001.0, 1765000001.25, 1764999999.75,
              1765086400.5, 0.5):
        assert cached.format(_record(t)) == plain.format(_record(t))


def test_an_explicit_date_format_is_honoured():
    plain, cached = logging.Formatter(FORMAT, "%H:%M"), SecondFormatter(FORMAT, "%H:%M")
    assert cached.format(_record(1765000000.5)) == plain.format(_record(1765000000.5))
