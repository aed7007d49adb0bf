"""``motor-otel demo`` checks every argument before it does any work.

A bad argument gets the demo's usage and one line naming the argument, exit 2, no traceback, and
nothing runs (the demo's first line, "simulated replica set at ...", never appears).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _refused(*args: str) -> str:
    """Run the demo with ``args``; assert it refused them up front; return its one error line."""
    done = subprocess.run(
        [sys.executable, "-m", "motor_otel", "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("usage: motor-otel demo "), done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if "error" in ln.lower()]
    return line


BAD_VALUES = [
    (
        ["--transactions", "-3"],
        "motor-otel demo: error: argument --transactions: must be at least 1, got -3",
    ),
    (
        ["--transactions", "many"],
        "motor-otel demo: error: argument --transactions: expected a whole number, got 'many'",
    ),
    (
        ["--buyers", "-1"],
        "motor-otel demo: error: argument --buyers: must be at least 0, got -1",
    ),
    (
        ["--otlp-endpoint", "not-a-url"],
        "motor-otel demo: error: argument --otlp-endpoint: expected an http:// or https:// URL"
        " such as http://localhost:4318, got 'not-a-url'",
    ),
    (
        ["--otlp-endpoint", "http://localhost:99999"],
        "motor-otel demo: error: argument --otlp-endpoint: bad port in 'http://localhost:99999'",
    ),
    (
        ["--sample", "2"],
        "motor-otel demo: error: argument --sample: must be a ratio between 0 and 1, got 2",
    ),
    (
        ["--sample", "some"],
        "motor-otel demo: error: argument --sample: expected a ratio between 0 and 1, got 'some'",
    ),
    (
        ["--mode", "fast"],
        "motor-otel demo: error: argument --mode: invalid choice: 'fast'"
        " (choose from 'driver', 'spec')",
    ),
]


@pytest.mark.parametrize(
    ("args", "line"), BAD_VALUES, ids=[" ".join(args) for args, _ in BAD_VALUES]
)
def test_a_bad_value_is_refused_in_one_line(args: list[str], line: str) -> None:
    """Exit 2 before any work, the demo's usage, one line naming the argument and why."""
    assert _refused(*args) == line


def test_a_json_file_in_a_missing_folder_is_refused_before_the_run(tmp_path: Path) -> None:
    """``--json`` into a folder that does not exist: refused up front, not after the demo."""
    missing = tmp_path / "nonexistent" / "dir"
    assert _refused("--json", str(missing / "out.json")) == (
        f"motor-otel demo: error: argument --json: directory {str(missing)!r} does not exist"
    )


def test_a_json_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    """``--json`` naming a folder: refused up front."""
    assert _refused("--json", str(tmp_path)) == (
        f"motor-otel demo: error: argument --json: {tmp_path} is a directory"
    )
