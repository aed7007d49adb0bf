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


def test_overhead_prints_every_variant_the_floor_and_the_targets() -> None:
    """overhead.py --quick: per workload a row per variant and the floor, then the targets."""
    out = _run("overhead.py")
    assert re.search(r"^(client pinned to CPU \d+ with taskset|not pinned)", out, re.M)
    number = r"-?[\d,]+\.\d"
    variants = (
        "driver alone",
        "contrib, recorded",
        "motor-otel, recorded",
        "contrib, ParentBased(ALWAYS_OFF)",
        "motor-otel, ParentBased(ALWAYS_OFF)",
        "contrib, 1 % TraceIdRatioBased",
        "motor-otel, 1 % TraceIdRatioBased",
        "motor-otel, 1 % KeepTransactionsSampler",
        'motor-otel, command_detail="events"',
        "motor-otel, recorded, database/dup",
        "contrib, recorded, OTLP/HTTP export",
        "motor-otel, recorded, OTLP/HTTP export",
        "floor: the SDK alone replaying motor-otel's span tree",
    )
    workloads = re.split(r"^### ", out, flags=re.M)[1:]
    titles = [w.splitlines()[0] for w in workloads]
    assert titles[:6] == [
        "Motor: with_transaction, 3 writes",
        "Motor: with_transaction x20 concurrent",
        "Motor: with_transaction, 1 retry",
        "Motor: with_transaction, 10 % retried",
        "AsyncMongoClient: with_transaction, 3 writes",
        "AsyncMongoClient: insert_one + find_one",
    ]
    for n, workload in enumerate(workloads[:6]):
        rows = [line for line in workload.splitlines() if line.startswith("| ")][2:]
        assert [row.split(" | ")[0][2:] for row in rows] == list(variants)
        for row in rows:
            assert re.match(rf"\| .+ \| {number} \({number}-{number}\) \|", row), row
        ours = next(row for row in rows if row.startswith("| motor-otel, recorded |"))
        spans = {0: "10.0", 2: "15.0", 5: "2.0"}.get(n)  # the span model of the README
        assert spans is None or f" {spans} |" in ours
    targets = workloads[6]
    assert titles[6] == "Targets (reported, not asserted)"
    verdicts = re.findall(r"(met|\*\*missed\*\*)", targets)
    assert len(verdicts) == 6 * 6
    sink = re.search(r"^OTLP sink received (\d+) requests, ([\d,]+) bytes", out, re.M)
    assert sink is not None and int(sink.group(1)) > 0


def test_memory_prints_checkpoints_and_flatness_verdicts() -> None:
    """memory.py --quick: correlation map sizes and RSS per checkpoint, then two flat/grew lines."""
    out = _run("memory.py")
    checkpoints = re.findall(r"^\s*\d+\s+\d+\s+\d+\s+\d+\s+[\d.]+ MiB", out, re.M)
    assert len(checkpoints) >= 3
    assert re.search(r"^correlation state: (flat|GREW) ", out, re.M)
    assert re.search(r"^RSS: (flat|GREW) ", out, re.M)


def test_snapshots_prints_a_row_per_n_and_linearity_verdicts() -> None:
    """snapshots.py --quick: per workload a row for each N, then whether time (and, by _id,
    traced peak memory) per transaction stays flat in N."""
    out = _run("snapshots.py")
    workloads = re.split(r"^### ", out, flags=re.M)[1:]
    assert [w.split(" (")[0] for w in workloads] == ["by _id", "by k, a field without an index"]
    for workload in workloads:
        rows = [line for line in workload.splitlines() if re.match(r"\| \d+ \|", line)]
        assert [row.split(" | ")[0] for row in rows] == ["| 20", "| 50", "| 100"]
        assert re.search(r"^time: (linear|NOT linear) in N", workload, re.M)
    assert re.search(r"^peak memory: (linear|NOT linear) in N", workloads[0], re.M)
