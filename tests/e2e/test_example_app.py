"""examples/shop_app.py runs on the simulator and ships its traces over OTLP."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

APP = Path(__file__).resolve().parents[2] / "examples" / "shop_app.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_app(endpoint: str, *args: str) -> None:
    """examples/shop_app.py on the simulator, five orders (the fifth retried), OTLP to endpoint."""
    done = subprocess.run(
        [
            sys.executable,
            str(APP),
            "--simulate",
            "--transactions",
            "5",
            "--otlp-endpoint",
            endpoint,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_example_app_exports_retried_transactions(
    otlp_collector: tuple[str, dict[str, list[bytes]]],
) -> None:
    """Five orders, one retried: five withTransaction traces, six transaction attempts."""
    endpoint, bodies = otlp_collector
    _run_app(endpoint, "--metrics-port", str(_free_port()))
    names = [
        span.name
        for body in bodies.get("/v1/traces", [])
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert names.count("withTransaction") == 5
    assert names.count("transaction") == 6


def test_compose_file_names_the_whole_stack() -> None:
    """The compose file defines MongoDB, Jaeger, Prometheus and Grafana with our provisioning."""
    text = (APP.parent / "compose.yaml").read_text()
    for needle in ("mongo:", "jaeger:", "prometheus:", "grafana:", "../grafana/dashboards"):
        assert needle in text


def test_example_app_pushes_exemplars_that_name_its_kept_traces(
    otlp_collector: tuple[str, dict[str, list[bytes]]],
) -> None:
    """As the compose stack runs it (--sample, metrics pushed over OTLP): only the retried
    transaction's trace is exported (kept), and the retries exemplar names it."""
    endpoint, bodies = otlp_collector
    _run_app(endpoint, "--metrics-otlp-endpoint", f"{endpoint}/v1/metrics", "--sample", "0")
    spans = [
        span
        for body in bodies.get("/v1/traces", [])
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    (root,) = [s for s in spans if s.name == "withTransaction"]
    assert {s.trace_id for s in spans} == {root.trace_id}
    exemplars = [
        exemplar.trace_id
        for body in bodies["/v1/metrics"]
        for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "db.client.mongodb.transaction.retries"
        for point in metric.sum.data_points
        for exemplar in point.exemplars
    ]
    assert exemplars and set(exemplars) == {root.trace_id}
