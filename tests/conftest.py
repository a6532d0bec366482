"""Suite-wide rules.

Tests that need root, Debian packages or namespaces skip with a one-line
reason naming what installs the missing piece. Under
IPSEC_CONSOLE_REQUIRE_ALL=1 (set by .ci/run) every skip is turned into a
failure, so CI can never pass by skipping.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("IPSEC_CONSOLE_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under IPSEC_CONSOLE_REQUIRE_ALL=1: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A module-level skip (pytest.skip(allow_module_level=True), importorskip) is a
    # collection report, not a test report: without this it would hide a whole file.
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"module skipped under IPSEC_CONSOLE_REQUIRE_ALL=1: {reason}"
