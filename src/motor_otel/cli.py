"""``motor-otel demo``: a small shop on the embedded simulator, with injected failures, traced.

Real spans from real driver calls: the instrumented Motor client talks to
:class:`~motor_otel.testing.SimulatedReplicaSet` over the wire protocol; fail points inject
transient callback errors and unknown commit results. The terminal shows the trace trees of the
retried transactions and a metrics summary; ``--otlp-endpoint`` sends the same to a collector or
Jaeger, ``--json`` writes the spans as OTLP JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NEEDS = (
    "motor-otel demo needs the OpenTelemetry SDK, the OTLP exporter and the simulator: "
    "pip install 'motor-otel[demo]'"
)
ITEMS = ("apple", "pear", "plum", "fig")


def render_tree(spans: Sequence[Any]) -> list[str]:
    """Span names, durations, attempts and labels, indented by parentage."""
    ids = {s.context.span_id for s in spans}
    by_parent: dict[Any, list[Any]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: Any, depth: int) -> None:
        for span in sorted(by_parent.get(parent, []), key=lambda s: s.start_time):
            attrs = span.attributes or {}
            ms = (span.end_time - span.start_time) / 1e6
            notes = [
                f"{key.rsplit('.', 1)[-1]}={attrs[key]}"
                for key in (
                    "db.mongodb.transaction.attempt",
                    "db.mongodb.transaction.attempts",
                    "db.mongodb.transaction.commit_attempts",
                    "db.mongodb.transaction.outcome",
                    "db.response.status_code",
                )
                if key in attrs
            ]
            if "db.mongodb.error_labels" in attrs:
                notes.append("labels=" + ",".join(attrs["db.mongodb.error_labels"]))
            notes.extend(f"[{event.name}]" for event in span.events if event.name != "exception")
            lines.append(f"{'  ' * depth}{span.name}  {ms:.1f} ms  {' '.join(notes)}".rstrip())
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines


def otlp_json(spans: Sequence[Any]) -> dict[str, Any]:
    """Spans as OTLP/JSON (ids in hex, as the OTLP JSON mapping requires)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    document: dict[str, Any] = MessageToDict(encode_spans(spans))

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    fix(value)
        elif isinstance(node, list):
            for item in node:
                fix(item)

    fix(document)
    return document


def _metrics_summary(reader: Any) -> list[str]:
    data = reader.get_metrics_data()
    lines: list[str] = []
    if data is None:
        return lines
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attrs = {
                        k.rsplit(".", 1)[-1]: v
                        for k, v in point.attributes.items()
                        if k not in ("db.system.name", "db.namespace", "server.address")
                    }
                    label = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()))
                    if hasattr(point, "count"):
                        mean = point.sum / point.count if point.count else 0.0
                        value = f"count={point.count} mean={mean:.4g}"
                    else:
                        value = f"{point.value}"
                    lines.append(f"{metric.name} {{{label}}} {value}")
    return sorted(lines)


async def _shop(client: Any, transactions: int, progress: bool) -> list[tuple[int, str]]:
    """Run the workload; returns (transaction number, what was injected) for retried ones."""
    stock, orders = client.shop.stock, client.shop.orders
    await stock.delete_many({})
    await stock.insert_many([{"_id": item, "qty": 1000} for item in ITEMS])
    injected: list[tuple[int, str]] = []
    for n in range(1, transactions + 1):
        item = ITEMS[n % len(ITEMS)]
        if n % 5 == 0:
            injected.append((n, "TransientTransactionError in the callback"))
            await client.admin.command(
                {
                    "configureFailPoint": "failCommand",
                    "mode": {"times": 1},
                    "data": {"failCommands": ["insert"], "errorCode": 112},
                }
            )
        elif n % 7 == 0:
            injected.append((n, "unknown commit result (ShutdownInProgress twice)"))
            await client.admin.command(
                {
                    "configureFailPoint": "failCommand",
                    "mode": {"times": 2},
                    "data": {"failCommands": ["commitTransaction"], "errorCode": 91},
                }
            )

        async def buy(session: Any, item: str = item, n: int = n) -> None:
            await stock.update_one({"_id": item}, {"$inc": {"qty": -1}}, session=session)
            await orders.insert_one({"order": n, "item": item}, session=session)

        async with await client.start_session() as session:
            try:
                await session.with_transaction(buy)
            except Exception as exc:  # what the application would see, shown not hidden
                print(f"transaction {n}: with_transaction raised {type(exc).__name__}")
        if progress and (n % 10 == 0 or n == transactions):
            print(f"[{n}/{transactions}] transactions done", flush=True)
    return injected


async def demo(
    mode: str, transactions: int, otlp_endpoint: str | None, json_path: Path | None
) -> int:
    from motor.motor_asyncio import AsyncIOMotorClient
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from motor_otel import instrument_client
    from motor_otel.testing import SimulatedReplicaSet

    resource = Resource.create({"service.name": "motor-otel-demo"})
    memory = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    reader = InMemoryMetricReader()
    readers: list[Any] = [reader]
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        base = otlp_endpoint.rstrip("/")
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        )
        readers.append(
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
        )
    meter_provider = MeterProvider(metric_readers=readers, resource=resource)

    async with SimulatedReplicaSet() as rs:
        print(f"simulated replica set at {rs.uri}; with_transaction mode: {mode}")
        client: Any = AsyncIOMotorClient(rs.uri, serverSelectionTimeoutMS=5000)
        instrument_client(
            client,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            with_transaction=mode,
        )
        injected = await _shop(client, transactions, progress=True)
        client.close()

    spans = list(memory.get_finished_spans())
    roots = sorted(
        (s for s in spans if s.name == "withTransaction"), key=lambda s: s.start_time or 0
    )
    for n, what in injected[:3]:
        root = roots[n - 1]
        tree = [s for s in spans if s.context.trace_id == root.context.trace_id]
        print(f"\n--- transaction {n}: injected {what}")
        print("\n".join(render_tree(tree)))
    print("\n--- metrics")
    print("\n".join(_metrics_summary(reader)))
    if json_path is not None:
        json_path.write_text(json.dumps(otlp_json(spans), indent=1))
        print(f"\nwrote {len(spans)} spans as OTLP JSON to {json_path}")
    tracer_provider.shutdown()
    meter_provider.shutdown()
    if otlp_endpoint:
        print(f"sent {len(spans)} spans and the metrics to {otlp_endpoint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="motor-otel")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="trace a shop workload with injected transaction failures")
    p.add_argument("--mode", choices=("driver", "spec"), default="spec")
    p.add_argument("--transactions", type=int, default=20, help="how many (default 20)")
    p.add_argument("--otlp-endpoint", help="OTLP/HTTP base URL, e.g. http://localhost:4318")
    p.add_argument("--json", type=Path, help="write the spans as OTLP JSON to this file")
    args = parser.parse_args(argv)
    if args.transactions < 1:
        parser.error("--transactions must be at least 1")
    try:
        import mockupdb  # noqa: F401
        import opentelemetry.exporter.otlp.proto.http
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        print(NEEDS, file=sys.stderr)
        return 2
    return asyncio.run(demo(args.mode, args.transactions, args.otlp_endpoint, args.json))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
