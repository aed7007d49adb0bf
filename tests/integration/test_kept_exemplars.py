"""Exemplars lead to kept traces: metrics leave through the real OTLP/HTTP metric exporter to a
loopback receiver, are decoded there, and the retries and wasted-duration points of a kept
transaction carry the kept trace's id (the SDK's default ``trace_based`` exemplar filter)."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from motor_otel import KeepTransactionsSampler, instrument_client
from motor_otel.testing import fail_command
from tests.signals import make_signals

TTE = ["TransientTransactionError"]


async def test_exemplars_of_a_kept_transaction_carry_its_trace_id(
    otlp_collector: tuple[str, dict[str, list[bytes]]], async_driver_client: Any
) -> None:
    """retries and wasted_duration exemplars name the kept trace, decoded from OTLP."""
    base, received = otlp_collector
    signals = make_signals(sampler=KeepTransactionsSampler(ParentBased(TraceIdRatioBased(0.01))))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics"), export_interval_millis=3_600_000
    )
    meter_provider = MeterProvider(metric_readers=[reader])
    client = async_driver_client
    instrument_client(
        client, tracer_provider=signals.tracer_provider, meter_provider=meter_provider
    )
    await client.drop_database("keep_exemplars")
    db = client.keep_exemplars
    await db.c.insert_one({"_id": 1})
    await client.admin.command(
        fail_command("update", error_code=112, error_labels=TTE, namespace="keep_exemplars.c")
    )
    tracer = signals.tracer_provider.get_tracer("app")
    request_ids = set()
    for _ in range(3):  # unsampled requests (ids that a 1 % ratio drops), as ratio sampling does
        with tracer.start_as_current_span("request") as request:
            request_ids.add(request.get_span_context().trace_id)
            if request.get_span_context().trace_flags.sampled:
                continue
            session = client.start_session()
            session = await session if hasattr(session, "__await__") else session
            try:
                await session.with_transaction(
                    lambda s: db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=s)
                )
            finally:
                ended = session.end_session()
                if hasattr(ended, "__await__"):
                    await ended
            break
    assert meter_provider.force_flush(10_000)
    meter_provider.shutdown()

    (kept_root,) = [s for s in signals.spans() if s.name == "withTransaction"]
    assert kept_root.parent is None and kept_root.attributes["db.mongodb.transaction.kept"]
    kept_id = kept_root.context.trace_id.to_bytes(16, "big")
    assert kept_root.context.trace_id not in request_ids
    exemplars: dict[str, list[Any]] = {}
    for body in received["/v1/metrics"]:
        request_message = ExportMetricsServiceRequest.FromString(body)
        for resource in request_message.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    data = getattr(metric, metric.WhichOneof("data"))
                    for point in data.data_points:
                        exemplars.setdefault(metric.name, []).extend(point.exemplars)
    for name in (
        "db.client.mongodb.transaction.retries",
        "db.client.mongodb.transaction.wasted_duration",
        "db.client.mongodb.transactions",
        "db.client.mongodb.transaction.attempts",
    ):
        assert exemplars[name], name
        assert {e.trace_id for e in exemplars[name]} == {kept_id}, name
