"""The README's benchmark commands run and print their tables (the numbers are not asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_overhead_prints_the_three_columns_ratios_and_targets() -> None:
    """overhead.py --quick: a, b, c columns, ratios, spans, bare spans, targets and the breakdown."""
    out = _run("overhead.py")
    header = next(line for line in out.splitlines() if line.startswith("workload"))
    for column in ("(a) uninstrumented", "(b) contrib pymongo", "(c) motor-otel", "c/a", "c/b"):
        assert column in header
    number = r"\s+[\d,]+\.\d+"
    for workload in (
        "Motor: single op",
        "Motor: with_transaction x1",
        "Motor: with_transaction x100 concurrent",
        "Motor: with_transaction, 1 retry",
        "AsyncMongoClient: single op",
        "AsyncMongoClient: with_transaction x1",
    ):
        assert re.search(rf"^{re.escape(workload)}.*CPU us/(op|txn)({number}){{5}}$", out, re.M)
    assert re.search(rf"^\s+wall us/txn({number}){{5}}$", out, re.M)
    spans = re.findall(rf"^\s+spans/txn({number}){{3}}$", out, re.M)
    assert len(spans) >= 5
    assert re.search(r"^bare SDK span \(start_span \+ \d+ attributes.*: [\d,.]+ us CPU$", out, re.M)
    verdicts = re.findall(r"\s(met|MISSED)\s+[\d.]+\s+(met|MISSED)$", out, re.M)
    assert len(verdicts) == 7
    assert re.search(r"^an SDK span shaped like our command spans .*: [\d,.]+ us CPU$", out, re.M)
    breakdown = out[out.index("where (c) added CPU goes") :].splitlines()[1:]
    signed = r"\s+-?[\d,]+\.\d+ us"  # a difference of medians: noise can make it negative
    assert len([line for line in breakdown if re.search(rf"({signed}){{5}}$", line)]) == 7


def test_memory_prints_checkpoints_and_flatness_verdicts() -> None:
    """memory.py --quick: correlation map sizes and RSS per checkpoint, then two flat/grew lines."""
    out = _run("memory.py")
    checkpoints = re.findall(r"^\s*\d+\s+\d+\s+\d+\s+\d+\s+[\d.]+ MiB", out, re.M)
    assert len(checkpoints) >= 3
    assert re.search(r"^correlation state: (flat|GREW) ", out, re.M)
    assert re.search(r"^RSS: (flat|GREW) ", out, re.M)
