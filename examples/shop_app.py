"""A small shop service on Motor, traced by motor-otel and exported to Jaeger over OTLP.

Run it beside the compose stack (see README.md here):

    MONGODB_URI='mongodb://localhost:27017/?replicaSet=rs0' python examples/shop_app.py

or on the embedded simulator, with nothing else running:

    python examples/shop_app.py --simulate --otlp-endpoint http://localhost:4318

Metrics are served for Prometheus on :9464/metrics while the app runs; with
``--metrics-otlp-endpoint`` they are pushed over OTLP instead (to Prometheus's OTLP receiver, as
the compose stack does), which keeps their exemplars: the pull format drops them. ``--sample
0.01`` head-samples 1 % of traces under ``KeepTransactionsSampler``: retried transactions are
kept whatever the ratio said, and their metric exemplars point at those kept traces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client import start_http_server

from motor_otel import KeepTransactionsSampler, MotorInstrumentor

RESOURCE = Resource.create({"service.name": "motor-otel-demo"})


@contextlib.asynccontextmanager
async def mongodb(simulate: bool) -> AsyncIterator[str]:
    if simulate:
        from motor_otel.testing import SimulatedReplicaSet

        async with SimulatedReplicaSet() as rs:
            yield rs.uri
    else:
        yield os.environ.get("MONGODB_URI", "mongodb://localhost:27017/?replicaSet=rs0")


async def place_order(client: Any, n: int) -> None:
    stock, orders = client.shop.stock, client.shop.orders

    async def buy(session: Any) -> None:
        await stock.update_one({"_id": "apple"}, {"$inc": {"qty": -1}}, session=session)
        await orders.insert_one({"order": n}, session=session)

    async with await client.start_session() as session:
        await session.with_transaction(buy)


async def main(args: argparse.Namespace) -> None:
    sampler = None
    if args.sample is not None:
        sampler = KeepTransactionsSampler(ParentBased(TraceIdRatioBased(args.sample)))
    tracer_provider = TracerProvider(resource=RESOURCE, sampler=sampler)
    endpoint = args.otlp_endpoint.rstrip("/") + "/v1/traces"
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    server = None
    reader: MetricReader
    if args.metrics_otlp_endpoint:
        exporter = OTLPMetricExporter(endpoint=args.metrics_otlp_endpoint)
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=5000)
    else:
        reader = PrometheusMetricReader()
        server, _ = start_http_server(args.metrics_port, addr=args.metrics_addr)
    meter_provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    MotorInstrumentor().instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, with_transaction="spec"
    )
    async with mongodb(args.simulate) as uri:
        client: Any = AsyncIOMotorClient(uri, serverSelectionTimeoutMS=5000)
        await client.shop.stock.update_one({"_id": "apple"}, {"$set": {"qty": 10**6}}, upsert=True)
        for n in range(1, args.transactions + 1):
            if n % 5 == 0:  # a retried transaction to look at in Jaeger
                await client.admin.command(
                    {
                        "configureFailPoint": "failCommand",
                        "mode": {"times": 1},
                        "data": {"failCommands": ["insert"], "errorCode": 112},
                    }
                )
            await place_order(client, n)
        client.close()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    if server is not None:
        server.shutdown()
        server.server_close()
    print(f"placed {args.transactions} orders; traces sent to {endpoint}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="use the embedded simulator")
    parser.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
    )
    parser.add_argument("--transactions", type=int, default=50)
    parser.add_argument("--metrics-port", type=int, default=9464)
    parser.add_argument("--metrics-addr", default="127.0.0.1")
    parser.add_argument(
        "--metrics-otlp-endpoint",
        help="push metrics over OTLP/HTTP here instead of serving them for scraping, e.g. "
        "http://localhost:9090/api/v1/otlp/v1/metrics (Prometheus's OTLP receiver: keeps exemplars)",
    )
    parser.add_argument(
        "--sample",
        type=float,
        help="head-sample traces at this ratio under KeepTransactionsSampler",
    )
    asyncio.run(main(parser.parse_args()))
