"""``motor-otel demo``: a retried transaction on the embedded simulator, as a span tree.

A first cut of the demo (the full shop workload, metrics and OTLP export are an open issue):
real spans from real driver calls, printed from the SDK's in-memory exporter.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

_NEEDS = "the demo needs the OpenTelemetry SDK and the simulator: pip install 'motor-otel[test]'"


def _tree(spans: list[Any]) -> list[str]:
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
            lines.append(f"{'  ' * depth}{span.name}  {ms:.1f} ms  {' '.join(notes)}".rstrip())
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines


async def _demo(mode: str) -> None:
    from motor.motor_asyncio import AsyncIOMotorClient
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from motor_otel import instrument_client
    from motor_otel.testing import SimulatedReplicaSet

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with SimulatedReplicaSet() as rs:
        client: Any = AsyncIOMotorClient(rs.uri, serverSelectionTimeoutMS=5000)
        instrument_client(client, tracer_provider=provider, with_transaction=mode)
        orders, stock = client.shop.orders, client.shop.stock
        await stock.insert_one({"_id": "apple", "qty": 10})
        # One transient failure in the callback, two failed commits (an unknown commit result).
        for fail in ("insert", "commitTransaction"):
            await client.admin.command(
                {
                    "configureFailPoint": "failCommand",
                    "mode": {"times": 1 if fail == "insert" else 2},
                    "data": {"failCommands": [fail], "errorCode": 112 if fail == "insert" else 91},
                }
            )
            exporter.clear()

            async def buy(session: Any) -> None:
                await stock.update_one({"_id": "apple"}, {"$inc": {"qty": -1}}, session=session)
                await orders.insert_one({"item": "apple"}, session=session)

            async with await client.start_session() as session:
                try:
                    await session.with_transaction(buy)
                except Exception as exc:  # the demo shows what the application would see
                    print(f"with_transaction raised {type(exc).__name__}: {exc}"[:200])
            print(f"--- with_transaction ({mode} mode), injected failure on {fail}")
            for line in _tree(list(exporter.get_finished_spans())):
                print(line)
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="motor-otel")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="trace retried transactions on the embedded simulator")
    demo.add_argument("--mode", choices=("driver", "spec"), default="spec")
    args = parser.parse_args(argv)
    try:
        import mockupdb  # noqa: F401
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        print(_NEEDS, file=sys.stderr)
        return 2
    asyncio.run(_demo(args.mode))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
