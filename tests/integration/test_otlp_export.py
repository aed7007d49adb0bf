"""Spans leave through the OTLP/HTTP exporter intact: what Jaeger or a collector ingests."""

from __future__ import annotations

from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from motor_otel import instrument_client
from tests.conftest import CLIENT_OPTIONS


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind)


async def test_transaction_tree_survives_otlp_export(
    otlp_collector: tuple[str, dict[str, list[bytes]]], mongodb_uri: str
) -> None:
    """Names, parent ids and typed attributes (int64 included) arrive as they were recorded."""
    base, received = otlp_collector
    provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    instrument_client(client, tracer_provider=provider, with_transaction="spec")
    await client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["insert"], "errorCode": 112},
        }
    )
    async with await client.start_session() as session:
        await session.with_transaction(lambda s: client.otlp.items.insert_one({"a": 1}, session=s))
    client.close()
    assert provider.force_flush(10_000)
    provider.shutdown()

    spans = []
    for body in received.get("/v1/traces", []):
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                assert scope.scope.name == "motor_otel"
                spans.extend(scope.spans)
    by_id = {s.span_id: s for s in spans}
    attrs = {s.span_id: {a.key: _value(a.value) for a in s.attributes} for s in spans}

    (wt,) = [s for s in spans if s.name == "withTransaction"]
    attempts = sorted(
        (s for s in spans if s.name == "transaction"),
        key=lambda s: attrs[s.span_id]["db.mongodb.transaction.attempt"],
    )
    assert [a.parent_span_id for a in attempts] == [wt.span_id, wt.span_id]
    assert attrs[wt.span_id]["db.mongodb.transaction.attempts"] == 2
    assert attrs[wt.span_id]["db.mongodb.transaction.outcome"] == "committed"
    assert attrs[attempts[0].span_id]["db.mongodb.error_labels"] == ["TransientTransactionError"]
    cluster_time = attrs[wt.span_id]["db.mongodb.cluster_time"]
    assert isinstance(cluster_time, int) and cluster_time > 2**32
    for cmd in (s for s in spans if s.name in ("insert", "commitTransaction")):
        op = by_id[cmd.parent_span_id]
        attempt = by_id[op.parent_span_id]
        assert attempt.name == "transaction"
        assert (
            attrs[cmd.span_id]["db.mongodb.txn_number"]
            == attrs[attempt.span_id]["db.mongodb.txn_number"]
        )
        assert attrs[cmd.span_id]["server.port"] > 0
