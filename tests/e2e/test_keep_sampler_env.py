"""Zero code: ``OTEL_TRACES_SAMPLER=motor_otel_parentbased_traceidratio`` with
``OTEL_TRACES_SAMPLER_ARG=0.01`` under ``opentelemetry-instrument``; examples/plain_app.py's
retried transaction is exported over OTLP/HTTP to a loopback receiver and decoded there."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.test_auto_instrumentation import _run


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind)


def test_the_retried_transaction_is_kept_under_the_env_sampler(
    mongodb_uri: str, otlp_collector: tuple[str, dict[str, list[bytes]]]
) -> None:
    """The env-selected keep sampler at 1 % keeps the app's retried transaction whole: root,
    two attempts with their outcome and cause, operations and commands under them; and the
    retries metric's exemplar names that trace."""
    base, received = otlp_collector
    lines, _, _ = _run(
        mongodb_uri,
        "keep_env",
        traces="otlp_proto_http",
        metrics="otlp_proto_http",
        OTEL_TRACES_SAMPLER="motor_otel_parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.01",
        OTEL_EXPORTER_OTLP_ENDPOINT=base,
    )
    assert "callback calls: 2" in lines

    spans = []
    for body in received.get("/v1/traces", []):
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
            for scope in resource.scope_spans:
                spans.extend(scope.spans)
    attrs = {s.span_id: {a.key: _value(a.value) for a in s.attributes} for s in spans}
    (root,) = [s for s in spans if s.name == "withTransaction"]
    trace = [s for s in spans if s.trace_id == root.trace_id]
    # 99 % of the time the ratio drops the root: then it is kept by rule (1 %: sampled anyway)
    assert attrs[root.span_id].get("db.mongodb.transaction.kept", "retried") == "retried"
    assert attrs[root.span_id]["db.mongodb.transaction.attempts"] == 2
    attempts = sorted(
        (s for s in trace if s.parent_span_id == root.span_id),
        key=lambda s: attrs[s.span_id]["db.mongodb.transaction.attempt"],
    )
    assert [attrs[a.span_id]["db.mongodb.transaction.outcome"] for a in attempts] == [
        "aborted",
        "committed",
    ]
    first_ops = [s for s in trace if s.parent_span_id == attempts[0].span_id]
    assert sorted(s.name for s in first_ops) == [
        "abortTransaction admin",
        "insert keep_env.orders",
        "update keep_env.stock",
    ]
    assert attrs[attempts[0].span_id]["db.mongodb.transaction.retry_cause"] == (
        "insert keep_env.orders"
    )
    (failed_insert,) = [s for s in first_ops if s.name == "insert keep_env.orders"]
    (command,) = [s for s in trace if s.parent_span_id == failed_insert.span_id]
    assert attrs[command.span_id]["error.type"] == "112"
    for span in trace:  # real times: every span inside its parent
        parent = next((p for p in trace if p.span_id == span.parent_span_id), None)
        if parent is not None:
            assert parent.start_time_unix_nano <= span.start_time_unix_nano
            assert span.end_time_unix_nano <= parent.end_time_unix_nano

    exemplar_traces = set()
    for body in received.get("/v1/metrics", []):
        for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "db.client.mongodb.transaction.retries":
                        for point in metric.sum.data_points:
                            exemplar_traces.update(e.trace_id for e in point.exemplars)
    assert exemplar_traces == {root.trace_id}
