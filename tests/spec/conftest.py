"""Prints one summary line per suite and driver, with skip reasons grouped."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

import pytest

_counts: dict[str, Counter[str]] = defaultdict(Counter)
_skips: dict[str, Counter[str]] = defaultdict(Counter)
_ID = re.compile(r"test_unified\[(?P<suite>[^\[]+)\[(?P<driver>[^\]]+)\]::")


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
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr: Any = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            _skips[key][reason.removeprefix("Skipped: ")] += 1


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
