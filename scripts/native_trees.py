"""Span trees with PyMongo's own tracing and ours both on, for the coexistence note (issue 14).

Not a test: it needs a PyMongo built from a tracing branch (``pymongo._otel`` with a ``tracing``
client option), which no release has. Run it from a throwaway venv holding that tree and this
repository::

    python scripts/native_trees.py > native-trees.txt

For each way of switching PyMongo's tracing on (``OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED``
read at client creation, or ``tracing={"enabled": True}``) and ours on (``MotorInstrumentor`` or
``instrument_client``), it runs a plain transaction, ``with_transaction`` and a retried one (a
``failCommand`` fail point: one ``TransientTransactionError`` on the first insert) through Motor
(driver and spec mode), ``AsyncMongoClient`` and ``MongoClient`` against the simulator, then a
``find`` outside the transaction, and prints each tree with every span's scope (``[ours]`` or
``[pymongo]``) and a verdict: one transaction story per attempt, nothing traced twice.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pymongo
import structlog
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from motor_otel import MotorInstrumentor, instrument_client, uninstrument_client
from motor_otel.testing import SimulatedReplicaSet, fail_command

ENV = "OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED"
NOTES = (
    "db.mongodb.transaction.attempt",
    "db.mongodb.transaction.attempts",
    "db.mongodb.transaction.outcome",
    "db.mongodb.error_labels",
    "error.type",
)
OPTIONS: dict[str, Any] = {"serverSelectionTimeoutMS": 5000}
RETRY = fail_command("insert", error_code=112, error_labels=["TransientTransactionError"])
# Fails the commit and PyMongo's own retry of it: UnknownTransactionCommitResult reaches the loop.
COMMIT_RETRY = fail_command("commitTransaction", mode=2, error_code=91)
KINDS = ("plain", "with_transaction", "retried", "commit retried")


def render(spans: Sequence[ReadableSpan]) -> list[str]:
    ids = {s.context.span_id for s in spans}
    children: dict[Any, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: Any, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_time or 0):
            scope = span.instrumentation_scope.name if span.instrumentation_scope else "?"
            who = "ours" if scope == "motor_otel" else "pymongo" if scope == "PyMongo" else scope
            attrs = span.attributes or {}
            notes = []
            for key in NOTES:
                if key in attrs:
                    value = attrs[key]
                    if isinstance(value, tuple):
                        value = ",".join(value)
                    notes.append(f"{key.rsplit('.', 1)[-1]}={value}")
            lines.append(f"{'  ' * depth}{span.name} [{who}] {' '.join(notes)}".rstrip())
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines


def verdict(spans: Sequence[ReadableSpan]) -> list[str]:
    """What is wrong with a tree, by the issue's rules (empty: one story, nothing twice)."""
    problems = []
    by_id = {s.context.span_id: s for s in spans}
    transactions = [s for s in spans if s.name == "transaction"]
    attempts = [s for s in transactions if "db.mongodb.transaction.attempt" in (s.attributes or {})]
    if len(transactions) != len(attempts):
        problems.append(f"{len(transactions) - len(attempts)} transaction span(s) beside ours")
    empty = [
        s
        for s in attempts
        if not any(c.parent and c.parent.span_id == s.context.span_id for c in spans)
    ]
    if empty:
        problems.append(f"{len(empty)} of our attempt span(s) empty")
    # A command or operation traced twice: one name from both scopes.
    seen = Counter(
        (s.name, s.instrumentation_scope.name if s.instrumentation_scope else "")
        for s in spans
        if s.name not in ("transaction", "withTransaction")
    )
    for (name, _scope), _count in seen.items():
        other = [k for k in seen if k[0] == name and k[1] != _scope]
        if other and _scope == "motor_otel":
            problems.append(f"{name!r} traced by both")
    for span in spans:
        if span.name in ("insert", "commitTransaction", "abortTransaction") and (
            span.attributes or {}
        ).get("db.command.name"):
            parent = by_id.get(span.parent.span_id) if span.parent else None
            grand = by_id.get(parent.parent.span_id) if parent and parent.parent else None
            if grand is None or grand.name != "transaction":
                problems.append(f"command {span.name!r} not under a transaction attempt")
    for attempt in attempts:
        labels = (attempt.attributes or {}).get("db.mongodb.error_labels")
        outcome = (attempt.attributes or {}).get("db.mongodb.transaction.outcome")
        if outcome == "aborted" and not labels:
            problems.append("aborted attempt without the error labels that aborted it")
    return sorted(set(problems))


async def plain(client: Any, coll: Any) -> None:
    session = client.start_session()
    if asyncio.iscoroutine(session):
        session = await session
    async with session:
        maybe = session.start_transaction()
        if asyncio.iscoroutine(maybe):
            maybe = await maybe
        await coll.insert_one({"x": 1}, session=session)
        await session.commit_transaction()


async def with_transaction(client: Any, coll: Any) -> None:
    session = client.start_session()
    if asyncio.iscoroutine(session):
        session = await session

    async def callback(s: Any) -> None:
        await coll.insert_one({"x": 1}, session=s)

    async with session:
        await session.with_transaction(callback)


def plain_sync(client: Any, coll: Any) -> None:
    with client.start_session() as session:
        session.start_transaction()
        coll.insert_one({"x": 1}, session=session)
        session.commit_transaction()


def with_transaction_sync(client: Any, coll: Any) -> None:
    with client.start_session() as session:
        session.with_transaction(lambda s: coll.insert_one({"x": 1}, session=s))


CLIENTS = {
    "Motor (driver mode)": (AsyncIOMotorClient, "driver"),
    "Motor (spec mode)": (AsyncIOMotorClient, "spec"),
    "AsyncMongoClient": (pymongo.AsyncMongoClient, "driver"),
    "MongoClient": (pymongo.MongoClient, "driver"),
}


async def scenario(
    uri: str,
    exporter: InMemorySpanExporter,
    provider: TracerProvider,
    how: tuple[str, str],
    client_name: str,
    kind: str,
) -> tuple[list[ReadableSpan], list[str]]:
    pymongo_switch, ours_switch = how
    cls, mode = CLIENTS[client_name]
    options = dict(OPTIONS)
    if pymongo_switch == "env":
        os.environ[ENV] = "true"
    else:
        os.environ.pop(ENV, None)
        options["tracing"] = {"enabled": True}
    instrumentor = MotorInstrumentor()
    reader = InMemoryMetricReader()
    ours = {
        "tracer_provider": provider,
        "meter_provider": MeterProvider([reader]),
        "with_transaction": mode,
        "log_lifecycle": True,
    }
    if ours_switch == "MotorInstrumentor":
        instrumentor.instrument(**ours)
    client = cls(uri, **options)
    if ours_switch == "instrument_client":
        instrument_client(client, **ours)
    os.environ.pop(ENV, None)  # the branch has read it: clients made from now on trace or not
    coll = client.native.items
    outcome = "returned"
    try:
        fail_point = {"retried": RETRY, "commit retried": COMMIT_RETRY}.get(kind)
        if fail_point is not None:
            command = client.admin.command(fail_point)
            if not isinstance(client, pymongo.MongoClient):
                await command
        exporter.clear()
        with structlog.testing.capture_logs() as logs:
            try:
                if isinstance(client, pymongo.MongoClient):
                    body = plain_sync if kind == "plain" else with_transaction_sync
                    await asyncio.to_thread(body, client, coll)
                    await asyncio.to_thread(coll.find_one, {})
                else:
                    await (plain if kind == "plain" else with_transaction)(client, coll)
                    await coll.find_one({})
            except pymongo.errors.PyMongoError as exc:  # Motor's loop does not retry a commit
                outcome = f"raised {type(exc).__name__} {sorted(exc._error_labels)}"
        closing = client.close()  # endSessions: whose span is it?
        if asyncio.iscoroutine(closing):
            await closing
        return list(exporter.get_finished_spans()), [outcome, *signals(reader, logs)]
    finally:
        if ours_switch == "instrument_client":
            uninstrument_client(client)
        else:
            instrumentor.uninstrument()


def signals(reader: InMemoryMetricReader, logs: list[dict[str, Any]]) -> list[str]:
    """Our metric points and log lines, in one line each."""
    points = []
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                wanted = metric.name.startswith("db.client.mongodb.transaction")
                if not wanted and metric.name != "db.client.operation.duration":
                    continue
                for point in metric.data.data_points:
                    attrs = point.attributes or {}
                    value = getattr(point, "value", None)
                    if value is None:
                        value = f"count={point.count}"
                    detail = ",".join(
                        f"{k.rsplit('.', 1)[-1]}={v}"
                        for k, v in sorted(attrs.items())
                        if k
                        in (
                            "db.mongodb.transaction.outcome",
                            "db.mongodb.error_label",
                            "db.operation.name",
                            "error.type",
                        )
                    )
                    points.append(f"{metric.name.rsplit('.', 1)[-1]}{{{detail}}} {value}")
    lines = ["metrics: " + "; ".join(sorted(points))]
    lines.append(
        "logs: "
        + "; ".join(
            e["event"]
            + (
                "(" + ",".join(e["db.mongodb.error_labels"]) + ")"
                if e.get("db.mongodb.error_labels")
                else ""
            )
            for e in logs
        )
    )
    return lines


async def main() -> int:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # PyMongo's tracer is the global one
    from pymongo import _otel  # noqa: F401  (fails loudly on a PyMongo without the branch)

    print(f"pymongo {pymongo.__version__} from {os.path.dirname(pymongo.__file__)}")
    bad = total = 0
    with SimulatedReplicaSet() as rs:
        for how in (
            ("env", "MotorInstrumentor"),
            ("env", "instrument_client"),
            ("tracing option", "MotorInstrumentor"),
            ("tracing option", "instrument_client"),
        ):
            for client_name in CLIENTS:
                for kind in KINDS:
                    spans, notes = await scenario(
                        rs.uri, exporter, provider, how, client_name, kind
                    )
                    problems = verdict(spans)
                    bad += bool(problems)
                    total += 1
                    print(
                        f"\n== PyMongo on by {how[0]}, ours by {how[1]}: {client_name}, {kind}"
                        f" -> {'; '.join(problems) if problems else 'OK: one story'}"
                    )
                    print("\n".join(render(spans)))
                    print("\n".join(f"  ({note})" for note in notes))
    print(f"\n{bad} of {total} scenarios wrong")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
