"""Lines e2e tests want shown on a passing run: pytest captures ``print``, the summary does not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

_lines: list[str] = []


@pytest.fixture(scope="session")
def summary_line() -> Callable[[str], None]:
    """Adds a line to the "end-to-end" section of the terminal summary."""
    return _lines.append


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _lines:
        return
    terminalreporter.section("end-to-end")
    for line in _lines:
        terminalreporter.write_line(line)
