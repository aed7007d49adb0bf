"""Prints one summary line per suite and driver, with skip reasons grouped.

It also compares every test's outcome with and without our instrumentation (the same driver,
plain and instrumented): observability must never change what an application sees, so a test
whose outcome differs makes the run fail, naming it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

import pytest

_counts: dict[str, Counter[str]] = defaultdict(Counter)
_skips: dict[str, Counter[str]] = defaultdict(Counter)
_outcomes: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)  # (suite, test) -> driver
_ID = re.compile(r"test_unified\[(?P<suite>[^\[]+)\[(?P<driver>[^\]]+)\]::(?P<test>.*)\]$")
# Plain driver -> the same driver instrumented in "driver" mode (spec mode changes the loop).
_INSTRUMENTED = {
    "AsyncMongoClient": "AsyncMongoClient+otel",
    "MongoClient": "MongoClient+otel",
    "Motor": "Motor+driver",
}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    match = _ID.search(report.nodeid)
    if match is None:
        return
    key = f"{match['suite']} [{match['driver']}]"
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        else:
            outcome = report.outcome
        _counts[key][outcome] += 1
        _outcomes[(match["suite"], match["test"])][match["driver"]] = outcome
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr: Any = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            _skips[key][reason.removeprefix("Skipped: ")] += 1


def _instrumentation_differences() -> tuple[int, list[str]]:
    """(pairs compared, descriptions of pairs whose outcomes differ)."""
    compared, differ = 0, []
    for (suite, test), by_driver in sorted(_outcomes.items()):
        for plain, traced in _INSTRUMENTED.items():
            if plain in by_driver and traced in by_driver:
                compared += 1
                if by_driver[plain] != by_driver[traced]:
                    differ.append(
                        f"{suite}::{test}: {plain} {by_driver[plain]}, {traced} {by_driver[traced]}"
                    )
    return compared, differ


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _instrumentation_differences()[1] and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _counts:
        return
    terminalreporter.section("MongoDB specification suites")
    for key in sorted(_counts):
        c = _counts[key]
        line = (
            f"spec suite {key}: {c['passed']} passed, {c['failed']} failed, "
            f"{c['skipped']} skipped, {c['xfailed']} expected failures"
        )
        terminalreporter.write_line(line)
        for reason, n in _skips[key].most_common():
            terminalreporter.write_line(f"    skipped {n}: {reason}")
    compared, differ = _instrumentation_differences()
    if differ:
        terminalreporter.write_line(
            f"instrumentation changed {len(differ)} of {compared} outcomes:", red=True
        )
        for line in differ:
            terminalreporter.write_line(f"    {line}", red=True)
    elif compared:
        terminalreporter.write_line(
            f"same outcome with and without instrumentation: {compared} of {compared} tests"
        )
