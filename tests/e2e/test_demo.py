"""The README's first command: `motor-otel demo` shows retried transactions and exits 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "motor_otel", "demo", "--transactions", "7", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_prints_trees_and_metrics(tmp_path: Path) -> None:
    """Exit 0; the tree of each retried transaction; a metrics summary; progress; OTLP JSON."""
    out_file = tmp_path / "spans.json"
    done = _demo("--json", str(out_file))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "[7/7] transactions done" in out
    assert "--- transaction 5: injected TransientTransactionError in the callback" in out
    assert "attempts=2 commit_attempts=1 outcome=committed labels=TransientTransactionError" in out
    assert "attempt=1 outcome=aborted labels=TransientTransactionError" in out
    assert "--- transaction 7: injected unknown commit result" in out
    assert "attempts=1 commit_attempts=2 outcome=committed" in out
    assert "db.client.mongodb.transactions {error_labels=none, outcome=committed} 5" in out
    assert "db.client.mongodb.transaction.retries {error_label=TransientTransactionError} 1" in out
    document = json.loads(out_file.read_text())
    spans = [
        span
        for resource in document["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    assert sum(1 for s in spans if s["name"] == "withTransaction") == 7
    assert all(len(s["traceId"]) == 32 and len(s["spanId"]) == 16 for s in spans)


def test_demo_sends_to_an_otlp_endpoint(
    otlp_collector: tuple[str, dict[str, list[bytes]]],
) -> None:
    """--otlp-endpoint exports the same spans, and our transaction metrics, over OTLP/HTTP."""
    endpoint, bodies = otlp_collector
    done = _demo("--otlp-endpoint", endpoint)
    assert done.returncode == 0, done.stderr
    names = [
        span.name
        for body in bodies.get("/v1/traces", [])
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert names.count("withTransaction") == 7
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
    }
    assert expected == metrics


def test_demo_rejects_unknown_command() -> None:
    """An unknown subcommand is a usage error, not a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "motor_otel", "nope"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
