"""The README's first command: `motor-otel demo` shows retried transactions and exits 0."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def _demo(*args: str, transactions: str = "7") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "motor_otel", "demo", "--transactions", transactions, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def names_of(bodies: dict[str, list[bytes]]) -> list[str]:
    return [
        span.name
        for body in bodies.get("/v1/traces", [])
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def _metric_lines(out: str) -> list[str]:
    return out.split("--- metrics\n", 1)[1].split("\n\n", 1)[0].splitlines()


def test_demo_prints_trees_and_metrics(tmp_path: Path) -> None:
    """Exit 0; the tree of each retried transaction; a metrics summary; progress; OTLP JSON."""
    out_file = tmp_path / "spans.json"
    done = _demo("--buyers", "0", "--json", str(out_file))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "[7/7] transactions done" in out
    assert "--- transaction 5: injected WriteConflict on the stock update (a fail point)" in out
    assert "attempts=2 commit_attempts=1 outcome=committed wasted_ms=" in out
    assert (
        'attempt=1 outcome=aborted retry_cause="update shop.stock" labels=TransientTransactionError'
        in out
    )
    assert "--- transaction 7: injected unknown commit result" in out
    assert "attempts=1 commit_attempts=2 outcome=committed" in out
    lines = _metric_lines(out)
    assert "db.client.mongodb.transactions {error_labels=none, outcome=committed} 5" in lines
    assert (
        "db.client.mongodb.transaction.retries {collection.name=stock, error.type=112,"
        " error_label=TransientTransactionError, operation.name=update} 1"
    ) in lines
    wasted = [line for line in lines if "transaction.wasted_duration" in line]
    assert [w.split(" count=")[0] for w in wasted] == [
        "db.client.mongodb.transaction.wasted_duration"
        " {collection.name=stock, operation.name=update, outcome=committed}"
    ]
    # No two lines look the same: points that differ only in a usually quiet label (the
    # collection of an insert, the namespace) are told apart by it.
    labels = [line.rsplit("} ", 1)[0] for line in lines]
    assert len(labels) == len(set(labels)), lines
    inserts = [
        label
        for label in labels
        if label.startswith("db.client.operation.duration")
        and "operation.name=insert" in label
        and "error.type" not in label
    ]
    assert sorted(inserts) == [
        "db.client.operation.duration {collection.name=orders, namespace=shop, operation.name=insert",
        "db.client.operation.duration {collection.name=stock, namespace=shop, operation.name=insert",
    ]
    document = json.loads(out_file.read_text())
    spans = [
        span
        for resource in document["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    assert sum(1 for s in spans if s["name"] == "withTransaction") == 7
    assert all(len(s["traceId"]) == 32 and len(s["spanId"]) == 16 for s in spans)


def test_demo_contention_and_where_retries_came_from() -> None:
    """Concurrent buyers of one item really conflict; the table under the trees says which
    operation made transactions retry, how often and at what cost. In driver mode, the commits
    Motor did not retry are counted and the demo still exits 0."""
    for mode in ("spec", "driver"):
        done = _demo("--mode", mode, "--buyers", "3", transactions="5")
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "3 buyers of 'fig' at once:" in out
        assert "--- buyer " in out and "contention on stock 'fig'" in out
        table = out.split("--- where retries came from\n", 1)[1].split("\n\n", 1)[0]
        rows = {
            found[1]: found[2]
            for line in table.splitlines()[1:]
            if (found := re.match(r"(.+?)\s+(\d+)\s+[\d.]+ ms\s+(?:[\d.]+ ms|-)$", line))
        }
        found = out.split("buyers' conflicts found at the write: ", 1)[1].split(";")[0]
        at_write, at_commit = (int(n) for n in found.replace(" at commit:", "").split(","))
        assert at_write + at_commit >= 2  # three buyers held the same document: two lost
        lines = _metric_lines(out)
        if mode == "spec":  # every conflict retried, and the one injected on transaction 5
            assert int(rows["total"]) == 1 + at_write + at_commit
            assert "did not retry" not in table
            _payment_raises_app_time_window_and_retries(out, buyers=3)
            assert not any("commit_not_retried" in line for line in lines)
        else:  # Motor retries conflicts at the write, never a failed commit
            assert int(rows["total"]) == 1 + at_write
            if at_commit:
                assert (
                    "commits Motor did not retry (with_transaction raised):"
                    f" {at_commit} (TransientTransactionError {at_commit})"
                ) in table.splitlines()
                (counted,) = [
                    line
                    for line in lines
                    if line.startswith("db.client.mongodb.transaction.commit_not_retried {")
                ]
                assert counted.endswith(f"}} {at_commit}")


def _payment_raises_app_time_window_and_retries(out: str, buyers: int) -> None:
    """The checkouts that await the 50 ms payment service inside the transaction: their
    committed attempts' app time and write window include it, and every other buyer of the
    item conflicts with the one holding its stock document meanwhile."""
    section = out.split("--- why transactions conflict: ", 1)[1].split("\n\n", 1)[0]
    rows = {
        found[1]: [float(found[i]) for i in range(2, 6)]
        for line in section.splitlines()
        if (
            found := re.match(
                r"(\w+): .+?\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+[\d.]+ ms$", line
            )
        )
    }
    assert set(rows) == {"pear", "plum"}, section
    attempts, app_ms, window_ms, retries = rows["plum"]
    assert app_ms >= 50.0 and window_ms >= 50.0  # the payment call is inside both
    assert retries >= buyers - 1 and attempts == buyers + retries


def test_demo_says_when_the_export_failed() -> None:
    """An OTLP endpoint that does not answer: the demo says the export failed and how many
    spans were lost, never that it sent them, and exits 1 (quickly: a short timeout)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the demo runs: nobody answers
    endpoint = f"http://127.0.0.1:{port}"
    done = _demo("--buyers", "0", "--otlp-endpoint", endpoint, transactions="2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "sent " not in done.stdout
    assert "retrying in" not in done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("export to")]
    total = int(line.split(" spans lost")[0].rsplit(" of ", 1)[1])
    assert total > 0
    assert line == (
        f"export to {endpoint} failed: {total} of {total} spans lost, the metrics were not"
        " delivered (is a collector listening there? OTLP/HTTP, e.g. port 4318)"
    )


def test_demo_sends_to_an_otlp_endpoint(
    otlp_collector: tuple[str, dict[str, list[bytes]]],
) -> None:
    """--otlp-endpoint exports the same spans, and our transaction metrics, over OTLP/HTTP."""
    endpoint, bodies = otlp_collector
    done = _demo("--otlp-endpoint", endpoint, "--buyers", "2")
    assert done.returncode == 0, done.stderr
    assert f"sent {len(names_of(bodies))} spans and the metrics to {endpoint}" in done.stdout
    names = names_of(bodies)
    assert names.count("withTransaction") == 13  # 7 transactions, 2 buyers in each of 3 groups
    metrics = {
        metric.name
        for body in bodies.get("/v1/metrics", [])
        for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for scope in resource.scope_metrics
        if scope.scope.name == "motor_otel"
        for metric in scope.metrics
    }
    expected = {
        "db.client.operation.duration",
        "db.client.mongodb.transaction.duration",
        "db.client.mongodb.transaction.attempts",
        "db.client.mongodb.transactions",
        "db.client.mongodb.transaction.retries",
        "db.client.mongodb.transaction.commit_retries",
        "db.client.mongodb.transaction.wasted_duration",
        "db.client.mongodb.transaction.app_duration",
        "db.client.mongodb.transaction.write_window",
        "db.client.mongodb.transaction.open",
    }  # oldest_age has no point once every transaction has ended
    assert expected == metrics


def test_demo_rejects_unknown_command() -> None:
    """An unknown subcommand is a usage error, not a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "motor_otel", "nope"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


def test_demo_sample_keeps_every_retried_transaction() -> None:
    """--sample 0.05: every retried transaction's tree is printed as kept, and the count line
    splits kept by rule from sampled by the ratio; the retries metric still counts all."""
    done = _demo("--sample", "0.05", "--buyers", "0", transactions="10")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    trees = out.split("\n--- kept (retried)\n")[1:]
    sampled = out.count("\n--- sampled by the ratio, retried\n")  # 5 %: recorded, not kept
    # transactions 5 and 10 get an injected WriteConflict, 7 an unknown commit result, retried
    assert len(trees) + sampled == 3
    for tree in trees:
        assert tree.startswith("withTransaction ") and "kept=retried" in tree.split("\n", 1)[0]
    (line,) = [x for x in out.splitlines() if x.startswith("KeepTransactionsSampler(")]
    assert line.startswith(
        "KeepTransactionsSampler(ParentBased(TraceIdRatioBased(0.05))): "
        f"kept by rule: {len(trees)} ({len(trees)} retried);"
    )
    assert "sampled by the ratio: " in line
    (retries,) = [x for x in _metric_lines(out) if "transaction.retries {" in x]
    assert retries.endswith(" 2")


def test_demo_sample_keeps_the_retried_checkouts_and_times_every_attempt() -> None:
    """--sample with buyers: every retried buyer's and checkout's transaction is kept, the "why
    transactions conflict" table (which needs every trace) is left out, and the timing metrics
    still count every committed attempt of every group."""
    done = _demo("--sample", "0.05", "--buyers", "3", transactions="1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for item in ("fig", "pear", "plum"):
        assert f"3 buyers of '{item}' at once: 3 committed" in out
    assert "--- why transactions conflict" not in out
    kept = out.count("\n--- kept (retried)\n")
    sampled = out.count("\n--- sampled by the ratio, retried\n")
    lines = _metric_lines(out)
    (retried,) = [
        x
        for x in lines
        if x.startswith("db.client.mongodb.transactions {error_labels=TransientTransactionError,")
    ]
    assert kept + sampled == int(retried.rsplit(" ", 1)[1]) >= 2  # plum's buyers conflict
    for name in ("app_duration", "write_window"):
        (committed,) = [
            x
            for x in lines
            if x.startswith(f"db.client.mongodb.transaction.{name} {{") and "outcome=committed" in x
        ]
        assert " count=10 " in committed, committed  # 1 shop transaction, 3 groups of 3
